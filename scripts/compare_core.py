"""Run every inversion method on fixed inputs and save what it returns, for a before/after comparison.

Usage::

    OMP_NUM_THREADS=1 PYTHONPATH=<checkout>/src python scripts/compare_core.py save OUT.pt
    python scripts/compare_core.py compare A.pt B.pt

``save`` solves each (generator, dtype, signal kind, method) case on one thread and writes ``z``,
``residual`` and ``converged`` of each result (or the error's message) as plain tensors and
strings into one file (``torch.save``). ``compare`` reports every entry that differs between two
such files (``torch.equal``: the same numbers to the last bit) and exits 1 when any does.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from typing import Any

import torch

B = 3  # samples per case


def _generators(dtype: torch.dtype) -> dict[str, Any]:
    import geninv

    return {
        "mnist": geninv.load_mnist_generator(dtype=dtype),
        "tanh": geninv.random_generator([8, 24, 48, 96], "tanh", seed=3, bias=True, dtype=dtype),
    }


def _signals(G: Any, dtype: torch.dtype) -> dict[str, dict[str, Any]]:
    """Signal kinds: clean, 8-bit, noisy, masked, compressed sensing (each with its true z)."""
    from geninv.operators import GaussianMatrix

    g = torch.Generator().manual_seed(11)
    n0, n = G.latent_dim, G.output_dim
    z = torch.randn(B, n0, generator=g, dtype=torch.float64).to(dtype)
    y = G(z)
    noise = 0.01 * torch.randn(y.shape, generator=g, dtype=torch.float64).to(dtype)
    mask = torch.rand(B, n, generator=g) < 0.6
    A = GaussianMatrix(n // 2, n, seed=5, dtype=dtype)
    return {
        "clean": {"z": z, "y": y, "kw": {}},
        "8bit": {"z": z, "y": torch.round((y + 1) * 127.5) / 127.5 - 1, "kw": {}},
        "noisy": {"z": z, "y": y + noise, "kw": {}, "noise_level": 0.01},
        "masked": {"z": z, "y": y, "kw": {"mask": mask}},
        "cs": {"z": z, "y": A.forward(y), "kw": {"measure": A}},
    }


def _supports(G: Any, z: torch.Tensor) -> list[torch.Tensor]:
    """The true supports of the hidden layers at ``z``."""
    out, x = [], z
    for layer in G.layers[:-1]:
        x = layer(x)
        out.append(x > 0)
    return out


def _methods(G: Any, case: dict[str, Any]) -> dict[str, Callable[[], Any]]:
    import geninv
    from geninv.solvers.gradient import adam, gd
    from geninv.solvers.hybrid import hybrid
    from geninv.solvers.lp_layerwise import lp_layerwise
    from geninv.solvers.noise import noisy_pursuit

    y, kw = case["y"], case["kw"]
    sup = _supports(G, case["z"])
    meas_kw = {"measure": kw["measure"]} if "measure" in kw else ({"measure": geninv.Mask(kw["mask"])} if "mask" in kw else {})
    out: dict[str, Callable[[], Any]] = {
        "auto": lambda: geninv.invert(G, y, method="auto", **kw),
        "latent_pursuit": lambda: geninv.latent_pursuit(G, y, **kw),
        "layered_bp": lambda: geninv.layered_bp(G, y, **kw),
        "oracle": lambda: geninv.oracle(G, y, supports=sup, **kw),
        "hybrid": lambda: hybrid(G, y, **kw),
        "noisy_pursuit": lambda: noisy_pursuit(G, y, noise_level=case.get("noise_level", 0.01), **kw),
        "gd": lambda: gd(G, y, max_iter=50, **meas_kw),
        "adam": lambda: adam(G, y, max_iter=50, **meas_kw),
    }
    if G.latent_dim <= 10:  # the layer-wise LP on the small generator only (scipy HiGHS, seconds)
        out["lp_layerwise"] = lambda: lp_layerwise(G, y, **meas_kw)
    return out


def save(path: str) -> None:
    torch.set_num_threads(1)
    record: dict[str, Any] = {}
    for dtype in (torch.float32, torch.float64):
        for gname, G in _generators(dtype).items():
            for sname, case in _signals(G, dtype).items():
                for mname, run in _methods(G, case).items():
                    key = f"{gname}/{str(dtype)[6:]}/{sname}/{mname}"
                    torch.manual_seed(0)
                    try:
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")
                            res = run()
                    except Exception as err:  # noqa: BLE001 - the error is part of the record
                        record[key + "/error"] = f"{type(err).__name__}: {err}"
                        print(f"{key}: {type(err).__name__}", flush=True)
                        continue
                    record[key + "/z"] = res.z.detach().clone()
                    record[key + "/converged"] = res.converged.clone()
                    if res.residual is not None:
                        record[key + "/residual"] = res.residual.detach().clone()
                    print(f"{key}: ok", flush=True)
    torch.save(record, path)


def compare(a_path: str, b_path: str) -> int:
    a, b = torch.load(a_path, weights_only=True), torch.load(b_path, weights_only=True)
    bad = 0
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, torch.Tensor) and isinstance(vb, torch.Tensor):
            same = va.shape == vb.shape and va.dtype == vb.dtype and torch.equal(va, vb)
        else:
            same = va == vb
        if not same:
            bad += 1
            detail = ""
            if isinstance(va, torch.Tensor) and isinstance(vb, torch.Tensor) and va.shape == vb.shape and va.is_floating_point():
                detail = f" max |diff| {float((va.double() - vb.double()).abs().nan_to_num().max()):.3g}"
            print(f"DIFFERS {key}:{detail} {va if not isinstance(va, torch.Tensor) else ''} "
                  f"{vb if not isinstance(vb, torch.Tensor) else ''}")
    print(f"{len(set(a) | set(b))} entries, {bad} differ")
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "save":
        save(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        sys.exit(compare(sys.argv[2], sys.argv[3]))
    else:
        sys.exit(__doc__)

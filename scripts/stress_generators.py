#!/usr/bin/env python
"""Stress run: invert N random generators with every method; find any NaN and any silent wrong answer.

Generator i (seeded by i, so any failure is reproducible alone with ``--only i``) has 1 to 3
hidden ReLU layers, widths 5 to ``--max-width``, n_0 in 2..20, biases or not, an output
activation cycling through tanh, sigmoid, leaky_relu, plu, identity and relu, and float64 (two
in three) or float32. Each is given a batch of 3 signals ``y = G(z)``, the last with 1 % noise.

Every method must return a finite result (z, every hidden layer, flags) or raise a clear geninv
``InputError``/``DomainError`` (e.g. y saturating the output in float32). Anything else (NaN/Inf
in an output, another exception, more than one ConvergenceWarning in a call) is a failure,
printed with the generator index, and the exit status is 1.

Silent wrong answers are counted per method (and per output activation): a sample whose image
``G(z_hat)`` does not match ``y`` (relative error above the rounding level of the data's dtype,
computed here independently of the result) while the result says ``fits=True``, or says
``converged=True`` and the call gave no ConvergenceWarning. Any of them also sets exit status 1.

Usage::

    python scripts/stress_generators.py                 # 1,000 generators, 2 workers, defaults
    python scripts/stress_generators.py --n 20 --max-width 40 --max-iter 100   # the CI size
    python scripts/stress_generators.py --only 417 --method lp_layerwise       # reproduce one case
    python scripts/stress_generators.py --start 500 --n 500                    # the second half
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
import traceback
import warnings
from typing import Any

import numpy as np
import torch


def all_methods() -> tuple[str, ...]:
    """Every method registered with ``geninv.invert``."""
    from geninv.solvers import METHODS

    return tuple(METHODS)


OUTPUTS = ("tanh", "sigmoid", "leaky_relu", "plu", "identity", "relu")


def random_case(i: int, *, max_width: int = 300) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """The i-th generator and its batch: ``(G, z (3, n_0), y (3, n))``."""
    import geninv

    rng = np.random.default_rng(1000 + i)
    depth = int(rng.integers(1, 4))
    dims = [int(rng.integers(5, max_width + 1)) for _ in range(depth + 2)]
    dims[0] = int(rng.integers(2, min(20, max_width) + 1))
    out = OUTPUTS[i % len(OUTPUTS)]
    bias = bool(rng.integers(0, 2))
    dtype = torch.float64 if i % 3 else torch.float32
    G = geninv.random_generator(dims, output=out, seed=i, bias=bias, dtype=dtype)
    z, y = G.sample(3, seed=i)
    y = y.clone()
    noise = torch.randn(y.shape[1], generator=torch.Generator().manual_seed(i), dtype=torch.float64)
    y[2] = y[2] + 0.01 * y[2].abs().mean() * noise.to(dtype)
    if out in ("tanh", "sigmoid"):
        lo, hi = G.output_activation.range
        eps = 1e-6 if dtype == torch.float64 else 1e-3
        y[2] = y[2].clamp(lo + eps, hi - eps)
    return G, z, y


def check_result(res: Any, method: str, y: torch.Tensor) -> None:
    """AssertionError unless ``res`` is a well-formed finite SolveResult for ``y``."""
    B = y.shape[0]
    assert torch.isfinite(res.z).all(), "NaN/Inf in z"
    for k, x in enumerate(res.layers):
        assert torch.isfinite(x).all(), f"NaN/Inf in layers[{k}]"
    assert res.z.shape[0] == B and res.z.dtype == y.dtype, f"z of shape {tuple(res.z.shape)} / {res.z.dtype}"
    assert res.converged.shape == (B,) and res.converged.dtype == torch.bool, "converged must be bool (B,)"
    assert res.n_iter.shape == (B,), "n_iter must be (B,)"


def silent_wrong(G: Any, z: torch.Tensor, y: torch.Tensor, res: Any, warned: bool) -> dict[str, Any]:
    """Per-sample silent wrong answers of one result, against the image error computed here.

    A sample *does not fit* when ``||G(z_hat) - y||`` (float64 forward pass) exceeds what the
    true latent leaves: the rounding level of the data's dtype times ``||y||`` for an exact sample,
    plus :func:`geninv.solvers.verdict.noise_tol` of the true noise level for the noisy one (the
    noise ``e = y - G(z)`` is known here, not to the method). It is a silent wrong answer when ``fits`` says True
    (``"fits"``), or when ``converged`` says True and the call gave no ConvergenceWarning
    (``"converged"``). Returns the counts and the offending samples.
    """
    from geninv.solvers.verdict import noise_tol, rounding_tol

    G64 = G.to(dtype=torch.float64)
    y64 = y.to(torch.float64)
    with torch.no_grad():
        ynorm = y64.norm(dim=1).clamp_min(1e-300)
        err = (G64.forward_unchecked(res.z.to(torch.float64)) - y64).norm(dim=1) / ynorm
        e = (G64.forward_unchecked(z.to(torch.float64)) - y64).norm(dim=1)  # the true latent's residual: the noise
    err = torch.where(torch.isfinite(err), err, torch.full_like(err, float("inf")))
    n = torch.full_like(e, float(y.shape[1]))
    noisy = e > rounding_tol(y.dtype) * ynorm
    allowed = rounding_tol(y.dtype) + torch.where(noisy, noise_tol(e / n.sqrt(), n), torch.zeros_like(e)) / ynorm
    misfit = err > allowed
    fits = res.fits if res.fits is not None else torch.zeros_like(misfit)
    bad_fits = misfit & fits
    bad_conv = misfit & res.converged & (not warned)
    cases = [{"sample": int(b), "image_error": float(err[b]), "fits": bool(fits[b]),
              "converged": bool(res.converged[b]), "warned": warned}
             for b in (bad_fits | bad_conv).nonzero().flatten().tolist()]
    return {"samples": int(err.numel()), "not_fitting": int(misfit.sum()), "fits": int(bad_fits.sum()),
            "converged": int(bad_conv.sum()), "cases": cases}


def invert_once(G: Any, z: torch.Tensor, y: torch.Tensor, method: str, **options: Any) -> tuple[str, dict[str, Any] | None]:
    """``("ok", silent)`` or ``(name of the clear geninv error, None)``; AssertionError otherwise.

    ``silent`` is :func:`silent_wrong` of the result (the call's ConvergenceWarnings recorded).
    """
    import geninv
    from geninv.solvers import accepted_options

    accepted = accepted_options(method)
    # options a method does not take (lp_layerwise has no max_iter) are left out for it
    options = {k: v for k, v in options.items() if accepted is None or k in accepted}
    if method == "oracle":
        options["supports"] = G.trace(z).supports
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = geninv.invert(G, y, method=method, **options)
    except (geninv.DomainError, geninv.InputError) as e:
        msg = str(e)
        assert "\n" not in msg and "expected" in msg, f"unclear {type(e).__name__}: {msg}"
        return type(e).__name__, None
    except geninv.GenInvError as e:
        raise AssertionError(f"{type(e).__name__} on a valid signal: {e}") from None
    except Exception as e:  # noqa: BLE001
        where = traceback.extract_tb(e.__traceback__)[-1]
        raise AssertionError(f"{type(e).__name__} from {where.filename}:{where.lineno}: {e}") from None
    check_result(res, method, y)
    n_warn = sum(issubclass(w.category, geninv.ConvergenceWarning) for w in caught)
    assert n_warn <= 1, f"{n_warn} ConvergenceWarnings in one call (one expected at most)"
    return "ok", silent_wrong(G, z, y, res, warned=n_warn > 0)


def run_one(i: int, max_width: int, methods: tuple[str, ...], options: dict[str, Any]) -> dict[str, Any]:
    """Every method on generator i: {"i", "G", "outcomes": {method: outcome}, "failures": [...]}."""
    torch.set_num_threads(1)
    G, z, y = random_case(i, max_width=max_width)
    rec: dict[str, Any] = {"i": i, "G": repr(G), "bias": G.has_bias(), "outcomes": {}, "failures": []}
    rec["silent"] = {}
    for method in methods:
        try:
            rec["outcomes"][method], silent = invert_once(G, z, y, method, **dict(options))
            if silent is not None:
                rec["silent"][method] = silent
        except AssertionError as e:
            rec["outcomes"][method] = "FAIL"
            rec["failures"].append(f"generator {i} {G!r} bias={G.has_bias()} method {method}: {e}")
    return rec


def _job(args: tuple[int, int, tuple[str, ...], dict[str, Any]]) -> dict[str, Any]:
    return run_one(*args)


def stress(indices: list[int], *, max_width: int = 300, methods: tuple[str, ...] | None = None,
           options: dict[str, Any] | None = None, workers: int = 1, progress: bool = False) -> dict[str, Any]:
    """Run the stress test on generators ``indices``; returns counts per method and the failures."""
    methods = methods or all_methods()
    jobs = [(i, max_width, methods, dict(options or {})) for i in indices]
    t0 = time.perf_counter()
    if workers > 1:
        with mp.get_context("spawn").Pool(workers) as pool:
            it = pool.imap_unordered(_job, jobs, chunksize=1)
            recs = _collect(it, len(jobs), progress)
    else:
        recs = _collect(map(_job, jobs), len(jobs), progress)
    counts: dict[str, dict[str, int]] = {m: {} for m in methods}
    by_output: dict[str, dict[str, dict[str, int]]] = {}
    for r in recs:
        out = random_case_output(r["i"])
        for m, o in r["outcomes"].items():
            counts[m][o] = counts[m].get(o, 0) + 1
            d = by_output.setdefault(out, {}).setdefault(m, {})
            d[o] = d.get(o, 0) + 1
    failures = [f for r in sorted(recs, key=lambda r: r["i"]) for f in r["failures"]]
    keys = ("samples", "not_fitting", "fits", "converged")
    silent: dict[str, dict[str, int]] = {m: dict.fromkeys(keys, 0) for m in methods}
    silent_by_output: dict[str, dict[str, dict[str, int]]] = {}
    silent_cases = []
    for r in sorted(recs, key=lambda r: r["i"]):
        out = random_case_output(r["i"])
        for m, c in r.get("silent", {}).items():
            d = silent_by_output.setdefault(out, {}).setdefault(m, dict.fromkeys(keys, 0))
            for k in keys:
                silent[m][k] += c[k]
                d[k] += c[k]
            silent_cases += [dict(case, generator=r["i"], method=m, output=out) for case in c["cases"]]
    return {"generators": len(indices), "max_width": max_width, "options": options or {}, "counts": counts,
            "by_output": by_output, "failures": failures,
            "silent_wrong": silent, "silent_wrong_by_output": silent_by_output, "silent_cases": silent_cases,
            "seconds": round(time.perf_counter() - t0, 1)}


def random_case_output(i: int) -> str:
    return OUTPUTS[i % len(OUTPUTS)]


def _collect(it: Any, total: int, progress: bool) -> list[dict[str, Any]]:
    recs = []
    for k, r in enumerate(it, 1):
        recs.append(r)
        if progress and (k % 25 == 0 or k == total):
            bad = sum(len(x["failures"]) for x in recs)
            print(f"  {k}/{total} generators, {bad} failures", file=sys.stderr, flush=True)
    return recs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1000, help="number of generators (default 1000)")
    p.add_argument("--start", type=int, default=0, help="first generator index (to split a run: --start 500 --n 500)")
    p.add_argument("--only", type=int, default=None, help="run generator i alone")
    p.add_argument("--max-width", type=int, default=300)
    p.add_argument("--method", default=None, help="comma-separated methods (default: every registered method)")
    p.add_argument("--max-iter", type=int, default=None, help="pass max_iter to every method (default: their defaults)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json", default=None, help="write the summary here")
    a = p.parse_args(argv)
    methods = tuple(m.strip() for m in a.method.split(",") if m.strip()) if a.method else all_methods()
    options = {} if a.max_iter is None else {"max_iter": a.max_iter}
    indices = [a.only] if a.only is not None else list(range(a.start, a.start + a.n))
    summary = stress(indices, max_width=a.max_width, methods=methods, options=options, workers=a.workers, progress=True)
    print(f"{summary['generators']} generators, widths <= {a.max_width}, {summary['seconds']} s")
    for m, c in summary["counts"].items():
        print(f"  {m:15s} " + ", ".join(f"{k}: {v}" for k, v in sorted(c.items())))
    print("silent wrong answers (fits=True with an image error above what the true latent leaves / converged=True, "
          "no warning, for a sample that does not fit), of the samples that do not fit:")
    for m, c in summary["silent_wrong"].items():
        print(f"  {m:15s} fits: {c['fits']}, converged: {c['converged']} (of {c['not_fitting']} not fitting, "
              f"{c['samples']} samples)")
    for c in summary["silent_cases"]:
        print(f"SILENT generator {c['generator']} ({c['output']}) method {c['method']} sample {c['sample']}: "
              f"image error {c['image_error']:.3g}, fits={c['fits']}, converged={c['converged']}, warned={c['warned']}")
    for f in summary["failures"]:
        print("FAIL " + f)
    if a.json:
        from pathlib import Path

        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(summary, indent=1) + "\n")
    return 1 if summary["failures"] or summary["silent_cases"] else 0


if __name__ == "__main__":
    sys.exit(main())

"""Each signal decided on its own: a float32 sigmoid decoder with underflowed pixels.

The decoder has the shape of Lei et al.'s MNIST VAE decoder (20-60-784, no biases, sigmoid
output) with random weights scaled so that its pre-activations span about [-130, 30]: in
float32 about half of the images have pixels at exactly 0 (``sigmoid(a)`` underflows for
``a < -104``), in float64 none. For each dtype and mask (none, per-sample random 45 %, the
upper 13 rows hidden) every method inverts the whole batch, and every signal is inverted
again alone; the script counts

- recovered: relative error of z below 1000 eps of the dtype (layer-wise LP: 1e-8 in float64,
  1e-4 in float32, HiGHS's feasibility tolerance);
- converged but not recovered (a silent wrong answer unless the result says otherwise);
- batch != alone: signals whose batch result and lone result differ by more than 1000 eps.

It also times ``certify`` with per-sample masks (one call for the batch against one call per
signal, side by side) and checks that every masked signal certified unique is recovered by the
Oracle and none certified not unique is.

Run: ``python scripts/per_sample_check.py --n 256`` (writes ``benchmarks/results/per_sample.json``)
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import torch
from tqdm import tqdm

import geninv
from geninv import Activation, Generator, Layer, block_mask, random_mask, relative_error
from geninv.solvers.measurement import saturated

F32, F64 = torch.float32, torch.float64
METHODS = ("latent_pursuit", "layered_bp", "oracle", "lp_layerwise")


def decoder(dtype: torch.dtype) -> Generator:
    g = torch.Generator().manual_seed(0)
    W1 = torch.randn(60, 20, generator=g, dtype=F64) / 20**0.5
    W2 = 20.0 * (torch.randn(784, 60, generator=g, dtype=F64) - 0.8) / 60**0.5
    return Generator([Layer(W1.to(dtype), torch.zeros(60, dtype=dtype), Activation("relu")),
                      Layer(W2.to(dtype), torch.zeros(784, dtype=dtype), Activation("sigmoid"))])


def invert(G: Generator, y: torch.Tensor, method: str, mask: torch.Tensor | None, z: torch.Tensor) -> geninv.SolveResult:
    kw = {"supports": G.trace(z).supports} if method == "oracle" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return geninv.invert(G, y, method=method, mask=mask, **kw)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256, help="signals per batch")
    ap.add_argument("--alone", type=int, default=None, help="signals also inverted alone (default: all)")
    ap.add_argument("--certify-n", type=int, default=64, help="signals of the certify timing and agreement check")
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results/per_sample.json"))
    a = ap.parse_args()
    B = a.n
    n_alone = B if a.alone is None else min(a.alone, B)
    torch.manual_seed(0)
    masks = {"clean": None, "random": random_mask(784, 0.45, seed=3, batch=B), "block": block_mask(rows=13)}
    out: dict = {"command": f"python scripts/per_sample_check.py --n {B}" + (f" --alone {a.alone}" if a.alone else ""),
                 "decoder": "20-60-784, no biases, sigmoid output, random weights (see the script)", "rows": []}
    for dtype in (F64, F32):
        G = decoder(dtype)
        z = torch.randn(B, 20, generator=torch.Generator().manual_seed(1), dtype=F64).to(dtype)
        y = G(z)
        sat = saturated(G.output_activation, y)
        tol = 1e3 * torch.finfo(dtype).eps
        for mname, m in masks.items():
            for method in METHODS:
                t0 = time.perf_counter()
                res = invert(G, y, method, m, z)
                secs = time.perf_counter() - t0
                # HiGHS solves to its feasibility tolerance (1e-7 in float64), not to rounding
                tol_m = (1e-8 if dtype == F64 else 1e-4) if method == "lp_layerwise" else tol
                ok = relative_error(z, res.z) < tol_m
                differ = 0
                if method != "lp_layerwise":  # layer-wise LP solves each sample on its own by construction
                    for i in tqdm(range(n_alone), desc=f"{str(dtype)[6:]} {mname} {method} alone", leave=False):
                        mi = None if m is None else (m[i : i + 1] if m.ndim == 2 else m)
                        alone = invert(G, y[i : i + 1], method, mi, z[i : i + 1])
                        differ += int(float(relative_error(res.z[i : i + 1], alone.z)) > tol)
                row = {"dtype": str(dtype)[6:], "mask": mname, "method": method, "B": B, "recovered_below": tol_m,
                       "images_with_saturated_pixels": int(sat.any(dim=1).sum()),
                       "recovered": float(ok.float().mean()), "converged": float(res.converged.float().mean()),
                       "converged_not_recovered": int((res.converged & ~ok).sum()),
                       "batch_differs_from_alone": None if method == "lp_layerwise" else differ,
                       "checked_alone": 0 if method == "lp_layerwise" else n_alone, "seconds": round(secs, 3)}
                out["rows"].append(row)
                print(json.dumps(row))
    # certify with per-sample masks: one call against one call per signal, side by side
    G = decoder(F64)
    C = a.certify_n
    z = torch.randn(C, 20, generator=torch.Generator().manual_seed(2), dtype=F64)
    y = G(z)
    g = torch.Generator().manual_seed(3)
    m = torch.zeros(C, 784, dtype=torch.bool)
    counts = torch.linspace(10, 784, C).round().long()
    for k in range(C):
        m[k, torch.randperm(784, generator=g)[: int(counts[k])]] = True
    t0 = time.perf_counter()
    certs = geninv.certify(G, z, mask=m, theorem2=False)
    t_batch = time.perf_counter() - t0
    t0 = time.perf_counter()
    for k in tqdm(range(C), desc="certify one by one", leave=False):
        geninv.certify(G, z[k], mask=m[k], theorem2=False)
    t_loop = time.perf_counter() - t0
    res = invert(G, y, "oracle", m, z)
    err = relative_error(z, res.z)
    u = [c.unique for c in certs]
    agree_true = all(float(err[k]) < 1e-10 for k in range(C) if u[k] is True)
    agree_false = all(float(err[k]) > 1e-6 for k in range(C) if u[k] is False)
    out["certify"] = {"signals": C, "observed_pixels": [int(counts[0]), int(counts[-1])],
                      "seconds_one_call": round(t_batch, 3), "seconds_per_signal_calls": round(t_loop, 3),
                      "ratio_per_signal_over_one_call": round(t_loop / t_batch, 2),
                      "unique_true": u.count(True), "unique_false": u.count(False), "unique_none": u.count(None),
                      "every_unique_recovered_by_oracle": agree_true, "no_not_unique_recovered_by_oracle": agree_false}
    print(json.dumps(out["certify"]))
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(out, indent=1))
    print(f"wrote {a.json}")


if __name__ == "__main__":
    main()

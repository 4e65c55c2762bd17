"""The two speed targets on the shipped convolutional generators, side by side in one run.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/conv_targets.py [--out benchmarks/results] [--images 1000] [--dcgan-images 64]

(a) ``conv_expansive`` (20-196-588-784): ``--images`` clean images inverted by the default method
    (``geninv.invert``, method ``"auto"``) against the time gradient descent needs to reach its own
    final median image SNR (read from its callback at every check, the callback's own cost
    subtracted). Target: median image SNR above 60 dB, at least 10x faster.
(b) ``conv_dcgan`` (20-1568-3136-784, the last layer contracts): the hybrid against gd and Adam
    on ``--dcgan-images`` clean images. Target: the hybrid's median image SNR at least the better
    of gd's and Adam's (to within 1 dB), in at most 1.5x gd's time.

float32, one torch thread, every method on the same signals (``G.sample(B, seed=1)``), each timing
the best of ``--repeats`` calls after a warm-up on 4 signals; wall and CPU (process) seconds are both
recorded, with the load average before and after. Writes ``conv_targets.json`` and
``README_conv_targets.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch


def _timed(fn: Any, repeats: int) -> tuple[Any, float, float]:
    best_w, best_c, out = float("inf"), float("inf"), None
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        out = fn()
        best_w, best_c = min(best_w, time.perf_counter() - w0), min(best_c, time.process_time() - c0)
    return out, best_w, best_c


def _median_snr(G: Any, y: torch.Tensor, z: torch.Tensor) -> float:
    import geninv

    with torch.no_grad():
        return float(geninv.snr(y, G(z.to(G.dtype))).double().median())


def gd_curve(G: Any, y: torch.Tensor, repeats: int) -> dict[str, Any]:
    """gd with its median image SNR at every check: seconds (wall and CPU, callback excluded) to
    reach its final median SNR."""
    import geninv

    best: dict[str, Any] | None = None
    for _ in range(repeats):
        pts: list[tuple[float, float, float]] = []
        spent = [0.0, 0.0]
        t0 = [time.perf_counter(), time.process_time()]

        def cb(k: int, *args: Any, pts: list[Any] = pts, spent: list[float] = spent, t0: list[float] = t0) -> None:
            w, c = time.perf_counter(), time.process_time()
            zz = args[0]["z"] if isinstance(args[0], dict) else args[0]
            s = _median_snr(G, y, zz)
            pts.append((w - t0[0] - spent[0], c - t0[1] - spent[1], s))
            spent[0] += time.perf_counter() - w
            spent[1] += time.process_time() - c

        t0[:] = [time.perf_counter(), time.process_time()]
        res = geninv.invert(G, y, method="gd", callback=cb)
        wall, cpu = time.perf_counter() - t0[0] - spent[0], time.process_time() - t0[1] - spent[1]
        final = _median_snr(G, y, res.z)
        pts.append((wall, cpu, final))
        reach = next(p for p in pts if p[2] >= final)
        rec = {"final_snr_db": final, "seconds_total": wall, "cpu_seconds_total": cpu,
               "seconds_to_final": reach[0], "cpu_seconds_to_final": reach[1],
               "iterations_max": int(res.n_iter.max()), "iterations_median": float(res.n_iter.double().median()),
               "curve": [[round(a, 4), round(b, 4), round(c, 2)] for a, b, c in pts]}
        if best is None or rec["seconds_to_final"] < best["seconds_to_final"]:
            best = rec
    assert best is not None
    return best


def solve(G: Any, y: torch.Tensor, method: str, repeats: int) -> dict[str, Any]:
    import geninv

    res, wall, cpu = _timed(lambda: geninv.invert(G, y, method=method), repeats)
    rec: dict[str, Any] = {"method": method, "seconds": wall, "cpu_seconds": cpu, "median_snr_db": _median_snr(G, y, res.z),
                           "converged_frac": float(res.converged.double().mean())}
    for key in ("order", "order_reason"):
        if key in res.info:
            rec[key] = res.info[key]
    if isinstance(res.info.get("stage"), list):
        rec["stages"] = {s: res.info["stage"].count(s) for s in set(res.info["stage"])}
    if isinstance(res.info.get("seconds"), dict):
        rec["stage_seconds"] = {k: float(v) for k, v in res.info["seconds"].items()}
    return rec


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--dcgan-images", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    import geninv
    from geninv.weights import load_conv_generator

    out: dict[str, Any] = {"command": "OMP_NUM_THREADS=1 python benchmarks/conv_targets.py " + " ".join(argv or sys.argv[1:]),
                           "torch": torch.__version__, "threads": torch.get_num_threads(), "dtype": "float32",
                           "load_before": list(os.getloadavg()), "geninv": geninv.__version__}
    # (a) the expansive generator: auto against gd's time to its final SNR
    G = load_conv_generator("conv_expansive")
    z, y = G.sample(a.images, seed=1)
    geninv.invert(G, y[:4], method="auto")
    geninv.invert(G, y[:4], method="gd")
    gd_rec = gd_curve(G, y, a.repeats)
    auto_rec = solve(G, y, "auto", a.repeats)
    speed = gd_rec["seconds_to_final"] / auto_rec["seconds"]
    cpu_speed = gd_rec["cpu_seconds_to_final"] / auto_rec["cpu_seconds"]
    out["expansive"] = {"generator": "conv_expansive", "dims": G.dims, "images": a.images, "gd": gd_rec, "auto": auto_rec,
                        "speedup_wall": speed, "speedup_cpu": cpu_speed,
                        "met": bool(auto_rec["median_snr_db"] > 60 and speed >= 10)}
    # (b) the DCGAN-shaped generator: the hybrid against gd and Adam
    G = load_conv_generator("conv_dcgan")
    z, y = G.sample(a.dcgan_images, seed=1)
    for m in ("gd", "adam", "hybrid"):
        geninv.invert(G, y[:4], method=m)
    recs = {m: solve(G, y, m, a.repeats) for m in ("gd", "adam", "hybrid")}
    better = max(recs["gd"]["median_snr_db"], recs["adam"]["median_snr_db"])
    ratio = recs["hybrid"]["seconds"] / recs["gd"]["seconds"]
    out["dcgan"] = {"generator": "conv_dcgan", "dims": G.dims, "images": a.dcgan_images, **recs,
                    "time_ratio_wall": ratio, "time_ratio_cpu": recs["hybrid"]["cpu_seconds"] / recs["gd"]["cpu_seconds"],
                    "better_of_gd_adam_db": better,
                    "met": bool(recs["hybrid"]["median_snr_db"] >= better - 1.0 and ratio <= 1.5)}
    out["load_after"] = list(os.getloadavg())
    d = Path(a.out)
    d.mkdir(parents=True, exist_ok=True)
    (d / "conv_targets.json").write_text(json.dumps(out, indent=1) + "\n")
    e, g = out["expansive"], out["dcgan"]
    lines = [
        "# Speed targets on the shipped convolutional generators",
        "",
        f"`{out['command']}` (float32, {out['threads']} torch thread, torch {out['torch']}; load average "
        f"{out['load_before'][0]:.2f} before, {out['load_after'][0]:.2f} after; best of {a.repeats} calls; raw numbers and "
        "gd's curve in `conv_targets.json`).",
        "",
        f"(a) `conv_expansive`, {a.images} clean images: gd reaches its final median image SNR "
        f"{e['gd']['final_snr_db']:.1f} dB after {e['gd']['seconds_to_final']:.2f} s ({e['gd']['cpu_seconds_to_final']:.2f} s CPU); "
        f"`invert(G, y)` (auto) takes {e['auto']['seconds']:.2f} s ({e['auto']['cpu_seconds']:.2f} s CPU) to "
        f"{e['auto']['median_snr_db']:.1f} dB: **{e['speedup_wall']:.1f}x** (CPU {e['speedup_cpu']:.1f}x; target 10x: "
        f"{'met' if e['met'] else 'not met'}).",
        "",
        f"(b) `conv_dcgan`, {a.dcgan_images} clean images:",
        "",
        "| method | seconds (wall) | CPU seconds | median image SNR [dB] |",
        "|---|---|---|---|",
        *[f"| {m} | {g[m]['seconds']:.2f} | {g[m]['cpu_seconds']:.2f} | {g[m]['median_snr_db']:.1f} |" for m in ("gd", "adam", "hybrid")],
        "",
        f"hybrid / gd time: **{g['time_ratio_wall']:.2f}x** (CPU {g['time_ratio_cpu']:.2f}x; target <= 1.5x); hybrid SNR "
        f"{g['hybrid']['median_snr_db']:.1f} dB against the better of gd and Adam {g['better_of_gd_adam_db']:.1f} dB: "
        f"{'met' if g['met'] else 'not met'}. The hybrid's order: {g['hybrid'].get('order')} "
        f"({g['hybrid'].get('order_reason')}).",
        "",
    ]
    (d / "README_conv_targets.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Noisy, quantized, masked, compressed and out-of-range signals: the default method against the
end-to-end Oracle, gradient descent and Latent-Pursuit, side by side in one run.

Run ``python -m geninv.bench.noise_grid`` (``--help`` for the options). It writes
``<name>.json`` and ``README_<name>.md`` (``--name``, default ``noise_grid``) into a fresh
directory (printed), or into ``benchmarks/results/`` with ``--results``. Every timing is one thread, measured in the same
process one method after the other on the same signals, each after an untimed warm-up on four of
them, so the ratios compare like with like.

Grid (``--generators``: ``mnist``, the shipped MNIST generator, and ``tanh``, a random
[20, 200, 600] ReLU network with a tanh output, seed 0, with biases; both output in [-1, 1]):

* ``clean``: ``G(z)``; ``mask45``: ``G(z)`` with 45 % of the pixels hidden (a random mask per image);
* ``gauss<k>``: ``G(z) + e``, white Gaussian at input SNR ``k`` dB per image (20, 30, 40, 50);
* ``8bit``: ``(y + 1) / 2`` rounded to multiples of 1/255, mapped back to [-1, 1];
* ``8bit_mask45``: 8-bit, 45 % of the pixels hidden (a random mask per image);
* ``8bit_block``: 8-bit, the upper 13 rows of the 28 x 28 image hidden (``geninv.block_mask()``;
  for ``tanh`` the first 13/28 of the entries);
* ``cs300``: ``A G(z) + e``, ``A`` Gaussian 300 x n (``geninv.GaussianMatrix``), ``sigma = 0.01``;
* ``digits`` (``mnist`` only): real MNIST test digits of the embedded subset (not in the range of ``G``):
  projection SNR ``20 log10(||y|| / ||y - G(z_hat)||)``, Adam with 10 restarts x 1,000 steps
  as the reference (``10^4`` generator passes per signal).

Methods: ``auto`` (the default of ``geninv.invert``), ``latent_pursuit`` (its defaults),
``latent_pursuit_noisy`` (``noise_level="auto"``), ``gd`` (its defaults), ``oracle_e2e``
(least squares through the network with the true supports: the ceiling), ``adam10`` (digits).

Besides the medians and 10 % quantiles, ``paired`` is the median over signals of the per-signal
difference to the reference (this method's z SNR minus the reference's on the same signal):
with 64 signals the difference of two medians moves by several tenths of a dB from one draw of
signals to the next, the paired median far less.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import geninv
from geninv.metrics import snr

__all__ = ["GENERATORS", "POINTS", "run_grid", "main"]

GENERATORS = ("mnist", "tanh")
POINTS = ("clean", "mask45", "gauss20", "gauss30", "gauss40", "gauss50", "8bit", "8bit_mask45", "8bit_block", "cs300", "digits")
METHODS = ("auto", "latent_pursuit", "latent_pursuit_noisy", "gd", "oracle_e2e", "adam10")


def _quantize(y: Tensor) -> Tensor:
    return torch.round((y + 1) / 2 * 255) / 255 * 2 - 1


def _signals(point: str, G: geninv.Generator, B: int, seed: int) -> dict[str, Any]:
    """The signals of one grid point: ``y``, the truth ``z`` (None for real digits), the measure."""
    dt = G.dtype
    if point == "digits":
        from geninv.data.mnist import mnist

        x, _ = mnist("test", limit=B, dtype=dt)
        return {"y": x.reshape(x.shape[0], -1), "z": None, "measure": None}
    z, y0 = G.sample(B, seed=seed)
    out: dict[str, Any] = {"z": z, "measure": None}
    if point == "clean":
        out["y"] = y0
    elif point == "mask45":
        out["y"] = y0
        out["measure"] = geninv.Mask(geninv.random_mask(y0.shape[1], 0.45, seed=seed + 2, batch=B))
    elif point.startswith("gauss"):
        out["y"], _ = geninv.add_noise(y0, float(point[5:]), seed=seed + 1)
    elif point == "8bit":
        out["y"] = _quantize(y0)
    elif point == "8bit_mask45":
        out["y"] = _quantize(y0)
        out["measure"] = geninv.Mask(geninv.random_mask(y0.shape[1], 0.45, seed=seed + 2, batch=B))
    elif point == "8bit_block":
        out["y"] = _quantize(y0)
        n = y0.shape[1]
        if n == 784:
            out["measure"] = geninv.Mask(geninv.block_mask())
        else:
            keep = torch.ones(n, dtype=torch.bool)
            keep[: n * 13 // 28] = False
            out["measure"] = geninv.Mask(keep)
    elif point == "cs300":
        A = geninv.GaussianMatrix(300, y0.shape[1], seed=seed + 3, dtype=dt)
        e = 0.01 * torch.randn(B, 300, generator=torch.Generator().manual_seed(seed + 4), dtype=torch.float64).to(dt)
        out["y"] = A.forward(y0) + e
        out["measure"] = A
    else:
        raise ValueError(point)
    return out


def _solve(method: str, G: geninv.Generator, sig: dict[str, Any], seed: int, callback: Any = None) -> Tensor:
    y, measure, z = sig["y"], sig["measure"], sig["z"]
    if callback is not None:
        return geninv.invert(G, y, method=method, measure=measure, callback=callback).z
    if method == "oracle_e2e":
        return geninv.oracle(G, y, supports=G.trace(z).supports, mode="end_to_end", measure=measure).z
    if method == "latent_pursuit_noisy":
        return geninv.invert(G, y, method="latent_pursuit", measure=measure, noise_level="auto").z
    if method == "adam10":
        return geninv.invert(G, y, method="adam", measure=measure, restarts=10, max_iter=1000, seed=seed).z
    return geninv.invert(G, y, method=method, measure=measure).z


def _head(sig: dict[str, Any], k: int) -> dict[str, Any]:
    """The first ``k`` signals of a grid point (a per-sample mask sliced with them)."""
    out = dict(sig, y=sig["y"][:k], z=None if sig["z"] is None else sig["z"][:k])
    m = sig["measure"]
    if isinstance(m, geninv.Mask) and m.mask.ndim == 2 and m.mask.shape[0] == sig["y"].shape[0]:
        out["measure"] = geninv.Mask(m.mask[:k])
    return out


def _quality(G: geninv.Generator, sig: dict[str, Any], z_hat: Tensor) -> Tensor:
    """Per-sample z SNR (dB), or for real digits the projection SNR of ``G(z_hat)``."""
    if sig["z"] is None:
        y = sig["y"].to(torch.float64)
        p = G.to(dtype=torch.float64)(z_hat.to(torch.float64))
        return 20 * torch.log10(y.norm(dim=1) / (y - p).norm(dim=1))
    return snr(sig["z"].to(torch.float64), z_hat.to(torch.float64))


def _trace(method: str, G: geninv.Generator, sig: dict[str, Any], seed: int) -> list[list[float]]:
    """``[[seconds, median z SNR], ...]`` of one run of ``method`` from its callback (every check of
    gd, every stage of auto), the callback's own time left out; the last point is the result."""
    points: list[list[float]] = []
    spent = [0.0]
    z_true = sig["z"].to(torch.float64)

    def cb(k: int, state: dict[str, Any]) -> None:
        tc = time.perf_counter()
        points.append([tc - t0 - spent[0], float(snr(z_true, state["z"].to(torch.float64)).median())])
        spent[0] += time.perf_counter() - tc

    t0 = time.perf_counter()
    z_hat = _solve(method, G, sig, seed, callback=cb)
    total = time.perf_counter() - t0 - spent[0]
    points.append([total, float(snr(z_true, z_hat.to(torch.float64)).median())])
    return points


def _first_reach(points: list[list[float]], target: float) -> float | None:
    """The first time in a trace at which the median reaches ``target`` (None if never)."""
    ts = [t for t, v in points if v >= target]
    return min(ts) if ts else None


def _time_to_target(recs: dict[str, Any], traces: dict[str, list[list[float]]]) -> dict[str, Any]:
    """gd's own time to reach its final median, and each traced method's time to pass it, from
    the traces of one run; with the ratios to gd's and to the Oracle's (total) time."""
    target = traces["gd"][-1][1]
    out: dict[str, Any] = {"target_db": target, "methods": {}}
    t_gd = _first_reach(traces["gd"], target)
    for method, pts in traces.items():
        t = _first_reach(pts, target)
        r: dict[str, Any] = {"seconds_to_target": t, "seconds_total_traced": pts[-1][0], "trace": pts,
                             "trace_columns": ["seconds", "median_z_snr_db"]}
        if t is not None and t_gd is not None:
            r["gd_time_to_target_ratio"] = t_gd / t
        if t is not None and "oracle_e2e" in recs:
            r["time_to_target_over_oracle"] = t / recs["oracle_e2e"]["seconds"]
        out["methods"][method] = r
    return out


def _summary(q: Tensor) -> dict[str, float]:
    q = q.to(torch.float64)
    return {"median": float(q.median()), "q10": float(q.quantile(0.1)), "q90": float(q.quantile(0.9)),
            "min": float(q.min()), "below_40": int((q < 40).sum())}


def _methods_for(point: str) -> tuple[str, ...]:
    if point == "digits":
        return ("auto", "latent_pursuit_noisy", "gd", "adam10")
    return ("auto", "latent_pursuit", "latent_pursuit_noisy", "gd", "oracle_e2e")


def _generator(name: str) -> geninv.Generator:
    if name == "mnist":
        return geninv.load_mnist_generator()
    if name == "tanh":
        return geninv.random_generator([20, 200, 600], "tanh", seed=0, bias=True)
    raise ValueError(name)


def run_grid(*, points: tuple[str, ...] = POINTS, batch: int = 64, dtype: str = "float32", seed: int = 0,
             methods: tuple[str, ...] | None = None, progress: bool = True, generator: str = "mnist",
             time_to_target: bool = False) -> dict[str, Any]:
    """Run the grid; returns ``{"settings": ..., "points": {point: {method: {...}}}}``.

    ``time_to_target``: for every point with a truth where gd runs, also run gd and auto once
    more with a callback (gd's every check, auto's every stage) and record, under
    ``"time_to_target"``, gd's time to reach its own final median z SNR and auto's time to pass
    it (the callback's time left out), with their ratio.

    ``dtype``: ``"float32"``, ``"float64"`` or ``"mixed"`` (signals made in float32, solved with
    the generator in float64). ``generator``: ``"mnist"`` or ``"tanh"`` (``digits`` is skipped
    for ``tanh``).
    """
    from tqdm import tqdm

    torch.set_num_threads(1)
    G0 = _generator(generator)
    if generator != "mnist":
        points = tuple(p for p in points if p != "digits")
    make_dt = torch.float64 if dtype == "float64" else torch.float32
    solve_dt = torch.float32 if dtype == "float32" else torch.float64
    Gm, Gs = G0.to(dtype=make_dt), G0.to(dtype=solve_dt)
    out: dict[str, Any] = {"settings": {"generator": generator, "batch": batch, "dtype": dtype, "seed": seed, "threads": 1,
                                        "torch": torch.__version__, "machine": platform.machine(),
                                        "load_average": list(_loadavg())},
                           "points": {}}
    jobs = [(p, m) for p in points for m in _methods_for(p) if methods is None or m in methods]
    bar = tqdm(jobs, desc=f"noise grid ({dtype})", disable=not progress)
    sigs: dict[str, dict[str, Any]] = {}
    per_sample: dict[tuple[str, str], Tensor] = {}
    for point, method in bar:
        bar.set_postfix_str(f"{point} {method}")
        if point not in sigs:
            s = _signals(point, Gm, batch, seed)
            sigs[point] = {k: (v.to(solve_dt) if isinstance(v, Tensor) and v.is_floating_point() else v) for k, v in s.items()}
            if isinstance(sigs[point]["measure"], geninv.GaussianMatrix) and solve_dt != make_dt:
                A = sigs[point]["measure"]
                sigs[point]["measure"] = geninv.GaussianMatrix(A.shape[0], A.shape[1], seed=seed + 3, dtype=solve_dt)
        sig = sigs[point]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # Untimed warm-up on a few signals: the caches (spectral norms, factorizations) and
            # first-call costs would otherwise be charged to whichever method runs first.
            _solve(method, Gs, _head(sig, 4), seed)
            t = time.perf_counter()
            z_hat = _solve(method, Gs, sig, seed)
            sec = time.perf_counter() - t
        q = _quality(Gs, sig, z_hat)
        per_sample[(point, method)] = q
        rec = _summary(q)
        rec["seconds"] = sec
        out["points"].setdefault(point, {})[method] = rec
    if time_to_target:
        out["time_to_target"] = {}
        for point, recs in out["points"].items():
            if sigs[point]["z"] is None or "gd" not in recs:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                traces = {m: _trace(m, Gs, sigs[point], seed) for m in ("gd", "auto") if m in recs}
            out["time_to_target"][point] = _time_to_target(recs, traces)
    for point, recs in out["points"].items():
        ref_name = "oracle_e2e" if "oracle_e2e" in recs else "adam10" if "adam10" in recs else None
        ref = recs.get(ref_name) if ref_name else None
        for method, rec in recs.items():
            if ref is not None:
                rec["time_ratio_to_reference"] = rec["seconds"] / ref["seconds"]
                rec["median_minus_reference"] = rec["median"] - ref["median"]
                rec["q10_minus_reference"] = rec["q10"] - ref["q10"]
                d = per_sample[(point, method)] - per_sample[(point, str(ref_name))]
                rec["paired_median_minus_reference"] = float(d.to(torch.float64).median())
            if "gd" in recs:
                rec["gd_time_ratio"] = recs["gd"]["seconds"] / rec["seconds"]
    return out


def _loadavg() -> tuple[float, ...]:
    try:
        import os

        return tuple(round(v, 2) for v in os.getloadavg())
    except OSError:  # pragma: no cover - platform without a load average
        return (math.nan,)


def readme_table(results: list[dict[str, Any]], command: str) -> str:
    """A markdown table of the grid: per point and method, median / 10 % z SNR, time ratios."""
    lines = ["# Noise grid: the default method against the end-to-end Oracle and gradient descent", "",
             f"Produced by `{command}`. One thread, every method on the same signals in one process.",
             "z SNR in dB (real digits: projection SNR of G(z_hat)); `vs ref`: median / 10 % quantile minus the",
             "reference's (end-to-end Oracle; Adam 10 x 1,000 for digits); `t/ref`: time over the reference's;",
             "`paired`: median over signals of this method's minus the reference's on the same signal;",
             "`gd t/x`: gd's time over this method's.", ""]
    for res in results:
        st = res["settings"]
        lines += [f"## {st.get('generator', 'mnist')} generator, {st['dtype']}, B = {st['batch']} "
                  f"(load average {st['load_average']})", "",
                  "| input | method | median | 10 % | below 40 dB | vs ref (median / 10 %) | paired | seconds | t/ref "
                  "| gd t/x |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for point, recs in res["points"].items():
            for method, r in recs.items():
                vs = (f"{r['median_minus_reference']:+.2f} / {r['q10_minus_reference']:+.2f}"
                      if "median_minus_reference" in r else "")
                pm = f"{r['paired_median_minus_reference']:+.2f}" if "paired_median_minus_reference" in r else ""
                lines.append(f"| {point} | {method} | {r['median']:.2f} | {r['q10']:.2f} | {r['below_40']} | {vs} | {pm} | "
                             f"{r['seconds']:.2f} | {r.get('time_ratio_to_reference', math.nan):.2f} | "
                             f"{r.get('gd_time_ratio', math.nan):.2f} |")
        lines.append("")
        if res.get("time_to_target"):
            lines += ["Time to gd's final median z SNR (one more run of gd and auto each with a callback, its own time",
                      "left out: gd's every check, auto's every stage; `ratio`: gd's time to its final median over",
                      "this method's time to pass it; `total`: the traced run's total time):", "",
                      "| input | gd's final median | method | reaches it (s) | total (s) | ratio | reach / Oracle's time |",
                      "|---|---|---|---|---|---|---|"]
            for point, tt in res["time_to_target"].items():
                for method, r in tt["methods"].items():
                    reach = r["seconds_to_target"]
                    lines.append(f"| {point} | {tt['target_db']:.2f} | {method} | "
                                 f"{'never' if reach is None else f'{reach:.2f}'} | {r['seconds_total_traced']:.2f} | "
                                 f"{r.get('gd_time_to_target_ratio', math.nan):.2f} | "
                                 f"{r.get('time_to_target_over_oracle', math.nan):.2f} |")
            lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None, *, echo: Callable[[str], None] = print) -> Path:
    p = argparse.ArgumentParser(prog="python -m geninv.bench.noise_grid", description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=64, help="signals per grid point (default 64)")
    p.add_argument("--points", default=",".join(POINTS), help=f"comma-separated grid points (default all: {','.join(POINTS)})")
    p.add_argument("--methods", default=None, help=f"comma-separated methods (default all: {','.join(METHODS)})")
    p.add_argument("--dtypes", default="float32", help="comma-separated: float32, float64, mixed (default float32)")
    p.add_argument("--generators", default="mnist", help="comma-separated: mnist, tanh (default mnist)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="output directory (default: a fresh temporary one)")
    p.add_argument("--results", action="store_true", help="write into benchmarks/results/ (the committed results)")
    p.add_argument("--name", default="noise_grid", help="file stem of the JSON and table (default noise_grid)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--time-to-target", action="store_true",
                   help="also trace gd and auto (callbacks) for gd's own time to its final median z SNR and auto's time to pass it")
    a = p.parse_args(argv)
    points = tuple(x.strip() for x in a.points.split(",") if x.strip())
    bad = [x for x in points if x not in POINTS]
    if bad:
        p.error(f"--points: expected names from {', '.join(POINTS)}, received {', '.join(bad)}")
    methods = None if a.methods is None else tuple(x.strip() for x in a.methods.split(",") if x.strip())
    if methods is not None and any(m not in METHODS for m in methods):
        p.error(f"--methods: expected names from {', '.join(METHODS)}, received {a.methods!r}")
    dtypes = tuple(x.strip() for x in a.dtypes.split(",") if x.strip())
    if any(d not in ("float32", "float64", "mixed") for d in dtypes):
        p.error(f"--dtypes: expected float32, float64 or mixed, received {a.dtypes!r}")
    if a.batch < 10:
        p.error(f"--batch: expected at least 10 (quantiles), received {a.batch}")
    if a.results:
        out = Path(__file__).resolve().parents[3] / "benchmarks" / "results"
    elif a.out is not None:
        out = Path(a.out)
    else:
        out = Path(tempfile.mkdtemp(prefix="geninv-noise-grid-"))
    out.mkdir(parents=True, exist_ok=True)
    gens = tuple(x.strip() for x in a.generators.split(",") if x.strip())
    if not gens or any(g not in GENERATORS for g in gens):
        p.error(f"--generators: expected names from {', '.join(GENERATORS)}, received {a.generators!r}")
    results = [run_grid(points=points, batch=a.batch, dtype=d, seed=a.seed, methods=methods, progress=not a.no_progress,
                        generator=g, time_to_target=a.time_to_target)
               for g in gens for d in dtypes]
    cmd = "python -m geninv.bench.noise_grid " + " ".join(argv if argv is not None else __import__("sys").argv[1:])
    if not a.name.replace("_", "").replace("-", "").isalnum():
        p.error(f"--name: expected letters, digits, '_' or '-', received {a.name!r}")
    js, md = out / f"{a.name}.json", out / f"README_{a.name}.md"
    js.write_text(json.dumps({"command": cmd.strip(), "runs": results}, indent=1))
    md.write_text(readme_table(results, cmd.strip()))
    echo(f"wrote {js} and {md}")
    return out


if __name__ == "__main__":
    main()

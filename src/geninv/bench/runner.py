"""``geninv bench``: every method on the MNIST generator and a random two-layer one, side by side,
in one run; results (``bench.json``, ``solvers.json`` and a markdown table) to a fresh directory
under ``runs/bench/`` unless ``out`` names one; a directory that already holds results (the
committed ``benchmarks/results``) is written only with ``overwrite``.

What one run measures:

1. the machine: processor, threads, load average, the measured fp32 matrix-multiply peak
   (large square products and the solvers' own product shapes) and memory bandwidth, at the
   start and again at the end of the run;
2. throughput: wall time per signal at each batch size, best of repeats after a warm-up, in a
   fresh process per configuration (peak memory = that process's ``ru_maxrss``), with the
   final median image and latent SNR, analytic loop FLOPs and ``FlopCounterMode``-counted
   FLOPs, GFLOP/s and the roofline ratio against the measured peak. A configuration whose
   predicted time (linear in the batch from the previous batch size, for per-sample methods or
   from a batch of at least 32) exceeds ``budget`` seconds is skipped and the reason written
   down; a configuration that runs past ``4 budget`` is stopped and recorded as a timeout;
3. time to a target image SNR (default 40 dB) per method on a batch of ``curve_batch`` signals;
4. a cold and a warm Latent-Pursuit call on ``cold_batch`` MNIST-generator images;
5. optionally a ``torch.profiler`` breakdown of Latent-Pursuit and gradient descent;
6. the three performance targets (speed against gd, share of the matmul peak, a thousand
   images) as ratios from the numbers above.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import torch

from geninv.bench.machine import bandwidth_gbs, load_average, machine_info, matmul_peak, wait_for_load
from geninv.bench.worker import MARKER, jsonable, run_task

__all__ = ["BenchConfig", "run_bench", "default_generators", "quick_config", "targets_from"]

PER_SAMPLE = ("lp_layerwise",)


def default_generators() -> list[dict[str, Any]]:
    """The MNIST generator (shipped weights, or a random stand-in until they exist) and the
    paper's random two-layer generator of Fig. 4, ``[20, 200, 600]`` with tanh output."""
    return [
        {"label": "mnist", "name": "mnist"},
        {"label": "random_20_200_600", "dims": [20, 200, 600], "output": "tanh", "seed": 0, "bias": False},
    ]


@dataclass
class BenchConfig:
    """Options of one benchmark run (the CLI flags of ``geninv bench``).

    ``generators[0]`` is the primary generator: the signals-per-second table and the targets use it.
    """

    out: str = ""
    batches: list[int] = field(default_factory=lambda: [1, 64, 512, 4096])
    methods: list[str] | None = None
    generators: list[dict[str, Any]] = field(default_factory=default_generators)
    device: str = "cpu"
    dtype: str = "float32"
    threads: int | None = None
    budget: float = 300.0
    curve_batch: int = 512
    target_db: float = 40.0
    cold_batch: int = 1000
    cold_limit_s: float = 60.0
    isolate: bool = True
    profile: bool = True
    profile_batch: int = 512
    loop_iters: int = 100
    thread_scaling: bool = True
    peak_square: list[int] = field(default_factory=lambda: [1024, 2048, 3072])
    peak_min_time: float = 0.2
    min_time: float = 2.0
    max_repeats: int = 10
    wait_load: float | None = None
    max_wait: float = 3600.0
    gate_max_wait: float = 900.0
    quick: bool = False
    command: str | None = None
    overwrite: bool = False


def fresh_out(root: str | Path = "runs/bench") -> str:
    """A directory that does not exist yet: ``root/YYYYmmdd-HHMMSS`` (UTC), with a suffix if taken."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    path, k = Path(root) / stamp, 1
    while path.exists():
        path, k = Path(root) / f"{stamp}-{k}", k + 1
    return str(path)


def quick_config(**kw: Any) -> BenchConfig:
    """A shorter run: batches 1 and 64, short budgets, smaller peak probes, no profile or thread scaling.

    ``geninv bench --quick`` took 1,029 s (17 minutes) on a shared 2-core machine (load average
    6-9), 240 s of it two Adam configurations stopped at their time limit.
    """
    base: dict[str, Any] = dict(batches=[1, 64], budget=20.0, curve_batch=64, cold_batch=200, profile=False,
                                thread_scaling=False,
                                peak_square=[1024], peak_min_time=0.1, min_time=0.5, max_repeats=5, quick=True,
                                loop_iters=30)
    base.update(kw)
    return BenchConfig(**base)


class _Log:
    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream
        self.t0 = time.perf_counter()

    def __call__(self, msg: str) -> None:
        if self.stream is not None:
            la = load_average()
            self.stream.write(f"[bench {time.perf_counter() - self.t0:7.1f}s load {la[0] if la else '?'}] {msg}\n")
            self.stream.flush()


def _methods(cfg: BenchConfig) -> list[str]:
    from geninv.solvers import METHODS

    return list(cfg.methods) if cfg.methods else list(METHODS)


def _task(cfg: BenchConfig, gen: dict[str, Any], method: str, batch: int, kind: str, **extra: Any) -> dict[str, Any]:
    spec = {k: v for k, v in gen.items() if k != "label"}
    t: dict[str, Any] = {"kind": kind, "generator": spec, "generator_label": gen["label"], "method": method, "batch": batch,
                         "dtype": cfg.dtype, "device": cfg.device, "threads": cfg.threads, "min_time": cfg.min_time,
                         "max_repeats": cfg.max_repeats, "count_flops": method not in PER_SAMPLE}
    t.update(extra)
    return t


def _execute(cfg: BenchConfig, task: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run a task in a fresh interpreter (``cfg.isolate``) or in this process.

    With ``cfg.wait_load``, every task first waits (at most ``gate_max_wait`` seconds) for the
    1-minute load average to fall below it, so that a burst of other work on a shared machine
    pauses the benchmark instead of polluting it; the record says how long it waited and
    whether the load did fall."""
    gate = None
    if cfg.wait_load is not None:
        reached, secs = wait_for_load(cfg.wait_load, max_wait=cfg.gate_max_wait)
        gate = {"threshold": cfg.wait_load, "reached": reached, "waited_s": round(secs, 1)}
    rec = _execute_now(cfg, task, timeout)
    if gate is not None:
        rec["load_gate"] = gate
    return rec


def _execute_now(cfg: BenchConfig, task: dict[str, Any], timeout: float) -> dict[str, Any]:
    if not cfg.isolate:
        return run_task(task, isolated=False)  # type: ignore[no-any-return]
    env = dict(os.environ)
    env.setdefault("PYTHONWARNINGS", "ignore")
    try:
        p = subprocess.run([sys.executable, "-m", "geninv.bench.worker"], input=json.dumps(task), capture_output=True,
                           text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"kind": task["kind"], "generator": task["generator_label"], "method": task["method"], "batch": task["batch"],
                "status": "timeout", "reason": f"no result within {timeout:.0f} s (process killed)"}
    for line in p.stdout.splitlines():
        if line.startswith(MARKER):
            return json.loads(line[len(MARKER):])  # type: ignore[no-any-return]
    tail = " ".join(p.stderr.split())[-400:]
    return {"kind": task["kind"], "generator": task["generator_label"], "method": task["method"], "batch": task["batch"],
            "status": "error", "reason": f"worker exited with status {p.returncode}: {tail}"}


def _solver_shapes(gens: dict[str, Any], batch: int) -> dict[str, list[tuple[int, int, int, bool]]]:
    """The products of one iteration for each generator at ``batch``: ``x W^T`` and ``r W`` per layer."""
    shapes: dict[str, list[tuple[int, int, int, bool]]] = {}
    for label, meta in gens.items():
        dims = meta["dims"]
        lst = []
        for i in range(len(dims) - 1):
            n_in, n_out = dims[i], dims[i + 1]
            lst.append((batch, n_in, n_out, True))
            lst.append((batch, n_out, n_in, False))
        shapes[label] = lst
    return shapes


def _peak(cfg: BenchConfig, gens: dict[str, Any], log: _Log) -> dict[str, Any]:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    log("measuring the fp32 matrix-multiply peak and memory bandwidth")
    pk = matmul_peak(_solver_shapes(gens, cfg.curve_batch), square=cfg.peak_square, device=cfg.device,
                     min_time=cfg.peak_min_time)
    pk["shapes_batch"] = cfg.curve_batch
    pk["bandwidth_gbs"] = bandwidth_gbs(device=cfg.device, n=1 << (22 if cfg.quick else 25))
    pk["threads"] = torch.get_num_threads()
    return pk


def _generator_meta(cfg: BenchConfig) -> dict[str, Any]:
    from geninv.bench.worker import build_generator

    out = {}
    for gen in cfg.generators:
        _, meta = build_generator({k: v for k, v in gen.items() if k != "label"}, torch.float32, "cpu")
        out[gen["label"]] = meta
    return out


def _throughput(cfg: BenchConfig, log: _Log) -> list[dict[str, Any]]:
    recs = []
    for gen in cfg.generators:
        for method in _methods(cfg):
            last: dict[str, Any] | None = None
            for B in sorted(cfg.batches):
                pred = None
                # Linear in B: exact for per-sample methods; an overestimate for batched ones from a
                # batch that already fills the machine (>= 32), and meaningless below (overheads).
                if last is not None and last.get("status") == "ok" and (method in PER_SAMPLE or last["batch"] >= 32):
                    pred = last["seconds_min"] * B / last["batch"]
                if pred is not None and pred > cfg.budget:
                    rec = {"kind": "solve", "generator": gen["label"], "method": method, "batch": B, "status": "skipped",
                           "reason": f"predicted {pred:.0f} s (linear in B from batch {last['batch']}) > budget "  # type: ignore[index]
                                     f"{cfg.budget:.0f} s per configuration"}
                    log(f"{gen['label']:>18s} {method:>15s} B={B:<5d} skipped: {rec['reason']}")
                    recs.append(rec)
                    continue
                timeout = max(4 * cfg.budget, 120.0)
                rec = _execute(cfg, _task(cfg, gen, method, B, "solve"), timeout)
                recs.append(rec)
                if rec.get("status") == "ok":
                    last = rec
                    fl = rec.get("flops", {})
                    log(f"{gen['label']:>18s} {method:>15s} B={B:<5d} {rec['per_signal_ms']:9.3f} ms/signal "
                        f"snr_y {_fmt(rec['snr_image_db']['median'])} dB  loop {_fmt(fl.get('loop_gflops'))} GFLOP/s  "
                        f"peak {_fmt(rec['memory'].get('peak_rss_mb'))} MB")
                else:
                    log(f"{gen['label']:>18s} {method:>15s} B={B:<5d} {rec.get('status')}: {rec.get('reason')}")
    return recs


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.1f}"


def _lookup(recs: list[dict[str, Any]], gen: str, method: str, batch: int | None = None) -> dict[str, Any] | None:
    for r in recs:
        if r.get("generator") == gen and r.get("method") == method and (batch is None or r.get("batch") == batch):
            return r
    return None


def _curve_batch(cfg: BenchConfig, thr: list[dict[str, Any]], gen: str, method: str) -> tuple[int | None, str | None]:
    """The batch for a method's time-to-target curve: ``curve_batch``, or the largest measured
    batch below it when the method's predicted time there exceeds the budget."""
    ok = sorted((r for r in thr if r.get("generator") == gen and r.get("method") == method and r.get("status") == "ok"),
                key=lambda r: r["batch"])
    if not ok:
        return None, "no successful throughput measurement"
    best = ok[-1]
    for r in ok:
        if r["batch"] <= cfg.curve_batch:
            best = r
    pred = best["seconds_min"] * cfg.curve_batch / best["batch"]
    if pred <= cfg.budget:
        return cfg.curve_batch, None
    b = max(1, int(cfg.budget / max(best["seconds_min"] / best["batch"], 1e-9)))
    b = min(b, cfg.curve_batch)
    return b, f"batch {cfg.curve_batch} predicted {pred:.0f} s > budget {cfg.budget:.0f} s: measured at batch {b}"


def _curves(cfg: BenchConfig, thr: list[dict[str, Any]], log: _Log) -> list[dict[str, Any]]:
    recs = []
    for gi, gen in enumerate(cfg.generators):
        methods = _methods(cfg)
        # gd first: its final SNR is a target of the others (target a).
        order = (["gd"] if "gd" in methods else []) + [m for m in methods if m != "gd"]
        s_gd = None
        for method in order:
            B, note = _curve_batch(cfg, thr, gen["label"], method)
            if B is None:
                recs.append({"kind": "curve", "generator": gen["label"], "method": method, "status": "skipped", "reason": note})
                continue
            targets = [cfg.target_db] + ([s_gd] if (s_gd is not None and method != "gd") else [])
            rec = _execute(cfg, _task(cfg, gen, method, B, "curve", targets_db=targets), max(6 * cfg.budget, 180.0))
            if note:
                rec["note"] = note
            recs.append(rec)
            if method == "gd" and rec.get("status") == "ok":
                s_gd = rec.get("final_snr_db")
            if rec.get("status") == "ok":
                st = ", ".join(f"{d['target_db']:.1f} dB: {_fmt(d['seconds'])} s" for d in rec["seconds_to_target"])
                log(f"{gen['label']:>18s} {method:>15s} curve B={B} ({rec['mode']}) final {_fmt(rec['final_snr_db'])} dB; {st}")
            else:
                log(f"{gen['label']:>18s} {method:>15s} curve {rec.get('status')}: {rec.get('reason')}")
        del gi
    return recs


def _profile(cfg: BenchConfig, log: _Log) -> dict[str, Any]:
    """``torch.profiler`` tables for Latent-Pursuit and gd on the primary generator (in-process)."""
    from torch.profiler import ProfilerActivity, profile

    import geninv
    from geninv.bench.worker import build_generator

    out: dict[str, Any] = {}
    gen = cfg.generators[0]
    dtype = {"float32": torch.float32, "float64": torch.float64}[cfg.dtype]
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    G, _ = build_generator({k: v for k, v in gen.items() if k != "label"}, dtype, cfg.device)
    with torch.no_grad():
        z, y = G.sample(cfg.profile_batch, seed=1)
    outdir = Path(cfg.out)
    for method in ("latent_pursuit", "gd"):
        if method not in _methods(cfg):
            continue
        log(f"profiling {method} at batch {cfg.profile_batch}")
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            geninv.invert(G, y[:4], method=method)
            t = time.perf_counter()
            res = geninv.invert(G, y, method=method)
            plain = time.perf_counter() - t
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                t = time.perf_counter()
                geninv.invert(G, y, method=method)
                wall = time.perf_counter() - t
        ka = prof.key_averages()
        rows = sorted(ka, key=lambda e: e.self_cpu_time_total, reverse=True)
        total_self = sum(e.self_cpu_time_total for e in ka) / 1e6
        top = [{"op": e.key, "calls": e.count, "self_s": e.self_cpu_time_total / 1e6,
                "self_share": (e.self_cpu_time_total / 1e6) / wall} for e in rows[:25]]
        mm_ops = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")
        mm = sum(e.self_cpu_time_total for e in ka if e.key in mm_ops) / 1e6
        n_ops = sum(e.count for e in ka)
        table = ka.table(sort_by="self_cpu_time_total", row_limit=40)
        path = outdir / f"profile_{gen['label']}_{method}.txt"
        path.write_text(f"# geninv bench profile: {method} on {gen['label']}, batch {cfg.profile_batch}, "
                        f"{torch.get_num_threads()} threads, wall {wall:.3f} s under the profiler ({plain:.3f} s without)\n"
                        + table + "\n")
        out[method] = {
            "batch": cfg.profile_batch, "wall_s": wall, "wall_unprofiled_s": plain, "ops": n_ops,
            "op_self_s_total": total_self, "matmul_self_s": mm, "matmul_share": mm / wall,
            "outside_ops_share": max(0.0, 1 - total_self / wall),
            "stage_seconds": {s: float(v) for s, v in res.info.get("seconds", {}).items()}
            if isinstance(res.info.get("seconds"), dict) else None,
            "top_ops": top, "table": str(path),
        }
    return out


def _loops(cfg: BenchConfig, log: _Log) -> list[dict[str, Any]]:
    """The iteration loops at ``curve_batch`` on every generator (fixed iterations, exact FLOPs)."""
    recs = []
    for gen in cfg.generators:
        task = _task(cfg, gen, "loops", cfg.curve_batch, "loops", loop_iters=cfg.loop_iters, methods=_methods(cfg))
        rec = _execute(cfg, task, max(4 * cfg.budget, 300.0))
        recs.append(rec)
        if rec.get("status") == "ok":
            log(f"{gen['label']:>18s} loops at B={cfg.curve_batch}: " + ", ".join(
                f"{r['method']} {r['loop']} {_fmt(r['gflops'])}" for r in rec["loops"]) + " GFLOP/s")
        else:
            log(f"{gen['label']:>18s} loops {rec.get('status')}: {rec.get('reason')}")
    return recs


def _formulations(cfg: BenchConfig, log: _Log) -> list[dict[str, Any]]:
    """Masked full matrices vs gathered per-sample matrices vs a per-sample loop, at ``curve_batch``."""
    recs = []
    for gen in cfg.generators:
        task = _task(cfg, gen, "formulations", cfg.curve_batch, "formulations", loop_iters=max(10, cfg.loop_iters // 2))
        rec = _execute(cfg, task, max(4 * cfg.budget, 300.0))
        recs.append(rec)
        if rec.get("status") == "ok" and rec.get("formulations"):
            log(f"{gen['label']:>18s} formulations at B={cfg.curve_batch}: " + ", ".join(
                f"{r['formulation']} {1e3 * r['seconds_per_iteration']:.2f} ms/it" for r in rec["formulations"]))
        elif rec.get("status") != "ok":
            log(f"{gen['label']:>18s} formulations {rec.get('status')}: {rec.get('reason')}")
    return recs


def _thread_scaling(cfg: BenchConfig, log: _Log) -> list[dict[str, Any]]:
    """Latent-Pursuit and gd at ``curve_batch`` on the primary generator with 1 thread and with
    every core: on a busy machine, more threads can be slower (OpenMP threads wait for cores)."""
    counts = sorted({1, os.cpu_count() or 1})
    recs = []
    for method in ("latent_pursuit", "gd"):
        if method not in _methods(cfg):
            continue
        for th in counts:
            task = _task(cfg, cfg.generators[0], method, cfg.curve_batch, "solve", count_flops=False, max_repeats=2,
                         min_time=0.0, min_repeats=2)
            task["threads"] = th
            rec = _execute(cfg, task, max(4 * cfg.budget, 300.0))
            rec["threads"] = th
            recs.append({k: rec.get(k) for k in ("method", "batch", "threads", "status", "reason", "seconds_min",
                                                   "seconds_median", "load_average")})
            if rec.get("status") == "ok":
                log(f"threads={th}: {method} B={cfg.curve_batch} {rec['seconds_min']:.2f} s")
    return recs


def targets_from(cfg: BenchConfig, thr: list[dict[str, Any]], curves: list[dict[str, Any]], cold: dict[str, Any] | None,
                 peak_gflops: float | None, loops: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The performance targets as ratios from this run's numbers (primary generator)."""
    gen = cfg.generators[0]["label"]
    B = cfg.curve_batch
    out: dict[str, Any] = {}
    # (a) time for gd to reach its own final median image SNR / time for Latent-Pursuit to reach it.
    gd_c = next((c for c in curves if c.get("generator") == gen and c.get("method") == "gd" and c.get("status") == "ok"), None)
    lp_c = next((c for c in curves if c.get("generator") == gen and c.get("method") == "latent_pursuit" and c.get("status") == "ok"), None)
    a: dict[str, Any] = {"goal": "Latent-Pursuit reaches gd's final median image SNR >= 10x faster than gd "
                                 f"({gen}, clean, batch {B})", "threshold": 10.0}
    if gd_c and lp_c:
        s_gd = gd_c["final_snr_db"]
        t_gd = min((p[0] for p in gd_c["points"] if p[1] >= s_gd), default=None)
        t_lp = next((d["seconds"] for d in lp_c["seconds_to_target"] if abs(d["target_db"] - s_gd) < 1e-9), None)
        a.update(gd_final_snr_db=s_gd, gd_seconds=t_gd, latent_pursuit_seconds=t_lp,
                 latent_pursuit_final_snr_db=lp_c["final_snr_db"], gd_batch=gd_c["batch"], latent_pursuit_batch=lp_c["batch"])
        if gd_c["batch"] != lp_c["batch"]:
            a["note_batch"] = "the two curves ran at different batch sizes (budget): the ratio compares their times as measured"
        a["ratio"] = (t_gd / t_lp) if (t_gd and t_lp) else None
        t40_gd = next((d["seconds"] for d in gd_c["seconds_to_target"] if d["target_db"] == cfg.target_db), None)
        t40_lp = next((d["seconds"] for d in lp_c["seconds_to_target"] if d["target_db"] == cfg.target_db), None)
        a["ratio_at_target_db"] = (t40_gd / t40_lp) if (t40_gd and t40_lp) else None
        a["met"] = a["ratio"] is not None and a["ratio"] >= 10.0
        if t_lp is None:
            a["note"] = "Latent-Pursuit's sweep never reached gd's final SNR"
    else:
        a.update(ratio=None, met=False, note="gd or latent_pursuit curve missing")
    out["a_speed_vs_gd"] = a
    # (b) GFLOP/s of Latent-Pursuit's iteration loops at batch B / measured square fp32 peak.
    b: dict[str, Any] = {"goal": f"solver loops >= 40% of the measured fp32 matmul peak at batch {B}", "threshold": 0.4,
                         "peak_gflops": peak_gflops,
                         "measure": "Latent-Pursuit's FISTA and linearized-ADMM loops, each run 'loop_iters' iterations on "
                                    "the whole batch (checks included), exact products over their summed time"}
    lrec = next((r for r in (loops or []) if r.get("generator") == gen and r.get("status") == "ok"), None)
    if lrec and peak_gflops and "latent_pursuit" in lrec["by_method"]:
        g = lrec["by_method"]["latent_pursuit"]["gflops"]
        b.update(latent_pursuit_loop_gflops=g, ratio=(g / peak_gflops) if g else None)
        b["met"] = b["ratio"] is not None and b["ratio"] >= 0.4
        b["per_loop"] = {f"{r['method']}: {r['loop']}": (r["gflops"] / peak_gflops if r.get("gflops") else None)
                         for r in lrec["loops"]}
        b["per_method"] = {m: (v["gflops"] / peak_gflops if v.get("gflops") else None) for m, v in lrec["by_method"].items()}
    else:
        b.update(ratio=None, met=False, note=f"no loop measurement at batch {B}")
    lp = _lookup(thr, gen, "latent_pursuit", B)
    if lp and lp.get("status") == "ok" and peak_gflops:
        g = lp["flops"].get("loop_gflops")
        b["whole_stages"] = {"gflops": g, "ratio": (g / peak_gflops) if g else None,
                             "note": "a full solve's stages (warm starts, checks and stragglers included) over their wall time"}
    out["b_roofline"] = b
    # (c) cold_batch images inverted by Latent-Pursuit to median image SNR > 40 dB within 60 s.
    c: dict[str, Any] = {"goal": f"{cfg.cold_batch} clean images inverted by Latent-Pursuit to median image SNR > "
                                 f"{cfg.target_db:g} dB within {cfg.cold_limit_s:g} s", "limit_s": cfg.cold_limit_s}
    if cold and cold.get("status") == "ok":
        cr, wr = cold["runs"]
        c.update(cold_seconds=cr["seconds"], warm_seconds=wr["seconds"], median_image_snr_db=cr["snr_image_db"]["median"],
                 ratio=cfg.cold_limit_s / cr["seconds"])
        snr_ok = cr["snr_image_db"]["median"] is None or cr["snr_image_db"]["median"] > cfg.target_db  # None = exact (inf)
        c["met"] = cr["seconds"] <= cfg.cold_limit_s and snr_ok
    else:
        c.update(ratio=None, met=False, note=str(cold.get("reason") if cold else "not run"))
    out["c_thousand_images"] = c
    return out


def _solvers_json(cfg: BenchConfig, thr: list[dict[str, Any]], gens: dict[str, Any], machine: dict[str, Any]) -> dict[str, Any]:
    """Signals per second at B = 1, 64, 512 per method on the 20-128-392-784 network."""
    gen = cfg.generators[0]["label"]
    table: dict[str, dict[str, Any]] = {}
    for r in thr:
        if r.get("generator") != gen or r.get("batch") not in (1, 64, 512):
            continue
        entry = table.setdefault(r["method"], {})
        entry[str(r["batch"])] = r.get("signals_per_s") if r.get("status") == "ok" else None
        if r.get("status") != "ok":
            entry.setdefault("notes", {})[str(r["batch"])] = f"{r.get('status')}: {r.get('reason')}"
    return {"network": "-".join(str(d) for d in gens[gen]["dims"]), "generator": gens[gen], "dtype": cfg.dtype,
            "device": cfg.device, "threads": machine.get("torch_threads"), "unit": "signals per second (best of repeats)",
            "signals_per_second": table, "source": "bench.json of the same run", "command": cfg.command}


def _code_version() -> dict[str, Any]:
    """The git commit of the source tree and whether the solvers had uncommitted changes."""
    import geninv

    root = Path(geninv.__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "src/geninv/solvers"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return {"version": geninv.__version__, "commit": None}
    return {"version": geninv.__version__, "commit": head.stdout.strip() or None,
            "solvers_uncommitted": [ln[3:] for ln in dirty.stdout.splitlines()] if dirty.returncode == 0 else None}


def run_bench(cfg: BenchConfig, *, log_stream: TextIO | None = sys.stderr) -> dict[str, Any]:
    """Run the benchmark and write ``bench.json``, ``solvers.json`` and ``README.md`` under ``cfg.out``.

    Returns the ``bench.json`` content.
    """
    from geninv.bench.report import markdown

    log = _Log(log_stream)
    if not cfg.out:
        cfg.out = fresh_out()
    out = Path(cfg.out)
    held = [f for f in ("bench.json", "solvers.json") if (out / f).exists()]
    if held and not cfg.overwrite:
        from geninv.exceptions import InputError

        raise InputError(f"--out: expected a directory without benchmark results, received {str(out)!r}, which holds "
                         f"{', '.join(held)} (pass --overwrite to replace them, or leave --out out for a fresh directory)")
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    waited = None
    if cfg.wait_load is not None:
        reached, secs = wait_for_load(cfg.wait_load, max_wait=cfg.max_wait, log=log)
        waited = {"threshold": cfg.wait_load, "reached": reached, "seconds": secs}
        if not reached:
            from geninv.exceptions import GenInvError

            raise GenInvError(f"--wait-load: the 1-minute load average stayed >= {cfg.wait_load} for {secs:.0f} s "
                              "(--max-wait); nothing was measured")
    t0 = time.perf_counter()
    code = _code_version()
    la_start = load_average()
    machine = machine_info(cfg.device)
    gens = _generator_meta(cfg)
    peak_start = _peak(cfg, gens, log)
    log(f"peak {peak_start['peak_gflops']:.1f} GFLOP/s (square), bandwidth {peak_start['bandwidth_gbs']:.1f} GB/s")
    thr = _throughput(cfg, log)
    curves = _curves(cfg, thr, log)
    cold = None
    if cfg.cold_batch and (cfg.methods is None or "latent_pursuit" in cfg.methods):
        log(f"cold + warm Latent-Pursuit on {cfg.cold_batch} signals")
        cold = _execute(cfg, _task(cfg, cfg.generators[0], "latent_pursuit", cfg.cold_batch, "cold"), max(4 * cfg.budget, 300.0))
        if cold.get("status") == "ok":
            log(f"cold {cold['runs'][0]['seconds']:.2f} s, warm {cold['runs'][1]['seconds']:.2f} s, "
                f"median image SNR {_fmt(cold['runs'][0]['snr_image_db']['median'])} dB")
    loops = _loops(cfg, log)
    forms = _formulations(cfg, log)
    threads = _thread_scaling(cfg, log) if cfg.thread_scaling else None
    prof = _profile(cfg, log) if cfg.profile else None
    peak_end = _peak(cfg, gens, log)
    peaks = [p["peak_gflops"] for p in (peak_start, peak_end) if p.get("peak_gflops")]
    peak = max(peaks) if peaks else None
    # Roofline ratios of every measurement against the larger of the two peak measurements.
    for r in thr:
        if r.get("status") == "ok" and peak:
            fl = r["flops"]
            fl["roofline_loop"] = fl["loop_gflops"] / peak if fl.get("loop_gflops") else None
            fl["roofline_total"] = fl["total_gflops"] / peak if fl.get("total_gflops") else None
    for r in loops:
        if r.get("status") == "ok" and peak:
            for x in r["loops"]:
                x["roofline"] = x["gflops"] / peak if x.get("gflops") else None
    targets = targets_from(cfg, thr, curves, cold, peak, loops)
    la_end = load_average()
    bench = {
        "schema": "geninv-bench/1",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": cfg.command,
        "code": code,
        "config": asdict(cfg),
        "machine": machine,
        "load_average": {"start": la_start, "end": la_end, "wait": waited,
                         "note": "1/5/15-minute load averages; timings are trustworthy only on an otherwise idle machine"},
        "generators": gens,
        "peak": {"start": peak_start, "end": peak_end, "peak_gflops": peak,
                 "note": "roofline ratios use the larger of the two square-product peaks (conservative)"},
        "throughput": thr,
        "time_to_target": curves,
        "cold": cold,
        "loops": loops,
        "formulations": forms,
        "thread_scaling": threads,
        "profile": prof,
        "targets": targets,
        "seconds": time.perf_counter() - t0,
    }
    bench = jsonable(bench)
    (out / "bench.json").write_text(json.dumps(bench, indent=1) + "\n")
    (out / "solvers.json").write_text(json.dumps(jsonable(_solvers_json(cfg, thr, gens, machine)), indent=1) + "\n")
    (out / "README.md").write_text(markdown(bench))
    log(f"wrote {out / 'bench.json'}, {out / 'solvers.json'}, {out / 'README.md'}")
    return bench  # type: ignore[no-any-return]

"""``geninv bench``: every inversion method timed side by side, written to a results directory."""

from __future__ import annotations

import argparse
import sys

from geninv.cli.common import add_runtime, check_bound


def register_bench(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``geninv bench`` (its flags and its handler) to ``sub``."""
    p = sub.add_parser(
        "bench", help="benchmark every method side by side; writes bench.json, solvers.json and README.md to a fresh "
                      "directory",
        description="Time every inversion method on the shipped MNIST generator and a random 20-200-600 tanh "
        "generator at several batch sizes, each configuration in a fresh process: time per signal, final SNR, peak "
        "memory, GFLOP/s against the measured fp32 matmul peak, time to a target SNR, and the speed targets as "
        "ratios. Results go to a fresh directory under runs/bench/ unless --out says otherwise; a directory that "
        "already holds results (such as the committed benchmarks/results) is written only with --overwrite. Take "
        "final numbers on an idle machine (see --wait-load).",
    )
    p.add_argument("--quick", action="store_true",
                   help="batches 1,64, short budgets, no profile or thread scaling: 17 minutes measured on a shared "
                        "2-core machine (load 6-9), of which 4 are two Adam runs stopped at their 120 s limit")
    p.add_argument("--out", default=None,
                   help="output directory (default: a fresh runs/bench/YYYYmmdd-HHMMSS)")
    p.add_argument("--overwrite", action="store_true",
                   help="allow --out to be a directory that already holds results (e.g. benchmarks/results)")
    p.add_argument("--batches", default=None, help="comma-separated batch sizes (default 1,64,512,4096; quick 1,64)")
    p.add_argument("--methods", default=None, help="comma-separated methods (default: every method of geninv.invert)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="precision (default float32)")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds a configuration may be predicted to take before it is skipped (default 300; quick 20)")
    p.add_argument("--curve-batch", type=int, default=None, help="batch of the time-to-target and target runs (default 512)")
    p.add_argument("--target-db", type=float, default=40.0, help="target median image SNR (default 40)")
    p.add_argument("--cold-batch", type=int, default=None, help="images of the cold Latent-Pursuit run (default 1000; 0 = skip)")
    p.add_argument("--profile", action=argparse.BooleanOptionalAction, default=None, help="torch.profiler breakdown")
    p.add_argument("--wait-load", type=float, default=None, metavar="LOAD",
                   help="first wait until the 1-minute load average is below LOAD (at most --max-wait seconds)")
    p.add_argument("--max-wait", type=float, default=None,
                   help="with --wait-load: seconds it waits at most (default 3600)")
    p.add_argument("--no-isolate", action="store_true", help="run every configuration in this process (no peak memory)")
    add_runtime(p)

    def run(a: argparse.Namespace) -> int:
        import math
        import shlex

        from geninv.bench import BenchConfig, quick_config, run_bench
        from geninv.exceptions import InputError
        from geninv.solvers import METHODS

        def ints(text: str, name: str) -> list[int]:
            try:
                vals = [int(v) for v in text.split(",") if v.strip()]
            except ValueError:
                raise InputError(f"{name}: expected comma-separated positive integers, received {text!r}") from None
            if not vals or min(vals) < 1:
                raise InputError(f"{name}: expected comma-separated positive integers, received {text!r}")
            return vals

        from geninv._threads import default_threads
        from geninv.bench.runner import fresh_out
        from geninv.train.gan import resolve_device

        if a.max_wait is not None and a.wait_load is None:
            raise InputError(f"--max-wait: not used without --wait-load, received --max-wait {a.max_wait:g}")
        if a.overwrite and a.out is None:
            raise InputError("--overwrite: not used without --out (the default output directory is always fresh)")
        check_bound(a.budget, "--budget", 0.0, strict=True)
        check_bound(a.curve_batch, "--curve-batch", 1)
        check_bound(a.cold_batch, "--cold-batch", 0)
        check_bound(a.wait_load, "--wait-load", 0.0, strict=True)
        check_bound(a.max_wait, "--max-wait", 0.0)
        if not math.isfinite(a.target_db):
            raise InputError(f"--target-db: expected a finite SNR in dB, received {a.target_db}")
        device = str(resolve_device(a.device, "--device"))  # "auto" resolved once, for every worker
        kw: dict[str, object] = {"out": a.out or fresh_out(), "overwrite": a.overwrite, "device": device,
                                 "dtype": a.dtype, "threads": a.threads or default_threads(),
                                 "target_db": a.target_db, "wait_load": a.wait_load,
                                 "isolate": not a.no_isolate, "command": shlex.join([sys.argv[0].rsplit("/", 1)[-1], *sys.argv[1:]])}
        if a.batches:
            kw["batches"] = ints(a.batches, "--batches")
        if a.methods:
            methods = [m.strip() for m in a.methods.split(",") if m.strip()]
            unknown = [m for m in methods if m not in METHODS]
            if unknown or not methods:
                raise InputError(f"--methods: expected names from {', '.join(METHODS)}, received {a.methods!r}")
            kw["methods"] = methods
        for name in ("budget", "curve_batch", "cold_batch", "profile", "max_wait"):
            if getattr(a, name) is not None:
                kw[name] = getattr(a, name)
        if a.threads is not None and a.threads < 1:
            raise InputError(f"--threads: expected a positive integer, received {a.threads}")
        cfg = quick_config(**kw) if a.quick else BenchConfig(**kw)  # type: ignore[arg-type]
        bench = run_bench(cfg)
        print(f"wrote {kw['out']}")
        for key, t in bench["targets"].items():
            r = t.get("ratio")
            print(f"{key}: ratio {'-' if r is None else f'{r:.2f}'} ({'met' if t.get('met') else 'not met'}): {t['goal']}")
        return 0

    p.set_defaults(func=run)


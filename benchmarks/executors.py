"""One phase diagram on every executor, side by side in one run: wall time and identical records.

    .venv/bin/python benchmarks/executors.py [--trials 4] [--workers 2] [--out benchmarks/results]

Runs the same diagram (bias-free ReLU networks [n_0, n_1, 150], identity output, weights
N(0, 1/n_out); 10 x 7 grid) from scratch on ``serial``, ``processes:W`` and, when dask is
installed, ``dask:local:W``, each worker pinned to 1 torch thread, and writes
``executors.json``: wall seconds per executor, the speed-up over serial, the machine's load
average before each run, and whether the records equal the serial run's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

SPEC = "x=n1:10,20,30,40,60,80,120,160,240,320;y=n0:2,4,6,8,12,16,24;n=150;output=identity;bias=0;weights=1/n_out"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results")
    a = ap.parse_args()

    from geninv.experiments.phase import parse_phase, run_phase
    from geninv.experiments.records import comparable, load_records

    executors = ["serial", f"processes:{a.workers}"]
    try:
        import distributed  # noqa: F401

        executors.append(f"dask:local:{a.workers}")
    except ImportError:
        pass
    tmp = Path(tempfile.mkdtemp(prefix="geninv-executors-"))
    rows = []
    ref = None
    try:
        for ex in executors:
            cfg = parse_phase(SPEC, trials=a.trials)
            load = os.getloadavg()[0]
            t0 = time.perf_counter()
            res = run_phase(cfg, tmp / ex.replace(":", "_"), executor=ex, threads=1, progress=False, plots=False)
            secs = time.perf_counter() - t0
            recs = comparable(load_records(tmp / ex.replace(":", "_")))
            ref = recs if ref is None else ref
            rows.append({"executor": ex, "units": res["ran"], "records": len(recs), "seconds": round(secs, 2),
                         "load_average_before": round(load, 2), "records_equal_serial": recs == ref})
            print(f"{ex:>16}: {res['ran']} units, {secs:.1f} s (load average {load:.1f} before), "
                  f"records equal serial: {recs == ref}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    base = rows[0]["seconds"]
    for r in rows:
        r["speedup_vs_serial"] = round(base / r["seconds"], 2)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"diagram": SPEC, "trials": a.trials, "workers": a.workers, "cpus": os.cpu_count(), "runs": rows,
           "command": f"python benchmarks/executors.py --trials {a.trials} --workers {a.workers}"}
    (out / "executors.json").write_text(json.dumps(doc, indent=2) + "\n")
    print(f"written: {out / 'executors.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

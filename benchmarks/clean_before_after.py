"""Clean signals, two source trees side by side: the default method (``geninv.invert(G, y)``) on
512 clean MNIST-generator signals, time per call (best of 3) and median z SNR, each tree in its
own process, alternating ``--rounds`` times; written to ``--out`` as JSON.

    python benchmarks/clean_before_after.py --before <older checkout>/src --after src --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

_CHILD = r"""
import json, time, warnings, torch
torch.set_num_threads(1); warnings.simplefilter("ignore")
import geninv
from geninv.metrics import snr
G = geninv.load_mnist_generator()
z, y = G.sample(512, seed=0)
geninv.invert(G, y[:8])
ts = []
for _ in range(3):
    t0 = time.perf_counter(); r = geninv.invert(G, y); ts.append(time.perf_counter() - t0)
q = snr(z.double(), r.z.double())
print(json.dumps({"seconds": min(ts), "median_z_snr_db": float(q.median()), "below_40": int((q < 40).sum())}))
"""


def _run(src: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(Path(src).resolve()), OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, help="the older tree's src/ directory")
    ap.add_argument("--after", required=True, help="the newer tree's src/ directory")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    rows = []
    for k in range(a.rounds):
        for name, src in (("before", a.before), ("after", a.after)):
            r = dict(_run(src), tree=name, round=k)
            rows.append(r)
            print(r, flush=True)
    best = {n: min(r["seconds"] for r in rows if r["tree"] == n) for n in ("before", "after")}
    res = {"command": " ".join(sys.argv), "rows": rows, "after_over_before": best["after"] / best["before"]}
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "clean_before_after.json").write_text(json.dumps(res, indent=1))
    print(f"after / before (best of each): {res['after_over_before']:.3f}")


if __name__ == "__main__":
    main()

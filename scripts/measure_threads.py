"""Time a short inversion job under the thread settings geninv could default to, on an idle
machine and with one CPU-bound process per core running; prints a table and writes JSON.

Each setting runs in a fresh interpreter (OpenMP reads its wait policy when torch loads).
The job: Latent-Pursuit on 256 signals of the shipped MNIST generator, float32, then
50 iterations of gd on 64 of them (a few seconds in all on one idle core).

    python scripts/measure_threads.py --json benchmarks/results/threads_idle.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

JOB = r"""
import time, torch, warnings, geninv
warnings.simplefilter("ignore")
G = geninv.load_mnist_generator().to(dtype=torch.float32)
_, y = G.sample(256, seed=0)
t0 = time.perf_counter()
geninv.invert(G, y, method="latent_pursuit")
geninv.invert(G, y[:64], method="gd", max_iter=50)
print(time.perf_counter() - t0, torch.get_num_threads())
"""

SETTINGS = {
    "torch default (threads = cores, OpenMP default wait)": {"threads": None, "policy": None},
    "threads = cores, OMP_WAIT_POLICY=PASSIVE": {"threads": None, "policy": "PASSIVE"},
    "1 thread": {"threads": 1, "policy": None},
}


def _busy() -> list[subprocess.Popen[bytes]]:
    n = os.cpu_count() or 1
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def _time(setting: dict[str, object]) -> tuple[float, int]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GENINV_THREADS")}
    if setting["policy"]:
        env["OMP_WAIT_POLICY"] = str(setting["policy"])
    if setting["threads"]:
        env["OMP_NUM_THREADS"] = str(setting["threads"])
    env["GENINV_NO_THREAD_DEFAULTS"] = "1"  # measure the raw settings, not geninv's default
    p = subprocess.run([sys.executable, "-c", JOB], capture_output=True, text=True, env=env, timeout=900, check=True)
    secs, threads = p.stdout.split()[-2:]
    return float(secs), int(threads)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=None, help="write the timings here")
    a = ap.parse_args()
    rows = {}
    for name, s in SETTINGS.items():
        idle, threads = _time(s)
        procs = _busy()
        try:
            time.sleep(0.5)
            loaded, _ = _time(s)
        finally:
            for p in procs:
                p.kill()
                p.wait()
        rows[name] = {"threads": threads, "idle_s": idle, "loaded_s": loaded, "loaded_over_idle": loaded / idle}
        print(f"{name:55s} threads {threads}  idle {idle:7.2f} s  loaded {loaded:7.2f} s  ratio {loaded / idle:6.2f}",
              flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"job": JOB.strip(), "cpu_count": os.cpu_count(), "settings": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

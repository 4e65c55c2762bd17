"""Side-by-side ``geninv bench --quick`` of two source trees, method by method in one run.

Used to check that a change leaves the benchmark's numbers where they were: for each method the
two trees are benchmarked one after the other (``python -m geninv bench --quick --methods M``,
each configuration in a fresh process as the bench does), so both see the same machine load.
With ``--rounds N`` each tree is benchmarked N times per method, in alternating order (before,
after; after, before; ...), so that a drift of the machine's load hits both alike. Writes
``compare_versions.json`` and a Markdown table (time per signal, the fastest round of each tree,
and median image / latent SNR, before and after, with the ratio of the two times and each round's
ratio: their spread is the run's noise) into ``--out``.

    python benchmarks/compare_versions.py --before /path/to/old/src --after src --out runs/compare --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

METHODS = ("latent_pursuit", "layered_bp", "oracle", "auto", "hybrid", "gd", "lp_layerwise", "adam")


def _bench(src: Path, method: str, out: Path, threads: int) -> list[dict]:
    env = dict(os.environ, PYTHONPATH=str(src.resolve()), OMP_NUM_THREADS=str(threads), OMP_WAIT_POLICY="PASSIVE")
    cmd = [sys.executable, "-c", "import sys; from geninv.cli import main; sys.exit(main())", "bench", "--quick", "--methods", method, "--out", str(out),
           "--threads", str(threads), "--no-profile"]
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    rows = json.loads((out / "bench.json").read_text())["throughput"]
    return [r for r in rows if r.get("kind") == "solve"]


def _key(r: dict) -> tuple:
    return (r["generator"], r["method"], r["batch"], r["dtype"])


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", type=Path, required=True, help="the older tree's src/ directory")
    p.add_argument("--after", type=Path, required=True, help="the newer tree's src/ directory")
    p.add_argument("--out", type=Path, required=True, help="output directory (created)")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=1, help="benchmarks of each tree per method (alternating order)")
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    t0 = time.perf_counter()
    trees = (("before", a.before), ("after", a.after))
    for method in a.methods.split(","):
        got: dict[str, list[dict]] = {"before": [], "after": []}
        for rnd in range(a.rounds):
            for tag, src in (trees if rnd % 2 == 0 else trees[::-1]):
                got[tag].append({_key(r): r for r in _bench(src, method, a.out / f"{method}_{tag}_{rnd}", a.threads)})
                print(f"{method} {tag} round {rnd}: {len(got[tag][-1])} configurations", flush=True)
        for k in sorted(set.intersection(*(set(g) for t in got.values() for g in t))):
            ms = {t: [g[k]["per_signal_ms"] for g in got[t]] for t in got}
            b, f = got["before"][0][k], got["after"][0][k]
            rows.append(dict(generator=k[0], method=k[1], batch=k[2], dtype=k[3],
                             ms_before=min(ms["before"]), ms_after=min(ms["after"]),
                             ratio=min(ms["after"]) / min(ms["before"]),
                             ms_rounds=ms, ratio_rounds=[x / y for x, y in zip(ms["after"], ms["before"])],
                             snr_image_before=b["snr_image_db"]["median"], snr_image_after=f["snr_image_db"]["median"],
                             snr_latent_before=b["snr_latent_db"]["median"], snr_latent_after=f["snr_latent_db"]["median"],
                             converged_before=b["converged_frac"], converged_after=f["converged_frac"]))
    (a.out / "compare_versions.json").write_text(json.dumps(dict(command=" ".join(sys.argv), seconds=time.perf_counter() - t0,
                                                                 rows=rows), indent=1))
    lines = ["| generator | method | batch | ms/signal before | after | after/before | each round | image SNR before | "
             "after | latent SNR before | after |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        each = ", ".join(f"{x:.2f}" for x in r["ratio_rounds"])
        lines.append(f"| {r['generator']} | {r['method']} | {r['batch']} | {r['ms_before']:.3f} | {r['ms_after']:.3f} | "
                     f"{r['ratio']:.2f} | {each} | {r['snr_image_before']:.2f} | {r['snr_image_after']:.2f} | "
                     f"{r['snr_latent_before']:.2f} | {r['snr_latent_after']:.2f} |")
    (a.out / "compare_versions.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return a.out


if __name__ == "__main__":
    main()

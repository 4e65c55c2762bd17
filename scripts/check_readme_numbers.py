"""Rerun the quick commands whose numbers README.md shows and compare every cell.

A table in README.md preceded by ``<!-- check_readme_numbers: NAME -->`` is checked against a
fresh run of NAME's command (below) in a temporary directory, with one thread (the README's
numbers are bit-reproducible only with the same thread count and machine). Prints each
difference and exits 1 if there is any; ``make test-slow`` runs it.

    python scripts/check_readme_numbers.py [--only random-quick] [--readme README.md]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_tables(text: str) -> dict[str, list[list[str]]]:
    """``{name: rows}`` of every marked table (header row first, separator dropped)."""
    out: dict[str, list[list[str]]] = {}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"<!-- check_readme_numbers: ([\w-]+) -->", line.strip())
        if not m:
            continue
        rows = []
        for row in lines[i + 1:]:
            if not row.startswith("|"):
                break
            cells = [c.strip() for c in row.strip().strip("|").split("|")]
            if not all(set(c) <= set("-: ") for c in cells):
                rows.append(cells)
        out[m.group(1)] = rows
    return out


def _geninv(*args: str) -> None:
    cmd = [sys.executable, "-m", "geninv.cli", *args, "--threads", "1"]
    print("$ geninv " + " ".join(args) + " --threads 1", flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)


def _label(name: str) -> str:
    return re.sub(r"\s*\(issue \d+\)", "", name).strip()


def random_quick(tmp: Path) -> list[list[str]]:
    """``geninv reproduce random --quick``: the median-SNR-of-z table of its summary.md."""
    out = tmp / "random"
    _geninv("reproduce", "random", "--quick", "--no-progress", "--out", str(out))
    text = (out / "summary.md").read_text()
    i = text.index("**Median SNR of z [dB] per method**")
    rows = readme_tables("<!-- check_readme_numbers: x -->\n" + "\n".join(
        ln for ln in text[i:].splitlines()[2:]))["x"]
    rows[0] = [_label(c) for c in rows[0]]
    return rows


def check_mnist_generator(tmp: Path) -> list[list[str]]:
    """``geninv check-mnist-generator --theorem1 100``: the classifier table."""
    path = tmp / "check.json"
    _geninv("check-mnist-generator", "--theorem1", "100", "--json", str(path))
    r = json.loads(path.read_text())
    rows = [["samples", "n", "mean max-prob", "max-prob > 0.9", "labels 0..9"]]
    for key, label in (("generated", "shipped generator"), ("real_test", "real test digits"),
                       ("untrained_generator", "untrained generator")):
        s = r[key]
        rows.append([label, str(s["n"]), f"{s['mean_max_prob']:.3f}", f"{s['frac_max_prob_gt']['0.9']:.3f}",
                     " ".join(str(h) for h in s["label_histogram"])])
    return rows


CHECKS: dict[str, Callable[[Path], list[list[str]]]] = {
    "random-quick": random_quick,
    "check-mnist-generator": check_mnist_generator,
}


def compare(name: str, readme: list[list[str]], fresh: list[list[str]]) -> list[str]:
    """Differences between the README's table and a fresh one, matched by column name and first cell."""
    diffs = []
    head = readme[0]
    cols = {c: j for j, c in enumerate(fresh[0])}
    missing = [c for c in head if c not in cols]
    if missing:
        return [f"{name}: columns {missing} are not in the fresh table ({fresh[0]})"]
    fresh_rows = {r[0]: r for r in fresh[1:]}
    for row in readme[1:]:
        new = fresh_rows.get(row[0])
        if new is None:
            diffs.append(f"{name}: row {row[0]!r} is not in the fresh table")
            continue
        for c, cell in zip(head[1:], row[1:], strict=True):
            if new[cols[c]] != cell:
                diffs.append(f"{name}: {head[0]} = {row[0]}, {c}: README {cell}, rerun {new[cols[c]]}")
    return diffs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--readme", default=str(ROOT / "README.md"), help="the README to check")
    ap.add_argument("--only", action="append", choices=sorted(CHECKS), help="check only this table (repeatable)")
    a = ap.parse_args()
    tables = readme_tables(Path(a.readme).read_text())
    unknown = sorted(set(tables) - set(CHECKS))
    if unknown:
        print(f"README marks tables this script cannot check: {unknown}")
        return 1
    diffs: list[str] = []
    with tempfile.TemporaryDirectory() as d:
        for name in a.only or sorted(tables):
            if name not in tables:
                diffs.append(f"{name}: no table marked <!-- check_readme_numbers: {name} --> in {a.readme}")
                continue
            diffs += compare(name, tables[name], CHECKS[name](Path(d)))
    for line in diffs:
        print(line)
    print(f"{len(diffs)} difference(s) in {len(a.only or tables)} table(s)")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())

"""Compare the reproduction outputs of two result trees, number for number.

Usage::

    python scripts/compare_records.py BEFORE_DIR AFTER_DIR

Every reproduction directory (one holding ``settings.json``) under ``BEFORE_DIR`` is matched with
the directory of the same relative path under ``AFTER_DIR``; then

- ``settings.json``, ``records.jsonl`` (record by record, by ``key``), ``records.csv`` (row by
  row) and ``errors.jsonl`` must be equal, every number to the last digit, except the fields that
  legitimately differ between two runs: wall-clock timings (any field named ``seconds`` or ending
  in ``_seconds``) and ``code`` (the fingerprint of the sources);
- ``summary.json``: each claim's verdict and every number in its claim text and evidence must be
  equal (the wording around the numbers may differ, e.g. a method's display name), and so must
  the other fields (``m_star`` ...) but the command.

Paths (the two roots) are replaced by a placeholder before comparing. Prints one line per
difference (at most ``--show`` per file) and a summary; exits 1 when anything differs, 2 when a
directory is missing on one side.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path
from typing import Any

#: Fields that differ between two runs of the same trial (wall clock, source fingerprint).
VOLATILE = {"seconds", "certify_seconds", "code"}
NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?|inf|nan")


def volatile(field: str) -> bool:
    return field in VOLATILE or field.endswith("_seconds")


def strip_paths(obj: Any, roots: tuple[str, ...]) -> Any:
    """``obj`` with every occurrence of the result roots in its strings replaced by ``<root>``."""
    if isinstance(obj, str):
        for r in roots:
            obj = obj.replace(r, "<root>")
        return obj
    if isinstance(obj, list):
        return [strip_paths(v, roots) for v in obj]
    if isinstance(obj, dict):
        return {k: strip_paths(v, roots) for k, v in obj.items()}
    return obj


def drop_volatile(rec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in rec.items() if not volatile(k)}


def diff(a: Any, b: Any, where: str, out: list[str]) -> None:
    """Append to ``out`` a line per leaf where ``a`` and ``b`` differ (floats compared exactly)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                out.append(f"{where}.{k}: only {'after' if k in b else 'before'}")
            else:
                diff(a[k], b[k], f"{where}.{k}", out)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            diff(x, y, f"{where}[{i}]", out)
    elif a != b and not (a != a and b != b):  # NaN == NaN here
        out.append(f"{where}: {a!r} != {b!r}")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def compare_records(a: Path, b: Path, roots: tuple[str, ...], out: list[str]) -> int:
    ra = {r["key"]: drop_volatile(strip_paths(r, roots)) for r in read_jsonl(a / "records.jsonl")}
    rb = {r["key"]: drop_volatile(strip_paths(r, roots)) for r in read_jsonl(b / "records.jsonl")}
    for k in sorted(set(ra) ^ set(rb)):
        out.append(f"records.jsonl {k}: only {'after' if k in rb else 'before'}")
    for k in sorted(set(ra) & set(rb)):
        diff(ra[k], rb[k], f"records.jsonl {k}", out)
    return len(ra)


def compare_csv(a: Path, b: Path, roots: tuple[str, ...], out: list[str]) -> int:
    def rows(p: Path) -> tuple[list[str], dict[str, dict[str, str]]]:
        if not p.exists():
            return [], {}
        with p.open(newline="") as f:
            reader = csv.DictReader(f)
            cols = [c for c in (reader.fieldnames or []) if not volatile(c)]
            return cols, {r.get("key", str(i)): {c: strip_paths(r[c], roots) for c in cols}
                          for i, r in enumerate(reader)}
    ca, ra = rows(a / "records.csv")
    cb, rb = rows(b / "records.csv")
    if ca != cb:
        out.append(f"records.csv columns: {ca} != {cb}")
    for k in sorted(set(ra) ^ set(rb)):
        out.append(f"records.csv {k}: only {'after' if k in rb else 'before'}")
    for k in sorted(set(ra) & set(rb)):
        diff(ra[k], rb[k], f"records.csv {k}", out)
    return len(ra)


def numbers(text: str) -> list[str]:
    return NUMBER.findall(text)


def compare_summary(a: Path, b: Path, roots: tuple[str, ...], out: list[str]) -> int:
    pa, pb = a / "summary.json", b / "summary.json"
    if not pa.exists() or not pb.exists():
        if pa.exists() != pb.exists():
            out.append(f"summary.json: only {'after' if pb.exists() else 'before'}")
        return 0
    sa, sb = (strip_paths(json.loads(p.read_text()), roots) for p in (pa, pb))
    ca, cb = sa.pop("claims", []), sb.pop("claims", [])
    sa.pop("command", None)
    sb.pop("command", None)
    diff(sa, sb, "summary.json", out)
    if len(ca) != len(cb):
        out.append(f"summary.json: {len(ca)} claims before, {len(cb)} after")
    for i, (x, y) in enumerate(zip(ca, cb)):
        if x["verdict"] != y["verdict"]:
            out.append(f"summary.json claim {i}: verdict {x['verdict']!r} != {y['verdict']!r} ({x['claim'][:80]})")
        for part in ("claim", "evidence"):
            if numbers(x[part]) != numbers(y[part]):
                out.append(f"summary.json claim {i} {part}: numbers {numbers(x[part])} != {numbers(y[part])}")
    return len(ca)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("before", type=Path)
    p.add_argument("after", type=Path)
    p.add_argument("--show", type=int, default=20, help="differences printed per directory (default 20)")
    args = p.parse_args(argv)
    roots = tuple(sorted({str(args.before), str(args.before.resolve()), str(args.after), str(args.after.resolve())},
                         key=len, reverse=True))
    dirs = sorted(s.parent.relative_to(args.before) for s in args.before.rglob("settings.json"))
    if not dirs:
        print(f"no reproduction directories (settings.json) under {args.before}", file=sys.stderr)
        return 2
    status = 0
    for rel in dirs:
        a, b = args.before / rel, args.after / rel
        if not (b / "settings.json").exists():
            print(f"{rel}: missing under {args.after}")
            status = max(status, 2)
            continue
        out: list[str] = []
        sa = strip_paths(json.loads((a / "settings.json").read_text()), roots)
        sb = strip_paths(json.loads((b / "settings.json").read_text()), roots)
        diff(sa, sb, "settings.json", out)
        n_rec = compare_records(a, b, roots, out)
        n_csv = compare_csv(a, b, roots, out)
        ea = [strip_paths(e, roots) for e in read_jsonl(a / "errors.jsonl")]
        eb = [strip_paths(e, roots) for e in read_jsonl(b / "errors.jsonl")]
        diff(ea, eb, "errors.jsonl", out)
        n_claims = compare_summary(a, b, roots, out)
        verdict = "equal" if not out else f"{len(out)} differences"
        print(f"{rel}: {n_rec} records, {n_csv} CSV rows, {n_claims} claims: {verdict}")
        for line in out[: args.show]:
            print(f"  {line}")
        if len(out) > args.show:
            print(f"  ... ({len(out) - args.show} more)")
        if out:
            status = max(status, 1)
    return status


if __name__ == "__main__":
    sys.exit(main())

"""Tables, claim checks and the one-page report of the reproductions, from the records only.

``write_summary(dir)`` writes ``summary.md`` next to a reproduction's records: the section that
the directory's experiment registered (:mod:`geninv.experiments.registry`): its tables (median SNR
per layer per method, run times ...) and its claims checked against the records (each "holds" /
"does not hold" / "not measured", with the numbers). ``write_index(results, dirs)`` writes
``index.html`` (and ``results.md``, README-ready) showing every figure and table of the given
directories. This module knows no experiment: it reads what the registry holds.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geninv.experiments.records import ERRORS, atomic_write_text, load_records, read_settings, snr_value
from geninv.experiments.registry import for_directory, lookup

__all__ = ["Table", "Section", "section", "write_summary", "write_section_summary", "write_index", "readable", "fmt_db",
           "median_snr", "quantile_snr", "runtime_table", "DIFFERS"]

#: Marks a claim of ours where we differ from the paper (shown as such on the results page).
DIFFERS = "we differ from the paper"
CLAIMS_CAPTION = "Claims checked on these records: the paper's, and ours where we go beyond it or differ from it"


_RAW = ((re.compile(r"\b(m\*|m_min|m\b[^=]{0,12}) = None\b"), r"\1 = not reached"),
        (re.compile(r"(?<![\w.])(nan|NaN|None)(?!\w|\.\d)"), "not measured"))


def readable(text: str) -> str:
    """Text for people: no raw ``nan`` / ``None`` (an ``m = None`` is "not reached", others "not measured")."""
    for pattern, repl in _RAW:
        text = pattern.sub(repl, text)
    return text


def fmt_db(v: float) -> str:
    if v == math.inf:
        return "exact (inf)"
    if v == -math.inf:
        return "fail (-inf)"
    if math.isnan(v):
        return "-"
    return f"{v:.1f}"


def median_snr(vals: list[float]) -> float:
    """The median of SNRs in dB (NaN, a failed method, counts as ``-inf``); NaN for no values."""
    a = np.array([snr_value(v) for v in vals], dtype=float)
    return float(np.median(a)) if a.size else math.nan


def quantile_snr(vals: list[float], q: float) -> float:
    """The ``q`` % quantile of SNRs in dB (as :func:`median_snr`)."""
    a = np.array([snr_value(v) for v in vals], dtype=float)
    return float(np.percentile(a, q)) if a.size else math.nan


def runtime_table(secs: dict[str, list[float]], per: str, label: Callable[[str], str] = str) -> Table:
    """Wall-clock seconds per method (``secs`` in display order), ``per`` trial or image."""
    rows = []
    for m, v in secs.items():
        a = np.array(v, dtype=float)
        rows.append([label(m), str(a.size), f"{np.median(a):.4f}", f"{np.mean(a):.4f}", f"{a.sum():.1f}"])
    return Table(["method", per + "s", f"median s / {per}", f"mean s / {per}", "total s"], rows,
                 caption=f"Run time per method (wall clock, this machine; per {per})")


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    caption: str = ""

    def to_md(self) -> str:
        out = [f"**{self.caption}**", ""] if self.caption else []
        out.append("| " + " | ".join(self.headers) + " |")
        out.append("|" + "|".join("---" for _ in self.headers) + "|")
        out += ["| " + " | ".join(readable(c) for c in r) + " |" for r in self.rows]
        return "\n".join(out) + "\n"

    def to_html(self) -> str:
        cap = f"<caption>{html.escape(self.caption)}</caption>" if self.caption else ""
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.headers)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(readable(c))}</td>" for c in r) + "</tr>" for r in self.rows)
        return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


@dataclass
class Section:
    title: str
    directory: Path
    command: str
    notes: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    claims: list[tuple[str, str, str]] = field(default_factory=list)  # (claim, verdict, evidence)
    figures: list[Path] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # more fields of summary.json

    def whose(self, claim: str) -> str:
        """Whose claim ``claim`` is: ``"the paper's"``, ``"ours"`` (an experiment beyond the paper's) or
        ``"ours, differs from the paper"`` (the text says where, after :data:`DIFFERS`)."""
        if DIFFERS in claim:
            return "ours, differs from the paper"
        return "the paper's" if for_directory(self.directory).claims_of == "paper" else "ours"

    def claim_rows(self) -> list[dict[str, str]]:
        """The claims as ``{"claim", "whose", "verdict", "evidence"}`` (the rows of the claims tables)."""
        return [{"claim": c, "whose": self.whose(c), "verdict": v, "evidence": e} for c, v, e in self.claims]

    def claims_table(self) -> Table:
        return Table(["claim", "in our records", "whose", "evidence"],
                     [[r["claim"], r["verdict"], r["whose"], r["evidence"]] for r in self.claim_rows()],
                     caption=CLAIMS_CAPTION)


# -- output ---------------------------------------------------------------------------------

def _default_command(d: Path) -> str:
    exp = read_settings(d)["experiment"]
    entry = lookup(exp)
    return f"geninv reproduce {entry.command if entry.name == exp else exp} --out {d}"


def section(out_dir: str | os.PathLike[str], command: str | None = None) -> Section:
    """The tables, claim checks and figures of one reproduction directory (by its registered experiment)."""
    d = Path(out_dir)
    cmd_file = d / "command.txt"
    if command is None:
        command = cmd_file.read_text().strip() if cmd_file.exists() else _default_command(d)
    sec = lookup(read_settings(d)["experiment"]).section(d, command)
    codes = sorted({str(r.get("code")) for r in load_records(d)})
    if len(codes) > 1:
        sec.notes.append(f"These records were made by {len(codes)} versions of the geninv sources "
                         f"(fingerprints {', '.join(codes)}); see the 'code' field of each record.")
    err = d / ERRORS
    if err.exists():
        n_err = sum(1 for line in err.read_text().splitlines() if line.strip())
        if n_err:
            sec.notes.append(f"{n_err} solver errors logged in {ERRORS} (those trials are retried on the next run).")
    return sec


def _section_md(sec: Section, rel: Path | None = None) -> str:
    out = [f"## {sec.title}", "", f"Command: `{sec.command}`", ""]
    out += [readable(n) + "\n" for n in sec.notes]
    for f in sec.figures:
        p = f if rel is None else Path(os.path.relpath(f, rel))
        out.append(f"![{f.stem}]({p.as_posix()})\n")
    for t in sec.tables:
        out.append(t.to_md())
    if sec.claims:
        out.append(sec.claims_table().to_md())
    return "\n".join(out)


def write_section_summary(sec: Section, title: str | None = None) -> Path:
    """``summary.md`` and ``summary.json`` (title, command, ``sec.extra``, the claims with their verdicts)
    of one :class:`Section`, in its directory."""
    d = Path(sec.directory)
    atomic_write_text(d / "summary.md", f"# {sec.title}\n\n" + _section_md(sec, rel=d).split("\n", 1)[1].lstrip())
    atomic_write_text(d / "summary.json", json.dumps({"title": title or sec.title, "command": sec.command, **sec.extra,
                                                      "claims": sec.claim_rows()}, indent=2) + "\n")
    return d / "summary.md"


def write_summary(out_dir: str | os.PathLike[str], command: str | None = None) -> Path:
    """Write ``summary.md`` (and ``summary.json`` with the claim verdicts) of the reproduction in ``out_dir``."""
    return write_section_summary(section(out_dir, command))


_CSS = """body{font-family:system-ui,sans-serif;max-width:1250px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:1em 0;font-size:.85em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f2f2f2}caption{font-weight:bold;text-align:left;padding:.3em 0}td:first-child{text-align:left}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}code{background:#f4f4f4;padding:.1em .3em}
.differs{background:#fff3cd;color:#7a5b00;border-radius:3px;padding:0 .3em;font-size:.85em;white-space:nowrap}
.holds{color:#1a7f37;font-weight:bold}.fails{color:#c62828;font-weight:bold}.nm{color:#777}.skip{color:#a15c00}"""


def write_index(results_dir: str | os.PathLike[str], dirs: list[str | os.PathLike[str]], *,
                skipped: list[str] | None = None, title: str = "geninv: reproduction of the paper's experiments",
                preamble: str = "") -> Path:
    """One page showing every figure and table of ``dirs``: ``index.html`` and ``results.md``.

    Parameters
    ----------
    dirs : list of paths
        Reproduction directories (missing or empty ones are listed as skipped).
    skipped : list of str
        Lines saying what was not run and why (shown at the top).
    """
    root = Path(results_dir)
    root.mkdir(parents=True, exist_ok=True)
    secs = []
    skipped = list(skipped or [])
    for d in dirs:
        d = Path(d)
        if not (d / "records.jsonl").exists():
            skipped.append(f"{d}: no records")
            continue
        secs.append(section(d))
    body = [f"<h1>{html.escape(title)}</h1>"]
    if preamble:
        body.append(f"<p>{html.escape(preamble)}</p>")
    if skipped:
        body.append("<p class='skip'><b>Not shown:</b></p><ul>" + "".join(f"<li class='skip'>{html.escape(s)}</li>" for s in skipped) + "</ul>")
    body.append("<ul>" + "".join(f"<li><a href='#s{i}'>{html.escape(s.title)}</a></li>" for i, s in enumerate(secs)) + "</ul>")
    md = [f"# {title}", ""] + ([preamble, ""] if preamble else []) + [f"- not shown: {s}" for s in skipped] + [""]
    for i, s in enumerate(secs):
        body.append(f"<h2 id='s{i}'>{html.escape(s.title)}</h2><p>Command: <code>{html.escape(s.command)}</code> "
                    f"&middot; records: <code>{html.escape(os.path.relpath(s.directory / 'records.jsonl', root))}</code></p>")
        body += [f"<p>{html.escape(readable(n))}</p>" for n in s.notes]
        for f in s.figures:
            rel = os.path.relpath(f, root)
            body.append(f"<p><a href='{html.escape(rel)}'><img src='{html.escape(rel)}' alt='{html.escape(f.stem)}'></a></p>")
        body += [t.to_html() for t in s.tables]
        if s.claims:
            rows = []
            for r in s.claim_rows():
                cls = {"holds": "holds", "does not hold": "fails"}.get(r["verdict"], "nm")
                whose = html.escape(r["whose"])
                if "differs" in r["whose"]:
                    whose = f"<span class='differs'>{whose}</span>"
                rows.append(f"<tr><td>{html.escape(readable(r['claim']))}</td>"
                            f"<td class='{cls}'>{html.escape(r['verdict'])}</td><td>{whose}</td>"
                            f"<td>{html.escape(readable(r['evidence']))}</td></tr>")
            body.append(f"<table><caption>{html.escape(CLAIMS_CAPTION)}</caption><thead><tr><th>claim</th>"
                        "<th>in our records</th><th>whose</th><th>evidence</th></tr></thead><tbody>"
                        + "".join(rows) + "</tbody></table>")
        md.append(_section_md(s, rel=root))
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n")
    atomic_write_text(root / "index.html", page)
    atomic_write_text(root / "results.md", "\n".join(md))
    return root / "index.html"

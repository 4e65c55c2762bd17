"""The documentation the code cites exists, and the product does not cite what is not in it.

Docstrings, comments and the README cite the paper by equation / theorem / algorithm number and
this repository's ``docs/method.md`` by section (``docs/method.md sec. 6.2``). Every such section
must exist, and nothing may cite a file outside the repository or a tracker number.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHOD = ROOT / "docs" / "method.md"


def _product_files() -> list[Path]:
    files = sorted((ROOT / "src" / "geninv").rglob("*.py")) + [ROOT / "README.md"]
    return files + sorted(p for p in (ROOT / "docs").glob("*.md"))


def _sections() -> set[str]:
    """Numbers of the numbered headings of docs/method.md ("6", "6.2", ...)."""
    out = set()
    for line in METHOD.read_text().splitlines():
        m = re.match(r"^#{2,4}\s+(\d+(?:\.\d+)*)\.?\s", line)
        if m:
            out.add(m.group(1))
    return out


def _cited(text: str) -> list[str]:
    """Sections cited as ``docs/method.md sec. N`` (a range ``4-6`` cites 4, 5 and 6)."""
    out = []
    for m in re.finditer(r"docs/method\.md\s+sec(?:tion|\.)\s+(\d+(?:\.\d+)*)(?:-(\d+))?", text):
        if m.group(2):
            out += [str(k) for k in range(int(m.group(1)), int(m.group(2)) + 1)]
        else:
            out.append(m.group(1))
    return out


def test_method_page_has_numbered_sections():
    sections = _sections()
    assert {str(k) for k in range(1, 10)} <= sections
    assert {"6.1", "6.2", "6.3", "6.4", "9.1"} <= sections
    assert _cited("see docs/method.md sec. 4-6 and docs/method.md\n  sec. 9.3") == ["4", "5", "6", "9.3"]


def test_every_cited_section_exists():
    sections = _sections()
    files = _product_files() + sorted((ROOT / "tests").glob("*.py"))
    missing = [f"{p.relative_to(ROOT)}: sec. {s}" for p in files for s in _cited(p.read_text()) if s not in sections]
    n_cited = sum(len(_cited(p.read_text())) for p in files)
    assert n_cited > 20  # the code does cite the page
    assert not missing, "citations of docs/method.md sections that do not exist:\n" + "\n".join(missing)


def test_no_citation_of_files_outside_the_repository_or_tracker_numbers():
    bad = []
    for p in _product_files():
        for i, line in enumerate(p.read_text().splitlines(), 1):
            if re.search(r"\bSPEC\b", line) or re.search(r"(?<![a-z])issue[ _]?#?\d+", line, re.IGNORECASE):
                bad.append(f"{p.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not bad, "references a reader cannot follow:\n" + "\n".join(bad)

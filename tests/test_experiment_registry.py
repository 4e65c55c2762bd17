"""The registry of reproductions: the report, the figures and the registry itself import no experiment
module (they read what the experiments register), and every registered experiment carries what the
report shows: a heading filled from its settings, a label and a colour for each of its methods."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from geninv.experiments.registry import BUILTIN, experiments, lookup

EXPERIMENTS = Path(__file__).resolve().parents[1] / "src" / "geninv" / "experiments"


def _imported(path: Path) -> set[str]:
    """Every ``geninv`` module a file imports (function-level imports included)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m.startswith("geninv")}


@pytest.mark.parametrize("name", ["report.py", "plots.py", "registry.py", "records.py", "common.py"])
def test_the_report_and_the_figures_import_no_experiment(name):
    assert not _imported(EXPERIMENTS / name) & set(BUILTIN)


def test_every_experiment_registers_its_heading_labels_and_colours():
    names = [e.name for e in experiments()]
    assert names == sorted(names, key=lambda n: lookup(n).rank)
    assert lookup("inpaint_random").heading({"missing": 0.45}) == \
        "MNIST inpainting, 45% random pixels missing (Fig. 8-10)"
    assert lookup("inpaint_block").heading({"rows": 13}) == "MNIST inpainting, upper 13 rows missing (Fig. 11-13)"
    for e in experiments():
        assert e.labels and set(e.colors) <= set(e.labels) | {"certify"}, e.name
        assert e.claims_of in ("paper", "ours")
        methods = getattr(e.config(), "methods", ())
        assert all(e.label(m) != m for m in methods), (e.name, [m for m in methods if e.label(m) == m])
        assert all(m in e.colors for m in methods), e.name
    # the default entry serves directories of image experiments run under another name
    assert lookup("conv_relu_clean").name == "mnist"

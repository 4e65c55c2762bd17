"""README.md as a newcomer uses it: every code block runs as pasted, every command of the
command-line table runs (in a quick form), and the determinism statement holds."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from geninv import cli

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()

# Blocks that install software or run the whole suite: what they do is checked by CI itself.
NOT_RUN = ("pip install", "make demo", "make test")


def code_blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_readme_has_the_blocks_this_test_runs():
    assert len(code_blocks("python")) >= 3
    for block in code_blocks("bash"):
        lines = [ln.split("#")[0].strip() for ln in block.splitlines() if ln.split("#")[0].strip()]
        assert all(ln.startswith(NOT_RUN) for ln in lines), f"a bash block this test does not run: {block!r}"


@pytest.mark.parametrize("k", range(len(code_blocks("python"))))
def test_python_block_runs_as_pasted(k, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # blocks may write files (g.safetensors, parts/)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a ConvergenceWarning is part of what a block may show
        exec(compile(code_blocks("python")[k], f"README.md python block {k}", "exec"), {"__name__": "__readme__"})
    assert capsys.readouterr().out.strip(), "a README block printed nothing"


def cli_table() -> list[str]:
    """The commands of the README's command-line table, as written."""
    section = README[README.index("## Command line"):]
    section = section[: section.index("\n## ", 3)]
    return [m.group(1) for m in re.finditer(r"^\| `(geninv [^`]*)` \|", section, flags=re.M)]


# The quick form of each table command: flags appended so it runs in seconds; None: run as is.
# Commands of minutes are run by `make test-slow` only.
QUICK: dict[str, list[str] | None] = {
    "geninv invert mnist y.npy --out z.safetensors": ["--no-progress"],
    "geninv certify mnist": ["--no-s-forms"],
    "geninv sample mnist --n 64 --out grid.png": None,
    "geninv check-mnist-generator mnist": ["--n", "50", "--hidden", "0", "--json", "check.json"],
    "geninv reproduce random --quick": ["--n1", "25", "--trials", "1", "--methods", "latent_pursuit", "--no-progress"],
    "geninv train mnist --epochs 500": ["--epochs", "1", "--no-progress", "--out", "runs/mnist"],
    "geninv reproduce conv --quick": ["--trials", "1", "--methods", "oracle", "--no-progress", "--out", "conv"],
}
SLOW: dict[str, list[str]] = {
    "geninv demo": ["--batch", "2"],
    "geninv bench --quick": ["--methods", "latent_pursuit", "--batches", "1", "--cold-batch", "0", "--no-isolate",
                             "--budget", "5", "--out", "bench"],
}


def test_every_table_command_has_a_quick_form():
    assert set(cli_table()) == set(QUICK) | set(SLOW), set(cli_table()) ^ (set(QUICK) | set(SLOW))


def _make_signals(cwd: Path) -> None:
    # the README's own one-liner for y.npy
    one_liner = re.search(r'`(python -c "[^`]*y\.npy[^`]*")`', README)
    assert one_liner, "README: the command that makes y.npy"
    argv = shlex.split(one_liner.group(1))
    subprocess.run([sys.executable, *argv[1:]], cwd=cwd, check=True, timeout=300,
                   env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})


def _run_table_command(command: str, extra: list[str] | None, cwd: Path, monkeypatch) -> None:
    monkeypatch.chdir(cwd)
    argv = shlex.split(command)[1:] + (extra or [])
    try:
        rc = cli.main(argv)
    except SystemExit as e:
        rc = int(e.code or 0)
    assert rc == 0, f"{command} {' '.join(extra or [])}: exit status {rc}"


def test_fast_table_commands_run(tmp_path, monkeypatch):
    _make_signals(tmp_path)
    assert (tmp_path / "y.npy").exists()
    for command, extra in QUICK.items():
        _run_table_command(command, extra, tmp_path, monkeypatch)
    assert (tmp_path / "z.safetensors").exists() and (tmp_path / "grid.png").exists()
    assert (tmp_path / "check.json").exists() and (tmp_path / "runs/mnist/mnist_generator.safetensors").exists()
    assert (tmp_path / "results/quick/random/summary.md").exists()


@pytest.mark.slow
@pytest.mark.parametrize("command", sorted(SLOW))
def test_slow_table_commands_run(command, tmp_path, monkeypatch):
    _run_table_command(command, SLOW[command], tmp_path, monkeypatch)


DETERMINISM = r"""
import hashlib, warnings, torch, geninv
warnings.simplefilter("ignore")
torch.set_num_threads(1)
G = geninv.random_generator([10, 60, 200], output="tanh", seed=2, dtype=torch.float64)
z, y = G.sample(3, seed=5)
M = geninv.load_mnist_generator()
_, ym = M.sample(8, seed=1)
for name, g, yy, opts in [("latent_pursuit", M, ym, {}), ("layered_bp", G, y, {}), ("hybrid", M, ym, {}),
                          ("gd", G, y, {"max_iter": 100}), ("adam", G, y, {"max_iter": 50}),
                          ("lp_layerwise", G, y, {})]:
    r = geninv.invert(g, yy, method=name, **opts)
    print(name, hashlib.sha256(r.z.numpy().tobytes()).hexdigest())
"""


def test_same_seed_threads_and_machine_give_identical_bits():
    """The README's determinism statement: two fresh processes, one thread, every method."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "PYTHONHASHSEED": "random"}
    outs = [subprocess.run([sys.executable, "-c", DETERMINISM], capture_output=True, text=True, timeout=600,
                           env=env, check=True).stdout for _ in range(2)]
    assert len(outs[0].splitlines()) == 6
    assert outs[0] == outs[1]

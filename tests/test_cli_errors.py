"""The command line never ends in a traceback: a bad input gives exit status 2 and exactly one
line on stderr (``geninv <command>: error: ...``); a generator file carrying a pickle is refused
by every command that reads one, without executing it.

Most cases call ``geninv.cli.main`` in-process (the same code as the console script, seconds
for all); a few run the real ``geninv`` console script and ``python -m geninv.cli`` in a fresh
process and check the raw stderr. ``CLI_CASES`` counts the cases per kind; docs/bad_inputs.md
repeats the numbers (checked by ``test_cli_rows_of_the_table``).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import geninv
from geninv import cli
from test_reliability import _wrong_format_files, evil_files, read_table

ROOT = Path(__file__).resolve().parents[1]
CONSOLE = Path(sys.executable).parent / "geninv"

CLI_CASES: dict[str, int] = {
    "cli_usage": 16,
    "cli_generator_file": 0,  # set below from the commands found (commands x files)
    "cli_values": 12,
    "cli_subprocess": 3,
}


def run_main(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        rc = cli.main(argv)
    except SystemExit as e:  # argparse usage errors exit through SystemExit
        rc = int(e.code) if e.code is not None else 0
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc: int, err: str, *needles: str, status: int = 2) -> None:
    assert rc == status, f"exit status {rc} (expected {status}); stderr: {err!r}"
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1, f"expected one line on stderr, received {len(lines)}: {err!r}"
    assert "Traceback" not in err and "error:" in lines[0], err
    assert lines[0].startswith("geninv"), err
    for n in needles:
        assert n in lines[0], f"{n!r} not in {lines[0]!r}"


def generator_commands() -> list[tuple[str, list[str]]]:
    """Every subcommand that reads a generator file: (name, argv prefix before the path)."""
    parser = cli.build_parser()
    found = []
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for name, sub in action.choices.items():
            for a in sub._actions:
                if a.dest == "generator":
                    found.append((name, [name] + ([a.option_strings[0]] if a.option_strings else [])))
    return found


def _subcommands() -> list[str]:
    parser = cli.build_parser()
    return [n for a in parser._actions if isinstance(a, argparse._SubParsersAction) for n in a.choices]


def test_generator_commands_are_found():
    names = [n for n, _ in generator_commands()]
    assert {"sample", "check-mnist-generator"} <= set(names), names


@pytest.fixture()
def bad_files(tmp_path) -> tuple[dict[str, Path], Path]:
    G = geninv.random_generator([3, 7, 9], output="tanh", seed=1, dtype=torch.float64)
    good = tmp_path / "g.safetensors"
    G.save(good)
    data = good.read_bytes()
    files: dict[str, Path] = {}
    t = tmp_path / "truncated.safetensors"
    t.write_bytes(data[: len(data) // 2])
    files["truncated"] = t
    c = tmp_path / "corrupt.safetensors"
    flipped = bytearray(data)
    flipped[-5] ^= 0xFF
    c.write_bytes(bytes(flipped))
    files["corrupt weight byte"] = c
    (tmp_path / "fmt").mkdir()
    fmt = _wrong_format_files(tmp_path / "fmt", data)
    files["wrong format (npz)"] = fmt["npz"]
    files["wrong format (torch state_dict)"] = fmt["torch state_dict"]
    files["missing"] = fmt["missing"]
    marker = tmp_path / "pwned"
    evil = evil_files(tmp_path, marker)
    files["pickle"] = evil["pickle protocol 4"]
    files["pickle protocol 0"] = evil["pickle protocol 0"]
    files["torch.save zip with code"] = evil["torch.save zip"]
    return files, marker


def test_every_generator_command_refuses_bad_files(bad_files, capsys):
    files, marker = bad_files
    commands = generator_commands()
    tried = 0
    for name, prefix in commands:
        for what, path in files.items():
            # invert reads MODEL before SIGNALS: the generator file is refused first
            rc, out, err = run_main(prefix + [str(path)] + (["y.npy"] if name == "invert" else []), capsys)
            assert_one_line_error(rc, err, f"geninv {name}", str(path))
            assert not marker.exists(), f"{name} {what}: code in the file was executed"
            tried += 1
    # the table counts 8 bad files per command that reads a generator
    assert tried == 8 * len(commands) and len(files) == 8
    assert read_table()["cli_generator_file"][0] == 8 * len(commands), \
        "docs/bad_inputs.md: cli_generator_file must be 8 x the number of commands that read a generator"


def test_usage_errors_are_one_line(capsys):
    cases = [["no-such-command"], ["sample", "--n", "abc"], ["sample", "--seed", "1.5"], ["certify"],
             ["certify", "--random", "3,4", "g.safetensors"], ["reproduce", "nothing"], ["train"],
             ["train", "mnist", "--epochs", "x"], ["reproduce", "random", "--mask", "diamond"],
             ["sample", "--n"], ["--no-such-flag"]]
    cases += [[cmd, "--no-such-option"] for cmd in _subcommands()]
    seen = set()
    for argv in cases:
        rc, out, err = run_main(argv, capsys)
        assert_one_line_error(rc, err)
        seen.add(tuple(argv))
    assert len(seen) >= CLI_CASES["cli_usage"]


def test_bad_values_are_one_line(capsys, tmp_path, monkeypatch):
    from safetensors.torch import save_file

    zfile = tmp_path / "z.npy"
    zfile.write_bytes(b"not numpy")
    zwide = tmp_path / "zwide.safetensors"
    save_file({"z": torch.zeros(2, 9)}, str(zwide))
    cases = [
        (["sample", "--n", "0"], "--n"),
        (["sample", "--n", "-5"], "--n"),
        (["certify", "--random", "a,b"], "--random"),
        (["certify", "--random", "5"], "--random"),
        (["certify", "--random", "3,0,7"], "--random"),
        (["certify", "--random", "3,8,20", "--output", "softmax"], "softmax"),
        (["certify", "--random", "3,8,20", "--n", "0"], "--n"),
        (["certify", "--random", "3,8,20", "--z", str(zfile)], str(zfile)),
        (["certify", "--random", "3,8,20", "--z", str(zwide)], "z"),
        (["certify", "--random", "3,8,20", "--noise", "nan"], "noise"),
    ]
    cases += [
        (["train", "mnist", "--device", "tpu", "--epochs", "1", "--out", str(tmp_path / "t")], "device"),
        (["demo", "--batch", "0"], "batch"),
    ]
    # a bad value must be refused before any work: a demo that starts anyway fails here at once
    import geninv.experiments.demo as demo

    def no_work(*a, **k):
        raise AssertionError("started a reproduction despite a bad argument")

    monkeypatch.setattr(demo, "reproduce", no_work)
    failures = []
    for argv, needle in cases:
        rc, out, err = run_main(argv, capsys)
        try:
            assert_one_line_error(rc, err, needle)
        except AssertionError as e:
            failures.append(f"geninv {' '.join(argv)}: {str(e).splitlines()[0]}")
    assert len(cases) >= CLI_CASES["cli_values"]
    assert not failures, "\n".join(failures)


def test_unexpected_internal_error_is_one_line(capsys, monkeypatch):
    """The safety net of main(): a bug (not a GenInvError) still prints one line, exit 70;
    GENINV_DEBUG=1 re-raises it for the traceback."""

    def _cmd_boom(sub):
        p = sub.add_parser("boom")

        def run(a):
            raise RuntimeError("deep\ninside torch")

        p.set_defaults(func=run)

    monkeypatch.setattr(cli, "_COMMANDS", [*cli._COMMANDS, _cmd_boom])
    rc, out, err = run_main(["boom"], capsys)
    assert_one_line_error(rc, err, "internal error", "RuntimeError", status=70)
    monkeypatch.setenv("GENINV_DEBUG", "1")
    with pytest.raises(RuntimeError):
        cli.main(["boom"])


def _run(argv: list[str], *, module: bool) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "geninv.cli", *argv] if module else [str(CONSOLE), *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)


@pytest.mark.skipif(not CONSOLE.exists(), reason="the geninv console script is not installed in this environment")
def test_real_processes_print_one_line(bad_files):
    """The console script and ``python -m geninv.cli`` in fresh processes: raw stderr is one
    line, no Traceback, status 2, and the pickle's code never runs."""
    files, marker = bad_files
    cmds = generator_commands()
    runs = [
        (["sample", str(files["pickle"])], True, str(files["pickle"])),
        ([*dict(cmds).get("certify", ["sample"]), str(files["torch.save zip with code"])], False, "zip"),
        (["sample", "--n", "abc"], True, "--n"),
    ]
    for argv, module, needle in runs:
        p = _run(argv, module=module)
        assert_one_line_error(p.returncode, p.stderr, needle)
        assert not marker.exists()
    assert len(runs) >= CLI_CASES["cli_subprocess"]


def test_cli_rows_of_the_table():
    rows = {k: v for k, v in read_table().items() if k.startswith("cli_")}
    expected = dict(CLI_CASES, cli_generator_file=8 * len(generator_commands()))
    assert set(rows) == set(expected), (set(rows), set(expected))
    for kind, (cases, error) in rows.items():
        assert cases == expected[kind], f"{kind}: table says {cases}, the suite tries {expected[kind]}"
        assert re.search(r"exit (status )?2", error), f"{kind}: the error column must give the exit status: {error}"

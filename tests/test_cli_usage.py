"""The command line as a newcomer meets it: one spelling of MODEL, every flag documented, flags a
command does not use refused, the data's precision kept, chunked and resumable `invert`."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import geninv
from geninv import cli
from geninv.bench import runner
from test_cli_errors import assert_one_line_error, run_main

ROOT = Path(__file__).resolve().parents[1]


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    found: dict[str, argparse.ArgumentParser] = {}
    stack = [("", cli.build_parser())]
    while stack:
        prefix, p = stack.pop()
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found[f"{prefix}{name}"] = sub
                    stack.append((f"{prefix}{name} ", sub))
    return found


def _leaf_commands() -> dict[str, argparse.ArgumentParser]:
    subs = _subparsers()
    return {n: p for n, p in subs.items()
            if not any(isinstance(a, argparse._SubParsersAction) for a in p._actions)}


def test_every_flag_has_help_and_every_command_takes_threads_and_device():
    leaves = _leaf_commands()
    assert {"demo", "reproduce", "train mnist", "sample", "check-mnist-generator", "certify", "invert", "bench"} <= set(leaves)
    missing = [f"{n} {a.option_strings or a.dest}" for n, p in leaves.items() for a in p._actions
               if not isinstance(a, argparse._HelpAction) and not a.help]
    assert not missing, f"arguments without help: {missing}"
    for name, p in leaves.items():
        flags = {s for a in p._actions for s in a.option_strings}
        assert {"--threads", "--device"} <= flags, f"geninv {name} lacks --threads/--device"


def test_model_is_positional_on_every_command_that_reads_one():
    for name in ("sample", "check-mnist-generator", "certify", "invert"):
        p = _leaf_commands()[name]
        model = [a for a in p._actions if a.dest == "generator"]
        assert len(model) == 1 and not model[0].option_strings and model[0].metavar == "MODEL", name
        assert "--generator" not in {s for a in p._actions for s in a.option_strings}, name


def test_reproduce_help_lists_every_experiment():
    p = _leaf_commands()["reproduce"]
    text = p.format_help()
    choices = next(a for a in p._actions if a.dest == "experiment").choices
    for name in choices:
        assert name in text
    assert "noise" in (p.description or "") and "cs" in (p.description or "")


def test_invert_usage_shows_signals_as_required():
    usage = _leaf_commands()["invert"].format_usage()
    assert "MODEL SIGNALS" in usage and "[SIGNALS]" not in usage


def test_method_choices_are_the_ones_that_work(capsys):
    rc, _, err = run_main(["invert", "mnist", "y.npy", "--method", "bogus"], capsys)
    assert_one_line_error(rc, err, "--method", "latent_pursuit", "hybrid")
    assert "oracle" not in err
    choices = next(a for a in _leaf_commands()["invert"]._actions if a.dest == "method").choices
    assert set(choices) == set(geninv.solvers.METHODS) - {"oracle"}


@pytest.mark.parametrize("argv, needle", [
    (["reproduce", "random", "--mask", "block"], "--mask"),
    (["reproduce", "random", "--grid", "1,2"], "--grid"),
    (["reproduce", "mnist", "--n1", "5,6"], "--n1"),
    (["reproduce", "noise", "--missing", "0.3"], "--missing"),
    (["reproduce", "inpaint", "--mask", "block", "--missing", "0.3"], "--missing"),
    (["reproduce", "report", "--quick"], "--quick"),
])
def test_reproduce_refuses_flags_it_does_not_use(argv, needle, capsys, monkeypatch):
    import geninv.experiments.demo as demo

    def no_work(*a, **k):
        raise AssertionError("started a reproduction despite an unused flag")

    monkeypatch.setattr(demo, "reproduce", no_work)
    monkeypatch.setattr(demo, "reproduce_cli", no_work)
    rc, _, err = run_main(argv, capsys)
    assert_one_line_error(rc, err, needle, "not used")


@pytest.fixture()
def mnist_signals(tmp_path):
    G = geninv.load_mnist_generator()
    z, y = G.sample(6, seed=3)
    assert y.dtype == torch.float32
    np.save(tmp_path / "y32.npy", y.numpy())
    return tmp_path, z, y


def test_invert_solves_in_the_datas_precision(mnist_signals, capsys):
    d, z, _ = mnist_signals
    assert main_ok(["invert", "mnist", str(d / "y32.npy"), "--out", str(d / "a.safetensors"), "--no-progress"], capsys)
    out = load_file(str(d / "a.safetensors"))
    assert out["z"].dtype == torch.float32 and out["y_hat"].dtype == torch.float32
    # float32 clean signals in the unique regime: recovered far above the float32 noise floor (~130 dB in y)
    assert out["converged"].all() and float(out["fit_snr_db"].min()) > 80
    assert float(geninv.snr(z, out["z"]).median()) > 60
    assert main_ok(["invert", "mnist", str(d / "y32.npy"), "--float64", "--out", str(d / "b.safetensors"),
                    "--no-progress"], capsys)
    assert load_file(str(d / "b.safetensors"))["z"].dtype == torch.float64


def main_ok(argv: list[str], capsys) -> bool:
    rc, out, err = run_main(argv, capsys)
    assert rc == 0, err
    return True


def test_invert_errors_name_the_flags(mnist_signals, capsys):
    d, _, _ = mnist_signals
    y = str(d / "y32.npy")
    cases = [
        (["invert", "mnist", y, "--max-iter", "0"], "--max-iter"),
        (["invert", "mnist", y, "--method", "hybrid", "--max-iter", "10"], "--max-iter"),
        (["invert", "mnist", y, "--noise-level", "-1"], "--noise-level"),
        (["invert", "mnist", y, "--noise-level", "auto", "--method", "gd"], "--noise-level"),
        (["invert", "mnist", y, "--chunk-size", "0"], "--chunk-size"),
        (["invert", "mnist", y, "--threads", "0"], "--threads"),
        (["invert", "mnist", y, "--device", "tpu"], "--device"),
    ]
    np.save(d / "wide.npy", np.zeros((2, 5), dtype=np.float32))
    cases.append((["invert", "mnist", str(d / "wide.npy")], "SIGNALS"))
    for argv, needle in cases:
        rc, _, err = run_main(argv + ["--no-progress", "--out", str(d / "x.safetensors")], capsys)
        assert_one_line_error(rc, err, needle)
        for api_name in ("max_iter:", "noise_level:", "y:", "chunk_size:"):
            assert api_name not in err, err


def test_invert_noise_level(mnist_signals, capsys):
    d, z, y = mnist_signals
    noisy, _ = geninv.add_noise(y, snr_db=30.0, seed=0)
    np.save(d / "noisy.npy", noisy.numpy())
    assert main_ok(["invert", "mnist", str(d / "noisy.npy"), "--noise-level", "auto", "--no-progress",
                    "--out", str(d / "n.safetensors")], capsys)
    zn = load_file(str(d / "n.safetensors"))["z"]
    # 30 dB input SNR: the noise-aware pursuit recovers z to about the input SNR (README's noise table: ~32 dB)
    assert float(geninv.snr(z, zn).median()) > 20


def _torch_generator(batchnorm: bool) -> nn.Sequential:
    torch.manual_seed(0)
    mods: list[nn.Module] = [nn.Linear(6, 30)]
    if batchnorm:
        mods.append(nn.BatchNorm1d(30))
    mods += [nn.ReLU(), nn.Linear(30, 80), nn.Tanh()]
    net = nn.Sequential(*mods).double()
    if batchnorm:
        with torch.no_grad():
            net[1].running_mean.uniform_(-0.2, 0.2)
            net[1].running_var.uniform_(0.5, 2.0)
    return net.eval()


@pytest.mark.parametrize("batchnorm", [False, True])
def test_invert_a_torch_state_dict_with_named_architecture(tmp_path, capsys, batchnorm):
    net = _torch_generator(batchnorm)
    G = geninv.Generator.from_torch(net)
    z, y = G.sample(4, seed=1)
    torch.save({"generator." + k: v for k, v in net.state_dict().items()}, tmp_path / "sd.pt")
    np.save(tmp_path / "y.npy", y.numpy())
    argv = ["invert", str(tmp_path / "sd.pt"), str(tmp_path / "y.npy"), "--arch", "6,30,80", "--output", "tanh",
            "--no-progress", "--out", str(tmp_path / "z.safetensors")]
    assert main_ok(argv + (["--batchnorm"] if batchnorm else []), capsys)
    zh = load_file(str(tmp_path / "z.safetensors"))["z"]
    # float64, n_1 = 30 >= 2 n_0 with an 80-pixel image: recovered to rounding level
    assert float(geninv.snr(z, zh).min()) > 120
    # the wrong architecture names --arch, what it expected and what the file holds
    rc, _, err = run_main(argv[:3] + ["--arch", "6,31,80", "--output", "tanh"], capsys)
    assert_one_line_error(rc, err, "--arch", "(31, 6)", "(30, 6)")
    # without --arch the state dict is refused unread, pointing at --arch
    rc, _, err = run_main(argv[:3], capsys)
    assert_one_line_error(rc, err, "sd.pt", "--arch")


def test_state_dict_with_code_is_refused_unexecuted(tmp_path, capsys):
    from test_reliability import evil_files

    marker = tmp_path / "pwned"
    evil = evil_files(tmp_path, marker)
    for what in ("torch.save zip", "pickle protocol 4"):
        path = tmp_path / f"evil_{what.replace(' ', '_')}.pt"
        path.write_bytes(Path(evil[what]).read_bytes())
        rc, _, err = run_main(["certify", str(path), "--arch", "3,7,9"], capsys)
        assert_one_line_error(rc, err, str(path))
        assert not marker.exists(), f"{what}: code in the file was executed"


def test_certify_and_sample_take_mnist(tmp_path, capsys):
    rc, out, err = run_main(["certify", "mnist", "--no-s-forms"], capsys)
    assert rc == 0, err
    assert "784" in out
    jpg = tmp_path / "grid.jpg"
    assert main_ok(["sample", "mnist", "--n", "4", "--out", str(jpg)], capsys)
    assert jpg.read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG start-of-image marker
    png = tmp_path / "grid.png"
    assert main_ok(["sample", "--n", "4", "--out", str(png)], capsys)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rc, _, err = run_main(["sample", "--out", str(tmp_path / "grid.gif")], capsys)
    assert_one_line_error(rc, err, "--out", ".jpg")


def test_threads_default_and_flag(capsys, monkeypatch, tmp_path):
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas() -> set[int]:
        return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before, blas_before = torch.get_num_threads(), max(blas(), default=1)
    try:
        assert main_ok(["sample", "--n", "1", "--out", str(tmp_path / "g.png")], capsys)
        assert torch.get_num_threads() == 1 and blas() == {1}  # numpy's and scipy's OpenBLAS too
        assert main_ok(["sample", "--n", "1", "--threads", "2", "--out", str(tmp_path / "g.png")], capsys)
        assert torch.get_num_threads() == 2 and blas() == {2}
    finally:
        torch.set_num_threads(before)
        threadpool_limits(limits=blas_before, user_api="blas")


def test_import_sets_a_passive_openmp_wait_policy():
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GENINV_NO_THREAD_DEFAULTS")}
    code = "import os, geninv; print(os.environ.get('OMP_WAIT_POLICY'))"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120, check=True)
    assert p.stdout.strip() == "PASSIVE"
    env["OMP_WAIT_POLICY"] = "ACTIVE"  # a user's own setting is kept
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120, check=True)
    assert p.stdout.strip() == "ACTIVE"


def test_interrupted_invert_keeps_finished_chunks_and_resumes(tmp_path, capsys, monkeypatch):
    import geninv.solvers as solvers

    G = geninv.random_generator([20, 200, 600], seed=0, dtype=torch.float64)
    z, y = G.sample(9, seed=1)
    G.save(tmp_path / "g.safetensors")
    np.save(tmp_path / "y.npy", y.numpy())
    out = tmp_path / "z.safetensors"
    argv = ["invert", str(tmp_path / "g.safetensors"), str(tmp_path / "y.npy"), "--chunk-size", "3", "--no-progress",
            "--out", str(out)]
    real = solvers.invert
    calls = []

    def interrupt_second(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(solvers, "invert", interrupt_second)
    rc, _, err = run_main(argv, capsys)
    assert rc == 130 and "finished chunks are kept in" in err
    parts = tmp_path / "z.safetensors.parts"
    assert len(list(parts.glob("chunk_*.safetensors"))) == 1 and not out.exists()
    calls.clear()
    monkeypatch.setattr(solvers, "invert", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    rc, stdout, err = run_main(argv, capsys)
    assert rc == 0, err
    assert len(calls) == 2, "the finished chunk was solved again"
    assert "1 of 3 chunks read from" in stdout
    res = load_file(str(out))
    assert res["z"].shape == (9, 20) and float(geninv.snr(z, res["z"]).min()) > 120
    assert not parts.exists()


def test_bench_never_writes_over_results_without_overwrite(tmp_path):
    held = tmp_path / "results"
    held.mkdir()
    (held / "bench.json").write_text("{}")
    cfg = runner.BenchConfig(out=str(held))
    with pytest.raises(geninv.InputError, match="--overwrite"):
        runner.run_bench(cfg, log_stream=None)
    assert (held / "bench.json").read_text() == "{}"
    fresh = runner.fresh_out(tmp_path / "runs")
    assert not Path(fresh).exists() and Path(fresh).parent == tmp_path / "runs"
    assert runner.BenchConfig().out == "" and "runs/bench" in _leaf_commands()["bench"].format_help()


@pytest.mark.parametrize("argv, flag", [
    (["check-mnist-generator", "--n", "0"], "--n"),
    (["reproduce", "random", "--quick", "--trials", "0"], "--trials"),
    (["train", "mnist", "--epochs", "-1"], "--epochs"),
    (["demo", "--batch", "0"], "--batch"),
])
def test_errors_of_other_commands_name_the_flag(argv, flag, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, _, err = run_main(argv, capsys)
    assert_one_line_error(rc, err, f"error: {flag}:")

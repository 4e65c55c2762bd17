"""Every flag as a newcomer meets it: a bad value is refused before any work with an error naming
the flag (never the library parameter behind it), a flag the command would not use is refused,
the method lists of ``geninv invert`` are the ones the solvers accept, and ``reproduce --help``
describes every experiment."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import geninv
from geninv.cli import common
from geninv.cli import invert as cli_invert
from test_cli_errors import assert_one_line_error, run_main
from test_cli_usage import _leaf_commands

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def no_work(monkeypatch):
    """Long work (training, benchmarks, reproductions, classifiers) fails the test if it starts."""
    import geninv.bench as bench
    import geninv.experiments.conv_exp as conv_exp
    import geninv.experiments.demo as demo
    import geninv.experiments.phase as phase
    import geninv.train.classifier as classifier
    import geninv.train.gan as gan

    def started(*a, **k):
        raise AssertionError("started work despite a bad or unused flag")

    for mod, name in [(demo, "reproduce"), (demo, "reproduce_cli"), (demo, "reproduce_noisy"), (demo, "run_demo"), (phase, "reproduce_phase"),
                      (conv_exp, "reproduce_conv"), (bench, "run_bench"), (gan, "train_gan"),
                      (classifier, "check_mnist_generator")]:
        monkeypatch.setattr(mod, name, started)


@pytest.mark.parametrize("argv, flag", [
    (["sample", "--nrow", "0"], "--nrow"),
    (["sample", "--nrow", "-2"], "--nrow"),
    (["check-mnist-generator", "--hidden", "-1"], "--hidden"),
    (["check-mnist-generator", "--theorem1", "-1"], "--theorem1"),
    (["train", "mnist", "--lr-g", "-1"], "--lr-g"),
    (["train", "mnist", "--lr-d", "0"], "--lr-d"),
    (["train", "mnist", "--betas", "0.5", "1.0"], "--betas"),
    (["train", "mnist", "--conv", "0", "3"], "--conv"),
    (["bench", "--budget", "-1"], "--budget"),
    (["bench", "--curve-batch", "0"], "--curve-batch"),
    (["bench", "--cold-batch", "-1"], "--cold-batch"),
    (["bench", "--target-db", "nan"], "--target-db"),
    (["bench", "--wait-load", "-1"], "--wait-load"),
    (["bench", "--wait-load", "1", "--max-wait", "-1"], "--max-wait"),
    (["bench", "--device", "tpu"], "--device"),
    (["reproduce", "conv", "--trials", "0"], "--trials"),
    (["reproduce", "noise", "--grid", "nan"], "--grid"),
    (["reproduce", "noise", "--grid", "10,inf"], "--grid"),
    (["reproduce", "cs", "--grid", "0"], "--grid"),
    (["reproduce", "cs", "--grid", "12.5"], "--grid"),
    (["reproduce", "random", "--methods", ","], "--methods"),
    (["reproduce", "phase", "--phase", "x=n1;y=n0:2"], "--phase"),
    (["reproduce", "phase", "--phase", "x=n1:10,20;y=n0:2;weights=2"], "--phase"),
    (["reproduce", "phase", "--phase", "x=n1:10,20;y=n0:2;output=softmax"], "--phase"),
])
def test_bad_values_name_the_flag_before_any_work(argv, flag, no_work, capsys):
    rc, out, err = run_main(argv, capsys)
    assert_one_line_error(rc, err, flag)
    assert err.split("error: ", 1)[1].startswith(flag), err
    assert "internal error" not in err
    assert not out.strip(), f"printed before refusing: {out!r}"


@pytest.mark.parametrize("argv, flag, api_name", [
    # values the library itself refuses: the message it raises is given with the flag's name
    (["reproduce", "random", "--n1", "0,5"], "--n1", "n1_values"),
    (["reproduce", "random", "--output", "softmax"], "--output", "activation"),
    (["check-mnist-generator", "--data", "/nonexistent/mnist"], "--data", "path"),
    (["certify", "--random", "3,8,20", "--mask", "{d}/m5.npy", "--no-s-forms"], "--mask", "mask"),
])
def test_library_errors_name_the_flag(argv, flag, api_name, tmp_path, capsys):
    np.save(tmp_path / "m5.npy", np.ones(5))
    argv = [s.format(d=tmp_path) for s in argv]
    argv = argv + (["--out", str(tmp_path / "r")] if argv[0] == "reproduce" else ["--json", str(tmp_path / "c.json")])
    rc, _, err = run_main(argv, capsys)
    assert_one_line_error(rc, err, flag)
    message = err.split("error: ", 1)[1]
    assert message.startswith(flag) and not message.startswith(api_name), err


def test_cli_names_maps_only_a_leading_parameter_name():
    names = {"y": "SIGNALS", "path": "--data", "max_iter": "--max-iter"}
    assert common.cli_names("y: expected (B, 784)", names) == "SIGNALS: expected (B, 784)"
    assert common.cli_names("y[3]: not finite", names) == "SIGNALS[3]: not finite"
    assert common.cli_names("path '/d': expected a directory", names) == "--data '/d': expected a directory"
    assert common.cli_names("max_iter: expected >= 1", names) == "--max-iter: expected >= 1"
    # a longer word that starts with a known name, a name after the first word, a message without a colon
    assert common.cli_names("yes: no", names) == "yes: no"
    assert common.cli_names("the y: no", names) == "the y: no"
    assert common.cli_names("y is wrong", names) == "y is wrong"


@pytest.fixture()
def files(tmp_path):
    z = np.zeros((2, 3))
    np.save(tmp_path / "z.npy", z)
    G = geninv.load_mnist_generator()
    np.save(tmp_path / "y.npy", G.sample(2, seed=0)[1].numpy())
    return tmp_path


@pytest.mark.parametrize("argv, flag", [
    (["certify", "--random", "3,8,20", "--z", "{d}/z.npy", "--n", "5"], "--n"),
    (["certify", "mnist", "--z", "{d}/z.npy", "--seed", "3"], "--seed"),
    (["bench", "--max-wait", "10"], "--max-wait"),
    (["bench", "--overwrite"], "--overwrite"),
    (["invert", "mnist", "{d}/y.npy", "--chunk-size", "4", "--memory-budget", "500"], "--memory-budget"),
    (["invert", "mnist", "{d}/y.npy", "--max-iter", "5"], "--max-iter"),
    (["invert", "mnist", "{d}/y.npy", "--method", "lp_layerwise", "--max-iter", "5"], "--max-iter"),
])
def test_flags_a_command_does_not_use_are_refused(argv, flag, files, no_work, capsys):
    out = ["--out", str(files / "o.safetensors"), "--no-progress"] if argv[0] == "invert" else []
    rc, _, err = run_main([a.format(d=files) for a in argv] + out, capsys)
    assert_one_line_error(rc, err, flag, "not used")
    assert not (files / "o.safetensors").exists()


def test_the_same_flags_are_taken_where_they_are_used(files, capsys):
    # --seed seeds --random's weights: with --z it is used, so it is accepted
    rc, out, err = run_main(["certify", "--random", "3,8,20", "--z", str(files / "z.npy"), "--seed", "3",
                             "--no-s-forms"], capsys)
    assert rc == 0, err
    # --max-iter reaches a method that has an iteration cap
    rc, out, err = run_main(["invert", "mnist", str(files / "y.npy"), "--method", "latent_pursuit", "--max-iter",
                             "3", "--no-progress", "--out", str(files / "o.safetensors")], capsys)
    assert rc == 0, err
    # --memory-budget without --chunk-size chooses the chunk size
    from geninv.solvers.chunked import bytes_per_signal

    one = bytes_per_signal(geninv.load_mnist_generator(), torch.float32)
    rc, out, err = run_main(["invert", "mnist", str(files / "y.npy"), "--method", "latent_pursuit",
                             "--memory-budget", f"{1.5 * one / 1e6:.6f}", "--no-progress", "--out",
                             str(files / "o.safetensors")], capsys)
    assert rc == 0, err


def test_invert_method_lists_are_the_solvers():
    from geninv.solvers import accepted_options, takes_noise_level

    choices = next(a for a in _leaf_commands()["invert"]._actions if a.dest == "method").choices
    assert tuple(choices) == cli_invert._INVERT_METHODS
    assert set(cli_invert._MAX_ITER_METHODS) == {m for m in choices if "max_iter" in (accepted_options(m) or ())}
    assert set(cli_invert._NOISE_METHODS) == {m for m in choices if takes_noise_level(m)}


def test_reproduce_description_says_what_every_experiment_is():
    p = _leaf_commands()["reproduce"]
    choices = next(a for a in p._actions if a.dest == "experiment").choices
    text = " ".join((p.description or "").split())
    for name in choices:
        assert f"{name} (" in text or f"'{name}'" in text, f"reproduce --help does not describe {name!r}"


def test_python_m_geninv_is_the_command_line():
    runs = [subprocess.run([sys.executable, "-m", mod, "--help"], capture_output=True, text=True, timeout=120,
                           cwd=ROOT, env={"PYTHONPATH": str(ROOT / "src"), "COLUMNS": "100", "PATH": "/usr/bin:/bin"})
            for mod in ("geninv", "geninv.cli")]
    assert [r.returncode for r in runs] == [0, 0], [r.stderr for r in runs]
    assert runs[0].stdout == runs[1].stdout and "usage: geninv" in runs[0].stdout


def test_invert_says_when_the_method_did_not_check_the_fit(files, capsys, monkeypatch):
    """A result without per-sample fit verdicts is reported as such (no crash, no invented verdict)."""
    import dataclasses

    from safetensors.torch import load_file

    import geninv.solvers.chunked as chunked

    real = chunked.invert_chunked
    monkeypatch.setattr(chunked, "invert_chunked",
                        lambda *a, **k: dataclasses.replace(real(*a, **k), fits=None, residual=None))
    out = files / "o.safetensors"
    rc, printed, err = run_main(["invert", "mnist", str(files / "y.npy"), "--method", "latent_pursuit",
                                 "--no-progress", "--out", str(out)], capsys)
    assert rc == 0, err
    assert "fit y not checked by the method" in printed
    saved = load_file(str(out))
    assert {"z", "y_hat", "converged", "fit_snr_db"} <= set(saved) and "fits" not in saved


def test_every_output_choice_builds_a_generator(tmp_path, capsys):
    """``--output`` lists the activations a state-dict MODEL (``--arch``) and ``certify --random`` can take."""
    from torch import nn

    from geninv.cli.model_file import load_model

    torch.manual_seed(0)
    torch.save(nn.Sequential(nn.Linear(4, 20), nn.ReLU(), nn.Linear(20, 60)).state_dict(), tmp_path / "g.pt")
    choices = next(a for a in _leaf_commands()["certify"]._actions if a.dest == "output").choices
    assert tuple(choices) == common.ACTIVATIONS
    for act in choices:
        for model in (["--random", "4,20,60"], [str(tmp_path / "g.pt"), "--arch", "4,20,60"]):
            rc, out, err = run_main(["certify", *model, "--output", act, "--no-s-forms"], capsys)
            assert rc == 0, f"--output {act} with {model[0]}: {err}"
            assert "unique" in out.lower(), out
        G = load_model(argparse.Namespace(generator=str(tmp_path / "g.pt"), arch="4,20,60", output=act,
                                          batchnorm=False))
        assert G.output_activation.name == act

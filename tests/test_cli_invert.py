"""`geninv invert`: signals from a file in, latents out; exact on a planted case, clear errors."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import geninv
from geninv.cli import main


@pytest.fixture()
def planted(tmp_path):
    G = geninv.random_generator([20, 200, 600], seed=0, dtype=torch.float64)
    z, y = G.sample(4, seed=1)
    G.save(tmp_path / "g.safetensors")
    np.save(tmp_path / "y.npy", y.numpy())
    return tmp_path, z, y


def test_invert_recovers_planted_latents(planted, capsys):
    d, z, _ = planted
    out = d / "out.safetensors"
    assert main(["invert", str(d / "g.safetensors"), str(d / "y.npy"), "--out", str(out)]) == 0
    res = load_file(str(out))
    # float64, in the unique regime (n_1 = 200): Latent-Pursuit recovers z to rounding level
    assert (geninv.snr(z, res["z"]) > 120).all()
    assert res["converged"].all() and res["fits"].all() and (res["residual"] < 1e-12).all()
    assert "4 converged, 4 fit y" in capsys.readouterr().out


def test_invert_with_a_mask_file(planted):
    d, z, y = planted
    mask = geninv.random_mask(600, 0.45, seed=0)
    np.save(d / "m.npy", mask.numpy().astype(np.uint8))
    np.save(d / "ym.npy", (y * mask).numpy())
    out = d / "z.npy"
    assert main(["invert", str(d / "g.safetensors"), str(d / "ym.npy"), "--mask", str(d / "m.npy"), "--out", str(out)]) == 0
    assert (geninv.snr(z, torch.from_numpy(np.load(out))) > 120).all()


def test_invert_bad_inputs_are_one_line_errors(planted, capsys):
    d, _, _ = planted
    np.save(d / "bad.npy", np.zeros((3, 7)))
    assert main(["invert", str(d / "g.safetensors"), str(d / "bad.npy")]) == 2
    err = capsys.readouterr().err.strip()
    assert "expected shape (B, 600)" in err and len(err.splitlines()) == 1
    assert main(["invert", str(d / "g.safetensors"), str(d / "missing.npy")]) == 2
    assert "SIGNALS" in capsys.readouterr().err
    assert main(["invert", str(d / "g.safetensors"), str(d / "y.npy"), "--out", str(d / "z.txt")]) == 2
    assert "--out" in capsys.readouterr().err


def test_invert_without_signals_names_the_argument(planted, capsys):
    d, _, _ = planted
    with pytest.raises(SystemExit) as e:
        main(["invert", str(d / "g.safetensors")])
    assert e.value.code == 2
    assert "required: SIGNALS" in capsys.readouterr().err

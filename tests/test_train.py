"""GAN training of the MNIST generator, checkpoints and resume, the shipped weights, the sample checker."""

from __future__ import annotations

import copy
import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from geninv.data import mnist
from geninv.exceptions import InputError
from geninv.model import PLU, Generator, Layer, load_generator, random_generator
from geninv.model.activations import Activation
from geninv.train import (
    GANConfig,
    GANResult,
    build_generator,
    confidence_summary,
    data_fingerprint,
    discriminator_loss,
    generator_loss,
    init_networks,
    predict_proba,
    sparsity_report,
    train_classifier,
    train_gan,
)

TINY = GANConfig(batch_size=32, seed=0)


def _train(x: torch.Tensor, **kw: object) -> GANResult:
    # One thread: as fast as two for these small matrices, and not slowed down by a busy machine.
    return train_gan(x, threads=1, progress=False, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def tiny_data() -> torch.Tensor:
    x, _ = mnist("train", limit=320)
    return x


def _d_loss(G: nn.Module, D: nn.Module, x: torch.Tensor, z: torch.Tensor, loss: str) -> float:
    """Discriminator loss on fixed real images and fixed latents.

    G runs with batch statistics (train-mode batch-norm, as during training, on a copy so the
    running statistics are untouched); D in eval mode (spectral norm without a power step).
    """
    G, D = copy.deepcopy(G).train(), copy.deepcopy(D).eval()
    with torch.no_grad():
        return float(discriminator_loss(D(x), D(G(z)), loss))


def test_architecture_is_the_papers() -> None:
    G, D = init_networks(GANConfig())
    gen = Generator.from_torch(copy.deepcopy(G).eval())
    assert gen.dims == [20, 128, 392, 784]
    assert [layer.activation.name for layer in gen.layers] == ["relu", "relu", "plu"]
    assert gen.output_activation.params == {"alpha": 0.1, "c": 1.0}
    assert sum(isinstance(m, nn.BatchNorm1d) for m in G) == 2
    linears = [m for m in D if isinstance(m, nn.Linear)]
    assert [m.in_features for m in linears] == [784, 512, 256] and linears[-1].out_features == 1
    assert all(torch.nn.utils.parametrize.is_parametrized(m, "weight") for m in linears)
    assert any(isinstance(m, nn.LeakyReLU) for m in D)


def test_init_is_seeded_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(5)
    before = torch.get_rng_state()
    G1, _ = init_networks(GANConfig(seed=3))
    assert torch.equal(torch.get_rng_state(), before)
    G2, _ = init_networks(GANConfig(seed=3))
    G3, _ = init_networks(GANConfig(seed=4))
    assert torch.equal(G1[0].weight, G2[0].weight) and not torch.equal(G1[0].weight, G3[0].weight)


@pytest.mark.parametrize("loss, chance", [("hinge", 2.0), ("nonsaturating", 2 * math.log(2))])
def test_one_epoch_improves_the_discriminator_loss(tiny_data: torch.Tensor, loss: str, chance: float) -> None:
    # Compared: the discriminator loss on all 320 training images and 320 fixed latents, at the
    # initial (G, D) of the run versus after one epoch (10 steps). At initialization D cannot
    # tell real from generated (loss near its chance value: 2 for hinge, 2 log 2 for the
    # logistic loss); after an epoch it separates them (hinge 1.89 -> 0.04, logistic
    # 1.33 -> 0.22 with seed 0; seeds 0-4 all end below 0.3).
    cfg = GANConfig(batch_size=32, seed=0, loss=loss)
    z = torch.randn(320, 20, generator=torch.Generator().manual_seed(123))
    G0, D0 = init_networks(cfg)
    start = _d_loss(G0, D0, tiny_data, z, loss)
    r = _train(tiny_data, epochs=1, config=cfg)
    end = _d_loss(r.G, r.D, tiny_data, z, loss)
    assert abs(start - chance) < 0.3
    assert end < start / 2
    assert r.epochs == 1 and len(r.history["d_loss"]) == 1 and r.resumed_from == 0


def test_saved_generator_reproduces_outputs_bit_exactly(tiny_data: torch.Tensor, tmp_path: Path) -> None:
    r = _train(tiny_data, epochs=1, config=TINY, out=tmp_path, n_samples=16)
    for key in ("generator", "record", "samples", "losses", "checkpoint"):
        assert r.files[key].is_file(), key
    G = load_generator(r.files["generator"])
    z = torch.randn(64, 20, generator=torch.Generator().manual_seed(1))
    assert torch.equal(G(z), r.generator(z))
    assert G.dims == [20, 128, 392, 784] and G.dtype == torch.float32
    # The folded generator equals the torch network in eval mode up to float32 rounding of the
    # batch-norm folding (a few ulps of values of order 1).
    with torch.no_grad():
        assert torch.allclose(G(z), r.G(z), atol=1e-5, rtol=0)
    rec = json.loads(r.files["record"].read_text())
    assert rec["epochs"] == 1 and rec["config"]["seed"] == 0 and rec["config"]["batch_size"] == 32
    assert rec["data"]["n_images"] == 320 and len(rec["data"]["sha256_float32"]) == 64
    assert rec["final"]["d_loss"] == pytest.approx(r.history["d_loss"][-1])
    assert rec["versions"]["torch"] == torch.__version__
    assert rec["generator_sha256"] == hashlib.sha256(r.files["generator"].read_bytes()).hexdigest()
    assert not list(tmp_path.glob("*.tmp"))


def test_resume_equals_an_uninterrupted_run(tiny_data: torch.Tensor, tmp_path: Path) -> None:
    # Interrupted after epoch 1, then resumed to epoch 2, versus two epochs in one go: the
    # checkpoint holds the model, optimizer and sampling-RNG states, so CPU runs agree bit for bit.
    a, b = tmp_path / "a", tmp_path / "b"
    first = _train(tiny_data, epochs=1, config=TINY, out=a, n_samples=0)
    ck = torch.load(first.files["checkpoint"], weights_only=True)
    assert ck["epoch"] == 1
    resumed = _train(tiny_data, epochs=2, config=TINY, out=a, n_samples=0)
    straight = _train(tiny_data, epochs=2, config=TINY, out=b, n_samples=0)
    assert resumed.resumed_from == 1 and resumed.epochs == 2 and straight.resumed_from == 0
    for k, v in straight.G.state_dict().items():
        assert torch.equal(resumed.G.state_dict()[k], v), k
    for k, v in straight.D.state_dict().items():
        assert torch.equal(resumed.D.state_dict()[k], v), k
    assert resumed.history["d_loss"] == straight.history["d_loss"]
    assert (a / "mnist_generator.safetensors").read_bytes() == (b / "mnist_generator.safetensors").read_bytes()
    # Re-running a finished run trains nothing and rewrites the same generator.
    again = _train(tiny_data, epochs=2, config=TINY, out=a, n_samples=0)
    assert again.resumed_from == 2 and (a / "mnist_generator.safetensors").read_bytes() == (b / "mnist_generator.safetensors").read_bytes()
    # Without resume the run starts over (and still gives the same weights).
    fresh = _train(tiny_data, epochs=2, config=TINY, out=a, resume=False, n_samples=0)
    assert fresh.resumed_from == 0 and torch.equal(fresh.G[0].weight, straight.G[0].weight)


def test_resume_refuses_another_config_or_data(tiny_data: torch.Tensor, tmp_path: Path) -> None:
    _train(tiny_data, epochs=1, config=TINY, out=tmp_path, n_samples=0)
    with pytest.raises(InputError, match="same config"):
        _train(tiny_data, epochs=2, config=GANConfig(batch_size=32, seed=1), out=tmp_path)
    with pytest.raises(InputError, match="same config"):
        _train(tiny_data[:-1], epochs=2, config=TINY, out=tmp_path)


def test_train_gan_argument_errors(tiny_data: torch.Tensor) -> None:
    with pytest.raises(InputError, match="batch_size"):
        _train(tiny_data[:10], epochs=1, config=TINY)
    with pytest.raises(InputError, match="epochs"):
        _train(tiny_data, epochs=-1, config=TINY)
    with pytest.raises(InputError, match="loss"):
        GANConfig(loss="wasserstein")
    bad = tiny_data.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(InputError, match="finite"):
        _train(bad, epochs=1, config=TINY)


def test_losses_by_hand() -> None:
    d_real = torch.tensor([2.0, 0.5])
    d_fake = torch.tensor([-2.0, 0.0])
    # relu(1 - [2, .5]) = [0, .5], relu(1 + [-2, 0]) = [0, 1]: means .25 + .5
    assert float(discriminator_loss(d_real, d_fake, "hinge")) == pytest.approx(0.75)
    assert float(generator_loss(d_fake, "hinge")) == pytest.approx(1.0)
    # logistic: softplus(-2) + softplus(-.5) averaged, plus softplus(-2) + softplus(0) averaged
    sp = lambda t: math.log1p(math.exp(t))  # noqa: E731
    assert float(discriminator_loss(d_real, d_fake, "nonsaturating")) == pytest.approx(
        (sp(-2) + sp(-0.5)) / 2 + (sp(-2) + sp(0)) / 2)
    assert float(generator_loss(d_fake, "nonsaturating")) == pytest.approx((sp(2) + sp(0)) / 2)


# -- the shipped generator -----------------------------------------------------------------------
def test_load_mnist_generator_is_the_papers_architecture() -> None:
    import geninv
    from geninv.weights import mnist_generator_path, mnist_generator_record

    G = geninv.load_mnist_generator()
    assert G.dims == [20, 128, 392, 784]
    assert [layer.activation.name for layer in G.layers] == ["relu", "relu", "plu"]
    assert G.output_activation.params == {"alpha": 0.1, "c": 1.0}
    rec = mnist_generator_record()
    assert rec["command"].startswith("geninv train mnist") and rec["epochs"] >= 1
    assert rec["generator_sha256"] == hashlib.sha256(mnist_generator_path().read_bytes()).hexdigest()
    G64 = geninv.load_mnist_generator(dtype=torch.float64)
    z, y = G64.sample(8, seed=0)
    assert y.dtype == torch.float64 and y.shape == (8, 784)


# -- classifier and sparsity checks -----------------------------------------------------------------
def test_classifier_learns_the_embedded_digits() -> None:
    x, y = mnist("train", limit=2000)
    xt, yt = mnist("test")
    clf = train_classifier(x, y, hidden=0, epochs=10, seed=0)
    acc = float((predict_proba(clf, xt).argmax(1) == yt).double().mean())
    assert acc > 0.8  # logistic regression on MNIST reaches ~0.85-0.9 on 2,000 images


def test_confidence_summary_by_hand() -> None:
    p = torch.tensor([[0.95, 0.05] + [0.0] * 8, [0.0, 0.5, 0.5] + [0.0] * 7, [0.0] * 9 + [1.0]])
    s = confidence_summary(p)
    assert s["mean_max_prob"] == pytest.approx((0.95 + 0.5 + 1.0) / 3)
    assert s["frac_max_prob_gt"]["0.9"] == pytest.approx(2 / 3)
    # argmax of a tie is the first index
    assert s["label_histogram"] == [1, 1, 0, 0, 0, 0, 0, 0, 0, 1]


def _constant_generator(dims: list[int]) -> Generator:
    """Zero weights and biases 1: every hidden unit is active for every latent, s_i = n_i."""
    layers = []
    for i in range(len(dims) - 1):
        act = Activation("relu") if i < len(dims) - 2 else Activation("tanh")
        layers.append(Layer(torch.zeros(dims[i + 1], dims[i]), torch.ones(dims[i + 1]), act))
    return Generator(layers)


def test_sparsity_report_corollary1_by_hand() -> None:
    ok = sparsity_report(_constant_generator([2, 5, 11, 30]), n=10)  # 2 <= 5, 10 < 11, 22 < 30
    assert ok["layers"]["s1"]["median"] == 5 and ok["layers"]["s2"]["max"] == 11
    assert ok["corollary1"]["all"] == 1.0 and ok["corollary1"]["expansion"] == 1.0
    bad = sparsity_report(_constant_generator([2, 5, 9, 30]), n=10)  # 10 < 9 fails
    assert bad["corollary1"]["s1_lt_half_s2"] == 0.0 and bad["corollary1"]["all"] == 0.0
    assert bad["corollary1"]["n0_le_s1"] == 1.0
    narrow = sparsity_report(_constant_generator([2, 5, 11, 20]), n=10)  # 22 < 20 fails (image layer)
    assert narrow["corollary1"]["expansion"] == 1.0 and narrow["corollary1"]["all"] == 0.0


def test_sparsity_report_matches_direct_counts() -> None:
    G = random_generator([20, 128, 392, 784], output="tanh", seed=0, bias=True)
    r = sparsity_report(G, n=200, seed=3)
    z, _ = G.sample(200, seed=3)
    x1 = torch.relu(z @ G.weights[0].T + G.biases[0])
    x2 = torch.relu(x1 @ G.weights[1].T + G.biases[1])
    s1, s2 = (x1 > 0).sum(1), (x2 > 0).sum(1)
    assert r["layers"]["s1"]["max"] == int(s1.max()) and r["layers"]["s2"]["min"] == int(s2.min())
    expected = ((s1 >= 20) & (2 * s1 < s2) & (2 * s2 < 784)).double().mean().item()
    assert r["corollary1"]["all"] == pytest.approx(expected)


def test_build_generator_plu_module() -> None:
    G = build_generator(GANConfig(plu_alpha=0.2, plu_c=0.5))
    assert isinstance(G[-1], PLU) and G[-1].alpha == 0.2 and G[-1].c == 0.5


def test_threads_setting_is_restored(tiny_data: torch.Tensor) -> None:
    before = torch.get_num_threads()
    r = _train(tiny_data, epochs=1, config=TINY)
    assert torch.get_num_threads() == before and r.record["threads"] == 1


def test_sparsity_report_agrees_with_certify_architecture() -> None:
    from geninv.certificates.architecture import certify_architecture

    G = random_generator([20, 60, 130, 300], output="tanh", seed=1, bias=True)
    mine = sparsity_report(G, n=300, seed=2)
    theirs = certify_architecture(G, 300, seed=2, theorem1=False)
    assert mine["corollary1"]["all"] == pytest.approx(theirs.corollary1["all"])
    assert mine["corollary1"]["n0_le_s1"] == pytest.approx(theirs.corollary1["n_0 <= s_1"])
    assert mine["corollary1"]["s1_lt_half_s2"] == pytest.approx(theirs.corollary1["s_1 < s_2/2"])
    assert mine["layers"]["s2"]["median"] == pytest.approx(theirs.cardinality[1]["median"])


# -- command line ----------------------------------------------------------------------------------
def _write_idx_dir(d: Path, n_train: int = 64, n_test: int = 20) -> None:
    import struct

    import numpy as np

    x, y = mnist("all", limit=n_train + n_test, scale="unit", dtype=torch.float64)
    pixels = (x * 255).round().to(torch.uint8).numpy().reshape(-1, 28, 28)
    labels = y.numpy().astype(np.uint8)
    for prefix, sl in (("train", slice(0, n_train)), ("t10k", slice(n_train, None))):
        img, lab = pixels[sl], labels[sl]
        (d / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">HBBIII", 0, 8, 3, *img.shape) + img.tobytes())
        (d / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">HBBI", 0, 8, 1, lab.shape[0]) + lab.tobytes())


def test_cli_train_resume_sample_and_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from geninv.cli import main

    data, out = tmp_path / "idx", tmp_path / "run"
    data.mkdir()
    _write_idx_dir(data)
    args = ["train", "mnist", "--data", str(data), "--batch-size", "16", "--out", str(out), "--no-progress"]
    assert main([*args, "--epochs", "1"]) == 0
    assert main([*args, "--epochs", "2"]) == 0
    printed = capsys.readouterr().out
    assert "1 in this run" in printed
    rec = json.loads((out / "mnist_generator.json").read_text())
    assert rec["epochs"] == 2 and rec["data"]["n_images"] == 84 and rec["threads"] == 1
    assert rec["command"].startswith("geninv train mnist --epochs 2 --seed 0 --batch-size 16")
    assert f"--data {data}" in rec["command"]
    for f in ("mnist_generator.safetensors", "mnist_samples.png", "mnist_losses.png", "mnist_checkpoint.pt"):
        assert (out / f).is_file(), f

    gen = out / "mnist_generator.safetensors"
    png = tmp_path / "grid.png"
    assert main(["sample", str(gen), "--n", "9", "--out", str(png), "--seed", "3"]) == 0
    assert png.is_file()
    assert main(["sample", str(tmp_path / "missing.safetensors"), "--out", str(png)]) == 2
    assert "missing" in capsys.readouterr().err

    js = tmp_path / "check.json"
    assert main(["check-mnist-generator", str(gen), "--n", "50", "--hidden", "0", "--data", str(data),
                 "--json", str(js)]) == 0
    r = json.loads(js.read_text())
    assert sum(r["generated"]["label_histogram"]) == 50 and r["classifier"]["test_images"] == 20
    assert r["sparsity"]["dims"] == [20, 128, 392, 784]
    assert r["certificates"]["architecture"]["trials"] == 50
    assert "mean max-p" in capsys.readouterr().out


def test_cli_train_bad_data_path_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from geninv.cli import main

    assert main(["train", "mnist", "--data", str(tmp_path / "nope"), "--out", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope" in err


@pytest.mark.slow
def test_shipped_generator_training_reproduces_its_first_epochs() -> None:
    # Re-run the recorded command's first two epochs and compare the per-epoch losses with the
    # record. Same torch version and platform: bit for bit; elsewhere float rounding of the
    # matrix products differs, so only to 1e-3 relative after two epochs.
    import platform

    from geninv.weights import mnist_generator_record

    rec = mnist_generator_record()
    x, _ = mnist("all")
    assert data_fingerprint(x) == rec["data"]["sha256_float32"]
    r = train_gan(x, epochs=2, config=GANConfig.from_dict(rec["config"]), threads=rec["threads"], progress=False)
    same = rec["versions"]["torch"] == torch.__version__ and rec["versions"]["platform"] == platform.platform()
    for k in ("d_loss", "g_loss"):
        if same:
            assert r.history[k] == rec["history"][k][:2], k
        else:
            assert r.history[k] == pytest.approx(rec["history"][k][:2], rel=1e-3), k

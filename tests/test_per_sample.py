"""Each signal is decided on its own: saturated outputs and per-sample batch decisions.

A bounded output activation rounds to its bound where its pre-activation is large (float32
``sigmoid(a) == 0`` for ``a < -104``). Such pixels give no equation on the pre-activation, so
every method that applies ``phi^{-1}`` leaves them out, per sample, and a sample's result does
not depend on the other samples of its batch.

The decoder here has the shape of Lei et al.'s MNIST VAE decoder (20-60-784, no biases, sigmoid
output) with random weights scaled so that its pre-activations span about [-130, 30]: in
float32 many images have pixels at exactly 0, in float64 none.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import geninv
from geninv import (
    Activation,
    ConvergenceWarning,
    DomainError,
    Generator,
    Layer,
    block_mask,
    random_mask,
    relative_error,
)
from geninv.solvers.image_layer import choose_domains
from geninv.solvers.measurement import saturated

F32, F64 = torch.float32, torch.float64


def decoder(dtype: torch.dtype) -> Generator:
    g = torch.Generator().manual_seed(0)
    W1 = torch.randn(60, 20, generator=g, dtype=F64) / 20**0.5
    W2 = 20.0 * (torch.randn(784, 60, generator=g, dtype=F64) - 0.8) / 60**0.5
    return Generator([Layer(W1.to(dtype), torch.zeros(60, dtype=dtype), Activation("relu")),
                      Layer(W2.to(dtype), torch.zeros(784, dtype=dtype), Activation("sigmoid"))])


def latents(B: int, dtype: torch.dtype, seed: int = 5) -> torch.Tensor:
    return torch.randn(B, 20, generator=torch.Generator().manual_seed(seed), dtype=F64).to(dtype)


def tol(dtype: torch.dtype) -> float:
    """Relative error counted as recovered / as the same answer: 1000 eps of the data's dtype."""
    return 1e3 * torch.finfo(dtype).eps


def masks(kind: str, B: int) -> torch.Tensor | None:
    if kind == "clean":
        return None
    if kind == "random":
        return random_mask(784, 0.45, seed=3, batch=B)
    return block_mask(rows=13)


def test_saturated_marks_values_at_the_bounds_in_the_datas_precision():
    sig, tanh = Activation("sigmoid"), Activation("tanh")
    a = torch.tensor([[-120.0, -80.0, -50.0, 0.0, 8.0, 12.0, 17.0, 40.0]], dtype=F64)
    y32 = torch.sigmoid(a.to(F32))
    # float32: 0 (a = -120), and the values a few ulps below 1 (a = 12, 17, 40) say only "a is large"
    assert saturated(sig, y32).tolist() == [[True, False, False, False, False, True, True, True]]
    # float64 represents all of them except the exact 1 of a = 40
    assert saturated(sig, torch.sigmoid(a)).tolist() == [[False] * 7 + [True]]
    yt = torch.tensor([[-1.0, -0.5, 0.999, 1.0, 1.5]], dtype=F64)
    assert saturated(tanh, yt).tolist() == [[True, False, False, True, False]]  # 1.5: out of range, not saturated
    assert not saturated(Activation("identity"), torch.full((2, 3), 1e30)).any()
    assert not saturated(Activation("plu"), yt).any()


def test_the_image_domain_is_chosen_per_sample():
    G = decoder(F32)
    y = G(latents(4, F32))
    y[1, :] = 0.0  # every pixel saturated: no equation on the pre-activation
    y[2, 5] = 1.5  # out of the range (noise)
    meas = geninv.solvers.measurement.resolve_measurement(None, None, G, y)[1]
    domain, pre = choose_domains("auto", G, y, meas)
    assert domain == "mixed" and pre.tolist() == [True, False, False, True]
    _, pre_bp = choose_domains("auto", G, y, meas, out_of_range="pre")
    assert pre_bp.tolist() == [True, True, True, True]  # phi^{-1} then names the value out of range


@pytest.mark.parametrize("kind", ["clean", "random", "block"])
def test_float32_sigmoid_decoder_recovers_as_many_as_float64_and_each_sample_as_alone(kind):
    """The float32 data have pixels at exactly 0 in many images; the pursuits recover every image
    that float64 recovers, and each image's result alone equals its result in the batch."""
    B = 16
    m = masks(kind, B)
    if kind == "random":
        m[3, :740] = False  # 44 observed pixels, fewer than n_L = 60: that sample starts from zero
    counts = {}
    for dtype in (F64, F32):
        G = decoder(dtype)
        z = latents(B, dtype)
        y = G(z)
        if dtype == F32:
            sat = saturated(G.output_activation, y)
            assert int(sat.any(dim=1).sum()) >= B // 4  # the case under test is present
        for method in ("latent_pursuit", "layered_bp"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                res = geninv.invert(G, y, method=method, mask=m, noise_level=0)  # the exact form
            err = relative_error(z, res.z)
            ok = err < tol(dtype)
            counts[(dtype, method)] = int(ok.sum())
            assert res.info["image_domain"] == "pre"
            for i in range(B):
                mi = None if m is None else (m[i : i + 1] if m.ndim == 2 else m)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    alone = geninv.invert(G, y[i : i + 1], method=method, mask=mi, noise_level=0)
                if bool(ok[i]):
                    diff = relative_error(res.z[i : i + 1], alone.z)
                    assert float(diff) < tol(dtype), (method, dtype, i, float(diff))
                else:  # not recovered in the batch: not recovered alone either
                    assert float(relative_error(z[i : i + 1], alone.z)) >= tol(dtype)
    for method in ("latent_pursuit", "layered_bp"):
        c64, c32 = counts[(F64, method)], counts[(F32, method)]
        assert c32 >= c64 - 0.01 * B, (method, c32, c64)
        assert c64 >= B - (1 if kind == "random" else 0)


def test_a_batch_mixing_image_domains_is_solved_per_sample():
    """A noisy tanh sample outside (-1, 1) takes the signal form; its batch mates keep the
    pre-activation form and the answers they get alone."""
    G = geninv.random_generator([20, 200, 600], "tanh", dtype=F64, seed=1)
    z, y = G.sample(4, seed=2)
    y = y.clone()
    y[1, 3] = 1.0 + 1e-3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = geninv.invert(G, y, method="latent_pursuit", max_iter=300)
        assert res.info["image_domain"] == ["pre", "signal", "pre", "pre"]
        assert res.z.shape == (4, 20) and res.converged.shape == (4,)
        assert all(h.shape[1] == 4 for h in res.history.values())
        for i in range(4):
            alone = geninv.invert(G, y[i : i + 1], method="latent_pursuit", max_iter=300)
            assert alone.info["image_domain"] == res.info["image_domain"][i]
            assert float(relative_error(alone.z, res.z[i : i + 1])) < tol(F64)
            assert torch.equal(alone.converged, res.converged[i : i + 1])
    clean = relative_error(z, res.z)
    assert bool((clean[[0, 2, 3]] < 1e-8).all())


@pytest.mark.parametrize("dtype", [F32, F64])
def test_oracle_leaves_saturated_pixels_out(dtype):
    G = decoder(dtype)
    z = latents(8, dtype)
    y = G(z)
    sup = G.trace(z).supports
    if dtype == F64:  # put a pixel exactly at each bound, as float32 rounding would
        y[0, 0], y[1, 1] = 0.0, 1.0
    assert bool(saturated(G.output_activation, y).any())
    for m in (None, random_mask(784, 0.45, seed=3, batch=8)):
        res = geninv.invert(G, y, method="oracle", supports=sup, mask=m)
        assert res.info["mode"] == "layerwise"
        assert bool((relative_error(z, res.z) < tol(dtype)).all())
    y[2, 3] = 1.5  # a value out of the range is not saturated: it is refused
    with pytest.raises(DomainError, match="y"):
        geninv.invert(G, y, method="oracle", supports=sup)


def test_oracle_takes_the_end_to_end_fit_for_a_sample_without_an_unsaturated_pixel():
    G = decoder(F32)
    z = latents(16, F32)
    sat = saturated(G.output_activation, G(z))
    z = z[[0, int(sat.sum(dim=1).argmax()), 2]]  # the middle one has saturated pixels
    y = G(z)
    sup = G.trace(z).supports
    m = torch.zeros(3, 784, dtype=torch.bool)
    m[:, :100] = True
    m[1] = saturated(G.output_activation, y[1])  # sample 1 observes only its saturated pixels
    assert bool(m[1].any())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = geninv.invert(G, y, method="oracle", supports=sup, mask=m)
    assert res.info["mode"] == ["layerwise", "end_to_end", "layerwise"]
    assert bool((relative_error(z[[0, 2]], res.z[[0, 2]]) < tol(F32)).all())
    alone = geninv.invert(G, y[[0]], method="oracle", supports=[s[[0]] for s in sup], mask=m[[0]])
    assert float(relative_error(alone.z, res.z[[0]])) < tol(F32)


@pytest.mark.parametrize("dtype", [F32, F64])
def test_lp_layerwise_keeps_the_mask_on_a_sigmoid_output_and_saturated_pixels_out(dtype):
    G = decoder(dtype)
    z = latents(4, dtype, seed=7)
    y = G(z)
    if dtype == F32:
        assert bool(saturated(G.output_activation, y).any())
    for m in (None, random_mask(784, 0.45, seed=3, batch=4), block_mask(rows=13)):
        res = geninv.invert(G, y, method="lp_layerwise", mask=m)
        assert bool(res.converged.all())
        # HiGHS solves to its feasibility tolerance (1e-7 in float64, 1e-5 in float32), not to rounding
        assert bool((relative_error(z, res.z) < (1e-8 if dtype == F64 else 1e-4)).all()), relative_error(z, res.z)

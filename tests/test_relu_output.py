"""A ReLU (non-invertible) output layer: its positive pixels are equations, its zero pixels the
inequalities W^Z x_L + b^Z <= 0 of eq. (9); the pursuits and the Oracle recover z."""

from __future__ import annotations

import warnings

import pytest
import torch

import geninv
from geninv import ConvergenceWarning, GaussianMatrix, InputError, random_generator, relative_error
from geninv.solvers.measurement import resolve_measurement
from geninv.solvers.relu_output import output_support, relu_image_start

F64 = torch.float64
PURSUITS = ("latent_pursuit", "layered_bp", "oracle")


def _run(method: str, G, y, z, **kw):
    if method == "oracle":
        kw["supports"] = G.trace(z).supports
    return geninv.invert(G, y, method=method, **kw)


def _recovers_certified(G, B: int, seed: int, *, some: bool = True) -> None:
    z, y = G.sample(B, seed=seed)
    unique = torch.tensor([c.unique is True for c in geninv.certify(G, z)])
    assert bool(unique.any()) or not some
    for method in PURSUITS:
        res = _run(method, G, y, z)
        err = relative_error(z, res.z)
        assert bool((err[unique] < 1e-8).all()), f"{method} n_1={G.dims[1]}: {err.tolist()} (unique {unique.tolist()})"
        assert bool(res.fits[unique].all())


def test_the_bias_free_reproduction_is_recovered():
    """The generator of the report: every pursuit and the Oracle returned z = 0 with converged=True."""
    G = random_generator([20, 100, 600], output="relu", seed=0).to(F64)
    z, y = G.sample(8, seed=1)
    for method in PURSUITS:
        with warnings.catch_warnings():
            warnings.simplefilter("error", ConvergenceWarning)
            res = _run(method, G, y, z)
        assert bool((relative_error(z, res.z) < 1e-8).all()), method
        assert res.fits.all() and bool((res.residual < 1e-12).all())
    assert geninv.invert(G, y, method="latent_pursuit").info["image_domain"] == "support"
    default = geninv.invert(G, y)  # the default method, too, recovers every latent
    assert bool((relative_error(z, default.z) < 1e-8).all()) and bool(default.fits.all())


@pytest.mark.parametrize("n1", [50, 200, 300])
def test_certified_signals_of_relu_output_generators_are_recovered(n1):
    _recovers_certified(random_generator([20, n1, 600], output="relu", seed=n1, dtype=F64), 4, 7)


@pytest.mark.slow
@pytest.mark.parametrize("n1", [50, 100, 150, 200, 250, 300, 350, 400])
def test_certified_signals_of_relu_output_generators_are_recovered_sweep(n1):
    for seed in range(3):
        # from n_1 = 350 on the certificate rarely decides (measured: none of 16 signals certified at
        # n_1 = 350, seed 0), so only n_1 <= 300 must certify some
        _recovers_certified(random_generator([20, n1, 600], output="relu", seed=100 * seed + n1, dtype=F64), 16, seed,
                            some=n1 <= 300)


def test_underdetermined_image_layer_needs_the_zero_pixels():
    """Fewer positive pixels than hidden units: the equations alone do not determine x_L; the
    inequalities (and sparsity) do, and Latent-Pursuit uses them."""
    G = random_generator([20, 300, 600], output="relu", seed=3, dtype=F64)
    z, y = G.sample(8, seed=2)
    _, meas = resolve_measurement(None, None, G, y)
    pos, zero = output_support(y, meas)
    assert bool((pos.sum(dim=1) < 300).any())
    under = pos.sum(dim=1) < 300
    x0, exact = relu_image_start(G.weights[-1], G.biases[-1], y, pos, zero, F64)
    assert not bool(exact[under].any())  # the least-squares start is not the answer there
    assert bool((relative_error(G.trace(z).hidden[-1][under], x0[under]) > 1e-3).all())
    res = geninv.invert(G, y, method="latent_pursuit")
    assert bool((relative_error(z, res.z) < 1e-8).all())


@pytest.mark.parametrize("method", PURSUITS)
def test_pixel_masks_on_a_relu_output(method):
    """Hidden pixels are neither equations nor inequalities; 80 % observed still determines x_L."""
    G = random_generator([20, 100, 600], output="relu", seed=1, bias=True, dtype=F64)
    z, y = G.sample(6, seed=4)
    mask = geninv.random_mask(600, 0.2, seed=5, batch=6)
    y_obs = torch.where(mask, y, torch.full_like(y, -7.0))  # hidden values must not matter
    res = _run(method, G, y_obs, z, mask=mask)
    assert bool((relative_error(z, res.z) < 1e-8).all()), method
    assert res.fits.all()


def test_float32_relu_output():
    G = random_generator([20, 100, 600], output="relu", seed=2, dtype=torch.float32)
    z, y = G.sample(8, seed=3)
    for method in PURSUITS:
        res = _run(method, G, y, z)
        assert res.z.dtype == torch.float32
        assert bool((relative_error(z, res.z) < 1e-4).all()), method
        assert res.fits.all()


@pytest.mark.parametrize("method", PURSUITS)
def test_a_general_operator_on_a_relu_output_is_refused_clearly(method):
    G = random_generator([10, 60, 200], output="relu", seed=0, dtype=F64)
    z, y = G.sample(2, seed=1)
    A = GaussianMatrix(150, 200, seed=0, dtype=F64)
    with pytest.raises(InputError, match="relu output") as err:
        _run(method, G, A.forward(y), z, measure=A)
    assert "measure" in str(err.value) and "expected" in str(err.value)


@pytest.mark.parametrize("output", ["leaky_relu", "identity"])
def test_bias_free_leaky_relu_output_and_identity_output_with_relu_inside(output):
    """The neighbours of a ReLU output keep working: LeakyReLU (invertible, kink at 0, bias-free so
    many pre-activations are near it) and identity outputs."""
    G = random_generator([20, 100, 600], output=output, seed=4, bias=False, dtype=F64)
    z, y = G.sample(8, seed=5)
    for method in PURSUITS:
        res = _run(method, G, y, z)
        assert bool((relative_error(z, res.z) < 1e-8).all()), (output, method)
        assert res.fits.all()


def test_relu_output_through_gd_and_hybrid_fits():
    G = random_generator([10, 60, 200], output="relu", seed=0, dtype=F64)
    z, y = G.sample(4, seed=1)
    res = geninv.invert(G, y, method="hybrid")
    assert res.fits.all() and bool((relative_error(z, res.z) < 1e-8).all())
    assert res.info["stage"] == ["pursuit"] * 4

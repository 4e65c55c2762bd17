"""Signals made in float32 and solved in float64 are judged at float32's rounding level."""

from __future__ import annotations

import warnings

import torch

import geninv


def test_float32_signals_solved_in_float64_fit_without_a_warning():
    G32 = geninv.load_mnist_generator()
    _, y32 = G32.sample(6, seed=3)
    G64, y64 = G32.to(dtype=torch.float64), y32.to(torch.float64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = geninv.invert(G64, y64)
    assert not [w for w in caught if issubclass(w.category, geninv.ConvergenceWarning)]
    assert bool(res.fits.all())
    # the residual is float32 rounding, far above float64's level: judged as exact only because
    # the values are float32 numbers
    assert float(res.residual.max()) < geninv.solvers.verdict.rounding_tol(torch.float32)


def test_genuine_float64_data_keeps_float64_rounding_level():
    G = geninv.random_generator([20, 200, 600], "tanh", seed=0, dtype=torch.float64)
    _, y = G.sample(4, seed=1)
    y = y + 1e-7 * torch.randn(y.shape, generator=torch.Generator().manual_seed(2), dtype=y.dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = geninv.invert(G, y, method="latent_pursuit", noise_level=0)
    # 1e-7 perturbations are far above float64 rounding: not counted as an exact fit
    assert not bool(res.fits.any())

"""The hybrid's order of candidates: gradient descent first where the image layer contracts and
Corollary 1 fails there for typical latents, the pursuit first elsewhere."""

from __future__ import annotations

import warnings

import pytest
import torch

import geninv
from geninv.exceptions import InputError
from geninv.metrics import snr
from geninv.solvers.gradient import gd
from geninv.solvers.hybrid import hybrid
from geninv.solvers.hybrid_order import gradient_first, prior_cardinality
from geninv.solvers.measurement import resolve_measurement
from geninv.solvers.refine import network_fit

# float64: a relative error of 1e-13 of z is 260 dB; exact recovery lands at 300-330 dB.
EXACT_DB = 260.0


def _sample(dims: list[int], B: int, seed: int = 0):
    G = geninv.random_generator(dims, "tanh", seed=seed, bias=False, dtype=torch.float64)
    z, y = G.sample(B, seed=seed + 1)
    return G, z, y


def test_order_follows_the_image_layer_certificate() -> None:
    G, _, y = _sample([5, 400, 60], 2, seed=11)
    _, meas = resolve_measurement(None, None, G, y)
    s_L = prior_cardinality(G)
    assert s_L.shape == (64,) and float(s_L.double().median()) >= 30  # s_L ~ n_1 / 2 = 200 >= m / 2 = 30
    first, why = gradient_first(G, y, meas, "auto")
    assert first and "Corollary 1 fails" in why and "n_L = 400 > n = 60" in why
    assert not gradient_first(G, y, meas, "pursuit_first")[0]
    # An image layer that does not contract (n_L = 40 <= n = 60): the pursuit first.
    G2, _, y2 = _sample([5, 40, 60], 2, seed=2)
    assert not gradient_first(G2, y2, resolve_measurement(None, None, G2, y2)[1], "auto")[0]
    with pytest.raises(InputError, match="order"):
        gradient_first(G, y, meas, "bogus")
    with pytest.raises(InputError, match="order"):
        hybrid(G, y, order="gradient_first", fallback=False)


def test_gradient_first_is_exact_and_starts_from_the_gd_baseline() -> None:
    G, z, y = _sample([5, 400, 60], 4, seed=11)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = hybrid(G, y)
        raw = hybrid(G, y, refine_iter=0, seed=3)
        base = gd(G, y, seed=3)
    assert res.info["order"] == "gradient_first"
    assert res.info["choices"] == ("gd", "pursuit", "adam")
    assert bool((snr(z, res.z) > EXACT_DB).all())
    assert bool(res.converged.all())
    # Without refinement the first stage is the baseline itself: same start, same iterations.
    took = raw.info["choice"] == 0
    assert bool(took.any())
    assert torch.equal(raw.z[took], base.z[took])


def test_gradient_first_runs_the_pursuit_where_gd_is_unexplained() -> None:
    G, z, y = _sample([5, 400, 60], 4, seed=11)
    _, meas = resolve_measurement(None, None, G, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # One gradient step from a random start explains nothing; the pursuit then runs everywhere.
        res = hybrid(G, y, fallback_iter=1, refine_iter=0, fallback=("gd",))
        one = gd(G, y, max_iter=1)
    assert res.info["choices"] == ("gd", "pursuit")
    assert bool(res.info["fallback"].all())
    assert bool(torch.isfinite(res.info["objective_pursuit"]).all())
    F_h = network_fit(G, y, res.z, meas)
    F_g = network_fit(G, y, one.z, meas)
    assert bool((F_h <= torch.minimum(F_g, res.info["objective_pursuit"]) * (1 + 1e-12)).all())
    assert bool((F_h < F_g).all())


def test_gradient_first_with_a_given_noise_level_and_a_mask() -> None:
    G, z, y0 = _sample([5, 400, 60], 4, seed=11)
    y, sigma = geninv.add_noise(y0, 40, seed=3)
    mask = torch.ones(60, dtype=torch.bool)
    mask[:6] = False  # 54 observed rows: m / 2 = 27, still below s_1 ~ 200
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = hybrid(G, y * mask, noise_level=sigma, mask=mask)
    assert res.info["order"] == "gradient_first"
    assert torch.allclose(res.info["sigma"], sigma.to(torch.float64))
    assert torch.allclose(res.info["gamma"], sigma.to(torch.float64) ** 2)  # the Gaussian-MAP weight
    # Explained: the fit is within the noise threshold of fit_threshold on every sample.
    assert bool(res.converged.all())
    assert float(snr(z, res.z).median()) > 20  # 40 dB input SNR, n_0 = 5 unknowns
    with pytest.raises(InputError, match="order"):
        hybrid(G, y, order="gradient_first", noise_level="auto")


def test_invert_hybrid_on_a_contracting_image_layer_takes_the_gradient_first_order() -> None:
    # n = 60 pixels, n_L = 400: no sample has more equations than n_L, so the per-sample exact test
    # proves nothing and is skipped; every sample is tried by the exact form (gradient first here)
    # and kept where it fits at rounding level, none re-solved by the noise-aware form.
    from geninv.solvers.per_sample import exact_test

    G, z, y = _sample([5, 400, 60], 4, seed=11)
    _, meas = resolve_measurement(None, None, G, y)
    assert exact_test(G, y, meas) == (None, None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = geninv.invert(G, y, method="hybrid")
    assert res.info["order"] == "gradient_first"
    assert not bool(res.info["noise_form"].any())
    assert bool((snr(z, res.z) > EXACT_DB).all()) and bool(res.fits.all())

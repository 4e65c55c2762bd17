"""The public dispatcher ``geninv.invert``: validation, options, callback, history, warnings."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

import geninv
from geninv import ConvergenceWarning, DomainError, InputError, Mask, ShapeError, random_generator, relative_error

F64 = torch.float64


@pytest.fixture(scope="module")
def small():
    G = random_generator([5, 40, 100], "tanh", seed=0, dtype=F64)
    z, y = G.sample(3, seed=1)
    return G, z, y


def test_unknown_method(small):
    G, _, y = small
    with pytest.raises(InputError, match="method") as e:
        geninv.invert(G, y, method="newton")
    assert "latent_pursuit" in str(e.value)


@pytest.mark.parametrize("method", ["oracle", "layered_bp", "latent_pursuit"])
def test_unknown_option_names_it_and_the_accepted_ones(small, method):
    G, z, y = small
    kw = {"supports": G.trace(z).supports} if method == "oracle" else {}
    with pytest.raises(InputError, match="no_such_option") as e:
        geninv.invert(G, y, method=method, no_such_option=1, **kw)
    assert "max_iter" in str(e.value) and "expected" in str(e.value) and "received" in str(e.value)


@pytest.mark.parametrize("shape", [(3, 99), (3, 100, 1), (0, 100), (101,)])
def test_bad_y_shape(small, shape):
    G, _, _ = small
    with pytest.raises(ShapeError, match="y"):
        geninv.invert(G, torch.zeros(shape, dtype=F64))


@pytest.mark.parametrize("value", [1.0 + 1e-6, -1.5, 1.5])
def test_y_outside_tanh_range_raises_domain_error_where_the_inverse_is_needed(small, value):
    G, z, y = small
    y = y.clone()
    y[1, 7] = value
    with pytest.raises(DomainError, match="y"):
        geninv.invert(G, y, method="oracle", supports=G.trace(z).supports)
    for method in ("latent_pursuit", "layered_bp"):
        with pytest.raises(DomainError, match="y"):  # the exact form, asked for phi^{-1}(y)
            geninv.invert(G, y, method=method, image_domain="pre", noise_level=0)


@pytest.mark.parametrize("method", ["latent_pursuit", "layered_bp"])
def test_pursuits_auto_fall_back_to_the_signal_domain(small, method):
    """Noisy tanh data may leave (-1, 1); the default image_domain='auto' then fits phi(.) to y."""
    G, z, y = small
    y = y.clone()
    y[0, 3] = 1.0 + 1e-3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = geninv.invert(G, y, method=method, max_iter=200, noise_level=0)  # the exact form
    assert res.info["image_domain"] == ["signal"] + ["pre"] * (y.shape[0] - 1)  # decided per sample
    assert torch.isfinite(res.z).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_y_is_refused(small, dtype):
    G, _, y = small
    with pytest.raises(InputError, match="y"):
        geninv.invert(G, y.to(dtype))


@pytest.mark.parametrize("method", ["oracle", "layered_bp", "latent_pursuit"])
def test_nan_in_y(small, method):
    G, z, y = small
    y = y.clone()
    y[2, 0] = math.nan
    kw = {"supports": G.trace(z).supports} if method == "oracle" else {}
    with pytest.raises(InputError, match="y"):
        geninv.invert(G, y, method=method, **kw)


@pytest.mark.parametrize("option, value", [("lam", -1.0), ("lam", math.nan), ("max_iter", 0), ("max_iter", 2.5),
                                           ("tol", -1.0), ("seed", "x"), ("callback", 3), ("rho", 0.0),
                                           ("gamma", -1.0), ("debias", "yes"), ("image_domain", "fourier")])
def test_bad_option_values(small, option, value):
    G, _, y = small
    with pytest.raises(InputError, match=option):
        geninv.invert(G, y, method="latent_pursuit", **{option: value})


def test_oracle_needs_supports_and_refuses_empty_ones(small):
    G, z, y = small
    with pytest.raises(InputError, match="supports"):
        geninv.invert(G, y, method="oracle")
    sup = [s.clone() for s in G.trace(z).supports]
    sup[0][1] = False
    with pytest.raises(InputError, match="supports"):
        geninv.invert(G, y, method="oracle", supports=sup)
    with pytest.raises(ShapeError, match="supports"):
        geninv.invert(G, y, method="oracle", supports=[sup[0][:, :5]])


def test_mask_and_measure_are_exclusive_and_checked(small):
    G, _, y = small
    m = torch.ones(100, dtype=torch.bool)
    with pytest.raises(InputError, match="mask"):
        geninv.invert(G, y, mask=m, measure=Mask(m))
    with pytest.raises(ShapeError, match="mask"):
        geninv.invert(G, y, mask=torch.ones(99, dtype=torch.bool))


def test_signal_without_information_about_z_is_refused():
    """y = phi(b_2): every unit of the hidden layer off; z is not determined."""
    G = random_generator([5, 40, 100], "tanh", seed=0, bias=True, dtype=F64)
    y = torch.tanh(G.biases[-1])[None].repeat(2, 1)
    with pytest.raises(InputError, match="y"):
        geninv.invert(G, y, method="latent_pursuit")


def test_callback_history_and_info(small):
    G, z, y = small
    calls = []
    res = geninv.invert(G, y, method="latent_pursuit", callback=lambda k, st: calls.append((k, st["stage"], st["x"].shape)))
    stages = {c[1] for c in calls}
    assert stages == {"x1", "z"}
    assert all(shape[0] == 3 for _, _, shape in calls)
    for key, h in res.history.items():
        assert h.ndim == 2 and h.shape[1] == 3, key
        assert torch.isfinite(h).all(), key
    # objectives recorded at the checks never end above where they started
    h = res.history["x1.objective"]
    assert (h[-1] <= h[0]).all()
    assert set(res.info["n_iter"]) == {"x1", "z"}
    assert (res.n_iter == res.info["n_iter"]["x1"] + res.info["n_iter"]["z"]).all()
    assert res.seconds > 0


def test_convergence_warning_and_flags_at_max_iter(small):
    G, _, y = small
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        # From zero (the least-squares warm start is exact on noiseless data and stops at once).
        res = geninv.invert(G, y, method="layered_bp", max_iter=2, check_every=1, tol=1e-15, warm_start=False,
                            debias=False)  # the debiasing alone would fit y: no warning then
    assert not res.converged.any()
    assert torch.isfinite(res.z).all()


def test_user_mu_above_the_admm_condition_raises(small):
    G, _, y = small
    with pytest.raises(InputError, match="mu"):
        geninv.invert(G, y, method="latent_pursuit", mu=1e3)


def test_public_exports_and_one_dimensional_y(small):
    G, z, y = small
    for name in ("invert", "oracle", "layered_bp", "latent_pursuit"):
        assert hasattr(geninv, name)
    res = geninv.latent_pursuit(G, y[0])
    assert res.z.shape == (1, 5)
    assert float(relative_error(z[:1], res.z)) < 1e-6


def test_generator_without_hidden_layer():
    G = random_generator([6, 50], "tanh", seed=0, dtype=F64)
    z, y = G.sample(3, seed=0)
    for method in ("latent_pursuit", "layered_bp"):
        res = geninv.invert(G, y, method=method)
        assert (relative_error(z, res.z) < 1e-10).all()
    res = geninv.invert(G, y, method="oracle", supports=[])
    assert (relative_error(z, res.z) < 1e-10).all()

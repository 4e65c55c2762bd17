"""Every result checks itself: per-sample ``residual`` and ``fits``, one warning per call, and the
certificates and solvers agree on random generators of every output activation."""

from __future__ import annotations

import inspect
import re
import warnings

import numpy as np
import pytest
import torch

import geninv
from geninv import ConvergenceWarning, random_generator, relative_error
from geninv.solvers.verdict import fit_verdict, noise_tol, rounding_tol

F64 = torch.float64
OUTPUTS = ("tanh", "sigmoid", "leaky_relu", "plu", "identity", "relu")
PURSUITS = ("latent_pursuit", "layered_bp", "oracle")
ALL = ("latent_pursuit", "layered_bp", "oracle", "gd", "adam", "lp_layerwise", "hybrid")
# Methods that without noise_level solve the samples that are not exact with the noise level
# estimated; noise_level=0 asks for their exact form, judged at rounding level.
EXACT_DEFAULT = ("latent_pursuit", "layered_bp", "hybrid")


def _case(k: int) -> tuple[geninv.Generator, torch.Tensor, torch.Tensor, torch.dtype]:
    """Generator k: output ``OUTPUTS[k % 6]``, 1-2 hidden layers widening by 2-3x from 5-8 n_0 (so
    that most signals are certified unique), float32 for k < 6; 4 signals, the last one noisy
    (1 % of its mean amplitude, kept inside the activation's range), so not in G's range."""
    rng = np.random.default_rng(k)
    out = OUTPUTS[k % len(OUTPUTS)]
    n0 = int(rng.integers(3, 9))
    dims = [n0, int(rng.integers(5 * n0, 8 * n0))]
    for _ in range(int(rng.integers(1, 3))):
        dims.append(int(dims[-1] * rng.uniform(2.0, 3.0)))
    dt = torch.float32 if k < len(OUTPUTS) else F64
    G = random_generator(dims, output=out, seed=k, bias=bool(k % 2), dtype=dt)
    z, y = G.sample(4, seed=k)
    y = y.clone()
    noise = torch.randn(y.shape[1], generator=torch.Generator().manual_seed(k), dtype=F64).to(dt)
    y[3] = y[3] + 1e-2 * y[3].abs().mean() * noise
    if out in ("tanh", "sigmoid"):
        lo, hi = G.output_activation.range
        y[3] = y[3].clamp(lo + 1e-3, hi - 1e-3)
    if out == "relu":
        y[3] = y[3].clamp_min(0)
    return G, z, y, dt


@pytest.mark.parametrize("k", range(2 * len(OUTPUTS)))
def test_certified_signals_are_recovered_and_fits_is_the_image_match(k):
    """For certified-unique noiseless signals every pursuit and the Oracle recover z (float64:
    relative error < 1e-8; float32: < 1e-3), and for every method ``fits`` is True exactly where
    its image matches y to the dtype's rounding level (computed here independently)."""
    G, z, y, dt = _case(k)
    unique = torch.tensor([c.unique is True for c in geninv.certify(G, z)])
    unique[3] = False  # the noisy signal
    assert int(unique.sum()) >= 1, "the case must certify some signal"
    tol_z = 1e-8 if dt == F64 else 1e-3
    for method in ALL:
        opts = {"supports": G.trace(z).supports} if method == "oracle" else {}
        if method in ("gd", "adam"):
            opts["max_iter"] = 300
        if method in EXACT_DEFAULT:
            opts["noise_level"] = 0  # judged at rounding level: the noisy signal does not fit
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            res = geninv.invert(G, y, method=method, **opts)
        G64 = G.to(dtype=F64)
        image_err = (G64(res.z.to(F64)) - y.to(F64)).norm(dim=1) / y.to(F64).norm(dim=1)
        assert torch.allclose(res.residual, image_err, rtol=1e-6, atol=1e-300), method
        match = image_err <= rounding_tol(dt)
        assert torch.equal(res.fits, match), f"{method}: fits {res.fits.tolist()} vs image error {image_err.tolist()}"
        assert not bool(res.fits[3]), f"{method}: the noisy signal is not in G's range"
        if method in PURSUITS:
            err = relative_error(z, res.z)
            assert bool((err[unique] < tol_z).all()), f"{method} on {G!r}: errors {err.tolist()}, unique {unique.tolist()}"


def _not_in_range():
    G = random_generator([10, 60, 200], "tanh", seed=0, dtype=F64)
    z, y = G.sample(4, seed=1)
    y_bad = y.clone()
    y_bad[1] = (y_bad[1] + 0.05 * torch.randn(200, generator=torch.Generator().manual_seed(2), dtype=F64)).clamp(-0.99, 0.99)
    return G, z, y, y_bad


@pytest.mark.parametrize("method", ["latent_pursuit", "gd", "hybrid"])
def test_invert_warns_once_with_counts_when_a_sample_does_not_fit(method):
    G, _, y, y_bad = _not_in_range()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = geninv.invert(G, y_bad, method=method, **({"noise_level": 0} if method in EXACT_DEFAULT else {}))
        line = inspect.currentframe().f_lineno - 1  # type: ignore[union-attr]
    conv = [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert len(conv) == 1, [str(w.message) for w in conv]
    msg = str(conv[0].message)
    assert re.search(r"\b1 of 4 sample\(s\) do not fit y", msg), msg
    assert "not a preimage of y" in msg and "outside the range of G" in msg
    assert conv[0].filename == __file__ and conv[0].lineno == line, "the warning must point at the caller's line"
    assert res.fits.tolist() == [True, False, True, True]
    assert float(res.residual[1]) > 1e-3 and bool((res.residual[[0, 2, 3]] <= rounding_tol(F64)).all())


@pytest.mark.parametrize("method", ["latent_pursuit", "layered_bp", "gd", "hybrid", "lp_layerwise"])
def test_invert_does_not_warn_when_every_sample_fits(method):
    G, _, y, _ = _not_in_range()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        res = geninv.invert(G, y, method=method)
    assert res.fits.all() and res.residual.dtype == F64 and res.residual.shape == (4,)


def test_a_given_noise_level_decides_the_fit():
    G = random_generator([10, 60, 200], "identity", seed=0, dtype=F64)
    z, y = G.sample(3, seed=1)
    sigma = 1e-3
    yn = y + sigma * torch.randn(y.shape, generator=torch.Generator().manual_seed(3), dtype=F64)
    with pytest.warns(ConvergenceWarning, match="3 of 3 sample"):
        plain = geninv.invert(G, yn, method="gd")
    assert not plain.fits.any()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        noisy = geninv.invert(G, yn, method="latent_pursuit", noise_level=sigma)
    assert noisy.fits.all()
    # the verdict itself: a residual at the noise level fits, ten times it does not
    rn = torch.tensor([sigma * 200**0.5, 10 * sigma * 200**0.5], dtype=F64)
    _, fits = fit_verdict(rn, torch.ones(2, dtype=F64), torch.full((2,), 200.0, dtype=F64), data_dtype=F64,
                          noise_level=torch.full((2,), sigma, dtype=F64))
    assert fits.tolist() == [True, False]
    assert float(noise_tol(torch.tensor(sigma, dtype=F64), torch.tensor(200.0))) == pytest.approx(sigma * (200**0.5 + 4))


def test_the_data_dtype_sets_the_rounding_level():
    """float32 data inverted by a float64 solve: the verdict uses float32's rounding level."""
    G32 = random_generator([10, 60, 200], "tanh", seed=0, dtype=torch.float32)
    z, y32 = G32.sample(3, seed=1)
    res = geninv.invert(G32.to(dtype=F64), y32, method="latent_pursuit")  # the data stays float32
    assert res.fits.all()
    r = torch.tensor([1e-6, 1e-3], dtype=F64)
    one = torch.ones(2, dtype=F64)
    assert fit_verdict(r, one, one, data_dtype=torch.float32)[1].tolist() == [True, False]
    assert fit_verdict(r, one, one, data_dtype=F64)[1].tolist() == [False, False]


def test_repr_is_short_and_layer_snr_has_one_entry_per_layer():
    G = random_generator([8, 50, 120, 300], "tanh", seed=0, dtype=F64)
    z, y = G.sample(5, seed=1)
    res = geninv.invert(G, y)
    text = repr(res)
    assert "\n" not in text and len(text) < 200
    assert "method='auto'" in text and "B=5" in text and "fits=5/5" in text and "converged=5/5" in text
    snrs = geninv.layer_snr(G, z, res)
    assert len(snrs) == G.n_hidden + 2 and all(s.shape == (5,) for s in snrs)
    assert all(bool((s > 150).all()) for s in snrs)  # exact recovery: every layer at float64 level
    wrong = geninv.layer_snr(G, z, geninv.invert(G, y[[1, 0, 2, 3, 4]]))
    assert bool((wrong[0][:2] < 20).all()) and bool((wrong[-1][:2] < 20).all())
    with pytest.raises(geninv.ShapeError, match="z_true"):
        geninv.layer_snr(G, z[:2], res)


def test_hybrid_reports_its_stage_and_its_residual_test():
    G = random_generator([10, 60, 200], "tanh", seed=0, dtype=F64)
    _, _, y, y_bad = _not_in_range()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = geninv.invert(G, y_bad, method="hybrid", fallback_iter=200, noise_level=0)
    stage = res.info["stage"]
    assert len(stage) == 4 and set(stage) <= set(res.info["choices"])
    assert [res.info["choices"][c] for c in res.info["choice"].tolist()] == stage
    assert res.converged.tolist() == [True, False, True, True]  # its residual test, not a candidate's flag
    assert res.fits.tolist() == [True, False, True, True]

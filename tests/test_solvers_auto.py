"""The default method ``auto``: the exact path bit for bit, the noise level against the truth,
recovery at the Oracle's level on noisy data, the data's precision, and signals off the range."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

import geninv
from geninv.exceptions import InputError
from geninv.metrics import snr
from geninv.solvers.auto import STAGES, auto, residual_noise_level
from geninv.solvers.image_layer import data_dtype
from geninv.solvers.measurement import resolve_measurement

F64 = torch.float64


def _gen(dims: list[int], output: str = "plu", seed: int = 3, dtype: torch.dtype = F64) -> geninv.Generator:
    return geninv.random_generator(dims, output, seed=seed, bias=True, dtype=dtype)


def test_invert_defaults_to_auto() -> None:
    G = _gen([6, 40, 120])
    z, y = G.sample(3, seed=0)
    res = geninv.invert(G, y)
    assert res.method == "auto"
    assert float(snr(z, res.z).min()) > 150


@pytest.mark.parametrize("output, mask", [("tanh", False), ("plu", True)])
def test_exact_data_take_latent_pursuits_path_bit_for_bit(output: str, mask: bool) -> None:
    G = _gen([10, 120, 400], output=output)
    z, y = G.sample(8, seed=1)
    kw = {}
    if mask:
        kw["mask"] = torch.rand(400, generator=torch.Generator().manual_seed(0)) > 0.3
    a = geninv.invert(G, y, **kw)  # the default on a fully connected generator: Latent-Pursuit's path
    b = geninv.invert(G, y, method="latent_pursuit", **kw)
    assert a.info["exact_path"] == "full"
    assert torch.equal(a.z, b.z)
    assert all(torch.equal(u, v) for u, v in zip(a.supports, b.supports))
    assert bool((a.info["stage"] == STAGES.index("exact")).all())
    assert bool((a.info["noise_level"] == 0).all()) and bool(a.info["fits"].all())
    # Asked for, the fast exact path comes first (no mask only): the same supports, z to rounding.
    d = geninv.invert(G, y, fast_path=True, **kw)
    assert d.info["exact_path"] == ("full" if mask else "fast")
    assert bool((d.info["stage"] == STAGES.index("exact")).all()) and bool(d.info["fits"].all())
    assert all(torch.equal(u, v) for u, v in zip(d.supports, b.supports))
    # float64, one least-squares solve per layer of condition ~10: relative error a few 1e-15.
    assert float(geninv.relative_error(b.z, d.z).max()) < 1e-12


def test_estimated_noise_level_matches_the_truth_over_many_draws() -> None:
    # m = 300, n_0 = 8: the estimate ||r|| / sqrt(m - n_0) at the right fit has relative standard
    # deviation 1 / sqrt(2 (m - n_0)) = 4.1 %; over 64 draws the median is within 2.5 % (a
    # 5-sigma band for the median, whose standard error is about 1.25 x 4.1 % / 8).
    G = _gen([8, 40, 120, 300])
    z, y0 = G.sample(64, seed=4)
    for snr_db in (20.0, 40.0):
        y, sigma = geninv.add_noise(y0, snr_db, seed=5)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = auto(G, y)
        ratio = res.info["noise_level"] / sigma
        assert abs(float(ratio.median()) - 1.0) < 0.025, snr_db
        assert bool(((ratio > 0.8) & (ratio < 1.2)).all()), snr_db
        # Every fit is consistent with its own level, and none took the exact path.
        assert bool(res.info["fits"].all())
        assert not bool((res.info["stage"] == 0).any())


@pytest.mark.parametrize("snr_db", [20.0, 30.0])
def test_noisy_recovery_is_at_the_end_to_end_oracles_level(snr_db: float) -> None:
    # The end-to-end Oracle (true supports, least squares through the network) is the ceiling.
    G = _gen([10, 60, 200, 600])
    z, y0 = G.sample(32, seed=6)
    y, sigma = geninv.add_noise(y0, snr_db, seed=7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = geninv.invert(G, y)
        orc = geninv.oracle(G, y, supports=G.trace(z).supports, mode="end_to_end")
    a, o = snr(z, res.z), snr(z, orc.z)
    assert float(a.median()) >= float(o.median()) - 0.5
    assert float(a.quantile(0.1)) >= float(o.quantile(0.1)) - 1.5
    # It fits y as well as the Oracle on every sample (the same least squares, supports free), up
    # to the statistical stop of the refinement (a step gaining < 1e-3 n_0 / (m - n_0) of the fit).
    _, meas = resolve_measurement(None, None, G, y)
    from geninv.solvers.refine import network_fit

    assert bool((network_fit(G, y, res.z, meas) <= network_fit(G, y, orc.z, meas) * (1 + 1e-3)).all())


def test_given_noise_level_is_reported_and_zero_means_exact() -> None:
    G = _gen([6, 40, 120])
    z, y0 = G.sample(4, seed=2)
    y, sigma = geninv.add_noise(y0, 35, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = auto(G, y, noise_level=sigma)
    assert torch.equal(res.info["noise_level"], sigma.to(F64))
    assert torch.equal(res.info["noise_reference"], sigma.to(F64))
    # Exact data declared exact: Latent-Pursuit's result.
    z, y = G.sample(4, seed=8)
    a = auto(G, y, noise_level=0, fast_path=False)
    assert torch.equal(a.z, geninv.latent_pursuit(G, y).z)
    with pytest.raises(InputError, match="noise_level"):
        auto(G, y, noise_level="loud")
    with pytest.raises(InputError, match="noise_level"):
        auto(G, y, noise_level=-1.0)


def test_float32_data_solved_in_float64_take_the_exact_path() -> None:
    G32 = _gen([10, 120, 400], output="tanh", dtype=torch.float32)
    z, y32 = G32.sample(16, seed=9)
    assert data_dtype(y32.double()) == torch.float32
    assert data_dtype(y32.double() + 1e-12) == F64
    mask = torch.rand(16, 400, generator=torch.Generator().manual_seed(1)) > 0.45
    G64 = G32.to(dtype=F64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        same = geninv.invert(G32, y32, mask=mask, method="latent_pursuit")
        mixed = geninv.invert(G64, y32.double(), mask=mask, method="latent_pursuit")
        mixed_auto = geninv.invert(G64, y32.double(), mask=mask)
    bad_same = int((snr(z, same.z) < 40).sum())
    assert int((snr(z, mixed.z) < 40).sum()) <= bad_same
    assert int((snr(z, mixed_auto.z) < 40).sum()) <= bad_same
    # The image-layer start is exact at float32's rounding level, so lam = 0 there.
    assert bool((mixed.info["lam"]["x1"] == 0).all())


def test_signal_off_the_range_is_the_best_fit_and_says_it_does_not_fit() -> None:
    G = _gen([6, 40, 120])
    z, y0 = G.sample(4, seed=10)
    y = y0.clone()
    y[:, :30] = y[:, :30] + 0.5  # a structured corruption no latent explains
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = auto(G, y)
        res_g = auto(G, y, fallback=True, fallback_iter=300)
    assert not bool(res.info["fits"].any()) and not bool(res_g.info["fits"].any())
    assert bool((res.info["residual"] > 1e-2).all())
    # Its fit is as good as the pursuit's own answer (to 1e-3: the refinement stops at its step
    # cap, 50, where a fit creeps along an output kink); with the gradient fallback, at least as
    # good as gradient descent's (a candidate is kept only where it fits better).
    _, meas = resolve_measurement(None, None, G, y)
    from geninv.solvers.refine import network_fit

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = geninv.invert(G, y, method="gd", max_iter=300)
        p = geninv.invert(G, y, method="latent_pursuit")
    assert bool((network_fit(G, y, res.z, meas) <= network_fit(G, y, p.z, meas) * (1 + 1e-3)).all())
    assert bool((network_fit(G, y, res_g.z, meas) <= network_fit(G, y, g.z, meas) * (1 + 1e-9)).all())


def test_residual_noise_level_is_the_median_absolute_residual() -> None:
    G = _gen([6, 40, 120])
    z, y0 = G.sample(64, seed=11)
    y, sigma = geninv.add_noise(y0, 30, seed=12)
    _, meas = resolve_measurement(None, None, G, y)
    est = residual_noise_level(G, y, meas, z)
    r = (y - y0).abs()
    assert torch.allclose(est, 1.4826 * r.median(dim=1).values, rtol=1e-12)
    # Consistent for Gaussian noise: median ratio within 5 % (the MAD's relative standard error
    # is about 1.17 / sqrt(120) = 11 % per sample, 1.4 % for the median of 64).
    assert abs(float((est / sigma).median()) - 1) < 0.05
    assert math.isfinite(float(est.sum()))


def test_theorem2_a_posteriori_bound_is_never_violated_where_it_applies() -> None:
    # Small identity-output generators, where Theorem 2's conditions can hold (as in the bound's
    # own tests); every input SNR, the bound must cover the actual error wherever it is finite.
    G = geninv.random_generator([4, 12, 200], "identity", seed=1, bias=False, dtype=F64)
    z, y0 = G.sample(16, seed=2)
    finite = 0
    for snr_db in (40.0, 50.0, 60.0, math.inf):
        y = y0 if snr_db == math.inf else geninv.add_noise(y0, snr_db, seed=3)[0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = auto(G, y, bound=True)
        bnd = res.info["z_error_bound"]
        err = (res.z - z).norm(dim=1)
        ok = torch.isfinite(bnd)
        finite += int(ok.sum())
        assert bool((err[ok] <= bnd[ok]).all()), (snr_db, err[ok], bnd[ok])
    assert finite >= 16  # the bound is not vacuous here
    # Not computed by default; NaN through a measurement operator.
    assert "z_error_bound" not in auto(G, y0).info
    mask = torch.ones(200, dtype=torch.bool)
    mask[:10] = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        masked = auto(G, y0, mask=mask, bound=True)
    assert bool(torch.isnan(masked.info["z_error_bound"]).all())


def test_a_signal_no_latent_explains_warns_with_the_residual_not_max_iter() -> None:
    G = _gen([6, 40, 120])
    z, y0 = G.sample(3, seed=13)
    y = y0.clone()
    y[:, :30] += 0.5
    with pytest.warns(geninv.ConvergenceWarning, match="not explained by G") as rec:
        auto(G, y, fallback_iter=200)
    msgs = [str(w.message) for w in rec]
    assert not any("raise max_iter" in m for m in msgs)
    assert any("relative residual" in m and "outside the range of G" in m for m in msgs)


def test_options_are_checked_once_and_a_callback_can_stop_after_a_stage() -> None:
    from geninv.solvers.auto import AutoOptions

    with pytest.raises(InputError, match="fallback"):
        AutoOptions.checked(fallback="gd")
    with pytest.raises(InputError, match="sigma_z"):
        AutoOptions.checked(sigma_z=0.0)
    assert AutoOptions.checked(fallback=True).fallback == ("gd",)
    G = _gen([6, 40, 120])
    z, y0 = G.sample(4, seed=21)
    y, _ = geninv.add_noise(y0, 30.0, seed=22)
    seen: list[tuple[int, str]] = []

    def cb(k: int, state: dict) -> bool:
        seen.append((k, state["stage"]))
        assert state["z"].shape == (4, 6) and state["objective"].shape == (4,)
        return state["stage"] == "refine"

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = auto(G, y, callback=cb)
        full = auto(G, y)
    stages = [s for _, s in seen]
    assert [s for s in stages if s != "levenberg_marquardt"] == ["exact", "least_squares", "refine"]
    # Every Levenberg-Marquardt step reports, numbered from 1, before the least-squares stage ends.
    lm = [k for k, s in seen if s == "levenberg_marquardt"]
    assert lm and lm[0] == 1 and stages.index("least_squares") > stages.index("levenberg_marquardt")
    assert res.info["stopped_by_callback"] is True and full.info["stopped_by_callback"] is False
    # Stopped after the refinement: the refined estimate itself.
    assert bool((res.info["stage"] == STAGES.index("refined")).all())
    # Stopped after the first Levenberg-Marquardt step: that step's estimate is the result.
    first: list[torch.Tensor] = []

    def cb_lm(k: int, state: dict) -> bool:
        if state["stage"] == "levenberg_marquardt":
            first.append(state["z"].clone())
            return True
        return False

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res1 = auto(G, y, callback=cb_lm)
    assert len(first) == 1 and res1.info["stopped_by_callback"] is True
    assert torch.equal(res1.z, first[0])


@pytest.mark.parametrize("probe_iter", [6, (3, 3)])  # one probing round (the default), two halving rounds
def test_bank_starts_alone_recover_planted_latents(probe_iter: int | tuple[int, ...]) -> None:
    from geninv.solvers.refine import network_fit
    from geninv.solvers.support_fit import bank_refine as _multistart

    G = _gen([4, 30, 80], output="tanh")
    z, y = G.sample(16, seed=23)
    yy, meas = resolve_measurement(None, None, G, y)
    idx = torch.arange(16)
    zero = torch.zeros(16, dtype=F64)
    zb, conv, it = _multistart(G, yy, meas, idx, zero, 8, 1.0, 0, 50, F64, probe_iter=probe_iter)
    assert float(((zb - z).norm(dim=1) / z.norm(dim=1)).max()) < 1e-8
    assert bool(conv.all()) and bool((it > 0).all())
    # The kept start is the lowest fit: at the rounding level of the data.
    floor = 0.5 * (1e3 * torch.finfo(F64).eps * y.norm(dim=1)) ** 2
    assert bool((network_fit(G, yy, zb, meas) <= floor).all())


@pytest.mark.parametrize("kind", ["identity", "operator"])
def test_polish_never_raises_the_objective_and_lowers_a_stalled_fit(kind: str) -> None:
    from geninv.solvers.polish import adam_polish as _polish
    from geninv.solvers.refine import network_fit
    from geninv.solvers.support_fit import support_refine

    G = _gen([6, 40, 120], output="plu", seed=5)
    gen = torch.Generator().manual_seed(8)
    m = 120 if kind == "identity" else 80
    y = torch.rand(10, m, generator=gen, dtype=F64) * 2 - 1  # not in the range of G
    measure = None if kind == "identity" else geninv.GaussianMatrix(80, 120, seed=3, dtype=F64)
    yy, meas = resolve_measurement(measure, None, G, y)
    z0 = torch.randn(10, 6, generator=gen, dtype=F64)
    gam = torch.zeros(10, dtype=F64)
    gam[:3] = 1e-2  # the prior term is part of the objective
    # Levenberg-Marquardt run until it stops (a stationary point or a stall on a region boundary).
    zl, f_l, _, _ = support_refine(G, yy, meas, z0, gamma=gam, max_iter=200)
    z, obj, conv, it = _polish(G, yy, meas, zl, torch.arange(10), gam, 1.0, torch.float32)
    f_p = network_fit(G, yy, z, meas, gam)
    assert torch.equal(obj, f_p)
    assert bool((f_p <= f_l).all()) and bool((f_p < f_l * (1 - 1e-9)).any())
    assert conv.dtype == torch.bool and bool((it == 100).all())
    # Samples not passed are untouched.
    z2, _, _, _ = _polish(G, yy, meas, zl, torch.tensor([1, 4]), gam, 1.0, torch.float32)
    rest = torch.ones(10, dtype=torch.bool)
    rest[[1, 4]] = False
    assert torch.equal(z2[rest], zl[rest])

"""The default method's search around fits that no noise level explains (signals outside the range of
G): the Adam polish against torch.optim.Adam's own trajectory, the iterated local search
(hop_refine) never raising the objective, the refinement's early stop of such fits, and its
network passes in float32."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

import geninv
from geninv.exceptions import ConvergenceWarning, InputError
from geninv.solvers.auto import auto
from geninv.solvers.measurement import resolve_measurement
from geninv.solvers.polish import adam_polish, hop_refine
from geninv.solvers.refine import network_fit
from geninv.solvers.support_fit import support_refine

F64 = torch.float64


def _gen(dims: list[int], seed: int = 5, output: str = "plu") -> geninv.Generator:
    return geninv.random_generator(dims, output, seed=seed, bias=True, dtype=F64)


def _outside(G: geninv.Generator, B: int, seed: int) -> torch.Tensor:
    """Signals not in the range of G: images of G whose first third is overwritten by a constant
    (an occlusion: the residual of any fit is concentrated there, not white)."""
    _, y = G.sample(B, seed=seed)
    y = y.clone()
    y[:, : y.shape[1] // 3] = 1.0
    return y


def _stalled(G: geninv.Generator, y: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor, object]:
    """A Levenberg-Marquardt fit run until it stops, from seeded random starts."""
    yy, meas = resolve_measurement(None, None, G, y)
    z0 = torch.randn(y.shape[0], G.latent_dim, generator=torch.Generator().manual_seed(seed), dtype=F64)
    zl, _, _, _ = support_refine(G, yy, meas, z0, max_iter=200)
    return yy, zl, meas


@pytest.mark.parametrize("gamma", [0.0, 1e-2])
def test_adam_polish_is_the_lowest_iterate_of_torch_adam(gamma: float) -> None:
    # The polish writes Adam's update out (no autograd graph); in float64 its lowest iterate must be
    # torch.optim.Adam's on the same objective, to rounding.
    G = _gen([5, 30, 90], seed=3)
    y = _outside(G, 6, 1)
    yy, zl, meas = _stalled(G, y, 2)
    gam = torch.full((6,), gamma, dtype=F64)
    steps, lr = 40, 0.05
    z, obj, _, it = adam_polish(G, yy, meas, zl, torch.arange(6), gam, 1.0, F64, steps=steps, lr=lr)
    with torch.enable_grad():
        zz = zl.clone().requires_grad_(True)
        opt = torch.optim.Adam([zz], lr=lr)
        best, f_best = zl.clone(), torch.full((6,), math.inf, dtype=F64)
        for _ in range(steps):
            opt.zero_grad()
            f = 0.5 * (G.forward_unchecked(zz) - yy).square().sum(dim=1) + 0.5 * gam * zz.square().sum(dim=1)
            low = f.detach() < f_best
            best[low], f_best = zz.detach()[low], torch.where(low, f.detach(), f_best)
            f.sum().backward()
            opt.step()
    f0 = network_fit(G, yy, zl, meas, gam)
    ref = torch.where((f_best < f0)[:, None], best, zl)
    assert torch.allclose(z, ref, rtol=0, atol=1e-9)
    assert torch.equal(obj, network_fit(G, yy, z, meas, gam))
    assert bool((it == steps).all())


def test_hop_refine_never_raises_the_objective_and_lowers_stalled_fits() -> None:
    G = _gen([10, 80, 300], seed=5)
    y = _outside(G, 12, 4)
    yy, zl, meas = _stalled(G, y, 6)
    gam = torch.zeros(12, dtype=F64)
    idx = torch.arange(12)
    f_l = network_fit(G, yy, zl, meas)
    z, obj, it = hop_refine(G, yy, meas, zl, idx, gam, 1.0, F64, rounds=4, seed=3)
    assert torch.equal(obj, network_fit(G, yy, z[idx], meas.subset(idx)))
    assert bool((obj <= f_l).all())
    # Around fits a region-by-region descent stopped at, a few hops find lower ones.
    assert int((obj < f_l * (1 - 1e-6)).sum()) >= 4
    assert bool((it > 0).all())
    # Seeded: the same call gives the same latents; samples not passed are untouched.
    z2, _, _ = hop_refine(G, yy, meas, zl, idx, gam, 1.0, F64, rounds=4, seed=3)
    assert torch.equal(z, z2)
    sub = torch.tensor([2, 7])
    z3, _, _ = hop_refine(G, yy, meas, zl, sub, gam, 1.0, F64, rounds=4, seed=3)
    rest = torch.ones(12, dtype=torch.bool)
    rest[sub] = False
    assert torch.equal(z3[rest], zl[rest])
    # No rounds: nothing changes.
    z4, obj4, it4 = hop_refine(G, yy, meas, zl, idx, gam, 1.0, F64, rounds=0)
    assert torch.equal(z4, zl) and bool((it4 == 0).all()) and torch.equal(obj4, f_l)


def test_give_up_stops_only_the_samples_it_names() -> None:
    G = _gen([6, 40, 120], seed=8)
    _, y = G.sample(10, seed=2)
    y = y + 0.05 * torch.randn(y.shape, generator=torch.Generator().manual_seed(3), dtype=F64)
    yy, meas = resolve_measurement(None, None, G, y)
    z0 = torch.randn(10, 6, generator=torch.Generator().manual_seed(4), dtype=F64)
    flagged = torch.zeros(10, dtype=torch.bool)
    flagged[[1, 5, 6]] = True
    seen: list[int] = []

    def poor(rows: torch.Tensor, zr: torch.Tensor) -> torch.Tensor:
        assert zr.shape == (rows.numel(), 6)
        seen.append(rows.numel())
        return flagged[rows]

    za, fa, na, ca = support_refine(G, yy, meas, z0, max_iter=40)
    zb, fb, nb, cb = support_refine(G, yy, meas, z0, max_iter=40, give_up=(3, poor))
    keep = ~flagged
    # The others take the same steps (batched products of another batch size round differently, by
    # ~1e-16, which can move the step at which a converged fit's last tiny step is taken).
    assert torch.allclose(zb[keep], za[keep], rtol=0, atol=1e-9)
    assert torch.allclose(fb[keep], fa[keep], rtol=1e-12, atol=0) and torch.equal(cb[keep], ca[keep])
    # The flagged ones stop after their third step (none of them had converged by then), not converged.
    assert bool((nb[flagged] == 3).all()) and not bool(cb[flagged].any())
    assert bool((fb[flagged] <= network_fit(G, yy, z0, meas)[flagged]).all())
    assert seen


def test_float32_passes_reach_the_planted_latent_to_float32_accuracy() -> None:
    # A search's steps with the residual, gradient and acceptance in float32: from a nearby start
    # the fit lands on the planted latent to float32 rounding, and its float64 objective is low.
    G = _gen([6, 40, 120], seed=11)
    z_true, y = G.sample(16, seed=5)
    yy, meas = resolve_measurement(None, None, G, y)
    z0 = z_true + 0.05 * torch.randn(z_true.shape, generator=torch.Generator().manual_seed(6), dtype=F64)
    z, obj, _, _ = support_refine(G, yy, meas, z0, max_iter=30, jac_dtype=torch.float32, cg_iter=0,
                                  acc_dtype=torch.float32)
    assert float(((z - z_true).norm(dim=1) / z_true.norm(dim=1)).max()) < 1e-4
    f64 = network_fit(G, yy, z, meas)
    assert bool((f64 <= 1e-8 * yy.square().sum(dim=1)).all())
    assert torch.allclose(obj, f64, rtol=0, atol=1e-6 * float(yy.square().sum(dim=1).max()))
    # float64 passes (the default) give the same latent to float64 rounding.
    z64, _, _, _ = support_refine(G, yy, meas, z0, max_iter=30)
    assert float(((z64 - z_true).norm(dim=1) / z_true.norm(dim=1)).max()) < 1e-10


def test_auto_searches_around_fits_no_level_explains_and_says_so() -> None:
    G = _gen([10, 80, 300], seed=5)
    y = _outside(G, 16, 4)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        res = auto(G, y)
    assert any(issubclass(x.category, ConvergenceWarning) and "not explained by G" in str(x.message) for x in w)
    assert not bool(res.info["fits"].any())
    assert "hops" in res.info["seconds"] and "polish" in res.info["seconds"]
    off = auto(G, y, hops=0)
    assert "hops" not in off.info["seconds"]
    # The search keeps only lower objectives, so across the batch it fits better than without it.
    f_on = network_fit(G, y, res.z.to(F64), resolve_measurement(None, None, G, y)[1])
    f_off = network_fit(G, y, off.z.to(F64), resolve_measurement(None, None, G, y)[1])
    assert float(f_on.sum()) < float(f_off.sum())
    with pytest.raises(InputError, match="hops"):
        auto(G, y, hops=-1)


def test_opt_in_candidates_run_on_the_fits_still_in_doubt() -> None:
    # The noise-aware pursuit and the gradient fallbacks are tried where the fit is still
    # unexplained after the starts; each candidate is kept only where its objective is lower.
    G = _gen([10, 80, 300], seed=5)
    y = _outside(G, 8, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = auto(G, y, noisy_candidate=True, fallback=("gd", "adam"), fallback_iter=50, hops=1)
    sec = res.info["seconds"]
    assert {"noisy_pursuit", "fallback_gd", "fallback_adam", "hops", "polish"} <= set(sec)
    assert bool(torch.isfinite(res.z).all()) and not bool(res.info["fits"].any())

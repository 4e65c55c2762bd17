"""The refinement steps of the default method (:mod:`geninv.solvers.auto`) on a subset of a batch:
Levenberg-Marquardt through the whole network stopped at the noise level, the Gaussian MAP refit
with the estimated level, keeping a candidate where its objective is lower, the robust noise level
of a fit's residual, and the method's warnings."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
from torch import Tensor

from geninv.exceptions import ConvergenceWarning
from geninv.model.generator import Generator
from geninv.solvers.measurement import Measurement
from geninv.solvers.refine import network_fit
from geninv.solvers.support_fit import statistical_decrease, support_refine

__all__ = ["fallback_candidate", "fit_level", "map_refit", "noisy_candidate", "refine_subset", "residual_noise_level",
           "resume_refine", "robust_level", "suspect_fits", "take_better", "warn_fits"]


def fit_level(F: Tensor, m_obs: Tensor, n0: int) -> Tensor:
    """The noise level a fit's data term ``F = 1/2 ||A (y - G(z))||^2`` implies on ``m_obs`` observed
    entries, ``sqrt(2 F / (m - n_0))`` (near the right latent the residual is the noise projected off
    the ``n_0``-dimensional tangent space)."""
    return torch.sqrt(2.0 * F / (m_obs - n0).clamp_min(1.0))


def map_refit(G64: Generator, y64: Tensor, meas: Measurement, z: Tensor, idx: Tensor, gam: Tensor, m_obs: Tensor,
              sigma_z: float, refine_iter: int, data_dt: torch.dtype,
              on_step: Callable[[int, Tensor, Tensor], bool] | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The Gaussian MAP refit of the samples ``idx``: their noise level estimated from the
    least-squares fit's residual, ``gam = sigma^2 / sigma_z^2`` set in place, then refined."""
    est = fit_level(network_fit(G64, y64[idx], z[idx], meas.subset(idx)), m_obs[idx], G64.latent_dim)
    gam[idx] = est.square() / sigma_z**2
    return refine_subset(G64, y64, meas, z, idx, gam, refine_iter, data_dt, on_step=on_step)


def refine_subset(G64: Generator, y64: Tensor, meas: Measurement, z: Tensor, idx: Tensor, gam: Tensor,
                  refine_iter: int, jac_dtype: torch.dtype,
                  on_step: Callable[[int, Tensor, Tensor], bool] | None = None,
                  give_up: tuple[int, Callable[[Tensor, Tensor], Tensor]] | None = None,
                  ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Levenberg-Marquardt on the whole network for the samples ``idx``, stopped at the noise level;
    ``on_step(k, z, objective)`` after every step with the whole batch's ``z`` (B, n_0) and
    objective (B,), True to stop; ``give_up = (after, poor)``: from step ``after`` on, samples
    ``j`` of the batch with ``poor(j, z_j)`` True stop (:func:`support_refine`)."""
    obj = network_fit(G64, y64, z, meas, gam)
    n0 = z.shape[1]
    if idx.numel() == 0 or refine_iter == 0:
        return z, obj, torch.ones(idx.numel(), dtype=torch.bool, device=z.device), \
            torch.zeros(idx.numel(), dtype=torch.int64, device=z.device)
    rel = statistical_decrease(n0, y64.shape[1])  # stopped at the noise level
    step_cb = None
    if on_step is not None:
        def step_cb(k: int, zr: Tensor, objr: Tensor) -> bool:
            zc, oc = z.clone(), obj.clone()
            zc[idx], oc[idx] = zr, objr
            return on_step(k, zc, oc)

    zr, objr, it, conv = support_refine(G64, y64[idx], meas.subset(idx), z[idx], gamma=gam[idx],
                                        max_iter=refine_iter, rel_decrease=rel, jac_dtype=jac_dtype,
                                        step_callback=step_cb,
                                        give_up=None if give_up is None else
                                        (give_up[0], lambda rows, zr: give_up[1](idx[rows], zr)))
    z = z.clone()
    z[idx] = zr
    obj[idx] = objr
    return z, obj, conv, it


def resume_refine(G64: Generator, y64: Tensor, meas: Measurement, z: Tensor, idx: Tensor, gam: Tensor, m_obs: Tensor,
                  sigma_z: float, refine_iter: int, data_dt: torch.dtype,
                  map_fit: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The refinement of the samples ``idx`` run on to ``refine_iter`` steps, then (``map_fit``) their
    MAP refit with the estimated level; ``(z, objective, converged (k,), n_iter (k,))``."""
    z, obj, conv, it = refine_subset(G64, y64, meas, z, idx, gam, refine_iter, data_dt)
    if map_fit:
        z, obj, conv, it2 = map_refit(G64, y64, meas, z, idx, gam, m_obs, sigma_z, refine_iter, data_dt)
        it = it + it2
    return z, obj, conv, it


def suspect_fits(G64: Generator, y64: Tensor, meas: Measurement, z: Tensor, robust: Tensor, m_obs: Tensor,
                 ratio: float) -> Tensor:
    """(B,) bool: the fits of ``robust`` whose noise level is more than ``ratio`` times the median of
    theirs (at least 8 of them): in doubt even where the residual looks white (through a general
    operator a wrong basin's residual is Gaussian too)."""
    out = torch.zeros(z.shape[0], dtype=torch.bool, device=z.device)
    if robust.numel() >= 8:
        lvl = fit_level(network_fit(G64, y64[robust], z[robust], meas.subset(robust)), m_obs[robust], z.shape[1])
        out[robust[lvl > ratio * lvl.median()]] = True
    return out


def take_better(z: Tensor, obj: Tensor, stage: Tensor, converged: Tensor, n_iter: Tensor, G64: Generator, y64: Tensor,
                meas: Measurement, gam: Tensor, idx: Tensor, zc: Tensor, conv_c: Tensor, it_c: Tensor, k: int) -> None:
    """Keep the candidate ``zc`` for the samples ``idx`` where its objective is lower (in place)."""
    oc = network_fit(G64, y64[idx], zc, meas.subset(idx), gam[idx])
    better = torch.isfinite(oc) & (oc < obj[idx])
    gi = idx[better]
    z[gi] = zc[better]
    obj[gi] = oc[better]
    stage[gi] = k
    converged[gi] = conv_c[better]
    n_iter[idx] += it_c


def residual_noise_level(G: Generator, y: Tensor, meas: Measurement, z: Tensor) -> Tensor:
    """A robust noise level from the residual of a fit: ``1.4826 median_j |r_j|`` (B,), float64.

    ``r = A G(z) - y`` on the observed entries (for a general operator, all ``m`` entries). For
    white Gaussian noise and a fit near the right latent this is a consistent estimate of
    ``sigma`` (the median absolute deviation; relative standard deviation about ``1.17 / sqrt(m)``,
    4 % for ``m = 784``; for uniform quantization noise it overestimates the standard deviation by
    28 %, which only makes the verdict lenient). A fit in a wrong basin, or a signal outside the
    range of ``G``, leaves a residual concentrated on the part of the signal it gets wrong: its
    root mean square is then far above this level, which :func:`geninv.solvers.verdict.fit_verdict`
    detects, although the fit's own least-squares estimate of ``sigma`` would explain it.
    """
    G64 = G if G.dtype == torch.float64 else G.to(dtype=torch.float64)
    return robust_level(meas.apply(G64.forward_unchecked(z.to(torch.float64))) - y.to(torch.float64), meas)


def robust_level(r: Tensor, meas: Measurement) -> Tensor:
    """``1.4826 median_j |r_j|`` over the observed entries of the residuals ``r`` (B, m)."""
    r = r.abs()
    if meas.kind == "diag":
        assert meas.obs is not None
        r = torch.where(meas.obs, r, torch.full_like(r, math.nan))
        return 1.4826 * r.nanmedian(dim=1).values
    return 1.4826 * r.median(dim=1).values


def warn_fits(fits: Tensor, residual: Tensor, converged: Tensor, level: str) -> None:
    """One warning per kind of doubt, with counts: samples no latent explains, samples that fit but
    whose last iteration did not meet its stopping test."""
    bad = ~fits
    if bool(bad.any()):
        r = residual[bad]
        warnings.warn(
            f"auto: {int(bad.sum())} of {fits.numel()} sample(s) are not explained by G (relative residual "
            f"{float(r.min()):.3g} to {float(r.max()):.3g}, more than {level} allows): the result is the "
            "best-fitting latent found, "
            "not a preimage of y; y is likely outside the range of G (see result.info['fits'], ['residual'])",
            ConvergenceWarning, stacklevel=3)
    slow = fits & ~converged
    if bool(slow.any()):
        warnings.warn(
            f"auto: {int(slow.sum())} of {fits.numel()} sample(s) fit y but their refinement stopped at its step cap "
            "(raise refine_iter for a tighter fit; see result.converged)", ConvergenceWarning, stacklevel=3)


def noisy_candidate(G: Generator, y: Tensor, meas: Measurement, idx: Tensor, ref: Tensor, G64: Generator, y64: Tensor,
                    z: Tensor, m_obs: Tensor, sigma_z: float, pursuit_iter: int,
                    refine_iter: int) -> tuple[Tensor, Tensor, Tensor]:
    """The noise-aware pursuit's candidate for the samples ``idx`` (refined), at their reference
    level ``ref`` where it is positive, else at the level their fit ``z`` implies."""
    from geninv.solvers.noise import noisy_pursuit

    sig = torch.where(ref > 0, ref, fit_level(network_fit(G64, y64[idx], z[idx], meas.subset(idx)), m_obs[idx],
                                              G.latent_dim))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = noisy_pursuit(G, y[idx], measure=meas.as_measure(idx), noise_level=sig, sigma_z=sigma_z,
                            max_iter=max(pursuit_iter, 100), refine_iter=refine_iter)
    return res.z.to(torch.float64), res.converged, res.n_iter


def fallback_candidate(name: str, G: Generator, y: Tensor, meas: Measurement, idx: Tensor, seed: int, max_iter: int,
                       G64: Generator, y64: Tensor, gam: Tensor, refine_iter: int,
                       jac_dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    """The gradient fallback ``name`` ("gd" or "adam") for the samples ``idx``, refined through the
    whole network."""
    from geninv.solvers.hybrid import fallback_solve

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = fallback_solve(name, G, y, meas, idx, seed, max_iter)
    zg, _, itg, cg = support_refine(G64, y64[idx], meas.subset(idx), res.z.to(torch.float64), gamma=gam[idx],
                                    max_iter=refine_iter, jac_dtype=jac_dtype)
    return zg, res.converged | cg, res.n_iter + itg

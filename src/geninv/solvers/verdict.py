"""Does a result explain its signal? The one per-sample self-check every method's result gets.

A latent ``z_hat`` *fits* ``y`` when its image, measured, reproduces ``y``: for exact data the
relative residual ``||A G(z_hat) - y|| / ||y||`` is at the rounding level of the data's dtype;
for noisy data (a noise level ``sigma`` given or estimated) the residual norm is consistent with
white noise of that level on the observed entries. "Converged" (the iteration stopped by its own
criterion) says nothing of this; ``fits`` does.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import Tensor

from geninv.exceptions import InputError, ShapeError, describe
from geninv.metrics import snr
from geninv.model.generator import Generator

__all__ = ["rounding_tol", "noise_tol", "fit_verdict", "noise_level_of", "observed_norms", "measured_residual", "self_check", "fit_message", "layer_snr"]


def rounding_tol(dtype: torch.dtype) -> float:
    """Largest relative residual counted as "exact" for data stored in ``dtype``.

    ``max(1000 eps, eps^(2/3))``: 1.2e-4 in float32, 3.7e-11 in float64. The forward pass of a
    few layers and the solvers' final least squares each add a few ulps times the conditioning
    of the supported matrices (1000 eps); solvers that stop on their own tolerance (the
    layer-wise LP's interior-point and simplex tolerances) leave float64 residuals of 1e-13 to
    1e-11 on exact data. A wrong latent leaves residuals many orders of magnitude above either
    (typically 1e-3 to 1).
    """
    eps = float(torch.finfo(dtype).eps)
    return max(1e3 * eps, eps ** (2.0 / 3.0))


def noise_tol(sigma: Tensor, n_obs: Tensor) -> Tensor:
    """Largest residual norm consistent with white Gaussian noise of level ``sigma`` on ``n_obs``
    observed entries: ``||e||^2 / sigma^2`` is chi-squared with ``n_obs`` degrees of freedom, so its
    root exceeds ``sigma (sqrt(n_obs) + 4)`` with probability below about 1e-6 (a fit through the
    model only lowers the residual)."""
    return sigma * (n_obs.to(sigma.dtype).sqrt() + 4.0)


def fit_verdict(
    residual_norm: Tensor,
    y_norm: Tensor,
    n_obs: Tensor,
    *,
    data_dtype: torch.dtype,
    noise_level: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Per-sample relative residual and the verdict ``fits``.

    Parameters
    ----------
    residual_norm : Tensor of shape (B,)
        ``||A G(z_hat) - y||_2`` per sample (computed in float64).
    y_norm : Tensor of shape (B,)
        ``||y||_2`` per sample.
    n_obs : Tensor of shape (B,)
        Number of observed entries of each sample (m for an operator, the mask's count).
    data_dtype : torch.dtype
        The dtype the data ``y`` came in: its rounding level is the exactness threshold.
    noise_level : Tensor of shape (B,), optional
        The noise standard deviation per sample (given or estimated); None or 0 means exact data.

    Returns
    -------
    residual : Tensor of shape (B,), float64
        ``||A G(z_hat) - y|| / ||y||`` (the absolute norm where ``y = 0``).
    fits : Tensor of shape (B,), bool
        True where the residual is at rounding level (exact data) or consistent with the noise.
    """
    rn = residual_norm.to(torch.float64)
    yn = y_norm.to(torch.float64)
    residual = torch.where(yn > 0, rn / yn.clamp_min(math.ulp(0.0)), rn)
    fits = residual <= rounding_tol(data_dtype)
    if noise_level is not None:
        sigma = noise_level.to(torch.float64).expand_as(rn)
        fits = fits | ((sigma > 0) & (rn <= noise_tol(sigma, n_obs.to(torch.float64))))
    return residual, fits & torch.isfinite(residual)


def _as_sigma(value: Any, B: int, device: torch.device) -> Tensor | None:
    """A noise level (float, (B,) or (1,) tensor) as a float64 (B,) tensor; None for anything else."""
    if value is None or isinstance(value, (str, bool)):
        return None
    if isinstance(value, (int, float)):
        if not math.isfinite(float(value)):
            return None
        return torch.full((B,), float(value), dtype=torch.float64, device=device)
    if isinstance(value, Tensor) and value.numel() in (1, B) and not value.is_complex():
        return value.detach().to(device=device, dtype=torch.float64).reshape(-1).expand(B).clone()
    return None


def noise_level_of(option: Any, info: dict[str, Any], B: int, device: torch.device) -> Tensor | None:
    """The noise level a verdict uses: the caller's ``noise_level=`` if it is a number or a tensor;
    for ``noise_level="auto"`` the level the method estimated; None (exact data: the rounding
    level) when the caller gave none.

    An estimate is used only when asked for: a noise level estimated from a fit can explain a wrong
    fit's residual as noise, so it never turns a residual into a fit silently. Of a method's
    estimates, ``info["noise_reference"]`` (a level estimated independently of the fit's own
    residual norm, such as the median absolute residual) comes first: a least-squares estimate
    ``||r|| / sqrt(m - n_0)`` (``info["noise_level"]``, ``info["sigma"]``) explains any residual by
    construction.
    """
    sigma = _as_sigma(option, B, device)
    if sigma is not None:
        return sigma
    if not (isinstance(option, str) and option == "auto"):
        return None
    return estimated_noise_level(info, B, device)


def estimated_noise_level(info: dict[str, Any], B: int, device: torch.device) -> Tensor | None:
    """The noise level a method estimated (``info["noise_reference"]``, ``["noise_level"]`` or
    ``["sigma"]``, in that order), or None."""
    for key in ("noise_reference", "noise_level", "sigma"):
        sigma = _as_sigma(info.get(key), B, device)
        if sigma is not None:
            return sigma
    return None


def _scale(y: Tensor, meas: Any) -> Tensor:
    """Per-sample ``max |y_obs|`` (1 where ``y_obs = 0``), float64 (B,): norms are taken of
    ``y / scale`` so that they do not overflow (a signal of 1e160 still gets its verdict)."""
    y64 = y.detach().to(torch.float64).abs()
    y64 = meas.observed(y64)
    s = y64.amax(dim=1) if y64.shape[1] else torch.ones(y64.shape[0], dtype=torch.float64, device=y.device)
    return torch.where((s > 0) & torch.isfinite(s), s, torch.ones_like(s))


def observed_norms(y: Tensor, meas: Any, scale: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``||y_obs|| / scale`` and the number of observed entries per sample (B,), float64."""
    y64 = y.detach().to(torch.float64)
    if scale is not None:
        y64 = y64 / scale[:, None]
    return meas.observed(y64).norm(dim=1), meas.n_observed(y64).to(torch.float64)


def measured_residual(G: Any, y: Tensor, meas: Any, z: Tensor, scale: Tensor | None = None) -> Tensor:
    """``||A G(z) - y|| / scale`` per sample (B,), in float64: one forward pass of ``G`` (in float64).

    ``y`` (B, m) as the method received it, ``meas`` its
    :class:`geninv.solvers.measurement.Measurement`, ``z`` (B, n_0), ``scale`` (B,) or None (1).
    Non-finite ``z`` gives ``inf``.
    """
    G64 = G.to(dtype=torch.float64)
    z64 = z.detach().to(y.device, torch.float64)
    finite = torch.isfinite(z64).all(dim=1)
    with torch.no_grad():
        p = G64.forward_unchecked(torch.where(finite[:, None], z64, torch.zeros_like(z64)))
        y64 = y.detach().to(torch.float64)
        r = meas.residual(p, y64)
        if scale is not None:
            r = r / scale[:, None]
        rn = r.norm(dim=1)
    return torch.where(finite & torch.isfinite(rn), rn, torch.full_like(rn, math.inf))


def self_check(G: Any, y: Tensor, meas: Any, res: Any, *, data_dtype: torch.dtype | None = None,
               noise_level: Any = None) -> Any:
    """``res`` with its per-sample ``residual`` and ``fits`` (the one place they are computed).

    Parameters
    ----------
    G : Generator
    y : Tensor of shape (B, m)
        The data as the method received it.
    meas : Measurement
        How ``y`` was measured (:func:`geninv.solvers.measurement.resolve_measurement`).
    res : SolveResult
    data_dtype : torch.dtype, optional
        The dtype of the data as the user gave it (sets the rounding level); default ``y.dtype``.
    noise_level : float, Tensor of shape (B,), "auto" or None, optional
        A number or tensor is the noise level of the verdict; ``"auto"`` takes the level the
        method estimated; None judges at the rounding level (:func:`noise_level_of`).

    Returns
    -------
    SolveResult
        A copy with ``residual`` (B,) float64 and ``fits`` (B,) bool. A result that already
        carries its residual is not evaluated again (only the verdict is redone).
    """
    B = y.shape[0]
    dtype = y.dtype if data_dtype is None else data_dtype
    if dtype not in (torch.float32, torch.float64):
        dtype = torch.float32 if dtype in (torch.float16, torch.bfloat16) else torch.float64
    scale = _scale(y, meas)
    yn, n_obs = observed_norms(y, meas, scale)
    if res.residual is None:
        rn = measured_residual(G, y, meas, res.z, scale)
    else:
        r = res.residual.to(device=y.device, dtype=torch.float64)
        rn = torch.where(yn > 0, r * yn, r / scale)
    sigma = noise_level_of(noise_level, res.info, B, y.device)
    residual, fits = fit_verdict(rn, yn, n_obs, data_dtype=dtype, noise_level=None if sigma is None else sigma / scale)
    return dataclasses.replace(res, residual=residual, fits=fits)


def fit_message(res: Any, *, noise_known: bool | None = None) -> str:
    """The text of the one warning of a call whose result has samples that do not fit; "" if all fit.

    Says how many samples do not fit, their relative residuals, that their ``z`` is not a
    preimage of ``y``, and the likely cause: samples that stopped by the method's own criterion
    (``converged``) sit at a stationary point, so either ``y`` is not in the range of ``G``
    (noise, or a signal ``G`` did not generate) or the method found a wrong solution; samples
    that did not converge ran out of iterations (or produced NaN/Inf).
    """
    fits = res.fits
    if fits is None:
        return ""
    bad = ~fits
    nb = int(bad.sum())
    if nb == 0:
        return ""
    B = fits.numel()
    r = res.residual[bad]
    finite = r[torch.isfinite(r)]
    med = f"{float(finite.median()):.3g}" if finite.numel() else "inf"
    parts = [
        f"{res.method}: {nb} of {B} sample(s) do not fit y (relative residual ||A G(z) - y|| / ||y||: median {med}, "
        f"max {float(r.max()):.3g}); their z is not a preimage of y (see result.fits, result.residual)"
    ]
    nonfinite = res.info.get("nonfinite")
    n_nan = int((nonfinite & bad).sum()) if isinstance(nonfinite, Tensor) else 0
    # A method whose ``converged`` is its own residual test (the hybrid) keeps the stopping
    # flag of the answer it chose in ``info["candidate_converged"]``.
    stop_flag = res.info.get("candidate_converged", res.converged)
    stopped = bad & stop_flag.to(bad.device)
    n_stop = int(stopped.sum())
    n_cap = nb - n_stop - n_nan
    if noise_known is None:
        noise_known = False
    if n_stop:
        tail = ""
        if not noise_known:
            est = estimated_noise_level(res.info, B, fits.device)
            level = (f" (the method estimated a noise level of median {float(est[bad].median()):.3g}; "
                     "noise_level='auto' judges the fit against that estimate)") if est is not None else ""
            tail = f"; for noisy data pass noise_level= so the fit is judged against the noise{level}"
        parts.append(
            f"{n_stop} of them stopped at a stationary point (converged=True): y may be outside the range of G "
            f"(noise, or a signal G did not generate), or the method found a wrong solution (method='hybrid' "
            f"retries from other starts){tail}"
        )
    if n_cap > 0:
        parts.append(f"{n_cap} of them did not converge (raise max_iter or loosen tol)")
    if n_nan:
        parts.append(f"{n_nan} of them produced NaN/Inf and were reset to zero")
    return "; ".join(parts)


def layer_snr(G: Any, z_true: Tensor, res: Any) -> list[Tensor]:
    """Per-layer SNR (dB) of a result against the true latent: ``[z, x_1, ..., x_L, image]``.

    Parameters
    ----------
    G : Generator
    z_true : Tensor of shape (B, n_0) (or (n_0,))
        The latent that generated the signals.
    res : SolveResult
        A result for those signals.

    Returns
    -------
    list of L + 2 Tensors of shape (B,), float64
        ``SNR(z, z_hat)``, then ``SNR(x_i, x_hat_i)`` of each hidden layer (the result's own
        layer estimates), then ``SNR(G(z), G(z_hat))`` of the image (:func:`geninv.snr`:
        ``+inf`` where exact).

    Examples
    --------
    >>> G = random_generator([10, 60, 200], "tanh", dtype=torch.float64)
    >>> z, y = G.sample(2, seed=0)
    >>> [s.shape for s in layer_snr(G, z, invert(G, y))]
    [torch.Size([2]), torch.Size([2]), torch.Size([2])]
    """
    if not isinstance(G, Generator):
        raise InputError(f"G: expected a geninv.Generator, received {describe(G)}")
    if not hasattr(res, "z") or not hasattr(res, "layers"):
        raise InputError(f"res: expected a geninv.SolveResult, received {describe(res)}")
    if not isinstance(z_true, Tensor):
        raise InputError(f"z_true: expected a tensor of shape (B, {G.latent_dim}), received {describe(z_true)}")
    zt = z_true[None] if z_true.ndim == 1 else z_true
    if zt.shape != res.z.shape:
        raise ShapeError(f"z_true: expected shape {tuple(res.z.shape)} (the result's z), received {tuple(z_true.shape)}")
    G64 = G.to(dtype=torch.float64)
    with torch.no_grad():
        tr = G64.trace(zt.detach().to(torch.float64))
        z_hat = res.z.detach().to(torch.float64)
        finite = torch.isfinite(z_hat).all(dim=1)
        z_hat = torch.where(finite[:, None], z_hat, torch.zeros_like(z_hat))
        layers = list(res.layers)
        if len(layers) != G.n_hidden:
            layers = [x for x in G64.trace(z_hat).hidden]
        out = [snr(zt.to(torch.float64), z_hat)]
        for x, xh in zip(tr.hidden, layers):
            xh64 = xh.detach().to(torch.float64)
            out.append(snr(x, torch.where(torch.isfinite(xh64), xh64, torch.zeros_like(xh64))))
        out.append(snr(tr.y, G64.forward_unchecked(z_hat)))
    return out

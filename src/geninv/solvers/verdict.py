"""Does a result explain its signal? The one per-sample self-check every method's result gets.

A latent ``z_hat`` *fits* ``y`` when its image, measured, reproduces ``y``: for exact data the
relative residual ``||A G(z_hat) - y|| / ||y||`` is at the rounding level of the data's dtype;
for noisy data (a noise level ``sigma`` given or estimated) the residual norm is consistent with
white noise of that level on the observed entries. "Converged" (the iteration stopped by its own
criterion) says nothing of this; ``fits`` does.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["rounding_tol", "noise_tol", "fit_verdict"]


def rounding_tol(dtype: torch.dtype) -> float:
    """Largest relative residual counted as "exact" for data stored in ``dtype``.

    ``1000 eps``: the forward pass of a few layers and the solvers' final least squares each add
    a few ulps times the conditioning of the supported matrices; a wrong latent leaves residuals
    many orders of magnitude above this (typically 1e-3 to 1).
    """
    return 1e3 * float(torch.finfo(dtype).eps)


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

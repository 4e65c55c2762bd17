"""Theorem 2 read a posteriori: a per-sample bound on the error of an estimated latent."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from geninv.model.generator import Generator
from geninv.solvers.measurement import Measurement
from geninv.solvers.verdict import noise_tol

__all__ = ["z_error_bound"]


def z_error_bound(G: Generator, y: Tensor, meas: Measurement, z_hat: Tensor, sigma: Tensor) -> Tensor:
    """Theorem 2 a posteriori: a bound on ``||z_hat - z||_2`` per sample (B,), NaN where it does not apply.

    Parameters
    ----------
    G : Generator
    y : Tensor of shape (B, n)
        The signals (no measurement operator: Theorem 2 is about the whole image).
    meas : Measurement
        Must be the identity (NaN otherwise).
    z_hat : Tensor of shape (B, n_0)
    sigma : Tensor of shape (B,)
        The noise level (given or estimated); 0 for exact data.

    Notes
    -----
    Write ``y = G(z_hat) + r`` (``r`` the measured residual) and ``y = G(z) + e`` with
    ``||e|| <= eps = sigma (sqrt(n) + 4)`` (:func:`geninv.solvers.verdict.noise_tol`, a bound
    that fails with probability below 1e-6 for white noise). Theorem 2 at ``z_hat`` with noise
    ``||r||`` (:func:`geninv.certificates.bounds.theorem2_bound`, the supports and layers of
    ``G(z_hat)``) bounds how far Layered Basis-Pursuit, run on ``y`` with the bound's ``lam``,
    lands from ``z_hat``: ``||z_LBP - z_hat|| <= B_hat``; this step is rigorous, since ``y`` is
    exactly ``G(z_hat) + r``. Theorem 2 at the truth bounds ``||z_LBP - z|| <= B(z, eps)``, and
    where the estimate has the true supports ``B(z, eps)`` is ``B(z_hat, eps)`` up to the
    difference of the layers' values, so the reported bound is
    ``||z_hat - z|| <= B(z_hat, ||r||) + B(z_hat, eps)``. It is given (finite) only where both
    evaluations return ``verdict == "holds"``.
    """
    from geninv.certificates.bounds import theorem2_bound

    B = z_hat.shape[0]
    out = torch.full((B,), math.nan, dtype=torch.float64, device=z_hat.device)
    if not meas.is_identity or G.n_hidden == 0:
        return out
    G64 = G.to(dtype=torch.float64)
    z64 = z_hat.to(torch.float64)
    r = (y.to(torch.float64) - G64.forward_unchecked(z64)).norm(dim=1)
    eps = noise_tol(sigma.to(torch.float64), torch.full_like(r, float(y.shape[1])))
    b_r = theorem2_bound(G64, z64, noise=r)
    b_e = theorem2_bound(G64, z64, noise=eps)
    assert isinstance(b_r, list) and isinstance(b_e, list)
    for k, (u, v) in enumerate(zip(b_r, b_e)):
        if u.verdict == "holds" and v.verdict == "holds":
            out[k] = u.z_error + v.z_error
    return out

"""Signal-to-noise ratio and related metrics (SPEC section 8)."""

from __future__ import annotations

import torch
from torch import Tensor

from geninv.exceptions import ShapeError

__all__ = ["snr", "relative_error"]


def snr(x: Tensor, x_hat: Tensor) -> Tensor:
    """``SNR(x, x_hat) = 20 log10(||x|| / ||x - x_hat||)`` in dB, per sample.

    Parameters
    ----------
    x, x_hat : Tensor of shape (B, n) (or (n,))

    Returns
    -------
    Tensor of shape (B,)
        ``+inf`` where ``x_hat == x`` exactly; ``-inf`` where ``x == 0`` and ``x_hat != x``.
    """
    if x.shape != x_hat.shape:
        raise ShapeError(f"x_hat: expected the shape of x {tuple(x.shape)}, received {tuple(x_hat.shape)}")
    if x.ndim == 1:
        x, x_hat = x[None], x_hat[None]
    x64, e64 = x.double(), (x.double() - x_hat.double())
    num = x64.norm(dim=1)
    den = e64.norm(dim=1)
    with torch.no_grad():
        out = 20 * (torch.log10(num) - torch.log10(den))
    out = torch.where(den == 0, torch.full_like(out, float("inf")), out)
    return out


def relative_error(x: Tensor, x_hat: Tensor) -> Tensor:
    """``||x - x_hat|| / ||x||`` per sample (B,)."""
    if x.ndim == 1:
        x, x_hat = x[None], x_hat[None]
    return (x.double() - x_hat.double()).norm(dim=1) / x.double().norm(dim=1).clamp_min(1e-300)

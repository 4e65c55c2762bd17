"""Signal-to-noise ratio and related metrics (docs/method.md sec. 8)."""

from __future__ import annotations

import torch
from torch import Tensor

from geninv.exceptions import InputError, ShapeError, describe

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

    Raises
    ------
    ShapeError, InputError
        If the shapes differ or are not (B, n) / (n,), or if either holds NaN/Inf.
    """
    x, x_hat = _pair(x, x_hat)
    x64, e64 = x.double(), (x.double() - x_hat.double())
    num = x64.norm(dim=1)
    den = e64.norm(dim=1)
    with torch.no_grad():
        out = 20 * (torch.log10(num) - torch.log10(den))
    out = torch.where(den == 0, torch.full_like(out, float("inf")), out)
    return out


def relative_error(x: Tensor, x_hat: Tensor) -> Tensor:
    """``||x - x_hat|| / ||x||`` per sample (B,)."""
    x, x_hat = _pair(x, x_hat)
    return (x.double() - x_hat.double()).norm(dim=1) / x.double().norm(dim=1).clamp_min(1e-300)


def _pair(x: object, x_hat: object) -> tuple[Tensor, Tensor]:
    for name, t in (("x", x), ("x_hat", x_hat)):
        if not isinstance(t, Tensor) or t.is_complex() or t.dtype == torch.bool:
            raise InputError(f"{name}: expected a real torch.Tensor of shape (B, n) or (n,), received {describe(t)}")
    assert isinstance(x, Tensor) and isinstance(x_hat, Tensor)
    if x.ndim not in (1, 2) or x.numel() == 0:
        raise ShapeError(f"x: expected a non-empty shape (B, n) or (n,), received {tuple(x.shape)}")
    if x.shape != x_hat.shape:
        raise ShapeError(f"x_hat: expected the shape of x {tuple(x.shape)}, received {tuple(x_hat.shape)}")
    for name, t in (("x", x), ("x_hat", x_hat)):
        if not bool(torch.isfinite(t).all()):
            raise InputError(f"{name}: expected finite values, received {int((~torch.isfinite(t)).sum())} NaN/Inf entries")
    if x.ndim == 1:
        x, x_hat = x[None], x_hat[None]
    return x, x_hat

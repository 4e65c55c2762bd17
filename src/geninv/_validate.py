"""Argument checks used at the public boundary (never inside solver loops)."""

from __future__ import annotations

import torch
from torch import Tensor

from geninv.exceptions import InputError, ShapeError, describe

__all__ = ["as_batch", "check_finite", "as_mask", "as_bool_rows", "as_int", "as_float", "as_dtype", "as_device"]

_NUMPY_KINDS = "fiu"  # float, signed and unsigned int: the numpy arrays torch converts to a real tensor


def as_batch(x: object, width: int, name: str, *, dtype: torch.dtype | None = None) -> Tensor:
    """Return ``x`` as a floating (B, width) tensor; a 1-D vector becomes a batch of one.

    Raises ShapeError/InputError naming ``name`` for anything else.
    """
    if not isinstance(x, Tensor):
        try:
            import numpy as np

            if isinstance(x, np.ndarray):
                if x.dtype.kind not in _NUMPY_KINDS:
                    raise InputError(
                        f"{name}: expected a real numeric array of shape (B, {width}), received numpy dtype {x.dtype}"
                    )
                x = torch.from_numpy(np.ascontiguousarray(x))
            else:
                raise InputError(f"{name}: expected a torch.Tensor of shape (B, {width}), received {describe(x)}")
        except ImportError:  # pragma: no cover
            raise InputError(f"{name}: expected a torch.Tensor of shape (B, {width}), received {describe(x)}") from None
    assert isinstance(x, Tensor)
    if x.is_complex() or not (x.is_floating_point() or x.dtype in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)):
        raise InputError(f"{name}: expected a real floating tensor, received dtype {x.dtype}")
    if not x.is_floating_point():
        x = x.to(dtype or torch.get_default_dtype())
    if dtype is not None:
        x = x.to(dtype)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or x.shape[1] != width:
        raise ShapeError(f"{name}: expected shape (B, {width}) or ({width},), received shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ShapeError(f"{name}: expected a batch of at least one signal, received shape {tuple(x.shape)}")
    check_finite(x, name)
    return x


def check_finite(x: Tensor, name: str) -> None:
    """Raise InputError naming ``name`` if ``x`` holds NaN or Inf."""
    if not bool(torch.isfinite(x).all()):
        n_bad = int((~torch.isfinite(x)).sum())
        raise InputError(f"{name}: expected finite values, received {n_bad} NaN/Inf entries")


def as_mask(mask: object, batch: int, width: int, device: torch.device, name: str = "mask") -> Tensor:
    """Return a boolean mask of shape (B, width) (``True`` = observed pixel)."""
    mask = as_bool_rows(mask, batch, width, device, name)
    if not bool(mask.any(dim=1).all()):
        raise InputError(f"{name}: expected at least one observed entry per signal, received a mask hiding everything")
    return mask


def as_bool_rows(mask: object, batch: int, width: int, device: torch.device, name: str) -> Tensor:
    """A boolean tensor (or 0/1 numbers) of shape (width,), (1, width) or (batch, width) as bool (batch, width)."""
    if not isinstance(mask, Tensor):
        raise InputError(f"{name}: expected a boolean torch.Tensor of shape ({width},) or (B, {width}), received {describe(mask)}")
    if mask.is_complex():
        raise InputError(f"{name}: expected a boolean tensor, received dtype {mask.dtype}")
    if mask.dtype != torch.bool:
        if mask.is_floating_point() or mask.dtype in (torch.int64, torch.int32, torch.uint8, torch.int8):
            vals = torch.unique(mask)
            if not bool(((vals == 0) | (vals == 1)).all()):
                raise InputError(f"{name}: expected 0/1 or boolean entries, received values such as {vals[:4].tolist()}")
            mask = mask != 0
        else:
            raise InputError(f"{name}: expected a boolean tensor, received dtype {mask.dtype}")
    if mask.ndim == 1:
        mask = mask[None]
    if mask.ndim != 2 or mask.shape[1] != width or mask.shape[0] not in (1, batch):
        raise ShapeError(f"{name}: expected shape ({width},), (1, {width}) or ({batch}, {width}), received {tuple(mask.shape)}")
    return mask.to(device).expand(batch, width)


def as_int(value: object, name: str, *, minimum: int | None = None) -> int:
    """``value`` as a Python int (bools refused), at least ``minimum``; InputError otherwise."""
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, Tensor) and value.ndim == 0 and not value.is_floating_point() and value.dtype != torch.bool:
            value = int(value)
        else:
            raise InputError(f"{name}: expected an int, received {describe(value)}")
    value = int(value)  # type: ignore[arg-type]
    if minimum is not None and value < minimum:
        raise InputError(f"{name}: expected an int >= {minimum}, received {value}")
    return value


def as_float(value: object, name: str, *, finite: bool = True) -> float:
    """``value`` as a finite Python float (bools refused); InputError otherwise."""
    import math
    import numbers

    if isinstance(value, Tensor) and value.numel() == 1 and not value.is_complex() and value.dtype != torch.bool:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputError(f"{name}: expected a real number, received {describe(value)}")
    out = float(value)
    if finite and not math.isfinite(out):
        raise InputError(f"{name}: expected a finite number, received {out}")
    return out


def as_dtype(dtype: object, name: str = "dtype") -> torch.dtype:
    """``dtype`` as a floating torch dtype (float16/bfloat16/float32/float64); InputError otherwise."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise InputError(f"{name}: expected a floating torch dtype such as torch.float64, received {describe(dtype)}")
    return dtype


def as_device(device: object, name: str = "device") -> torch.device:
    """``device`` as a torch.device; InputError for a string torch cannot parse."""
    if isinstance(device, str):
        try:
            device = torch.device(device)
        except (RuntimeError, ValueError):
            raise InputError(f"{name}: expected a device such as 'cpu' or 'cuda:0', received {device!r}") from None
    if not isinstance(device, torch.device):
        raise InputError(f"{name}: expected a device such as 'cpu' or 'cuda', received {describe(device)}")
    if device.type != "cpu":
        # torch answers an unavailable backend with an AssertionError/RuntimeError from deep inside
        try:
            torch.empty(0, device=device)
        except (AssertionError, RuntimeError) as e:
            raise InputError(
                f"{name}: expected an available device, received {str(device)!r} ({' '.join(str(e).split())[:120]})"
            ) from None
    return device

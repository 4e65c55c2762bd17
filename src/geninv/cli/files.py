"""Arrays given as files on the command line (latents, masks, signals): .npy (never unpickled) or
.safetensors, with errors that name the flag or argument."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from geninv.exceptions import InputError

if TYPE_CHECKING:
    import torch


def read_latents(path: str) -> object:
    """Latents ``z`` (B, n_0) or (n_0,) from a .npy file or a .safetensors file (tensor ``z`` or its only tensor)."""
    return _read_array(path, "--z", "z")


def read_mask(path: str) -> torch.Tensor:
    """The boolean mask (1 = observed) in the file of ``--mask``; InputError unless its entries are 0/1."""
    import torch

    mask = _read_array(path, "--mask", "mask", torch.float64)
    assert isinstance(mask, torch.Tensor)
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise InputError("--mask: expected 0/1 entries, received other values")
    return mask != 0


def _read_array(path: str, option: str, key: str, dtype: object = None) -> object:
    """A (B, n) tensor from a .npy file (never unpickled) or a .safetensors file (tensor ``key`` or its only one).

    A 1-D array becomes a batch of one; ``dtype`` defaults to float64 (bool for masks: pass torch.bool);
    ``"keep"`` keeps float32 and float64 as stored and reads anything else as float32.
    """
    from pathlib import Path

    import numpy as np
    import torch

    from geninv.exceptions import InputError, ModelFileError

    target = torch.float64 if dtype is None else dtype
    p = Path(path)
    if not p.is_file():
        raise ModelFileError(f"{option}: expected an existing .npy or .safetensors file, received {path!r}")
    if p.suffix == ".npy":
        try:
            arr = np.load(p, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise ModelFileError(f"{option}: expected a .npy array, could not read {path!r}: {e}") from None
        if arr.dtype.kind not in "biuf":
            raise InputError(f"{option}: expected a real numeric array, received dtype {arr.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    elif p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(p))
        except Exception as e:  # safetensors raises its own error types
            raise ModelFileError(f"{option}: expected a safetensors file, could not read {path!r}: {e}") from None
        if key in tensors:
            t = tensors[key]
        elif len(tensors) == 1:
            t = next(iter(tensors.values()))
        else:
            raise InputError(f"{option}: expected a tensor named {key!r} or a single tensor, received {sorted(tensors)}")
    else:
        raise InputError(f"{option}: expected a .npy or .safetensors file, received {path!r}")
    if t.ndim not in (1, 2):
        raise InputError(f"{option}: expected a 1-D or 2-D array, received shape {tuple(t.shape)}")
    if target == "keep":
        target = t.dtype if t.dtype in (torch.float32, torch.float64) else torch.float32
    t = t.to(target)  # type: ignore[arg-type,call-overload]
    return t if t.ndim == 2 else t.reshape(1, -1)


def open_signals(path: str) -> Any:
    """Signals (B, n) from a .npy file (memory-mapped, never unpickled) or a .safetensors file, in their dtype."""
    from pathlib import Path

    import numpy as np
    import torch

    from geninv.exceptions import InputError, ModelFileError

    p = Path(path)
    if not p.is_file():
        raise ModelFileError(f"SIGNALS: expected an existing .npy or .safetensors file, received {path!r}")
    if p.suffix == ".npy":
        try:
            arr = np.load(p, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as e:
            raise ModelFileError(f"SIGNALS: expected a .npy array, could not read {path!r}: {e}") from None
        if arr.dtype.kind not in "biuf":
            raise InputError(f"SIGNALS: expected a real numeric array, received dtype {arr.dtype}")
        if arr.ndim not in (1, 2):
            raise InputError(f"SIGNALS: expected a 1-D or 2-D array, received shape {tuple(arr.shape)}")
        return arr.reshape(1, -1) if arr.ndim == 1 else arr
    t = _read_array(path, "SIGNALS", "y", "keep")
    assert isinstance(t, torch.Tensor)
    return t


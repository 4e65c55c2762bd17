"""Measurement operators ``A`` with forward and adjoint on batched tensors (B, n).

Solvers only use the protocol (``forward``, ``adjoint``, ``shape``, ``norm``), so any object
with these methods works. Pixel masks keep the signal's width and zero the hidden pixels,
which lets masks differ per sample.
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from geninv._validate import as_batch, as_float, as_int
from geninv.exceptions import InputError, ShapeError, describe

__all__ = [
    "Operator", "Identity", "Mask", "Matrix", "GaussianMatrix", "random_mask", "block_mask",
    "add_noise", "noise_sigma", "adjointness_test",
]


@runtime_checkable
class Operator(Protocol):
    """A linear measurement operator ``A`` from R^n to R^m acting on batches."""

    @property
    def shape(self) -> tuple[int, int]: ...

    def forward(self, x: Tensor) -> Tensor: ...

    def adjoint(self, r: Tensor) -> Tensor: ...

    def norm(self) -> float: ...


def check_width(x: object, width: int, name: str, where: str) -> None:
    # A cheap shape check (no data pass), so a mismatched operator fails with a geninv error
    # instead of a broadcasting or matmul error from torch.
    if not isinstance(x, Tensor):
        raise InputError(f"{where}: {name}: expected a torch.Tensor of shape (B, {width}), received {describe(x)}")
    if x.ndim not in (1, 2) or x.shape[-1] != width:
        raise ShapeError(f"{where}: {name}: expected shape (B, {width}), received {tuple(x.shape)}")


class Identity:
    """``A = I_n``."""

    def __init__(self, n: int) -> None:
        self.n = as_int(n, "n", minimum=1)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n, self.n)

    def forward(self, x: Tensor) -> Tensor:
        return x

    def adjoint(self, r: Tensor) -> Tensor:
        return r

    def norm(self) -> float:
        return 1.0

    def __call__(self, x: Tensor) -> Tensor:
        return self.forward(x)


class Mask:
    """Diagonal 0/1 operator ``M x`` (``True`` = observed pixel); self-adjoint.

    Parameters
    ----------
    mask : Tensor of shape (n,) or (B, n), bool
    """

    def __init__(self, mask: Tensor) -> None:
        if not isinstance(mask, Tensor):
            raise InputError(f"mask: expected a boolean torch.Tensor, received {type(mask).__name__}")
        if mask.is_complex():
            raise InputError(f"mask: expected a boolean or 0/1 tensor, received dtype {mask.dtype}")
        if mask.dtype != torch.bool:
            vals = torch.unique(mask)
            if not bool(((vals == 0) | (vals == 1)).all()):
                raise InputError(f"mask: expected boolean or 0/1 entries, received values such as {vals[:4].tolist()}")
            mask = mask != 0
        if mask.ndim not in (1, 2) or mask.shape[-1] == 0 or mask.shape[0] == 0:
            raise ShapeError(f"mask: expected a non-empty shape (n,) or (B, n), received {tuple(mask.shape)}")
        self.mask = mask if mask.ndim == 2 else mask[None]

    @property
    def shape(self) -> tuple[int, int]:
        n = int(self.mask.shape[1])
        return (n, n)

    @property
    def observed(self) -> Tensor:
        """Number of observed entries per mask row."""
        return self.mask.sum(dim=1)

    def weights(self, like: Tensor) -> Tensor:
        return self.mask.to(device=like.device, dtype=like.dtype)

    def forward(self, x: Tensor) -> Tensor:
        check_width(x, self.shape[1], "x", "Mask.forward")
        return x * self.weights(x)

    def adjoint(self, r: Tensor) -> Tensor:
        check_width(r, self.shape[0], "r", "Mask.adjoint")
        return r * self.weights(r)

    def norm(self) -> float:
        return 1.0 if bool(self.mask.any()) else 0.0

    def __call__(self, x: Tensor) -> Tensor:
        return self.forward(x)


class Matrix:
    """A dense operator ``A`` (m x n) given as a matrix: ``forward(x) = x A^T``, ``adjoint(r) = r A``.

    Parameters
    ----------
    A : Tensor or ndarray of shape (m, n)
        Real and finite. A float32 or float64 matrix keeps its dtype; integer or boolean
        entries become float64. The operator follows the data: applied to a batch of another
        dtype or device it uses a cast copy of ``A`` (cached, the given matrix is kept as is).

    Examples
    --------
    >>> A = Matrix(torch.tensor([[1.0, 0.0, 2.0], [0.0, 3.0, 0.0]], dtype=torch.float64))
    >>> A.shape, A.forward(torch.ones(1, 3, dtype=torch.float64)).tolist(), round(A.norm(), 6)
    ((2, 3), [[3.0, 3.0]], 3.0)
    """

    def __init__(self, A: object) -> None:
        if isinstance(A, np.ndarray):
            try:
                A = torch.from_numpy(np.array(A))  # a copy: later edits of the array do not change the operator
            except TypeError:
                raise InputError(f"A: expected a numeric array of shape (m, n), received dtype {A.dtype}") from None
        if not isinstance(A, Tensor):
            raise InputError(f"A: expected a torch.Tensor or numpy array of shape (m, n), received {describe(A)}")
        if A.ndim != 2 or A.shape[0] == 0 or A.shape[1] == 0:
            raise ShapeError(f"A: expected a non-empty matrix of shape (m, n), received shape {tuple(A.shape)}")
        if A.is_complex():
            raise InputError(f"A: expected a real matrix, received dtype {A.dtype}")
        if A.dtype in (torch.float16, torch.bfloat16):
            raise InputError(f"A: expected a float32 or float64 matrix, received dtype {A.dtype} (convert with A.float())")
        if not A.dtype.is_floating_point:
            A = A.to(torch.float64)
        if not bool(torch.isfinite(A).all()):
            raise InputError("A: expected finite entries, received NaN or Inf")
        self.A: Tensor = A
        self._casts: dict[tuple[torch.device, torch.dtype], Tensor] = {}
        self._norm: float | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.A.shape[0]), int(self.A.shape[1]))

    def _on(self, x: Tensor) -> Tensor:
        if self.A.dtype == x.dtype and self.A.device == x.device:
            return self.A
        key = (x.device, x.dtype)
        if key not in self._casts:
            self._casts[key] = self.A.to(x.device, x.dtype)
        return self._casts[key]

    def forward(self, x: Tensor) -> Tensor:
        check_width(x, self.shape[1], "x", f"{type(self).__name__}.forward")
        return x @ self._on(x).T

    def adjoint(self, r: Tensor) -> Tensor:
        check_width(r, self.shape[0], "r", f"{type(self).__name__}.adjoint")
        return r @ self._on(r)

    def norm(self) -> float:
        """Spectral norm ``||A||_2`` (largest singular value, in float64; cached)."""
        if self._norm is None:
            self._norm = float(torch.linalg.matrix_norm(self.A.double(), ord=2))
        return self._norm

    def __call__(self, x: Tensor) -> Tensor:
        return self.forward(x)


class GaussianMatrix(Matrix):
    """Compressed-sensing matrix ``A`` (m x n) with i.i.d. ``N(0, 1/m)`` entries: a seeded :class:`Matrix`.

    The entries are drawn in float64 from a CPU ``torch.Generator`` seeded with ``seed``, then
    cast to ``dtype`` and moved to ``device``, so a seed gives the same matrix everywhere.
    """

    def __init__(self, m: int, n: int, *, seed: int = 0, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> None:
        if not (isinstance(m, int) and isinstance(n, int) and m > 0 and n > 0) or isinstance(m, bool) or isinstance(n, bool):
            raise InputError(f"m, n: expected positive ints, received m={m!r}, n={n!r}")
        gen = torch.Generator(device="cpu")
        gen.manual_seed(as_int(seed, "seed"))
        super().__init__((torch.randn(m, n, generator=gen, dtype=torch.float64) / math.sqrt(m)).to(device, dtype))


def random_mask(n: int, fraction: float, *, seed: int = 0, batch: int | None = None) -> Tensor:
    """A boolean mask of length ``n`` hiding exactly ``round(fraction * n)`` random pixels.

    Parameters
    ----------
    fraction : float in [0, 1)
        Fraction of *missing* pixels (0.45 hides 45 %).
    batch : int, optional
        Draw a different mask per sample, shape (batch, n).
    """
    n = as_int(n, "n", minimum=1)
    f = as_float(fraction, "fraction", finite=False)
    if not (0.0 <= f < 1.0):
        raise InputError(f"fraction: expected a missing fraction in [0, 1), received {fraction!r}")
    gen = torch.Generator(device="cpu")
    gen.manual_seed(as_int(seed, "seed"))
    k = int(round(f * n))
    rows = 1 if batch is None else as_int(batch, "batch", minimum=1)
    out = torch.ones(rows, n, dtype=torch.bool)
    for r in range(rows):
        out[r, torch.randperm(n, generator=gen)[:k]] = False
    return out[0] if batch is None else out


def block_mask(shape: tuple[int, int] = (28, 28), *, rows: int | slice = 13) -> Tensor:
    """A flattened image mask hiding whole rows: ``rows=13`` hides the upper 13 rows.

    ``rows`` may also be a slice of hidden rows. Returns a bool tensor of length H*W.
    """
    if not (isinstance(shape, (tuple, list)) and len(shape) == 2):
        raise InputError(f"shape: expected (H, W), received {describe(shape)}")
    H, W = as_int(shape[0], "shape[0]", minimum=1), as_int(shape[1], "shape[1]", minimum=1)
    if not isinstance(rows, (int, slice)) or isinstance(rows, bool):
        raise InputError(f"rows: expected an int or a slice of hidden rows, received {describe(rows)}")
    m = torch.ones(H, W, dtype=torch.bool)
    sl = slice(0, rows) if isinstance(rows, int) else rows
    if isinstance(rows, int) and not (0 <= rows < H):
        raise InputError(f"rows: expected a number of hidden rows in [0, {H}), received {rows}")
    m[sl] = False
    return m.flatten()


def noise_sigma(y: Tensor, snr_db: float) -> Tensor:
    """Per-sample noise standard deviation giving expected SNR ``snr_db`` on ``y`` (B, n)."""
    y = as_batch(y, y.shape[-1] if isinstance(y, Tensor) and y.ndim else 1, "y")
    snr_db = as_float(snr_db, "snr_db")
    n = y.shape[1]
    return y.norm(dim=1) / math.sqrt(n) * 10 ** (-float(snr_db) / 20)


def add_noise(y: Tensor, snr_db: float, *, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Add white Gaussian noise to ``y`` at input SNR ``snr_db`` (per sample).

    Returns ``(y_noisy, sigma)`` with ``sigma`` of shape (B,).
    """
    y = as_batch(y, y.shape[-1] if isinstance(y, Tensor) and y.ndim else 1, "y")
    snr_db = as_float(snr_db, "snr_db")
    gen = torch.Generator(device="cpu")
    gen.manual_seed(as_int(seed, "seed"))
    sigma = noise_sigma(y, snr_db)
    e = torch.randn(y.shape, generator=gen, dtype=torch.float64).to(y.device, y.dtype)
    return y + sigma[:, None] * e, sigma


def adjointness_test(op: Operator, *, batch: int = 4, dtype: torch.dtype = torch.float64, seed: int = 0) -> float:
    """Relative error ``|<A x, r> - <x, A^T r>| / (|A x| |r|)`` on random batches."""
    m, n = op.shape
    gen = torch.Generator(device="cpu")
    gen.manual_seed(seed)
    x = torch.randn(batch, n, generator=gen, dtype=dtype)
    r = torch.randn(batch, m, generator=gen, dtype=dtype)
    lhs = (op.forward(x) * r).sum()
    rhs = (x * op.adjoint(r)).sum()
    scale = float(op.forward(x).norm() * r.norm()) or 1.0
    return float((lhs - rhs).abs()) / scale

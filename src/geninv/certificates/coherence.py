"""Mutual coherence, cumulative coherence (Babel) and the Welch bound.

All functions take a matrix ``A`` of shape (m, n) (a torch tensor or a NumPy array) and
work on its *columns* ``a_1 .. a_n``; computations run in float64 NumPy.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import torch

from geninv.exceptions import InputError, ShapeError, describe

__all__ = ["mutual_coherence", "coherence_of_rows", "welch_bound", "babel", "as_matrix", "row_index", "single_thread_blas"]

_F = TypeVar("_F", bound=Callable[..., Any])


def single_thread_blas(f: _F) -> _F:
    """Run ``f`` with NumPy's BLAS limited to one thread (when threadpoolctl is installed).

    The certificates do many small dense factorizations (at most a few hundred rows), for which
    extra BLAS threads bring nothing; on a loaded machine OpenBLAS's spinning threads made a
    600 x 200 SVD take seconds instead of milliseconds.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - optional
        return f

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with threadpool_limits(1, user_api="blas"):
            return f(*args, **kwargs)

    return wrapper  # type: ignore[return-value]

# A column whose norm is below this fraction of the largest column norm counts as zero:
# float64 rounding of a genuinely zero combination leaves ~1e-16 relative residue.
ZERO_COL_RTOL = 1e-12


def as_matrix(A: Any, name: str = "A") -> np.ndarray:
    """``A`` as a finite float64 NumPy array of shape (m, n) (accepts Tensor / ndarray / nested lists)."""
    if isinstance(A, torch.Tensor):
        if A.is_complex():
            raise InputError(f"{name}: expected a real matrix (Tensor or ndarray), received {describe(A)}")
        arr = A.detach().cpu().to(torch.float64).numpy()
    elif isinstance(A, np.ndarray) and A.dtype.kind not in "fiub":
        raise InputError(f"{name}: expected a real matrix (Tensor or ndarray), received {describe(A)}")
    else:
        try:
            arr = np.asarray(A, dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(f"{name}: expected a real matrix (Tensor or ndarray), received {describe(A)}") from None
    if arr.ndim != 2:
        raise ShapeError(f"{name}: expected a 2-D matrix (m, n), received shape {arr.shape}")
    if arr.shape[1] == 0:
        raise ShapeError(f"{name}: expected at least one column, received shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise InputError(f"{name}: expected finite entries, received {int((~np.isfinite(arr)).sum())} NaN/Inf")
    return arr


def row_index(S: Any, n_rows: int, name: str = "S") -> np.ndarray:
    """A row subset given as a boolean mask (n_rows,) or integer indices -> sorted int64 indices."""
    if isinstance(S, torch.Tensor):
        S = S.detach().cpu().numpy()
    arr = np.asarray(S)
    if arr.dtype == bool:
        if arr.shape != (n_rows,):
            raise ShapeError(f"{name}: expected a boolean mask of shape ({n_rows},), received shape {arr.shape}")
        return np.flatnonzero(arr)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer) and arr.size:
        raise InputError(f"{name}: expected a boolean mask or 1-D integer indices, received {describe(S)}")
    idx = np.unique(arr.astype(np.int64))
    if idx.size and (idx[0] < 0 or idx[-1] >= n_rows):
        raise InputError(f"{name}: expected indices in [0, {n_rows}), received {idx[0]}..{idx[-1]}")
    return idx


def _normalized_gram(A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(|G|, zero)``: absolute Gram matrix of the normalized columns (zero diagonal) and the zero-column mask."""
    norms = np.linalg.norm(A, axis=0)
    scale = norms.max() if norms.size else 0.0
    zero = norms <= ZERO_COL_RTOL * scale if scale > 0 else np.ones_like(norms, dtype=bool)
    safe = np.where(zero, 1.0, norms)
    An = A / safe
    G = np.abs(An.T @ An)
    np.fill_diagonal(G, 0.0)
    # Rounding can push |cos| a hair above 1 for parallel columns.
    np.clip(G, 0.0, 1.0, out=G)
    return G, zero


def mutual_coherence(A: Any) -> float:
    """Mutual coherence ``mu(A) = max_{i != j} |a_i^T a_j| / (||a_i|| ||a_j||)``.

    Parameters
    ----------
    A : Tensor or ndarray of shape (m, n)

    Returns
    -------
    float in [0, 1]
        ``0`` for a single column or orthogonal columns.

    Notes
    -----
    Convention: a zero column (norm below ``1e-12`` x the largest) is "parallel to everything", so
    any matrix with a zero column and ``n >= 2`` has ``mu = 1``. This keeps every coherence-based
    condition (``s < (1 + 1/mu) / 2``) conservative; note that ``spark >= 1 + 1/mu`` is *not*
    true with a zero column (its spark is 1), and :func:`geninv.certificates.spark` treats that
    case first.

    Examples
    --------
    >>> mutual_coherence(np.eye(3))
    0.0
    """
    M = as_matrix(A)
    if M.shape[1] < 2:
        return 0.0
    G, zero = _normalized_gram(M)
    if zero.any():
        return 1.0
    return float(G.max())


def coherence_of_rows(W: Any, S: Any) -> float:
    """``mu(W^S)``: the coherence of the rows ``S`` of ``W`` (the paper's supported matrix).

    Parameters
    ----------
    W : Tensor or ndarray of shape (n_out, n_in)
    S : boolean mask of shape (n_out,) or integer row indices

    Returns
    -------
    float
        ``mutual_coherence(W[S])``; ``1.0`` when ``S`` is empty and ``n_in >= 2`` (every column zero).
    """
    M = as_matrix(W, "W")
    idx = row_index(S, M.shape[0])
    return mutual_coherence(M[idx]) if idx.size else (1.0 if M.shape[1] >= 2 else 0.0)


def welch_bound(m: int, n: int) -> float:
    """The Welch lower bound on the coherence of ``n`` unit vectors in ``R^m``.

    ``mu >= sqrt((n - m) / (m (n - 1)))`` for ``n > m``; ``0`` when ``n <= m`` (an orthonormal
    set exists).

    Parameters
    ----------
    m : int
        Rows (the ambient dimension).
    n : int
        Columns (the number of vectors).
    """
    if not (isinstance(m, (int, np.integer)) and isinstance(n, (int, np.integer)) and m > 0 and n > 0):
        raise InputError(f"m, n: expected positive integers, received m={m!r}, n={n!r}")
    if n <= m:
        return 0.0
    return math.sqrt((n - m) / (m * (n - 1)))


def babel(A: Any, p: int | Sequence[int] | None = None) -> np.ndarray:
    """Cumulative coherence ``mu_1(p) = max_j max_{|T| = p, j not in T} sum_{i in T} |<a_i, a_j>|``.

    Computed on the normalized columns; ``mu_1(0) = 0`` and ``mu_1(1) = mu``.

    Parameters
    ----------
    A : Tensor or ndarray of shape (m, n)
    p : int or sequence of int, optional
        Which orders to return; all ``0 .. n-1`` when omitted.

    Returns
    -------
    ndarray of float64
        ``mu_1(p)`` for each requested ``p`` (shape (n,) when ``p`` is omitted).

    Notes
    -----
    If ``mu_1(k - 1) < 1`` every ``k`` columns have a strictly diagonally dominant normalized
    Gram matrix, hence are independent (Gershgorin), so ``spark(A) >= k + 1``. Since
    ``mu_1(k - 1) <= (k - 1) mu`` this is never weaker than ``spark >= 1 + 1/mu``.
    """
    M = as_matrix(A)
    n = M.shape[1]
    G, zero = _normalized_gram(M)
    if zero.any() and n >= 2:
        G[zero, :] = 1.0
        G[:, zero] = 1.0
        np.fill_diagonal(G, 0.0)
    # Row j sorted decreasingly (diagonal zero goes last), cumulative sums = best p-term sums.
    srt = -np.sort(-G, axis=1)[:, : max(n - 1, 0)]
    cum = np.concatenate([np.zeros(1), np.cumsum(srt, axis=1).max(axis=0)]) if n > 1 else np.zeros(1)
    if p is None:
        return cum
    ps = np.atleast_1d(np.asarray(p, dtype=np.int64))
    if (ps < 0).any() or (ps > n - 1).any():
        raise InputError(f"p: expected orders in [0, {n - 1}], received {ps.tolist()}")
    return cum[ps]

"""Packing a method's estimates into a :class:`~geninv.solvers.result.SolveResult`, the same way for every method.

One function does what every method needs at its end: cast the estimates to the data's dtype,
contain NaN/Inf per sample (a non-finite sample is reset to zero and marked unconverged; a batch
with no finite sample raises), stamp the wall time, and give the call's one
``ConvergenceWarning`` listing what went wrong (the method's own notes and the count of
unconverged samples).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from geninv.solvers.result import UNCONVERGED_HINT, SolveResult, packed, warn_outcome

__all__ = ["pack_result", "UNCONVERGED_HINT"]



def pack_result(method: str, z: Tensor, layers: Sequence[Tensor], supports: Sequence[Tensor], converged: Tensor,
                n_iter: Tensor, history: dict[str, Tensor], t0: float, info: dict[str, Any], dtype: torch.dtype, *,
                notes: Sequence[str] = (), unconverged_hint: str | None = UNCONVERGED_HINT, warn: bool = True,
                stacklevel: int = 3) -> SolveResult:
    """The :class:`SolveResult` of a method, with NaN/Inf contained and one warning.

    Parameters
    ----------
    method : str
        The method's name (``result.method``, and the prefix of the warning).
    z : Tensor of shape (B, n_0)
    layers, supports : sequence of Tensor, each (B, n_i)
        Hidden estimates and their supports.
    converged : Tensor of shape (B,), bool
    n_iter : Tensor of shape (B,), int64
    history : dict of str to Tensor, each (T, B)
    t0 : float
        ``time.perf_counter()`` at the start of the solve (``result.seconds`` is measured from it).
    info : dict
        Method-specific extras; ``info["nonfinite"]`` (B,) bool is added where a sample was reset.
    dtype : torch.dtype
        The data's dtype: ``z`` and ``layers`` are returned in it.
    notes : sequence of str
        The method's own remarks on the outcome (e.g. samples that diverged), put in the warning.
    unconverged_hint : str or None
        With a hint, the warning also counts the unconverged samples and gives the hint
        (default :data:`UNCONVERGED_HINT`); None when ``notes`` already say why samples did not converge.
    warn : bool
        Give the warning (False: the caller judges the result itself, e.g. by its residual, or a
        callback stopped the solve).
    stacklevel : int
        Of the warning (3: the caller of the method that calls this).

    Returns
    -------
    SolveResult
        ``residual`` and ``fits`` are left None (:func:`geninv.solvers.verdict.self_check` fills them).

    Raises
    ------
    NumericalError
        Where no sample is finite.
    """
    res, said = packed(method, z, layers, supports, converged, n_iter, history, t0, info, dtype)
    if warn:
        warn_outcome(method, [*notes, *said], res.converged, unconverged_hint, stacklevel=stacklevel)
    return res

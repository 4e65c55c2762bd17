"""The batched iteration driver (per-sample stopping, active-set compaction, history, callback,
NaN containment), the bookkeeping of layer-by-layer solves, and support thresholds."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor

__all__ = ["Callback", "LoopOutput", "StageLog", "run_loop", "threshold_support"]

#: ``callback(k, state) -> bool | None``, called once per check (or stage) of every method.
#: ``state`` holds at least ``"stage"`` (str) and ``"x"`` (the stage's current estimate, full
#: batch); stages that iterate on ``z`` also give ``"z"`` (B, n_0) and ``"objective"`` (B,).
#: Returning True stops the method early: it returns what it has, ``info["stopped_by_callback"]``.
Callback = Callable[[int, dict[str, Any]], Any]


class LoopOutput(NamedTuple):
    """What :func:`run_loop` returns (see there); ``stopped``: the callback asked to stop."""

    state: Any
    converged: Tensor
    n_iter: Tensor
    finite: Tensor
    history: dict[str, Tensor]
    stopped: bool = False


def _index(nt: Any, keep: Tensor) -> Any:
    return type(nt)(*[f.index_select(0, keep) if isinstance(f, Tensor) else f for f in nt])


class StageLog:
    """Bookkeeping of a layer-by-layer solve: each stage's history (keys ``"<stage>.<name>"``),
    per-sample iteration counts and wall time in ``info["n_iter"]`` / ``info["seconds"]``, the
    running totals ``converged`` (every stage converged to finite values) and ``n_iter``, and
    ``stopped``: a stage's callback returned True (``info["stopped_by_callback"]``); the later
    stages then get no iterations (:meth:`iterations`)."""

    def __init__(self, B: int, device: torch.device, info: dict[str, Any]) -> None:
        self.history: dict[str, Tensor] = {}
        self.info = info
        info.setdefault("n_iter", {})
        info.setdefault("seconds", {})
        self.converged = torch.ones(B, dtype=torch.bool, device=device)
        self.n_iter = torch.zeros(B, dtype=torch.int64, device=device)
        self.stopped = False

    def iterations(self, max_iter: int) -> int:
        """``max_iter``, or 0 once a callback has stopped the method (each later stage keeps its start)."""
        return 0 if self.stopped else max_iter

    def record(self, stage: str, out: LoopOutput, t_stage: float) -> None:
        """Add one stage's :class:`LoopOutput`, started at ``time.perf_counter() == t_stage``."""
        for k, v in out.history.items():
            self.history[f"{stage}.{k}"] = v
        self.converged = self.converged & out.converged & out.finite
        self.n_iter = self.n_iter + out.n_iter
        self.info["n_iter"][stage] = out.n_iter
        self.info["seconds"][stage] = time.perf_counter() - t_stage
        if out.stopped:
            self.stopped = True
            self.info["stopped_by_callback"] = True


def run_loop(
    step: Callable[[Any, Any], Any],
    state: Any,
    data: Any,
    *,
    primary: str,
    change: Callable[[Any, Tensor, Any], Tensor],
    objective: Callable[[Any, Any], Tensor] | None,
    max_iter: int,
    tol: float,
    check_every: int,
    callback: Callback | None = None,
    stage: str = "",
) -> LoopOutput:
    """Iterate ``state = step(state, data)`` for a batch, deciding convergence per sample.

    Parameters
    ----------
    step : callable
        Pure step ``(state, data) -> state``; both are NamedTuples whose Tensor fields have
        the batch as leading dimension (shared tensors must live in the step's closure).
    primary : str
        Name of the state field that is the estimate (used for the relative change, the
        finiteness check and the callback).
    change : callable
        ``(state, primary_before_last_step, data) -> (b,)`` stopping measure; a sample stops
        when it is below ``tol``.
    objective : callable or None
        ``(state, data) -> (b,)`` recorded in the history at each check.
    check_every : int
        Convergence is checked (one host sync) every ``check_every`` iterations; finished
        samples are then written out and removed from the working batch (active-set
        compaction), so they cost nothing afterwards.
    callback : callable, optional
        ``callback(k, state) -> bool | None`` at every check (:data:`Callback`): ``state`` has
        ``"stage"``, ``"x"`` (the primary field, full batch), ``"active"``, ``"change"`` and
        ``"objective"`` (B,) or None, and ``"z"`` when ``stage == "z"``. A true return value
        stops the loop there: the unfinished samples keep their current (finite) state,
        unconverged, and ``stopped`` is set.

    Returns
    -------
    LoopOutput
        The full-batch final state, per-sample ``converged``, ``n_iter``, ``finite`` (False
        where the iteration produced NaN/Inf: the sample is returned at its starting state),
        ``history`` with ``change`` and ``objective`` of shape (T, B), and ``stopped``.
    """
    fields = state._fields
    pi = fields.index(primary)
    x0 = state[pi]
    B = x0.shape[0]
    dev = x0.device
    out = [f.clone() for f in state]
    idx = torch.arange(B, device=dev)
    converged = torch.zeros(B, dtype=torch.bool, device=dev)
    finite = torch.ones(B, dtype=torch.bool, device=dev)
    n_iter = torch.full((B,), max_iter, dtype=torch.int64, device=dev)
    last_change = torch.full((B,), float("nan"), dtype=x0.dtype, device=dev)
    last_obj = torch.full((B,), float("nan"), dtype=x0.dtype, device=dev)
    hist_change: list[Tensor] = []
    hist_obj: list[Tensor] = []
    k = 0
    stopped = False
    while k < max_iter and idx.numel() > 0 and not stopped:
        n_steps = min(check_every, max_iter - k)
        for _ in range(n_steps - 1):
            state = step(state, data)
        prev = state[pi]
        state = step(state, data)
        k += n_steps
        ch = change(state, prev, data)
        fin = torch.isfinite(state[pi]).all(dim=1) & torch.isfinite(ch)
        conv = (ch < tol) & fin
        done = conv | ~fin
        last_change[idx] = torch.where(fin, ch, torch.full_like(ch, float("nan")))
        hist_change.append(last_change.clone())
        if objective is not None:
            last_obj[idx] = objective(state, data)
            hist_obj.append(last_obj.clone())
        if callback is not None:
            x_full = out[pi].clone()
            x_full[idx] = state[pi]
            st = {"stage": stage, "x": x_full, "active": int(idx.numel()), "change": last_change.clone(),
                  "objective": last_obj.clone() if objective is not None else None}
            if stage == "z":
                st["z"] = x_full
            stopped = bool(callback(k, st))
        n_done = int(done.sum())  # the one host sync of this check
        if n_done:
            d = done.nonzero().squeeze(1)
            ok = d[fin[d]]
            gi = idx[ok]
            for j, f in enumerate(state):
                if isinstance(f, Tensor):
                    out[j][gi] = f[ok]
            gd = idx[d]
            converged[gd] = conv[d]
            finite[gd] = fin[d]
            n_iter[gd] = k
            if n_done == idx.numel():
                idx = idx[:0]
                break
            keep = (~done).nonzero().squeeze(1)
            state = _index(state, keep)
            data = _index(data, keep)
            idx = idx[keep]
    if idx.numel():
        # Unconverged at max_iter: keep the finite ones, flag every one.
        fin = torch.isfinite(state[pi]).all(dim=1)
        ok = fin.nonzero().squeeze(1)
        for j, f in enumerate(state):
            if isinstance(f, Tensor):
                out[j][idx[ok]] = f[ok]
        finite[idx] = fin
        n_iter[idx] = k
    hist: dict[str, Tensor] = {}
    if hist_change:
        hist["change"] = torch.stack(hist_change)
    if hist_obj:
        hist["objective"] = torch.stack(hist_obj)
    return LoopOutput(type(state)(*out), converged, n_iter, finite, hist, stopped)


def threshold_support(x: Tensor, rel: float) -> Tensor:
    """``x_j > rel * max_j x_j`` per sample: a support estimate relative to the layer's scale
    (docs/method.md sec. 9.1: never ``> 0`` or a tiny absolute threshold)."""
    top = x.amax(dim=1, keepdim=True)
    return (x > rel * top) & (top > 0)

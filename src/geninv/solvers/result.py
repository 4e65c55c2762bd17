"""The one result type every inversion method returns, and its packing: the NaN/Inf containment
and self-check of a finished solve, and the merge of results solved on groups of a batch."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from geninv.exceptions import ConvergenceWarning, NumericalError
from geninv.model.generator import Generator
from geninv.solvers.debias import fit_supports
from geninv.solvers.measurement import Measurement
from geninv.solvers.verdict import fit_message, self_check

__all__ = ["SolveResult", "finish", "packed", "warn_outcome", "UNCONVERGED_HINT", "split_by_domain", "merge_results", "no_hidden_layer"]


@dataclass(frozen=True)
class SolveResult:
    """Result of inverting a batch of B signals.

    Attributes
    ----------
    method : str
        Name of the method that produced it.
    z : Tensor of shape (B, n_0)
        The latent estimate.
    layers : list of Tensor
        Hidden estimates ``[x_1, ..., x_L]``, each (B, n_i).
    supports : list of Tensor
        Estimated supports of the hidden layers, each bool (B, n_i).
    converged : Tensor of shape (B,), bool
        Per-sample: the stopping criterion was met (False at ``max_iter`` or on divergence).
    n_iter : Tensor of shape (B,), int64
        Per-sample iteration count (summed over the stages of multi-stage methods).
    history : dict of str to Tensor
        One tensor per recorded quantity (e.g. ``"objective"``, ``"residual"``), each (T, B).
    seconds : float
        Wall time of the solve.
    info : dict
        Method-specific extras (parameters actually used, stage timings, ...).
    residual : Tensor of shape (B,), float64, or None
        Per-sample relative residual of the measurements, ``||A G(z) - y|| / ||y||`` (the
        absolute norm where ``y = 0``; ``inf`` for a non-finite ``z``).
    fits : Tensor of shape (B,), bool, or None
        Per-sample verdict: True where ``z`` explains ``y``, i.e. the residual is at the rounding
        level of the data's dtype (exact data) or consistent with the noise level given or
        estimated (:func:`geninv.solvers.verdict.fit_verdict`). Unlike ``converged`` (the
        iteration stopped by its own criterion), a False here means ``z`` is not a preimage of
        ``y``. Both are None only on a result built by hand; :func:`geninv.invert` and the
        pursuits fill them.
    """

    method: str
    z: Tensor
    layers: list[Tensor]
    supports: list[Tensor]
    converged: Tensor
    n_iter: Tensor
    history: dict[str, Tensor] = field(default_factory=dict)
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    residual: Tensor | None = None
    fits: Tensor | None = None

    @property
    def batch_size(self) -> int:
        return int(self.z.shape[0])

    def to(self, device: torch.device | str) -> SolveResult:
        """A copy with every tensor on ``device``."""
        return SolveResult(
            self.method,
            self.z.to(device),
            [x.to(device) for x in self.layers],
            [s.to(device) for s in self.supports],
            self.converged.to(device),
            self.n_iter.to(device),
            {k: v.to(device) for k, v in self.history.items()},
            self.seconds,
            dict(self.info),
            None if self.residual is None else self.residual.to(device),
            None if self.fits is None else self.fits.to(device),
        )

    def __repr__(self) -> str:
        B = self.batch_size
        parts = [f"method={self.method!r}", f"B={B}", f"converged={int(self.converged.sum())}/{B}"]
        if self.fits is not None:
            parts.append(f"fits={int(self.fits.sum())}/{B}")
        if self.residual is not None and self.residual.numel():
            parts.append(f"median residual={float(self.residual.median()):.3g}")
        parts.append(f"seconds={self.seconds:.3g}")
        return f"SolveResult({', '.join(parts)})"


def finish(
    method: str,
    G: Generator,
    z: Tensor,
    layers: list[Tensor],
    supports: list[Tensor],
    converged: Tensor,
    n_iter: Tensor,
    *,
    history: dict[str, Tensor],
    t0: float,
    info: dict[str, Any],
    dtype: torch.dtype,
    y: Tensor | None = None,
    meas: Measurement | None = None,
) -> SolveResult:
    """Pack a SolveResult: cast to ``y``'s dtype, contain NaN/Inf, check the fit, warn once.

    With the data ``y`` (B, m) and its measurement ``meas``, the result carries its per-sample
    ``residual`` and ``fits`` (:func:`geninv.solvers.verdict.self_check`), and the one
    ConvergenceWarning of the call says how many samples do not fit (none when all fit).
    Without them it warns on non-convergence only.
    """
    res, notes = packed(method, z, layers, supports, converged, n_iter, history, t0, info, dtype)
    if y is not None and meas is not None:
        res = self_check(G, y, meas, res)
        msg = fit_message(res)
        if msg:
            warnings.warn(msg, ConvergenceWarning, stacklevel=3)
        return res
    warn_outcome(method, notes, res.converged, UNCONVERGED_HINT, stacklevel=3)
    return res


#: What the note on unconverged samples suggests.
UNCONVERGED_HINT = "raise max_iter or loosen tol"


def packed(method: str, z: Tensor, layers: Sequence[Tensor], supports: Sequence[Tensor], converged: Tensor,
           n_iter: Tensor, history: dict[str, Tensor], t0: float, info: dict[str, Any],
           dtype: torch.dtype) -> tuple[SolveResult, list[str]]:
    """The SolveResult of a method's estimates, cast to ``dtype``, with NaN/Inf contained per
    sample (a non-finite sample is reset to zero and marked unconverged; NumericalError when no
    sample is finite), and the notes that say so; the wall time is measured from ``t0``."""
    z = z.to(dtype)
    layers = [x.to(dtype) for x in layers]
    bad = ~torch.isfinite(z).all(dim=1)
    for x in layers:
        bad = bad | ~torch.isfinite(x).all(dim=1)
    if bool(bad.all()):
        raise NumericalError(f"{method}: every sample produced NaN/Inf; the problem is too ill-conditioned for {dtype}")
    notes = []
    if bool(bad.any()):
        nb = int(bad.sum())
        z = torch.where(bad[:, None], torch.zeros_like(z), z)
        layers = [torch.where(bad[:, None], torch.zeros_like(x), x) for x in layers]
        converged = converged & ~bad
        info = dict(info, nonfinite=bad)
        notes.append(f"{nb} sample(s) produced NaN/Inf and were reset to zero (converged=False)")
    return SolveResult(method, z, layers, list(supports), converged, n_iter, history, time.perf_counter() - t0, info), notes


def warn_outcome(method: str, notes: Sequence[str], converged: Tensor, hint: str | None, *, stacklevel: int) -> None:
    """One ConvergenceWarning with the method's notes and, given a ``hint``, the count of
    unconverged samples; nothing when there is nothing to say. ``stacklevel`` counts from the
    caller of this function."""
    said = list(notes)
    n_bad = int((~converged).sum())
    if n_bad and hint is not None:
        said.append(f"{n_bad} of {converged.numel()} sample(s) did not converge (see result.converged); {hint}")
    if said:
        warnings.warn(f"{method}: " + "; ".join(said), ConvergenceWarning, stacklevel=stacklevel + 1)


def split_by_domain(solve: Callable[..., SolveResult], G: Generator, y: Tensor, meas: Measurement, pre: Tensor,
                    options: dict[str, Any]) -> SolveResult:
    """Solve a batch whose samples take different image domains (:func:`choose_domains`): the
    'pre' samples and the 'signal' samples each by ``solve(G, y_g, mask=..., image_domain=d,
    **options)``, the results put back in the batch's order (:func:`merge_results`), so each
    sample is solved as it would be alone. ``info["image_domain"]`` is then a per-sample list;
    a callback sees each group's batch in turn.
    """
    t0 = time.perf_counter()
    parts = []
    for d, sel in (("pre", pre), ("signal", ~pre)):
        idx = sel.nonzero().squeeze(1)
        m = None if meas.obs is None else meas.obs[idx]
        parts.append((idx, solve(G, y[idx], mask=m, image_domain=d, **options)))
    return merge_results(parts, y.shape[0], time.perf_counter() - t0)


def merge_results(parts: Sequence[tuple[Tensor, SolveResult]], B: int, seconds: float) -> SolveResult:
    """One SolveResult of B samples from results on disjoint groups ``(indices, result)``.

    Per-sample tensors (leading dimension the group's size) are scattered back; histories
    (T, b) are padded with NaN to the longest; ``info`` is merged key by key (per-sample
    tensors scattered, equal values kept, differing values listed per sample, ``seconds``
    summed).
    """
    idxs = [i for i, _ in parts]
    res = [r for _, r in parts]

    def scatter(vals: Sequence[Tensor]) -> Tensor:
        ref = vals[0]
        out = ref.new_zeros((B, *ref.shape[1:]))
        for i, v in zip(idxs, vals):
            out[i] = v.to(out.dtype)
        return out

    def per_sample(vals: Sequence[Any]) -> list[Any]:
        out: list[Any] = [None] * B
        for i, v in zip(idxs, vals):
            for j in i.tolist():
                out[j] = v
        return out

    def merge(vals: Sequence[Any], key: str = "") -> Any:
        present = [v for v in vals if v is not None]
        if not present:
            return None
        if all(isinstance(v, Tensor) and v.ndim >= 1 and v.shape[0] == i.numel() and v.shape[1:] == present[0].shape[1:]
               for v, i in zip(vals, idxs)):
            return scatter(vals)
        if all(isinstance(v, dict) for v in vals):
            keys = list(dict.fromkeys(k for v in vals for k in v))
            return {k: merge([v.get(k) for v in vals], key if key == "seconds" else k) for k in keys}
        if all(isinstance(v, tuple) and hasattr(v, "_fields") and type(v) is type(vals[0]) for v in vals):
            return type(vals[0])(*[merge([v[j] for v in vals]) for j in range(len(vals[0]))])
        if all(isinstance(v, list) and len(v) == len(vals[0]) for v in vals):
            return [merge([v[j] for v in vals]) for j in range(len(vals[0]))]
        if key == "seconds" and all(isinstance(v, (int, float)) for v in vals):
            return float(sum(vals))
        if all(not isinstance(v, Tensor) and v == vals[0] for v in vals):
            return vals[0]
        return per_sample(vals)

    hist: dict[str, Tensor] = {}
    for k in dict.fromkeys(k for r in res for k in r.history):
        hs = [r.history.get(k) for r in res]
        ref = next(h for h in hs if h is not None)
        T = max(h.shape[0] for h in hs if h is not None)
        out = torch.full((T, B), float("nan"), dtype=ref.dtype, device=ref.device)
        for i, h in zip(idxs, hs):
            if h is not None:
                out[: h.shape[0], i] = h
        hist[k] = out
    return SolveResult(
        res[0].method, scatter([r.z for r in res]),
        [scatter(list(x)) for x in zip(*[r.layers for r in res])],
        [scatter(list(x)) for x in zip(*[r.supports for r in res])],
        scatter([r.converged for r in res]), scatter([r.n_iter for r in res]), hist, seconds,
        merge([r.info for r in res]),
        None if any(r.residual is None for r in res) else scatter([r.residual for r in res]),
        None if any(r.fits is None for r in res) else scatter([r.fits for r in res]),
    )


def no_hidden_layer(method: str, G: Generator, y: Tensor, meas: Measurement, t0: float) -> SolveResult:
    """A generator without hidden layers, ``y = A phi(W z + b)``: the end-to-end fit is the answer."""
    z, conv, obj = fit_supports(G, y, [], meas)
    n_iter = torch.zeros(y.shape[0], dtype=torch.int64, device=y.device)
    return finish(method, G, z, [], [], conv, n_iter, history={}, t0=t0, info={"debias_objective": obj}, dtype=y.dtype,
                  y=y, meas=meas)

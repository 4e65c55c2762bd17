"""Machinery shared by the solvers: measurement handling, the batched iteration driver (per-sample
stopping, active-set compaction, history, callback, NaN containment), batched supported least
squares, support thresholds, the fixed-support network map and the debiasing fit.
"""

from __future__ import annotations

import math
import time
import warnings
import weakref
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TypeVar

import torch
from torch import Tensor

from geninv._validate import as_batch
from geninv.exceptions import ConvergenceWarning, InputError, NumericalError, ShapeError, describe
from geninv.integrations import is_deepinv_physics
from geninv.model.generator import Generator
from geninv.operators import Identity, Mask
from geninv.solvers.result import SolveResult

__all__ = [
    "Measurement",
    "resolve_measurement",
    "check_generator",
    "check_option",
    "default_tol",
    "check_seed",
    "choose_domain",
    "choose_domains",
    "saturated",
    "unsaturated",
    "split_by_domain",
    "check_informative",
    "LoopOutput",
    "run_loop",
    "threshold_support",
    "batched_lstsq",
    "supported_lstsq",
    "image_warm_start",
    "exact_fit",
    "data_dtype",
    "StageLog",
    "support_affine",
    "debias_fit",
    "fit_supports",
    "network_objective",
    "hidden_layers",
    "preactivation_target",
    "finish",
    "no_hidden_layer",
]

Callback = Callable[[int, dict[str, Any]], Any]


# -- arguments --------------------------------------------------------------------------------


def check_generator(G: object, *, relu_hidden: bool = True) -> Generator:
    if not isinstance(G, Generator):
        hint = " (convert a torch module with geninv.Generator.from_torch(module))" if isinstance(G, torch.nn.Module) else ""
        raise InputError(f"G: expected a geninv.Generator{hint}, received {describe(G)}")
    if relu_hidden:
        G.require_relu_hidden("the pursuits and the Oracle")
    return G


def check_option(name: str, value: Any, *, kind: str, low: float | None = None, allow_none: bool = False) -> Any:
    """Validate one solver option (``kind`` in 'float', 'int', 'bool', 'callable')."""
    if value is None:
        if allow_none:
            return None
        raise InputError(f"{name}: expected a {kind}, received None")
    if kind == "bool":
        if not isinstance(value, bool):
            raise InputError(f"{name}: expected True or False, received {describe(value)}")
        return value
    if kind == "callable":
        if not callable(value):
            raise InputError(f"{name}: expected a callable(iteration, state_dict), received {describe(value)}")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{name}: expected an int, received {describe(value)}")
    else:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
            raise InputError(f"{name}: expected a finite real number, received {describe(value)}")
        value = float(value)
    if low is not None and not value >= low:
        raise InputError(f"{name}: expected a value >= {low}, received {value!r}")
    return value


def check_seed(seed: object) -> int | None:
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InputError(f"seed: expected an int or None, received {describe(seed)}")
    return seed


def saturated(phi: Any, y: Tensor) -> Tensor:
    """Entries of ``y`` at a bound of the output activation's range in the data's precision.

    A bounded activation (tanh, sigmoid) rounds to its bound, or to a few ulps from it, where
    its pre-activation is large: ``sigmoid(a) == 0`` in float32 for ``a < -104`` and ``== 1`` for
    ``a > 17``. There ``phi^{-1}(y)`` is undefined or known only roughly: one rounding of ``y``
    (one ulp, ``eps max(|y|, tiny)``) moves ``a`` by ``ulp / phi'(a)``. An entry is saturated
    when that exceeds ``sqrt(eps) max(1, |a|)``: the value says only that ``a`` is large, an
    inequality, not an equation. Entries beyond the bounds (noise) are out of range, not
    saturated. Other activations never saturate.

    Parameters
    ----------
    phi : Activation
    y : Tensor of shape (B, n)

    Returns
    -------
    Tensor of shape (B, n), bool
    """
    if phi.name not in ("tanh", "sigmoid"):
        return torch.zeros(y.shape, dtype=torch.bool, device=y.device)
    fi = torch.finfo(y.dtype)
    lo, hi = phi.range
    y64 = y.to(torch.float64)
    inside = (y64 >= lo) & (y64 <= hi)
    yc = y64.clamp(lo, hi)
    # phi'(a) as a function of y = phi(a): y (1 - y) for sigmoid, (1 + y)(1 - y) for tanh
    dphi = (yc - lo) * (hi - yc) / (hi - lo) if phi.name == "sigmoid" else (yc - lo) * (hi - yc)
    with torch.no_grad():
        if phi.name == "sigmoid":
            a = (torch.log(yc) - torch.log1p(-yc)).abs()
        else:
            a = torch.atanh(yc).abs()
    ulp = fi.eps * yc.abs().clamp_min(fi.tiny)
    precise = ulp <= math.sqrt(fi.eps) * dphi * torch.nan_to_num(a, posinf=1.0).clamp_min(1.0)
    return inside & ~precise


def unsaturated(G: Generator, y: Tensor, meas: Measurement) -> Measurement:
    """``meas`` with the saturated entries of each sample (:func:`saturated`) unobserved.

    The pre-activation form ``phi^{-1}(y)`` uses this: a saturated pixel gives no equation on
    ``W_{L+1} x_L + b_{L+1}``, and treating it as observed (``phi^{-1}`` of a rounded bound) makes
    the linear system inconsistent. Decided per sample, so a sample's problem does not depend on
    its batch mates. ``meas`` itself (the signal-domain fit, the debiasing) keeps every observed
    entry. Returned unchanged when nothing is saturated or ``meas`` is not diagonal.
    """
    if not meas.diagonal:
        return meas
    sat = saturated(G.output_activation, y)
    if meas.obs is not None:
        sat = sat & meas.obs
    if not bool(sat.any()):
        return meas
    obs = ~sat if meas.obs is None else meas.obs & ~sat
    return Measurement("diag", obs.to(y.dtype), obs, None)


def choose_domains(image_domain: object, G: Generator, y: Tensor, meas: Measurement, *,
                   out_of_range: str = "signal") -> tuple[str, Tensor]:
    """Resolve ``image_domain`` ('auto', 'pre' or 'signal') per sample.

    'auto' takes, for each sample, 'pre' when the output activation is invertible, the
    measurement diagonal (a pixel mask or none), and the sample has at least one observed entry
    that is not saturated (:func:`saturated`; saturated entries are left out of the
    pre-activation form, :func:`unsaturated`), and 'signal' otherwise (ReLU outputs, general
    operators). A sample with an observed entry outside the activation's range (noise) gets
    'signal' if ``out_of_range == "signal"`` (Latent-Pursuit: fit phi(.) to noisy data) and
    'pre' otherwise, whose ``phi^{-1}(y)`` then raises DomainError (Layered Basis-Pursuit,
    defined on ``phi^{-1}(y)``).

    Returns
    -------
    domain : str
        'pre' or 'signal' when every sample takes it, 'mixed' otherwise.
    pre : Tensor of shape (B,), bool
        The samples that take 'pre'.
    """
    if image_domain not in ("auto", "pre", "signal"):
        raise InputError(f"image_domain: expected 'auto', 'pre' or 'signal', received {describe(image_domain)}")
    phi = G.output_activation
    pre_ok = meas.diagonal and phi.invertible
    B = y.shape[0]
    if image_domain == "pre" and not pre_ok:
        raise InputError(
            "image_domain: expected 'auto' or 'signal' for this problem ('pre' needs an invertible output "
            f"activation and a pixel mask or no measure), received 'pre' with output {phi.name} and measure {meas.kind}"
        )
    every = torch.ones(B, dtype=torch.bool, device=y.device)
    if image_domain == "signal" or not pre_ok:
        return "signal", ~every
    if image_domain == "pre":
        return "pre", every
    observed = torch.ones_like(y, dtype=torch.bool) if meas.obs is None else meas.obs
    lo, hi = phi.range
    beyond = observed & ~((y >= lo) & (y <= hi) & torch.isfinite(y))
    usable = observed & ~beyond & ~saturated(phi, y)
    pre = usable.any(dim=1)
    if out_of_range == "signal":
        pre = pre & ~beyond.any(dim=1)
    elif bool(beyond.any()):
        pre = every  # phi^{-1} raises DomainError naming the values out of range
    n_pre = int(pre.sum())
    return ("pre" if n_pre == B else "signal" if n_pre == 0 else "mixed"), pre


def choose_domain(image_domain: object, G: Generator, y: Tensor, meas: Measurement, *,
                  out_of_range: str = "signal") -> str:
    """One ``image_domain`` for the whole batch: that of :func:`choose_domains` when every sample
    takes the same, 'signal' otherwise."""
    domain, _ = choose_domains(image_domain, G, y, meas, out_of_range=out_of_range)
    return "signal" if domain == "mixed" else domain


def check_informative(G: Generator, y: Tensor, meas: Measurement, *, name: str = "y") -> None:
    """Refuse signals equal to ``A phi(b_{L+1})``: the output when every unit of the last hidden
    layer is off, which leaves ``z`` undetermined (any ``z`` switching that layer off fits)."""
    if G.n_hidden == 0:
        return
    base = G.output_activation(G.biases[-1].to(y.device, y.dtype))[None].expand(y.shape[0], -1)
    ref = forward_meas(meas, base)
    yy = forward_meas(meas, y) if meas.kind == "diag" else y
    diff = (yy - ref).abs().amax(dim=1)
    scale = 1.0 + ref.abs().amax(dim=1)
    dead = diff <= 64 * torch.finfo(y.dtype).eps * scale
    if bool(dead.any()):
        which = dead.nonzero().flatten().tolist()[:5]
        raise InputError(
            f"{name}: expected signals that depend on z, received sample(s) {which} equal to phi(b_(L+1)), the output "
            "with every unit of the last hidden layer off, for which the latent z is not determined"
        )


def default_tol(dtype: torch.dtype) -> float:
    """Relative-change tolerance: 1e-7 in float64, 1e-5 in float32 (a few float32 ulps times
    the problems' conditioning: float32 iterates stop changing at about 1e-6)."""
    return 1e-7 if dtype == torch.float64 else 1e-5


class Measurement(NamedTuple):
    """How ``y`` was measured from the image ``phi(W_{L+1} x_L + b_{L+1})`` (width n).

    kind : 'identity' (y is the image), 'diag' (a 0/1 pixel mask; ``w`` is its float (B, n)
    form, ``obs`` its boolean form) or 'operator' (a general ``op`` with forward/adjoint,
    y has width ``op.shape[0]``).
    """

    kind: str
    w: Tensor | None
    obs: Tensor | None
    op: Any

    @property
    def diagonal(self) -> bool:
        return self.kind in ("identity", "diag")


def resolve_measurement(measure: object, mask: object, G: Generator, y: object, *, name: str = "y") -> tuple[Tensor, Measurement]:
    """Validate ``y`` against the measurement and return ``(y, Measurement)``.

    ``y`` becomes a finite (B, m) float32 or float64 tensor (m = n, or ``measure.shape[0]``);
    half precisions are refused (the solvers' least squares and stopping tests need at least
    float32).
    """
    if isinstance(y, Tensor) and y.dtype in (torch.float16, torch.bfloat16):
        raise InputError(f"{name}: expected a float32 or float64 tensor, received dtype {y.dtype} (convert with y.float())")
    y, mask = G.flatten_output(y), G.flatten_output(mask)  # signals and masks in the output's shape (B, C, H, W)
    n = G.output_dim
    if mask is not None and measure is not None:
        raise InputError("mask, measure: expected at most one of them, received both")
    if is_deepinv_physics(measure):  # a direct solver call: wrapped (noiseless A / A_adjoint), noise not read
        from geninv.integrations.deepinv_physics import wrap_measurement

        measure, y = wrap_measurement(measure, G, y)
        if measure.noise_level is not None:
            warnings.warn(
                f"measure: the deepinv physics adds Gaussian noise (sigma {measure.noise_level}), which a direct solver "
                "call does not read; pass it through geninv.invert(..., measure=physics) or give noise_level=",
                UserWarning, stacklevel=3,
            )
    mname = "measure"
    if mask is not None:
        mname = "mask"
        if isinstance(mask, Mask):
            measure = mask
        else:
            if not isinstance(mask, Tensor):
                raise InputError(f"mask: expected a boolean tensor of shape ({n},) or (B, {n}), received {describe(mask)}")
            measure = Mask(mask)
    if measure is None or isinstance(measure, Identity):
        if isinstance(measure, Identity) and measure.n != n:
            raise ShapeError(f"{mname}: expected an operator on R^{n}, received Identity({measure.n})")
        yy = as_batch(y, n, name)
        return yy, Measurement("identity", None, None, None)
    if isinstance(measure, Mask):
        if measure.mask.ndim != 2 or measure.mask.shape[1] != n:
            raise ShapeError(f"{mname}: expected a mask of width {n} (the generator's output), received shape {tuple(measure.mask.shape)}")
        _check_width(y, n, name, f"{mname} of width {n}")
        yy = as_batch(y, n, name)
        B = yy.shape[0]
        if measure.mask.shape[0] not in (1, B):
            raise ShapeError(f"{mname}: expected a mask of shape ({n},), (1, {n}) or ({B}, {n}), received {tuple(measure.mask.shape)}")
        obs = measure.mask.to(yy.device).expand(B, n)
        if not bool(obs.any(dim=1).all()):
            raise InputError(f"{mname}: expected at least one observed entry per signal, received a mask hiding everything")
        return yy, Measurement("diag", obs.to(yy.dtype), obs, None)
    for attr in ("forward", "adjoint", "shape", "norm"):
        if not hasattr(measure, attr):
            raise InputError(f"measure: expected a geninv operator (forward, adjoint, shape, norm), received {describe(measure)}")
    shape = tuple(measure.shape)  # type: ignore[attr-defined]
    if len(shape) != 2 or shape[1] != n:
        raise ShapeError(f"measure: expected an operator of shape (m, {n}), received shape {shape}")
    _check_width(y, int(shape[0]), name, f"{mname} of shape {shape}")
    yy = as_batch(y, int(shape[0]), name)
    return yy, Measurement("operator", None, None, measure)


def _check_width(y: object, m: int, name: str, what: str) -> None:
    if isinstance(y, Tensor) and y.ndim in (1, 2) and y.shape[-1] != m:
        raise ShapeError(f"{name}: expected shape (B, {m}) or ({m},) to match the {what}, received shape {tuple(y.shape)}")


def preactivation_target(G: Generator, y: Tensor, meas: Measurement, *, name: str = "y") -> Tensor:
    """``phi^{-1}(y)`` on observed entries (unobserved ones get 0, they carry no weight).

    Raises DomainError (naming ``name``) if an observed value lies outside the range of the
    output activation, and InputError for a non-diagonal measurement or a ReLU output.
    """
    phi = G.output_activation
    if not meas.diagonal:
        raise InputError(f"measure: the pre-activation form needs a pixel mask or no measure, received {describe(meas.op)}")
    if not phi.invertible:
        raise InputError(f"G: the pre-activation form needs an invertible output activation, received {phi.name}")
    if meas.obs is None:
        return phi.inverse(y, name=name)
    fill = phi(torch.zeros((), dtype=y.dtype, device=y.device))
    t = phi.inverse(torch.where(meas.obs, y, fill), name=name)
    return t * meas.w  # type: ignore[operator]


# -- the iteration driver -------------------------------------------------------------------

S = TypeVar("S", bound=tuple)
D = TypeVar("D", bound=tuple)


class LoopOutput(NamedTuple):
    state: Any
    converged: Tensor
    n_iter: Tensor
    finite: Tensor
    history: dict[str, Tensor]


def _index(nt: Any, keep: Tensor) -> Any:
    return type(nt)(*[f.index_select(0, keep) if isinstance(f, Tensor) else f for f in nt])


class StageLog:
    """Bookkeeping of a layer-by-layer solve: each stage's history (keys ``"<stage>.<name>"``),
    per-sample iteration counts and wall time in ``info["n_iter"]`` / ``info["seconds"]``, and the
    running totals ``converged`` (every stage converged to finite values) and ``n_iter``."""

    def __init__(self, B: int, device: torch.device, info: dict[str, Any]) -> None:
        self.history: dict[str, Tensor] = {}
        self.info = info
        info.setdefault("n_iter", {})
        info.setdefault("seconds", {})
        self.converged = torch.ones(B, dtype=torch.bool, device=device)
        self.n_iter = torch.zeros(B, dtype=torch.int64, device=device)

    def record(self, stage: str, out: LoopOutput, t_stage: float) -> None:
        """Add one stage's :class:`LoopOutput`, started at ``time.perf_counter() == t_stage``."""
        for k, v in out.history.items():
            self.history[f"{stage}.{k}"] = v
        self.converged = self.converged & out.converged & out.finite
        self.n_iter = self.n_iter + out.n_iter
        self.info["n_iter"][stage] = out.n_iter
        self.info["seconds"][stage] = time.perf_counter() - t_stage


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

    Returns
    -------
    LoopOutput
        The full-batch final state, per-sample ``converged``, ``n_iter``, ``finite`` (False
        where the iteration produced NaN/Inf: the sample is returned at its starting state),
        and ``history`` with ``change`` and ``objective`` of shape (T, B).
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
    while k < max_iter and idx.numel() > 0:
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
            callback(k, {"stage": stage, "x": x_full, "active": int(idx.numel()), "change": last_change.clone(),
                         "objective": last_obj.clone() if objective is not None else None})
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
    return LoopOutput(type(state)(*out), converged, n_iter, finite, hist)


# -- supports and least squares ------------------------------------------------------------


def threshold_support(x: Tensor, rel: float) -> Tensor:
    """``x_j > rel * max_j x_j`` per sample: a support estimate relative to the layer's scale
    (docs/method.md sec. 9.1: never ``> 0`` or a tiny absolute threshold)."""
    top = x.amax(dim=1, keepdim=True)
    return (x > rel * top) & (top > 0)


def _normal_solver(Gm: Tensor, pad: Tensor | None) -> Callable[[Tensor], Tensor]:
    """A solver ``r -> pinv(Gm_b) r_b`` for a batch of Gram matrices (B, k, k).

    Batched Cholesky (one LAPACK call); samples whose factorization fails or whose pivot ratio
    squared exceeds ``0.01 / eps`` (numerically singular) get a pseudo-inverse from ``eigh``
    with eigenvalues below ``k * eps * lambda_max`` dropped, i.e. the minimum-norm solution.
    """
    k = Gm.shape[-1]
    eps = torch.finfo(Gm.dtype).eps
    if pad is not None:
        Gm = Gm + torch.diag_embed(pad.to(Gm.dtype))
    L, info = torch.linalg.cholesky_ex(Gm)
    diag = L.diagonal(dim1=1, dim2=2)
    ratio = (diag.amax(dim=1) / diag.amin(dim=1).clamp_min(torch.finfo(Gm.dtype).tiny)) ** 2
    bad = (info != 0) | ~torch.isfinite(ratio) | (ratio > 0.01 / eps)

    def chol_solve(r: Tensor, LL: Tensor) -> Tensor:
        # Two triangular solves: faster than cholesky_solve for batches of small systems.
        h = torch.linalg.solve_triangular(LL, r.unsqueeze(-1), upper=False)
        return torch.linalg.solve_triangular(LL.transpose(1, 2), h, upper=True).squeeze(-1)

    if not bool(bad.any()):
        return lambda r: chol_solve(r, L)
    evals, evecs = torch.linalg.eigh(Gm[bad])
    cut = evals.amax(dim=1, keepdim=True) * (k * eps)
    inv = torch.where(evals > cut, 1.0 / evals.clamp_min(torch.finfo(Gm.dtype).tiny), torch.zeros_like(evals))
    bad_idx = bad.nonzero().squeeze(1)
    Lsafe = torch.where(bad[:, None, None], torch.eye(k, dtype=Gm.dtype, device=Gm.device).expand_as(L), L)

    def solve(r: Tensor) -> Tensor:
        out = chol_solve(r, Lsafe)
        xb = (evecs * inv[:, None, :]) @ (evecs.transpose(1, 2) @ r[bad_idx].unsqueeze(-1))
        out[bad_idx] = xb.squeeze(-1)
        return out

    return solve


def _shared_normal_solver(K: Tensor) -> Callable[[Tensor], Tensor]:
    """``R -> R pinv(K)`` for one Gram matrix ``K`` (k, k) and B right-hand sides ``R`` (B, k).

    The semantics of :func:`_normal_solver` for a batch that shares its matrix: Cholesky, or
    (factorization failed, or pivot ratio squared above ``0.01 / eps``) the pseudo-inverse from
    ``eigh`` with eigenvalues below ``k * eps * lambda_max`` dropped.
    """
    k = K.shape[-1]
    eps = torch.finfo(K.dtype).eps
    L, info = torch.linalg.cholesky_ex(K)
    d = L.diagonal()
    ratio = (d.amax() / d.amin().clamp_min(torch.finfo(K.dtype).tiny)) ** 2 if k else torch.ones((), dtype=K.dtype)
    if int(info) == 0 and bool(torch.isfinite(ratio)) and float(ratio) <= 0.01 / eps:
        return lambda R: torch.cholesky_solve(R.T, L).T
    evals, evecs = torch.linalg.eigh(K)
    cut = evals.amax() * (k * eps)
    inv = torch.where(evals > cut, 1.0 / evals.clamp_min(torch.finfo(K.dtype).tiny), torch.zeros_like(evals))
    return lambda R: ((R @ evecs) * inv) @ evecs.T


def batched_lstsq(A: Tensor, rhs: Tensor, *, pad: Tensor | None = None, refine: int = 2,
                  dtype: torch.dtype = torch.float64) -> Tensor:
    """Minimum-norm least squares ``x_b = pinv(A_b) rhs_b`` for a batch.

    Parameters
    ----------
    A : Tensor of shape (B, m, k)
    rhs : Tensor of shape (B, m)
    pad : Tensor of shape (B, k), bool, optional
        Columns that are padding (all-zero); they get 0.
    refine : int
        Steps of iterative refinement ``x += solve(A^T (rhs - A x))``, which recovers most of
        the accuracy lost by forming the Gram matrix.
    dtype : torch.dtype
        Working precision (float64 by default).

    Notes
    -----
    Normal equations ``A^T A x = A^T rhs`` by batched Cholesky, with a pseudo-inverse for
    numerically singular samples (see :func:`_normal_solver`): ``pinv`` semantics as docs/method.md
    sec. 4 asks. Measured on 64 per-sample supported 784 x 392 float64 matrices (CPU): the
    batched Cholesky path takes a fraction of a second where ``torch.linalg.lstsq`` takes 1.5 s
    with ``gelsy`` and 12 s with ``gelsd``.
    """
    A = A.to(dtype)
    rhs = rhs.to(dtype)
    Bn, m, k = A.shape
    if k == 0:
        return A.new_zeros(Bn, 0)
    At = A.transpose(1, 2)
    solve = _normal_solver(At @ A, pad)
    x = solve((At @ rhs.unsqueeze(-1)).squeeze(-1))
    for _ in range(refine):
        res = rhs - (A @ x.unsqueeze(-1)).squeeze(-1)
        x = x + solve((At @ res.unsqueeze(-1)).squeeze(-1))
    if pad is not None:
        x = x.masked_fill(pad, 0.0)
    return x


def _compact(mask: Tensor) -> tuple[Tensor, Tensor]:
    """Indices of the True entries of each row first (stable), cut at the largest count.

    Returns ``idx`` (B, kmax) int64 and ``valid`` (B, kmax) bool.
    """
    counts = mask.sum(dim=1)
    kmax = max(int(counts.max()), 1)
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)[:, :kmax]
    valid = torch.arange(kmax, device=mask.device)[None, :] < counts[:, None]
    return order, valid


def supported_lstsq(
    W: Tensor,
    rhs: Tensor,
    rows: Tensor | None,
    cols: Tensor | None,
    *,
    dtype: torch.dtype = torch.float64,
    refine: int = 2,
    budget: int = 2**25,
) -> Tensor:
    """Per-sample supported least squares ``x^{T_b} = pinv(W^{R_b, T_b}) rhs_b^{R_b}``, zero off ``T_b``.

    Parameters
    ----------
    W : Tensor of shape (n_out, n_in)
    rhs : Tensor of shape (B, n_out)
    rows : bool Tensor of shape (B, n_out) or None (all rows)
        Observed / supported rows ``R_b``.
    cols : bool Tensor of shape (B, n_in) or None (all columns)
        Support ``T_b`` of the unknown.
    dtype : torch.dtype
        Working precision (float64 by default; the pursuits' warm starts use the data's dtype).
    budget : int
        Largest number of entries of one gathered batch of matrices; the batch is processed in
        chunks under it (bounded memory; not a loop over samples).

    Returns
    -------
    Tensor of shape (B, n_in), in ``dtype``.

    Notes
    -----
    Cost follows the cardinalities, not the full widths (a ReLU layer's supported matrices are
    about half the full ones, so the normal equations are ~8x cheaper than masked full ones):

    * rows shared by the batch (no mask, or one mask): ``K = W^T diag(r) W`` once, then each
      sample's Gram matrix is gathered from it, ``K[T_b, T_b]`` (B, t, t), and the products of
      the refinement steps are full matrix-matrix products; with all columns free (``cols``
      None) every sample has the same ``K``, which is factorized once and solved with the B
      right-hand sides together (measured: 392 x 392, B = 512, float64: 30 ms instead of
      2.3 s for B identical factorizations);
    * per-sample rows: each ``W^{R_b, T_b}`` is gathered into a zero-padded (B, r, t) batch.

    Either way one batched Cholesky solves all samples (:func:`batched_lstsq`).
    """
    B, n_out = rhs.shape
    n_in = W.shape[1]
    dev = rhs.device
    shared = rows is None or bool((rows == rows[:1]).all())
    if cols is None:
        cidx = torch.arange(n_in, device=dev).expand(B, n_in)
        cval = torch.ones(B, n_in, dtype=torch.bool, device=dev)
        pad = None
    else:
        cidx, cval = _compact(cols)
        cidx = torch.where(cval, cidx, n_in)
        pad = ~cval
    if shared and cols is None:
        Wd = W.to(dtype)
        r0 = None if rows is None else rows[0].to(dtype)
        t = rhs.to(dtype) if r0 is None else rhs.to(dtype) * r0
        solve1 = _shared_normal_solver(Wd.T @ (Wd if r0 is None else Wd * r0[:, None]))
        x = solve1(t @ Wd)
        for _ in range(refine):
            res = t - x @ Wd.T
            x = x + solve1((res if r0 is None else res * r0) @ Wd)
        return x
    if shared:
        Wd = W.to(dtype)
        r0 = None if rows is None else rows[0].to(dtype)
        t = rhs.to(dtype) if r0 is None else rhs.to(dtype) * r0
        # K padded with a zero row/column at index n_in for the padding columns.
        K = torch.zeros(n_in + 1, n_in + 1, dtype=dtype, device=dev)
        K[:n_in, :n_in] = Wd.T @ (Wd if r0 is None else Wd * r0[:, None])
        kc = cidx.shape[1]
        # The gathered Gram batch (b, t, t) and its factor are the memory peak: chunk it under
        # ``budget`` like the per-sample-rows path (measured, the Oracle on the MNIST generator
        # at B = 4096: 9.0 GB peak unchunked).
        chunk = max(1, budget // max(kc * kc, 1))
        out = torch.empty(B, n_in, dtype=dtype, device=dev)
        for a in range(0, B, chunk):
            sl = slice(a, min(B, a + chunk))
            ci, tb = cidx[sl], t[sl]
            nb = tb.shape[0]
            solve = _normal_solver(K[ci[:, :, None], ci[:, None, :]], pad[sl] if pad is not None else None)

            def At(r: Tensor, ci: Tensor = ci, nb: int = nb) -> Tensor:
                g = torch.cat([r @ Wd, r.new_zeros(nb, 1)], dim=1)
                return torch.gather(g, 1, ci)

            def full(xc: Tensor, ci: Tensor = ci, nb: int = nb) -> Tensor:
                xf = torch.zeros(nb, n_in + 1, dtype=dtype, device=dev).scatter(1, ci, xc)
                return xf[:, :n_in]

            xc = solve(At(tb))
            for _ in range(refine):
                res = tb - full(xc) @ Wd.T
                if r0 is not None:
                    res = res * r0
                xc = xc + solve(At(res))
            if pad is not None:
                xc = xc.masked_fill(pad[sl], 0.0)
            out[sl] = full(xc)
        return out
    if cols is None and n_out * n_in * n_in <= budget:
        # Per-sample rows, all columns, small n_in: every sample's W^T diag(s_b) W from ONE
        # matrix product with the stacked outer products w_o w_o^T (n_out, n_in^2), instead of
        # gathering B supported matrices (measured, 392 x 128, B = 512, float32, one thread:
        # 0.50 s instead of 0.90 s; the batched factorizations are the same).
        Wd = W.to(dtype)
        outer = (Wd[:, :, None] * Wd[:, None, :]).reshape(n_out, n_in * n_in)
        s = rows.to(dtype)  # type: ignore[union-attr]
        t = rhs.to(dtype) * s
        x = torch.empty(B, n_in, dtype=dtype, device=dev)
        chunk = max(1, budget // (n_in * n_in))
        for a in range(0, B, chunk):
            sl = slice(a, min(B, a + chunk))
            solve = _normal_solver((s[sl] @ outer).view(-1, n_in, n_in), None)
            xs = solve(t[sl] @ Wd)
            for _ in range(refine):
                xs = xs + solve(((t[sl] - xs @ Wd.T) * s[sl]) @ Wd)
            x[sl] = xs
        return x
    # Per-sample rows: gather each supported matrix. A zero row and column appended to W let
    # the padding indices produce zero padding without a masking pass.
    ridx, rval = _compact(rows)  # type: ignore[arg-type]
    ridx = torch.where(rval, ridx, n_out)
    Wp = torch.zeros(n_out + 1, n_in + 1, dtype=dtype, device=dev)
    Wp[:n_out, :n_in] = W
    rhsp = torch.cat([rhs.to(dtype), rhs.new_zeros(B, 1, dtype=dtype)], dim=1)
    per = ridx.shape[1] * cidx.shape[1]
    chunk = max(1, budget // max(per, 1))
    out = torch.zeros(B, n_in + 1, dtype=dtype, device=dev)
    for a in range(0, B, chunk):
        sl = slice(a, min(B, a + chunk))
        ri, ci = ridx[sl], cidx[sl]
        A = Wp[ri[:, :, None], ci[:, None, :]]
        r = torch.gather(rhsp[sl], 1, ri)
        xc = batched_lstsq(A, r, pad=pad[sl] if pad is not None else None, refine=refine, dtype=dtype)
        out[sl] = out[sl].scatter(1, ci, xc)
    return out[:, :n_in]


def image_warm_start(W: Tensor, rhs: Tensor, obs: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """Start of the pre-activation image-layer pursuit: ``max(pinv(W^{O_b}) rhs_b^{O_b}, 0)``.

    ``rhs = phi^{-1}(y) - b_{L+1}`` (B, n); ``obs`` the observed pixels ``O_b`` (B, n) or None.
    Exact for noiseless signals, so FISTA stops at its first check. A sample that observes fewer
    pixels than ``W`` has columns starts from zero (its least squares is then not determined,
    and the pseudo-inverse fallback costs more than it saves); decided per sample, so a sample's
    start does not depend on its batch mates. Returns None when every sample starts from zero.

    Why: from zero, the float32 FISTA stops (relative change 1e-5) with off-support entries
    still above the support threshold; those false supports then fail every lower layer
    (measured, shipped MNIST generator, float32: median image SNR 107 dB clean and 20 dB with
    per-sample 45 % masks, against 133 dB warm; and 5-6x slower).

    Cost: rows shared by the batch: one ``n_L x n_L`` factorization in float64 (the normal
    equations square the condition number, and one factorization is cheap). Per-sample masks:
    B gathered factorizations in the data's precision, with two refinement steps.
    """
    if obs is None:
        return supported_lstsq(W, rhs, None, None, dtype=torch.float64, refine=2).to(dtype).clamp_min(0)
    few = obs.sum(dim=1) < W.shape[1]
    if bool(few.all()):
        return None
    if bool(few.any()):
        keep = (~few).nonzero().squeeze(1)
        x0 = torch.zeros(rhs.shape[0], W.shape[1], dtype=dtype, device=rhs.device)
        x0[keep] = image_warm_start(W, rhs[keep], obs[keep], dtype)  # type: ignore[assignment]
        return x0
    if bool((obs == obs[:1]).all()):
        return supported_lstsq(W, rhs, obs, None, dtype=torch.float64, refine=2).to(dtype).clamp_min(0)
    work = torch.float64 if dtype == torch.float64 else torch.float32
    return supported_lstsq(W, rhs, obs, None, dtype=work, refine=2).to(dtype).clamp_min(0)


def data_dtype(y: Tensor) -> torch.dtype:
    """The precision the data ``y`` carry: float32 for a float64 tensor whose every value is a
    float32 number (data made or stored in float32, solved in float64), else ``y.dtype``."""
    if y.dtype == torch.float64 and torch.equal(y.to(torch.float32).to(torch.float64), y):
        return torch.float32
    return y.dtype


def exact_fit(W: Tensor, b: Tensor, t: Tensor, w: Tensor | None, x0: Tensor | None, *,
              rounding: torch.dtype | None = None) -> Tensor | None:
    """Samples whose image-layer start already solves ``W x + b = t`` (on the observed rows) to
    the rounding level of the data: relative residual <= ``1000 eps`` of ``rounding`` (the data's
    dtype, :func:`data_dtype`; default ``t``'s). None without a start.

    Why: for noiseless signals the image layer is the linear system itself; its l1 weight only
    guards against noise. Run from the exact least-squares start, float64 FISTA drifts towards
    the LASSO minimizer and its support (measured, shipped MNIST generator, 45 % of the pixels
    hidden, 64 images: 45 support errors in x_2 and 19 failed images; float32 stopped at its first
    check by its looser tolerance and had 0). The pursuits give these samples ``lam = 0``, so
    the start is kept (nonnegative least squares, already optimal).
    """
    if x0 is None:
        return None
    r = torch.addmm(b, x0, W.T) - t
    d = t - b
    if w is not None:
        r, d = r * w, d * w
    eps = torch.finfo(t.dtype if rounding is None else rounding).eps
    return r.norm(dim=1) <= 1000 * eps * d.norm(dim=1).clamp_min(torch.finfo(t.dtype).tiny)


# -- the fixed-support network and debiasing -------------------------------------------------


def support_affine(G: Generator, supports: Sequence[Tensor], supports_batch: int = 1,
                   dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """The network with frozen ReLU supports as an affine map of ``z``.

    Returns ``J`` (B, n, n_0) and ``c`` (B, n), in ``dtype``, such that the output
    pre-activation is ``a = J z + c`` when every hidden layer ``i`` is ``D_i (W_i x_{i-1} + b_i)``
    with ``D_i = diag(supports[i])``. Cost ``B sum_i n_i n_{i-1} n_0`` (products from the
    latent side, where ``n_0`` is small).
    """
    Ws = [W.to(dtype) for W in G.weights]
    bs = [b.to(dtype) for b in G.biases]
    if G.n_hidden == 0:
        B = supports_batch
        return Ws[0][None].expand(B, -1, -1), bs[0][None].expand(B, -1)
    J, c = _hidden_affine(Ws, bs, supports, dtype)
    B, n0 = c.shape[0], Ws[0].shape[1]
    J = (Ws[-1] @ J.reshape(J.shape[0], B * n0)).reshape(-1, B, n0).transpose(0, 1)
    c = torch.addmm(bs[-1], c, Ws[-1].T)
    return J, c


def _hidden_affine(Ws: Sequence[Tensor], bs: Sequence[Tensor], supports: Sequence[Tensor],
                   dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """The last hidden layer as an affine map of ``z`` with frozen supports: ``x_L = M z + c``.

    Returns ``M`` laid out as (n_L, B, n_0) (each layer is one plain matrix product ``W_i @ M``,
    a single GEMM with ``B n_0`` columns, ~2x faster on CPU than a broadcast batched product)
    and ``c`` (B, n_L).
    """
    B = supports[0].shape[0]
    n0 = Ws[0].shape[1]
    s0 = supports[0].to(dtype)
    J = s0.T[:, :, None] * Ws[0][:, None, :]
    c = s0 * bs[0][None]
    for i in range(1, len(supports)):
        si = supports[i].to(dtype)
        J = si.T[:, :, None] * (Ws[i] @ J.reshape(J.shape[0], B * n0)).reshape(-1, B, n0)
        c = si * torch.addmm(bs[i], c, Ws[i].T)
    return J, c


def apply_cols(meas: Measurement, M: Tensor) -> Tensor:
    """``A M_b`` for a batch of matrices M (B, n, k): the measurement applied to every column,
    for a general operator in one call on all B k columns."""
    if meas.kind == "identity":
        return M
    if meas.kind == "diag":
        return M * meas.w.to(M.dtype)[:, :, None]  # type: ignore[union-attr]
    B, n, k = M.shape
    out = meas.op.forward(M.transpose(1, 2).reshape(B * k, n))
    return out.reshape(B, k, -1).transpose(1, 2)  # type: ignore[no-any-return]


def forward_meas(meas: Measurement, p: Tensor) -> Tensor:
    """``A p`` for signals p (B, n)."""
    if meas.kind == "identity":
        return p
    if meas.kind == "diag":
        return p * meas.w.to(p.dtype)  # type: ignore[union-attr]
    return meas.op.forward(p)  # type: ignore[no-any-return]


def network_objective(G: Generator, y: Tensor, z: Tensor, meas: Measurement) -> Tensor:
    """``1/2 ||A (y - G(z))||^2`` per sample, in float64 (the true, non-frozen network)."""
    G64 = G.to(dtype=torch.float64)
    p = G64.forward_unchecked(z.to(torch.float64))
    return 0.5 * (forward_meas(meas, p) - y.to(torch.float64)).square().sum(dim=1)


def debias_fit(
    G: Generator,
    y: Tensor,
    supports: Sequence[Tensor],
    meas: Measurement,
    *,
    z0: Tensor | None = None,
    rounds: int = 3,
    max_iter: int = 50,
    tol: float = 1e-10,
) -> tuple[Tensor, Tensor, Tensor, list[Tensor]]:
    """Debiasing (docs/method.md sec. 6.4) with support refinement.

    Round 0 fits ``z`` end to end with the estimated supports frozen (:func:`fit_supports`).
    Each further round (up to ``rounds``) takes the supports of the network at the current fit,
    ``S_i = {W_i x_{i-1} + b_i > 0}``, refits, and keeps the refit for the samples where it
    lowers the true objective ``1/2 ||A (y - G(z))||^2``; it stops once no sample changes.
    Samples already fit to the rounding level of ``y`` (objective below
    ``1/2 (100 eps ||A y||)^2``) are not refit.

    Why: a true entry missed by the support threshold (or a spurious one) biases the frozen fit
    by about its size (measured: one missed entry of 2e-4 gave a relative error 4e-6 in z);
    the network's own supports at a fit that is already that close are exact, so one more
    round makes the recovery exact, and the acceptance test keeps it monotone.

    Returns
    -------
    z : Tensor (B, n_0), float64
    converged : Tensor (B,), bool
    objective : Tensor (B,), float64, the true objective at ``z``
    supports : list of bool Tensor (B, n_i), the supports of the final fit
    """
    z, conv, _ = fit_supports(G, y, supports, meas, z0=z0, max_iter=max_iter, tol=tol)
    sup = [s.clone() for s in supports]
    obj = network_objective(G, y, z, meas)
    G64 = G.to(dtype=torch.float64)
    # A sample whose fit is already at the rounding level of the data cannot improve.
    y64 = y.to(torch.float64)
    ynorm = (forward_meas(meas, y64) if meas.kind == "diag" else y64).norm(dim=1)
    floor = 0.5 * (100 * torch.finfo(y.dtype).eps * ynorm) ** 2
    for _ in range(rounds):
        new = [x > 0 for x in hidden_layers(G64, z)]
        changed = obj > floor
        differ = torch.zeros_like(changed)
        for a, b in zip(new, sup):
            differ |= (a != b).any(dim=1)
        changed &= differ
        ch = changed.nonzero().squeeze(1)
        if ch.numel() == 0:
            break
        m_ch = meas_index(meas, ch)
        z2, conv2, _ = fit_supports(G, y[ch], [a[ch] for a in new], m_ch, z0=z[ch], max_iter=max_iter, tol=tol)
        obj2 = network_objective(G, y[ch], z2, m_ch)
        acc = (obj2 < obj[ch]) & torch.isfinite(obj2)
        if not bool(acc.any()):
            break
        gi = ch[acc]
        z[gi] = z2[acc]
        obj[gi] = obj2[acc]
        conv[gi] = conv2[acc]
        for a, b in zip(new, sup):
            b[gi] = a[gi]
    return z, conv, obj, sup


def meas_index(meas: Measurement, idx: Tensor) -> Measurement:
    return Measurement(meas.kind, meas.w[idx] if meas.w is not None else None,
                       meas.obs[idx] if meas.obs is not None else None, meas.op)


def hidden_layers(G: Generator, z: Tensor) -> list[Tensor]:
    """``[x_1, ..., x_L]`` of the network at ``z`` (no argument checks; NaN passes through)."""
    xs = []
    x = z
    for layer in G.layers[:-1]:
        x = layer(x)
        xs.append(x)
    return xs


def _output_preactivation(G: Generator, supports: Sequence[Tensor], z: Tensor) -> Tensor:
    """``a = W_{L+1} x_L + b_{L+1}`` in float64 with every hidden support frozen (D_i (W_i x + b_i))."""
    x = z.to(torch.float64)
    for i, (W, b) in enumerate(zip(G.weights, G.biases)):
        x = torch.addmm(b.to(torch.float64), x, W.to(torch.float64).T)
        if i < G.n_hidden:
            x = x * supports[i].to(torch.float64)
    return x


_QR_CACHE: dict[tuple, tuple[weakref.ref, Tensor | None, Tensor, Tensor]] = {}


def _output_qr(W: Tensor, w0: Tensor | None) -> tuple[Tensor, Tensor]:
    """Thin QR of ``diag(w0) W`` in float64, cached per weight tensor (identity and version, as
    the spectral-norm cache) and row weights: 784 x 392 costs ~25 ms, a solve's debiasing calls
    it several times."""
    from geninv.solvers.spectral import cache_key

    key = cache_key(W)
    hit = _QR_CACHE.get(key)
    if hit is not None and hit[0]() is W and ((hit[1] is None and w0 is None) or
                                              (hit[1] is not None and w0 is not None and torch.equal(hit[1], w0))):
        return hit[2], hit[3]
    W64 = W.detach().to(torch.float64)
    Q, R = torch.linalg.qr(W64 if w0 is None else W64 * w0[:, None])  # reduced: Q (n, n_L), R (n_L, n_L)
    if len(_QR_CACHE) > 64:
        _QR_CACHE.clear()
    _QR_CACHE[key] = (weakref.ref(W), None if w0 is None else w0.clone(), Q, R)
    return Q, R


def _reduced_linear_fit(G: Generator, y64: Tensor, supports: Sequence[Tensor], meas: Measurement,
                        w0: Tensor | None, work: torch.dtype) -> Tensor:
    """The linear pre-activation least squares of :func:`fit_supports` through a thin QR of the
    (shared, row-weighted) output layer instead of the full ``J = W_{L+1} M``.

    With ``x_L = M_b z + c_b`` (frozen supports) and ``diag(w) W_{L+1} = Q R`` (Q: n x n_L with
    orthonormal columns, R: n_L x n_L, n > n_L), for every ``v``:
    ``||diag(w)(W_{L+1} v + b - t)||^2 = ||R v - Q^T diag(w)(t - b)||^2 + (a term free of v)``,
    so ``argmin_z`` is the same with ``R M_b`` (n_L x n_0) in place of ``diag(w) J_b`` (n x n_0):
    half the products and half the memory of forming ``J`` for the MNIST generator (n = 784,
    n_L = 392). Needs the weights shared by the batch (no mask, or one mask for all).

    Returns ``z`` (B, n_0), float64.
    """
    Ws, bs = G.weights, G.biases
    b = bs[-1].to(torch.float64)
    Q, R = _output_qr(Ws[-1], w0)
    t = preactivation_target(G, y64, meas)
    tw = (t - b) if w0 is None else (t - b) * w0
    rhs = tw @ Q  # (B, n_L) = Q^T diag(w)(t - b) per sample
    Mh, cL = _hidden_affine([Wi.to(work) for Wi in Ws[:-1]], [bi.to(work) for bi in bs[:-1]], supports, work)
    n_L, B, n0 = Mh.shape
    RM = (R.to(work) @ Mh.reshape(n_L, B * n0)).reshape(n_L, B, n0).transpose(0, 1).to(torch.float64)
    return batched_lstsq(RM, rhs - cL.to(torch.float64) @ R.T)


def fit_supports(
    G: Generator,
    y: Tensor,
    supports: Sequence[Tensor],
    meas: Measurement,
    *,
    z0: Tensor | None = None,
    max_iter: int = 50,
    tol: float = 1e-10,
) -> tuple[Tensor, Tensor, Tensor]:
    """Fit ``z`` end to end with every hidden support frozen (the Oracle with given supports).

    Minimizes ``1/2 || A (y - phi(J z + c)) ||^2`` over ``z`` (``J, c`` from
    :func:`support_affine`; ``A`` the measurement), in float64.

    Notes
    -----
    When ``phi`` is invertible and ``A`` a pixel mask (or absent), the start is the exact
    linear least-squares solution on the pre-activation, ``pinv(M J) M (phi^{-1}(y) - c)``
    (exact for noiseless data: the Oracle with estimated supports), per sample on its
    unsaturated observed pixels (:func:`unsaturated`), for the samples whose pixels there lie
    in the range of ``phi`` (the others start from ``z0``). Then Levenberg-Marquardt
    (Gauss-Newton with per-sample damping, accepted only where the objective decreases) runs
    in the signal domain, which is the objective of docs/method.md sec. 6.4 and the maximum-likelihood fit under
    Gaussian noise; it is skipped when ``phi`` is the identity and ``A`` diagonal (the linear
    solution is then already optimal). Each step solves ``B`` systems of size ``n_0``.

    A ReLU output with a pixel mask (or none) freezes the output's support too: the observed
    positive pixels ``P`` of ``y`` are the rows of the fit, ``min_z ||J^P z + c^P - y^P||``
    (linear, solved exactly); its zero pixels are the inequalities of the output layer, which a
    fit inside the true supports satisfies.

    Returns
    -------
    z : Tensor (B, n_0), float64
    converged : Tensor (B,), bool
    objective : Tensor (B,), float64
    """
    phi = G.output_activation
    # float32 data: the chain of products in float32 (the costly part), the solves in float64.
    work = torch.float64 if y.dtype == torch.float64 else torch.float32
    y64 = y.to(torch.float64)
    B = y.shape[0]
    dev = y.device
    converged = torch.ones(B, dtype=torch.bool, device=dev)
    z: Tensor | None = None
    w = meas.w.to(torch.float64) if meas.w is not None else None
    J: Tensor | None = None
    c: Tensor | None = None
    # The linear start, per sample: on the unsaturated observed entries (saturated ones carry no
    # equation on the pre-activation), for the samples whose such entries are all in range.
    lin = torch.zeros(B, dtype=torch.bool, device=dev)
    m_lin = meas
    if meas.diagonal and phi.invertible:
        m_lin = unsaturated(G, y, meas)
        ok_rows = phi.in_range(y64) if m_lin.obs is None else (phi.in_range(y64) | ~m_lin.obs)
        lin = ok_rows.all(dim=1) if m_lin.obs is None else ok_rows.all(dim=1) & m_lin.obs.any(dim=1)
    if phi.name == "relu" and meas.diagonal:
        return _relu_output_fit(G, y64, supports, meas, work)
    w_lin = m_lin.w.to(torch.float64) if m_lin.w is not None else None
    shared_w = w_lin is None or bool((w_lin == w_lin[:1]).all())
    if bool(lin.all()) and shared_w and G.n_hidden >= 1 and G.weights[-1].shape[0] > G.weights[-1].shape[1]:
        z = _reduced_linear_fit(G, y64, supports, m_lin, None if w_lin is None else w_lin[0], work)
    else:
        J, c = support_affine(G, supports, B, dtype=work)
        J, c = J.to(torch.float64), c.to(torch.float64)
        if bool(lin.any()):
            li = lin.nonzero().squeeze(1)
            t = preactivation_target(G, y64[li], meas_index(m_lin, li))
            Jw = J[li] if w_lin is None else J[li] * w_lin[li, :, None]
            tw = (t - c[li]) if w_lin is None else (t - c[li]) * w_lin[li]
            z_lin = batched_lstsq(Jw, tw)
            del Jw
            if bool(lin.all()):
                z = z_lin
            else:
                z = torch.zeros(B, G.latent_dim, dtype=torch.float64, device=dev) if z0 is None \
                    else z0.to(torch.float64).clone()
                z[li] = z_lin
    n0 = G.latent_dim
    if z is None:
        z = torch.zeros(B, n0, dtype=torch.float64, device=dev) if z0 is None else z0.to(torch.float64).clone()

    def signal_residual(a: Tensor, yb: Tensor, wb: Tensor | None) -> Tensor:
        p = phi(a)
        if meas.kind == "operator":
            return meas.op.forward(p) - yb  # type: ignore[no-any-return]
        r = p - yb
        return r if wb is None else r * wb

    def residual(Jb: Tensor, cb: Tensor, zb: Tensor, yb: Tensor, wb: Tensor | None) -> tuple[Tensor, Tensor]:
        a = torch.baddbmm(cb.unsqueeze(-1), Jb, zb.unsqueeze(-1)).squeeze(-1)
        return signal_residual(a, yb, wb), a

    if J is None or c is None:
        # The reduced fit never formed J: the network itself gives the residual.
        r = signal_residual(_output_preactivation(G, supports, z), y64, w)
    else:
        r, _ = residual(J, c, z, y64, w)
    obj = 0.5 * r.square().sum(dim=1)
    if phi.name == "identity" and meas.diagonal:
        return z, converged, obj
    # Levenberg-Marquardt on the samples whose residual is above rounding level.
    ynorm = (y64 if w is None else y64 * w).norm(dim=1)
    # Residuals at the rounding level of the data cannot be improved.
    floor = 0.5 * (100 * torch.finfo(y.dtype).eps * ynorm.clamp_min(1e-300)) ** 2
    idx = (obj > floor).nonzero().squeeze(1)
    if idx.numel() == 0:
        return z, converged, obj
    if J is None or c is None:
        Jb, cb = support_affine(G, [s_[idx] for s_ in supports], idx.numel(), dtype=work)
        Jb, cb = Jb.to(torch.float64), cb.to(torch.float64)
    else:
        Jb, cb = J[idx], c[idx]
    zb, yb, ob = z[idx], y64[idx], obj[idx]
    wb = w[idx] if w is not None else None
    damp = torch.full((idx.numel(), 1, 1), 1e-6, dtype=torch.float64, device=dev)
    eye = torch.eye(n0, dtype=torch.float64, device=dev)
    del J, c
    for _ in range(max_iter):
        rb, a = residual(Jb, cb, zb, yb, wb)
        if meas.kind == "operator":
            Jac = apply_cols(meas, phi.derivative(a)[:, :, None] * Jb)
            rr = rb
        else:
            q = phi.derivative(a) if wb is None else phi.derivative(a) * wb
            Jac = q[:, :, None] * Jb
            rr = rb
        H = Jac.transpose(1, 2) @ Jac
        g = (Jac.transpose(1, 2) @ rr.unsqueeze(-1)).squeeze(-1)
        del Jac
        scale = H.diagonal(dim1=1, dim2=2).mean(dim=1).clamp_min(1e-300)[:, None, None]
        dz = -torch.linalg.solve(H + damp * scale * eye, g.unsqueeze(-1)).squeeze(-1)
        z_new = zb + dz
        r_new, _ = residual(Jb, cb, z_new, yb, wb)
        obj_new = 0.5 * r_new.square().sum(dim=1)
        accept = (obj_new <= ob) & torch.isfinite(obj_new)
        # An accepted step that lowers the objective by less than 1e-12 of itself: the fit is at
        # a (nonzero-residual) minimum to float64 precision; Gauss-Newton's linear rate there would
        # take many more steps to make dz itself small.
        flat = accept & (ob - obj_new <= 1e-12 * ob)
        zb = torch.where(accept[:, None], z_new, zb)
        ob = torch.where(accept, obj_new, ob)
        small = (dz.norm(dim=1) <= tol * zb.norm(dim=1).clamp_min(1e-30)) | flat
        damp = torch.where(accept[:, None, None], damp * 0.3, damp * 10.0).clamp(1e-12, 1e12)
        stuck = damp.view(-1) >= 1e12
        done = (accept & small) | stuck | (ob <= floor[idx])
        if bool(done.any()):
            z[idx[done]] = zb[done]
            obj[idx[done]] = ob[done]
            keep = ~done
            idx, Jb, cb, zb, yb, ob, damp = idx[keep], Jb[keep], cb[keep], zb[keep], yb[keep], ob[keep], damp[keep]
            wb = wb[keep] if wb is not None else None
            if idx.numel() == 0:
                break
    if idx.numel():
        z[idx] = zb
        obj[idx] = ob
        converged[idx] = False
    return z, converged, obj


# -- results ---------------------------------------------------------------------------------


def _relu_output_fit(G: Generator, y64: Tensor, supports: Sequence[Tensor], meas: Measurement,
                     work: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`fit_supports` for a ReLU output seen through a pixel mask (or none): least squares
    on the observed positive pixels with every support frozen; the objective is the true
    ``1/2 ||M (relu(J z + c) - y)||^2``."""
    B = y64.shape[0]
    pos = y64 > 0
    if meas.obs is not None:
        pos = pos & meas.obs
    J, c = support_affine(G, supports, B, dtype=work)
    J, c = J.to(torch.float64), c.to(torch.float64)
    wp = pos.to(torch.float64)
    z = batched_lstsq(J * wp[:, :, None], (y64 - c) * wp)
    a = torch.baddbmm(c.unsqueeze(-1), J, z.unsqueeze(-1)).squeeze(-1)
    r = torch.relu(a) - y64
    if meas.w is not None:
        r = r * meas.w.to(torch.float64)
    converged = torch.isfinite(z).all(dim=1)
    return z, converged, 0.5 * r.square().sum(dim=1)


def finish(
    method: str,
    G: Generator,
    z: Tensor,
    layers: list[Tensor],
    supports: list[Tensor],
    converged: Tensor,
    n_iter: Tensor,
    history: dict[str, Tensor],
    t0: float,
    info: dict[str, Any],
    dtype: torch.dtype,
    *,
    y: Tensor | None = None,
    meas: Measurement | None = None,
) -> SolveResult:
    """Pack a SolveResult: cast to ``y``'s dtype, contain NaN/Inf, check the fit, warn once.

    With the data ``y`` (B, m) and its measurement ``meas``, the result carries its per-sample
    ``residual`` and ``fits`` (:func:`geninv.solvers.verdict.self_check`), and the one
    ConvergenceWarning of the call says how many samples do not fit (none when all fit).
    Without them it warns on non-convergence only.
    """
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
    res = SolveResult(method, z, layers, supports, converged, n_iter, history, time.perf_counter() - t0, info)
    if y is not None and meas is not None:
        from geninv.solvers.verdict import fit_message, self_check

        res = self_check(G, y, meas, res)
        msg = fit_message(res)
        if msg:
            warnings.warn(msg, ConvergenceWarning, stacklevel=3)
        return res
    n_bad = int((~converged).sum())
    if n_bad:
        notes.append(f"{n_bad} of {converged.numel()} sample(s) did not converge (see result.converged); "
                     "raise max_iter or loosen tol")
    if notes:
        warnings.warn(f"{method}: " + "; ".join(notes), ConvergenceWarning, stacklevel=3)
    return res


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
    return finish(method, G, z, [], [], conv, n_iter, {}, t0, {"debias_objective": obj}, y.dtype, y=y, meas=meas)

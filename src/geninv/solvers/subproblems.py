"""The per-layer convex problems of the pursuits, each solved for the whole batch.

* :func:`fista_layer`: ``min_{x >= 0} f(x) + lam 1^T x`` with ``f`` a row-masked least squares
  (pre-activation image layer, Layered Basis-Pursuit layers) or the signal-domain image-layer
  loss of eq. (8).
* :func:`ladmm_layer`: the constrained middle / first layer problems of eq. (9) and (16) by
  linearized ADMM.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from geninv.exceptions import InputError
from geninv.model.activations import Activation
from geninv.model.layer_ops import LinearMap
from geninv.solvers.loop import Callback, LoopOutput, run_loop
from geninv.solvers.measurement import Measurement
from geninv.solvers.spectral import masked_gram_norm, spectral_norm
from geninv.solvers.steps import (
    FistaBTState,
    FistaState,
    LadmmData,
    LadmmState,
    LinearLS,
    SignalLS,
    fista_bt_init,
    fista_bt_step,
    fista_init,
    fista_step,
    ladmm_data,
    ladmm_init,
    ladmm_step,
)

__all__ = ["FistaData", "fista_layer", "image_lipschitz", "auto_lam", "ladmm_layer", "ladmm_mu"]


class FistaData(NamedTuple):
    """Per-sample data of a FISTA layer problem: target ``t`` (B, m), row weights ``w``
    (B, m) or None, ``step`` (B, 1), ``lam`` (B, 1)."""

    t: Tensor
    w: Tensor | None
    step: Tensor
    lam: Tensor


def auto_lam(grad0: Tensor, rel: float) -> Tensor:
    """``lam = rel * lam_max`` per sample, ``lam_max = max_j (-grad f(0))_j`` (the smallest
    weight for which ``x = 0`` solves the nonnegative l1 problem). Returns (B, 1)."""
    lam_max = (-grad0).amax(dim=1, keepdim=True).clamp_min(0)
    return rel * lam_max


def _rel_change(x: Tensor, prev: Tensor) -> Tensor:
    den = torch.maximum(x.norm(dim=1), prev.norm(dim=1)).clamp_min(torch.finfo(x.dtype).tiny)
    return (x - prev).norm(dim=1) / den


def fista_layer(
    f: LinearLS | SignalLS,
    t: Tensor,
    w: Tensor | None,
    *,
    lip: Tensor,
    lam: float | Tensor | None,
    lam_rel: float,
    x0: Tensor | None,
    max_iter: int,
    tol: float,
    check_every: int,
    restart: bool,
    callback: Callback | None,
    stage: str,
    exact: Tensor | None = None,
) -> tuple[LoopOutput, Tensor]:
    """Solve ``min_{x >= 0} f(x) + lam 1^T x`` for the batch by FISTA.

    Parameters
    ----------
    f : LinearLS or SignalLS
        The smooth part, with target ``t`` (B, m) and row weights ``w`` (B, m) or None.
    lip : Tensor of shape (B,) or (1,)
        Lipschitz constant of ``grad f`` per sample; the step is ``1 / lip``.
    lam : float, Tensor of shape (B, 1), or None
        Absolute l1 weight (one, or one per sample); None uses ``lam_rel * lam_max`` per sample
        (:func:`auto_lam`).
    exact : Tensor of shape (B,), bool, optional
        Samples whose start ``x0`` already fits exactly (noiseless,
        :func:`geninv.solvers.image_layer.exact_fit`): their ``lam`` is 0.

    Returns
    -------
    (LoopOutput, lam) with ``lam`` of shape (B, 1) as used.
    """
    B = t.shape[0]
    n_in = f.W.shape[1]
    dtype, dev = t.dtype, t.device
    if x0 is None:
        x0 = torch.zeros(B, n_in, dtype=dtype, device=dev)
    if lam is None:
        lam_t = auto_lam(f.grad(torch.zeros(B, n_in, dtype=dtype, device=dev), t, w), lam_rel)
    elif isinstance(lam, Tensor):
        lam_t = lam
    else:
        lam_t = torch.full((B, 1), float(lam), dtype=dtype, device=dev)
    if exact is not None:
        lam_t = lam_t.masked_fill(exact[:, None], 0.0)
    step = (1.0 / lip.to(dtype)).reshape(-1, 1).expand(B, 1).contiguous()
    data = FistaData(t, w, step, lam_t)

    def objective(state: Any, d: FistaData) -> Tensor:
        return f.value(state.x, d.t, d.w) + d.lam.squeeze(1) * state.x.sum(dim=1)

    if isinstance(f, SignalLS):
        sf = f

        def bt_step(state: FistaBTState, d: FistaData) -> FistaBTState:
            return fista_bt_step(state, lambda x: sf.value_and_grad(x, d.t, d.w), lambda x: sf.value(x, d.t, d.w),
                                 d.lam, restart=restart)

        out = run_loop(bt_step, fista_bt_init(x0, step), data, primary="x",
                       change=lambda state, prev, d: state.change, objective=objective,
                       max_iter=max_iter, tol=tol, check_every=check_every, callback=callback, stage=stage)
        return out, lam_t

    def step_fn(state: FistaState, d: FistaData) -> FistaState:
        return fista_step(state, lambda x: f.grad(x, d.t, d.w), d.step, d.lam, restart=restart)

    def change(state: FistaState, prev: Tensor, d: FistaData) -> Tensor:
        return _rel_change(state.x, prev)

    out = run_loop(step_fn, fista_init(x0), data, primary="x", change=change, objective=objective,
                   max_iter=max_iter, tol=tol, check_every=check_every, callback=callback, stage=stage)
    return out, lam_t


def image_lipschitz(W: LinearMap, meas: Measurement, phi: Activation | None, *, power_iters: int,
                    dtype: torch.dtype | None = None) -> Tensor:
    """Step-size constant of the image layer, per sample (B,) or shared (1,).

    ``phi`` None: the pre-activation least squares; the exact Lipschitz constant
    ``||W^T diag(w) W||`` (masked power iteration). Otherwise the signal-domain loss: the
    Gauss-Newton constant ``||A||^2 ||W^T diag(w) W|| Lip(phi)^2``, which ignores the curvature of
    ``phi`` and so is only the *initial* step of the backtracking FISTA used there
    (:func:`geninv.solvers.steps.fista_bt_step`). ``dtype``: the data's, for a matrix-free ``W``
    (a matrix gives its own).
    """
    dt = W.dtype if isinstance(W, Tensor) else (torch.float64 if dtype is None else dtype)
    dev = W.device if isinstance(W, Tensor) else (meas.w.device if meas.w is not None else None)
    if not meas.diagonal:
        base = torch.full((1,), float(meas.op.norm()) ** 2 * spectral_norm(W) ** 2, dtype=dt, device=dev)
    else:
        base = masked_gram_norm(W, meas.w.to(dt) if meas.w is not None else None, iters=power_iters, dtype=dt)
    return base if phi is None else base * phi.lipschitz**2


def ladmm_mu(W: LinearMap, s: Tensor, *, rho: float, gamma: float | Tensor, power_iters: int,
             sc: Tensor | None = None) -> Tensor:
    """Largest step allowed by eq. (12): ``1 / ||A^T A + rho C^T C + gamma I||_2`` per sample.

    ``A^T A + rho C^T C = W^T diag(s + rho sc) W`` (``sc = 1 - s`` by default), so this is one
    batched power iteration on the masked full matrix (exact and cached when ``rho == 1`` and
    every row is constrained; with free rows ``||W||^2`` is then a valid bound). ``gamma``: a float
    or (B, 1). Returns (B, 1).
    """
    d = s + rho * ((1.0 - s) if sc is None else sc)
    if rho == 1.0:
        norm = torch.full((s.shape[0],), spectral_norm(W) ** 2, dtype=s.dtype, device=s.device)
    else:
        norm = masked_gram_norm(W.to(s.dtype) if isinstance(W, Tensor) else W, d, iters=power_iters)
    return 1.0 / (norm.reshape(-1, 1) + gamma)


def ladmm_layer(
    W: LinearMap,
    b: Tensor,
    c: Tensor,
    s: Tensor,
    *,
    lam: Tensor,
    rho: float,
    gamma: float | Tensor,
    nonneg: bool,
    mu: float | None,
    x0: Tensor,
    max_iter: int,
    tol: float,
    check_every: int,
    power_iters: int,
    callback: Callback | None,
    stage: str,
    sc: Tensor | None = None,
) -> tuple[LoopOutput, Tensor]:
    """Linearized ADMM for one middle layer (eq. (9)) or the first layer (eq. (16)), clean or noisy.

    Parameters
    ----------
    W, b : Tensor (n_out, n_in) or a matrix-free operator, Tensor (n_out,)
        The layer above: ``x_{i+1} = relu(W x_i + b)``.
    c : Tensor (B, n_out)
        Estimate of ``x_{i+1}``.
    s : Tensor (B, n_out)
        0/1 float support mask of ``x_{i+1}``.
    lam : Tensor (B, 1)
    gamma : float or Tensor (B, 1)
        Weight of ``gamma/2 ||x||^2`` (eq. 16; per sample for the noise-aware pursuit, whose
        ``gamma_b`` comes from ``sigma_b``).
    sc : Tensor (B, n_out), optional
        0/1 inequality rows, disjoint from ``s``; default ``1 - s``. The noise-aware pursuit leaves
        the rows it cannot classify in neither set (free).
    mu : float or None
        Step; None takes the largest allowed, ``1 / ||A^T A + rho C^T C + gamma I||``. A
        user-given ``mu`` above it raises InputError (the iteration may diverge).

    Returns
    -------
    (LoopOutput, mu) with ``mu`` of shape (B, 1) as used. The stopping measure is the larger
    of the relative change of ``x`` and the relative primal residual
    ``||C x + b^{S^c} - u|| / max(||x||, ||C x + b^{S^c}||)``.
    """
    mu_max = ladmm_mu(W, s, rho=rho, gamma=gamma, power_iters=power_iters, sc=sc)
    if mu is None:
        mu_t = mu_max
    else:
        if mu <= 0 or bool((mu > mu_max * (1 + 1e-12)).any()):
            raise InputError(
                f"mu: expected 0 < mu <= 1/||A^T A + rho C^T C + gamma I||_2 = {float(mu_max.min()):.6g} "
                f"(eq. (12), convergence of linearized ADMM), received {mu!r}"
            )
        mu_t = torch.full_like(mu_max, float(mu))
    data = ladmm_data(c, s, mu_t, lam, rho, sc, gamma if isinstance(gamma, Tensor) else None)
    g_float = 0.0 if isinstance(gamma, Tensor) else gamma

    def step_fn(state: LadmmState, d: LadmmData) -> LadmmState:
        return ladmm_step(state, d, W, b, rho=rho, gamma=g_float, nonneg=nonneg)

    def change(state: LadmmState, prev: Tensor, d: LadmmData) -> Tensor:
        dx = _rel_change(state.x, prev)
        prim = (d.sc * state.P - state.u).norm(dim=1)
        den = torch.maximum(state.x.norm(dim=1), (d.sc * state.P).norm(dim=1)).clamp_min(torch.finfo(state.x.dtype).tiny)
        return torch.maximum(dx, prim / den)

    def objective(state: LadmmState, d: LadmmData) -> Tensor:
        r = d.s * (state.P - d.c)
        val = 0.5 * r.square().sum(dim=1) + d.lam.squeeze(1) * state.x.sum(dim=1)
        if d.gamma is not None:
            val = val + 0.5 * d.gamma.squeeze(1) * state.x.square().sum(dim=1)
        elif gamma:
            val = val + 0.5 * gamma * state.x.square().sum(dim=1)
        return val

    out = run_loop(step_fn, ladmm_init(x0, W, b, s, sc), data, primary="x", change=change, objective=objective,
                   max_iter=max_iter, tol=tol, check_every=check_every, callback=callback, stage=stage)
    return out, mu_t

"""One iteration of each algorithm as a small pure function on a NamedTuple state.

Everything is batched: a state holds (B, n) tensors, per-sample scalars are (B, 1) tensors, and
per-sample row supports are 0/1 float masks of shape (B, n_out) multiplying full matrices, so one
step is two matrix-matrix products for the whole batch, with no Python loop over samples and no
host-device synchronisation. ``W`` is a layer's :class:`~geninv.model.layer_ops.LinearMap`: the
dense matrix, or a matrix-free operator (its ``forward`` / ``adjoint`` in place of the products).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from geninv.model.activations import Activation
from geninv.model.layer_ops import LinearMap, apply, apply_t

__all__ = [
    "prox_nonneg_l1",
    "FistaState",
    "fista_init",
    "fista_step",
    "FistaBTState",
    "fista_bt_init",
    "fista_bt_step",
    "LinearLS",
    "SignalLS",
    "LadmmState",
    "LadmmData",
    "ladmm_data",
    "ladmm_init",
    "ladmm_step",
]


def prox_nonneg_l1(v: Tensor, step: Tensor | float, lam: Tensor | float) -> Tensor:
    """``prox`` of ``step * (lam 1^T x + indicator(x >= 0))``: ``max(v - step * lam, 0)``."""
    return (v - step * lam).clamp_min(0)


# -- smooth parts of the FISTA problems ------------------------------------------------------


class LinearLS(NamedTuple):
    """``f(x) = 1/2 || w * (x W^T + b - t) ||^2`` row-weighted least squares, batched.

    ``W`` (n_out, n_in) and ``b`` (n_out,) are shared; ``t`` (B, n_out) and ``w`` (B, n_out)
    (0/1 pixel mask or support mask, or None for all ones) are per sample.
    """

    W: LinearMap
    b: Tensor

    def residual(self, x: Tensor, t: Tensor, w: Tensor | None) -> Tensor:
        r = apply(self.W, x, self.b).sub_(t)
        return r if w is None else r.mul_(w)

    def grad(self, x: Tensor, t: Tensor, w: Tensor | None) -> Tensor:
        # w is 0/1, so w^2 = w: one product forward, one back.
        return apply_t(self.W, self.residual(x, t, w))

    def value(self, x: Tensor, t: Tensor, w: Tensor | None) -> Tensor:
        return 0.5 * self.residual(x, t, w).square().sum(dim=1)


class SignalLS(NamedTuple):
    """``f(x) = 1/2 || A phi(x W^T + b) - y ||^2`` (eq. (8) in the signal domain), batched.

    ``A`` is either a 0/1 diagonal given as ``w`` (B, n) (None: identity) or an operator with
    ``forward``/``adjoint`` (then ``w`` must be None). The gradient is
    ``W^T [phi'(a) * A^T (A phi(a) - y)]`` with ``a = W x + b``.
    """

    W: LinearMap
    b: Tensor
    phi: Activation
    op: object | None = None

    def _res(self, a: Tensor, y: Tensor, w: Tensor | None) -> Tensor:
        p = self.phi(a)
        if self.op is not None:
            return self.op.forward(p) - y  # type: ignore[attr-defined]
        r = p - y
        return r if w is None else r * w

    def grad(self, x: Tensor, y: Tensor, w: Tensor | None) -> Tensor:
        a = apply(self.W, x, self.b)
        r = self._res(a, y, w)
        if self.op is not None:
            r = self.op.adjoint(r)  # type: ignore[attr-defined]
        return apply_t(self.W, r * self.phi.derivative(a))

    def value(self, x: Tensor, y: Tensor, w: Tensor | None) -> Tensor:
        a = apply(self.W, x, self.b)
        return 0.5 * self._res(a, y, w).square().sum(dim=1)

    def value_and_grad(self, x: Tensor, y: Tensor, w: Tensor | None) -> tuple[Tensor, Tensor]:
        a = apply(self.W, x, self.b)
        r = self._res(a, y, w)
        val = 0.5 * r.square().sum(dim=1)
        if self.op is not None:
            r = self.op.adjoint(r)  # type: ignore[attr-defined]
        return val, apply_t(self.W, r * self.phi.derivative(a))


# -- FISTA ------------------------------------------------------------------------------------


class FistaState(NamedTuple):
    """``x`` (B, n): iterate; ``y`` (B, n): extrapolated point; ``t`` (B, 1): momentum scalar."""

    x: Tensor
    y: Tensor
    t: Tensor


def fista_init(x0: Tensor) -> FistaState:
    return FistaState(x0, x0, torch.ones(x0.shape[0], 1, dtype=x0.dtype, device=x0.device))


def _momentum(state: FistaState | FistaBTState, x_new: Tensor, restart: bool) -> tuple[Tensor, Tensor, Tensor]:
    """FISTA's momentum after the step to ``x_new`` (B, n): ``t_{k+1}`` (B, 1), the weight
    ``beta = (t_k - 1) / t_{k+1}`` (B, 1) (0 where the gradient restart fires) and ``x_{k+1} - x_k``."""
    t_new = 0.5 * (1.0 + torch.sqrt(1.0 + 4.0 * state.t * state.t))
    beta = (state.t - 1.0) / t_new
    dx = x_new - state.x
    if restart:
        bad = ((state.y - x_new) * dx).sum(dim=1, keepdim=True) > 0
        t_new = torch.where(bad, torch.ones_like(t_new), t_new)
        beta = torch.where(bad, torch.zeros_like(beta), beta)
    return t_new, beta, dx


def fista_step(
    state: FistaState,
    grad: Callable[[Tensor], Tensor],
    step: Tensor,
    lam: Tensor,
    *,
    restart: bool = True,
) -> FistaState:
    """One projected accelerated proximal-gradient (FISTA) step on ``f(x) + lam 1^T x, x >= 0``.

    Parameters
    ----------
    state : FistaState
    grad : callable
        ``x (B, n) -> grad f(x) (B, n)``.
    step : Tensor of shape (B, 1)
        ``1 / Lip(grad f)`` per sample.
    lam : Tensor of shape (B, 1)
    restart : bool
        Per-sample gradient restart (O'Donoghue & Candes): when
        ``<y_k - x_{k+1}, x_{k+1} - x_k> > 0`` the momentum is reset to zero for that sample.

    Notes
    -----
    ``x_{k+1} = max(y_k - step (grad f(y_k) + lam), 0)``,
    ``t_{k+1} = (1 + sqrt(1 + 4 t_k^2)) / 2``,
    ``y_{k+1} = x_{k+1} + (t_k - 1) / t_{k+1} (x_{k+1} - x_k)``.
    Converges for ``step <= 1 / L`` with ``L`` the Lipschitz constant of ``grad f``.
    """
    # max(y - step (g + lam), 0), fused into few memory passes (the step is memory-bound).
    g = grad(state.y).add_(lam)
    x_new = torch.addcmul(state.y, step, g, value=-1.0).clamp_min_(0)
    t_new, beta, dx = _momentum(state, x_new, restart)
    return FistaState(x_new, torch.addcmul(x_new, beta, dx), t_new)


class FistaBTState(NamedTuple):
    """FISTA with per-sample backtracking: ``step`` (B, 1) and ``change`` (B,), the relative
    size of the last accepted step (a rejected step leaves it, so rejections never look like
    convergence)."""

    x: Tensor
    y: Tensor
    t: Tensor
    step: Tensor
    change: Tensor


def fista_bt_init(x0: Tensor, step: Tensor) -> FistaBTState:
    B = x0.shape[0]
    one = torch.ones(B, 1, dtype=x0.dtype, device=x0.device)
    return FistaBTState(x0, x0, one, step.expand(B, 1).clone(), torch.full((B,), float("inf"), dtype=x0.dtype, device=x0.device))


def fista_bt_step(
    state: FistaBTState,
    value_and_grad: Callable[[Tensor], tuple[Tensor, Tensor]],
    value: Callable[[Tensor], Tensor],
    lam: Tensor,
    *,
    restart: bool = True,
) -> FistaBTState:
    """FISTA step with per-sample backtracking, for a smooth part whose gradient has no known
    global Lipschitz constant (the signal-domain image layer with tanh/sigmoid, or a general
    measurement operator).

    Notes
    -----
    ``x+ = max(y - step (grad f(y) + lam), 0)`` is accepted for a sample when the standard
    sufficient-decrease test holds,
    ``f(x+) <= f(y) + <grad f(y), x+ - y> + ||x+ - y||^2 / (2 step)`` (with a rounding slack of
    ``100 eps |f(y)|``); otherwise that sample's step is halved and its state kept. The other
    samples are unaffected and no host sync is needed. Accepted steps follow :func:`fista_step`.
    Cost: three products per step (forward at ``y``, gradient, forward at ``x+``).
    """
    fy, g = value_and_grad(state.y)
    x_new = prox_nonneg_l1(state.y - state.step * g, state.step, lam)
    d = x_new - state.y
    fx = value(x_new)
    eps = torch.finfo(fy.dtype).eps
    bound = fy + (g * d).sum(dim=1) + (0.5 / state.step.squeeze(1)) * d.square().sum(dim=1) + 100 * eps * fy.abs()
    ok = (fx <= bound) & torch.isfinite(fx)
    okc = ok[:, None]
    t_new, beta, dx = _momentum(state, x_new, restart)
    den = torch.maximum(x_new.norm(dim=1), state.x.norm(dim=1)).clamp_min(torch.finfo(x_new.dtype).tiny)
    change = dx.norm(dim=1) / den
    return FistaBTState(
        torch.where(okc, x_new, state.x),
        torch.where(okc, x_new + beta * dx, state.y),
        torch.where(okc, t_new, state.t),
        torch.where(okc, state.step, 0.5 * state.step),
        torch.where(ok, change, state.change),
    )


# -- linearized ADMM --------------------------------------------------------------------------


class LadmmState(NamedTuple):
    """``x`` (B, n_in); ``u``, ``v`` (B, n_out): split variable and scaled dual (zero on S);
    ``P`` (B, n_out): ``W x + b`` for the current ``x`` (carried to save a product)."""

    x: Tensor
    u: Tensor
    v: Tensor
    P: Tensor


class LadmmData(NamedTuple):
    """Per-sample data of one middle-layer problem.

    ``c`` (B, n_out): the next layer's estimate ``x_{i+1}`` (only its entries on S are used);
    ``s`` (B, n_out): 0/1 float support mask of ``x_{i+1}``; ``mu`` (B, 1): step;
    ``lam`` (B, 1): l1 weight (zero on the first layer); ``gamma`` (B, 1) or None: per-sample
    prior weight of the first layer. Derived once by :func:`ladmm_data`:
    ``sc = 1 - s``, ``d = s + rho sc`` and ``cs = s * c``.
    """

    c: Tensor
    s: Tensor
    mu: Tensor
    lam: Tensor
    sc: Tensor
    d: Tensor
    cs: Tensor
    gamma: Tensor | None = None


def ladmm_data(c: Tensor, s: Tensor, mu: Tensor, lam: Tensor, rho: float, sc: Tensor | None = None,
               gamma: Tensor | None = None) -> LadmmData:
    """``sc``: the inequality rows (0/1, disjoint from ``s``); default ``1 - s``. Rows in neither
    set are left free (the noise-aware pursuit's units too small to trust either way).
    ``gamma``: a per-sample prior weight (B, 1), which then replaces :func:`ladmm_step`'s float."""
    sc = 1.0 - s if sc is None else sc
    return LadmmData(c, s, mu, lam, sc, s + rho * sc, s * c, gamma)


def ladmm_init(x0: Tensor, W: LinearMap, b: Tensor, s: Tensor, sc: Tensor | None = None) -> LadmmState:
    P = apply(W, x0, b)
    u = (1.0 - s if sc is None else sc) * P.clamp_max(0)
    return LadmmState(x0, u, torch.zeros_like(P), P)


def ladmm_step(
    state: LadmmState,
    data: LadmmData,
    W: LinearMap,
    b: Tensor,
    *,
    rho: float,
    gamma: float = 0.0,
    nonneg: bool = True,
) -> LadmmState:
    """One linearized-ADMM step for eq. (9) (``nonneg=True``) or eq. (16) (``nonneg=False``).

    Problem, with ``A = W^S`` (rows in the support S of the next layer), ``C = W^{S^c}``:
    ``min 1/2 ||c^S - b^S - A x||^2 + lam 1^T x + gamma/2 ||x||^2``
    ``s.t. C x + b^{S^c} <= 0`` (and ``x >= 0`` if ``nonneg``).

    Notes
    -----
    With ``u = C x + b^{S^c}`` split off (``u <= 0``) and scaled dual ``v``::

        x <- P_+( x - mu (A^T (A x + b^S - c^S) + rho C^T (C x + b^{S^c} - u + v) + lam + gamma x) )
        u <- min(0, C x + b^{S^c} + v)
        v <- v + C x + b^{S^c} - u

    where ``P_+`` is ``max(., 0)`` when ``nonneg`` and the identity otherwise; ``gamma`` is one
    float, or one per sample in ``data.gamma`` (B, 1), and the inequality rows are ``data.sc``
    (default ``S^c``; rows in neither set are free). Converges when
    ``mu <= 1 / ||A^T A + rho C^T C + gamma I||_2`` (eqs. (11)-(12): the proximal matrix
    ``I / mu - A^T A - rho C^T C - gamma I`` is positive semidefinite). The multiplier of the
    constraint ``C x + b <= 0`` is ``rho v``.

    Row supports are 0/1 masks ``s`` on the full matrix, so A and C are never formed: with
    ``P = W x + b`` and ``u, v`` zero on S, the two residuals combine into one,
    ``r = (s + rho (1 - s)) P - s c + rho (v - u)``, the gradient is ``r W + lam`` (one product
    each way for the whole batch), and with ``a = P + v`` on ``S^c`` the updates are
    ``u = min(a, 0)`` and ``v = max(a, 0)`` (since ``v + P - min(P + v, 0) = max(P + v, 0)``).
    """
    r = torch.addcmul(state.v - state.u, data.d, state.P) if rho == 1.0 else \
        torch.addcmul((state.v - state.u).mul_(rho), data.d, state.P)
    r.sub_(data.cs)
    g = apply_t(W, r, data.lam)
    if data.gamma is not None:
        g.addcmul_(data.gamma, state.x)
    elif gamma:
        g.add_(state.x, alpha=gamma)
    x = torch.addcmul(state.x, data.mu, g, value=-1.0)
    if nonneg:
        x.clamp_min_(0)
    P = apply(W, x, b)
    a = (P + state.v).mul_(data.sc)
    return LadmmState(x, a.clamp_max(0), a.clamp_min_(0), P)

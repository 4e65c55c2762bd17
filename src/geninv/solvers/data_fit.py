"""The data-fit term of the gradient methods, ``f(z) = 1/2 ||A (G(z) - y)||^2``, on a working batch.

:class:`DataFit` holds what one batch needs: the generator's weights (the hand-written forward and
backward pass of a ReLU network) or a differentiable callable (autograd and ``torch.func``), the
measurement (:class:`~geninv.solvers.measurement.Measurement`), and the per-sample data. It gives ``f``, ``grad f`` and the
local Lipschitz constant of ``grad f`` by power iteration on ``J^T A^T A J``;
:func:`lipschitz_bound` gives the global bound from the spectral norms of the layers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from geninv.model.activations import Activation
from geninv.model.generator import Generator
from geninv.solvers.measurement import Measurement

__all__ = ["DataFit", "lipschitz_bound"]


@dataclass(frozen=True)
class DataFit:
    """``f(z) = 1/2 ||A (G(z) - y)||^2`` for a working batch, its gradient and local Lipschitz constant.

    ``meas`` is the measurement ``A`` (none, a 0/1 pixel mask with one row per sample, or a
    batch-independent operator) and ``y`` the data (B, m): the signals (m = n) for a diagonal
    measurement, the measurements ``A G(z)`` otherwise. Per-sample data can be sliced with
    :meth:`select`, which the solvers use to drop finished samples from the batch.
    """

    Ws: list[Tensor]
    bs: list[Tensor]
    phi: Activation
    meas: Measurement
    y: Tensor  # (B, m)
    fn: Callable[[Tensor], Tensor] | None = None  # (B, n_0) -> (B, n) through autograd (None: hand-written pass)
    hidden_fn: Callable[[Tensor], list[Tensor]] | None = None  # the hidden layers, with fn
    certificate: str | None = None  # why no certificate applies, with fn

    def select(self, idx: Tensor) -> DataFit:
        return replace(self, y=self.y[idx], meas=self.meas.subset(idx))

    def repeat(self, r: int) -> DataFit:
        """The same data stacked ``r`` times along the batch (restart-major)."""
        idx = torch.arange(self.y.shape[0], device=self.y.device).repeat(r)
        return replace(self, y=self.y.repeat(r, 1), meas=self.meas.subset(idx))

    # A r and A^T r on the working batch
    def residual(self, yhat: Tensor) -> Tensor:
        """``A yhat - y`` (B, m), zero on unobserved pixels."""
        return self.meas.residual(yhat, self.y)

    def adjoint(self, r: Tensor) -> Tensor:
        """``A^T r``: ``r`` itself for a diagonal measurement (a 0/1 mask is already applied in
        :meth:`residual` and :meth:`forward_op`, and ``M^T M = M``)."""
        return r if self.meas.diagonal else self.meas.op.adjoint(r)

    def forward_op(self, u: Tensor) -> Tensor:
        """``A u`` (B, m)."""
        return self.meas.apply(u)

    def dphi(self, a: Tensor, yhat: Tensor) -> Tensor | None:
        name = self.phi.name
        if name == "identity":
            return None
        if name == "tanh":
            return 1 - yhat * yhat
        if name == "sigmoid":
            return yhat * (1 - yhat)
        return self.phi.derivative(a)

    def hidden(self, z: Tensor) -> list[Tensor]:
        """``[x_1, ..., x_L]`` of ``G(z)`` (no argument checks)."""
        if self.fn is not None:
            return [] if self.hidden_fn is None else self.hidden_fn(z)
        xs = []
        x = z
        for W, b in zip(self.Ws[:-1], self.bs[:-1]):
            x = torch.addmm(b, x, W.T).clamp_min_(0)
            xs.append(x)
        return xs

    def floor(self) -> Tensor:
        """Objective at machine precision, ``1/2 (16 eps ||A y||)^2`` per sample (B,): nothing to gain below it."""
        ref = self.meas.observed(self.y)  # A y: the measurements, or the observed signal
        return 0.5 * (16 * torch.finfo(self.y.dtype).eps) ** 2 * (ref * ref).sum(dim=1)

    def value(self, z: Tensor) -> Tensor:
        if self.fn is not None:
            r = self.residual(self.fn(z))
            return 0.5 * (r * r).sum(dim=1)
        x = z
        for W, b in zip(self.Ws[:-1], self.bs[:-1]):
            x = torch.addmm(b, x, W.T).clamp_min_(0)
        r = self.residual(self.phi(torch.addmm(self.bs[-1], x, self.Ws[-1].T)))
        return 0.5 * (r * r).sum(dim=1)

    def value_grad(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``f(z)`` (B,) and ``grad f(z)`` (B, n_0), by the hand-written backward pass."""
        if self.fn is not None:
            with torch.enable_grad():
                zz = z.detach().requires_grad_(True)
                r = self.residual(self.fn(zz))
                f = 0.5 * (r * r).sum(dim=1)
                (g,) = torch.autograd.grad(f.sum(), zz)
            return f.detach(), g
        masks = []
        x = z
        for W, b in zip(self.Ws[:-1], self.bs[:-1]):
            a = torch.addmm(b, x, W.T)
            masks.append(a > 0)
            x = a.clamp_min_(0)
        a = torch.addmm(self.bs[-1], x, self.Ws[-1].T)
        yhat = self.phi(a)
        r = self.residual(yhat)
        f = 0.5 * (r * r).sum(dim=1)
        gy = self.adjoint(r)
        dphi = self.dphi(a, yhat)
        if dphi is not None:
            gy = gy * dphi
        g = gy @ self.Ws[-1]
        for W, m in zip(reversed(self.Ws[:-1]), reversed(masks)):
            g = g.mul_(m) @ W
        return f, g

    def lipschitz(self, z: Tensor, iters: int = 20) -> Tensor:
        """Per-sample ``||A J(z)||_2^2`` (J the Jacobian of G at z) by ``iters`` power iterations.

        The start vector is the same for every sample (no randomness), so the estimate of one
        sample does not depend on the rest of the batch.
        """
        if self.fn is not None:
            return self._lipschitz_autograd(z, iters)
        masks = []
        x = z
        for W, b in zip(self.Ws[:-1], self.bs[:-1]):
            a = torch.addmm(b, x, W.T)
            masks.append((a > 0).to(z.dtype))
            x = a.clamp_min_(0)
        a = torch.addmm(self.bs[-1], x, self.Ws[-1].T)
        dphi = self.dphi(a, self.phi(a))
        v = torch.ones_like(z) / math.sqrt(z.shape[1])
        lam = torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)
        for _ in range(iters):
            u = v
            for W, m in zip(self.Ws[:-1], masks):
                u = (u @ W.T) * m
            u = u @ self.Ws[-1].T
            if dphi is not None:
                u = u * dphi
            Au = self.forward_op(u)
            lam = (Au * Au).sum(dim=1)  # Rayleigh quotient v^T J^T A^T A J v, ||v|| = 1
            g = self.adjoint(Au)
            if dphi is not None:
                g = g * dphi
            g = g @ self.Ws[-1]
            for W, m in zip(reversed(self.Ws[:-1]), reversed(masks)):
                g = (g * m) @ W
            nrm = g.norm(dim=1, keepdim=True)
            v = torch.where(nrm > 0, g / nrm.clamp_min(torch.finfo(z.dtype).tiny), v)
        return lam

    def _lipschitz_autograd(self, z: Tensor, iters: int) -> Tensor:
        """:meth:`lipschitz` with ``J v`` and ``J^T u`` from ``torch.func`` (the generator's
        samples are independent, so J is block diagonal and one batched product serves all)."""
        fn = self.fn
        assert fn is not None
        z = z.detach()
        with torch.enable_grad():
            vjp_fn = torch.func.vjp(fn, z)[1]
        v = torch.ones_like(z) / math.sqrt(z.shape[1])
        lam = torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)
        for _ in range(iters):
            try:
                u = torch.func.jvp(fn, (z,), (v,))[1]
            except (RuntimeError, NotImplementedError):  # an op without a forward-mode rule: J v by double vjp
                with torch.enable_grad():
                    zz = z.detach().requires_grad_(True)
                    out = fn(zz)
                    w = torch.zeros_like(out, requires_grad=True)
                    (jt,) = torch.autograd.grad(out, zz, w, create_graph=True)
                    (u,) = torch.autograd.grad(jt, w, v)
            Au = self.forward_op(u.detach())
            lam = (Au * Au).sum(dim=1)
            g = self.adjoint(Au)
            (g,) = vjp_fn(g)
            nrm = g.norm(dim=1, keepdim=True)
            v = torch.where(nrm > 0, g / nrm.clamp_min(torch.finfo(z.dtype).tiny), v)
        return lam.detach()


def lipschitz_bound(G: Generator | None, op_norm: float) -> float:
    """Global bound ``||A||^2 Lip(phi)^2 prod_i Lip(phi_i)^2 ||W_i||_2^2`` on ``||A J(z)||^2`` (any z);
    0 for a callable (no bound known)."""
    if G is None:
        return 0.0
    prod = 1.0
    for layer in G.layers:
        prod *= layer.spectral_norm**2  # cached on the layer: one SVD per layer, not per call
    for a in G.hidden_activations:
        prod *= a.lipschitz**2
    return op_norm**2 * G.output_activation.lipschitz**2 * prod


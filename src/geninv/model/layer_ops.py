"""A layer's weight ``W`` as a linear operator: ``forward`` (``W x``), ``adjoint`` (``W^T u``) and
the spectral norm ``||W||_2`` by power iteration (cached).

:class:`DenseOperator` wraps a matrix (a ``Linear`` layer, or any materialized weight).
:class:`ChainOperator` is matrix-free: it runs the module's own affine operations (convolutions,
transposed convolutions, batch-norm, upsampling, reshapes) on the batch, ``W x = f(x) - f(0)``, and
gets ``W^T u`` as the vector-Jacobian product of ``f`` (exact for an affine map: its Jacobian is
``W`` everywhere). Memory is that of one batch of activations, never ``n_out x n_in``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from geninv.exceptions import ShapeError

__all__ = ["LayerOperator", "DenseOperator", "ChainOperator", "LinearMap", "power_norm", "apply", "apply_t",
           "left_apply", "cast"]


def power_norm(forward: Callable[[Tensor], Tensor], adjoint: Callable[[Tensor], Tensor], n_in: int, *,
               dtype: torch.dtype, device: torch.device | str = "cpu", iters: int = 500, rtol: float = 1e-12,
               block: int = 4, seed: int = 0) -> float:
    """``||W||_2`` by block power (subspace) iteration on ``W^T W`` from a seeded random start.

    ``V <- orth(W^T W V)`` with ``block`` columns, and the Rayleigh-Ritz estimate
    ``sqrt(lambda_max(V^T W^T W V))`` (from below, non-decreasing); the error falls like
    ``(sigma_{block+1} / sigma_1)^{2k}``, so clustered top singular values (convolutions) converge
    where a single vector stalls. Stops when the estimate changes by less than ``rtol`` relative
    between iterations (at most ``iters``).
    """
    k = max(1, min(block, n_in))
    gen = torch.Generator().manual_seed(seed)
    V = torch.linalg.qr(torch.randn(n_in, k, generator=gen, dtype=torch.float64)).Q.to(device=device, dtype=dtype)
    est = 0.0
    for _ in range(iters):
        Wv = forward(V.T)  # (k, n_out): the block as a batch of k inputs
        AV = adjoint(Wv).T  # W^T W V, (n_in, k)
        H = V.T @ AV
        lam = float(torch.linalg.eigvalsh(0.5 * (H + H.T)).max().clamp_min(0.0))
        new = math.sqrt(lam)
        if new == 0.0:
            return 0.0
        V = torch.linalg.qr(AV).Q
        if abs(new - est) <= rtol * new:
            return new
        est = new
    return est


class LayerOperator:
    """A layer's weight ``W`` (n_out, n_in) as an operator on batches.

    Attributes
    ----------
    shape : tuple of int
        ``(n_out, n_in)``.
    matrix_free : bool
        True when ``W`` is never formed.
    """

    shape: tuple[int, int]
    matrix_free: bool = False

    def forward(self, x: Tensor) -> Tensor:
        """``W x`` for a batch ``x`` of shape (B, n_in) -> (B, n_out), in ``x``'s dtype."""
        raise NotImplementedError

    def adjoint(self, u: Tensor) -> Tensor:
        """``W^T u`` for a batch ``u`` of shape (B, n_out) -> (B, n_in), in ``u``'s dtype."""
        raise NotImplementedError

    def dense(self) -> Tensor:
        """``W`` (n_out, n_in), float64 (formed column by column for a matrix-free operator)."""
        n_in = self.shape[1]
        cols = []
        for j in range(0, n_in, 256):
            k = min(256, n_in - j)
            E = torch.zeros(k, n_in, dtype=torch.float64)
            E[torch.arange(k), torch.arange(j, j + k)] = 1.0
            cols.append(self.forward(E).T)
        return torch.cat(cols, dim=1)

    def norm(self) -> float:
        """``||W||_2`` by power iteration (:func:`power_norm`, float64), computed once."""
        cached = getattr(self, "_norm", None)
        if cached is None:
            cached = power_norm(self.forward, self.adjoint, self.shape[1], dtype=torch.float64)
            self._norm = cached
        return float(cached)

    def _check(self, x: Tensor, k: int, name: str) -> None:
        if x.ndim != 2 or x.shape[1] != self.shape[k]:
            raise ShapeError(f"{name}: expected shape (B, {self.shape[k]}), received {tuple(x.shape)}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.shape[0]} x {self.shape[1]})"


class DenseOperator(LayerOperator):
    """``W`` held as a matrix (n_out, n_in)."""

    def __init__(self, W: Tensor) -> None:
        if W.ndim != 2:
            raise ShapeError(f"W: expected a 2-D weight (n_out, n_in), received shape {tuple(W.shape)}")
        self.W = W
        self.shape = (int(W.shape[0]), int(W.shape[1]))

    def forward(self, x: Tensor) -> Tensor:
        self._check(x, 1, "x")
        return x @ self.W.to(x.dtype).T

    def adjoint(self, u: Tensor) -> Tensor:
        self._check(u, 0, "u")
        return u @ self.W.to(u.dtype)

    def dense(self) -> Tensor:
        return self.W.to(torch.float64)


#: A layer's ``W`` as the solvers take it: the matrix when it is materialized, else its operator.
LinearMap = Tensor | LayerOperator


def apply(W: LinearMap, x: Tensor, b: Tensor | None = None) -> Tensor:
    """``x W^T + b`` for a batch ``x`` (B, n_in) -> (B, n_out): one ``addmm`` for a matrix, the
    operator's ``forward`` (plus ``b``) for a matrix-free layer."""
    if isinstance(W, Tensor):
        return x @ W.T if b is None else torch.addmm(b, x, W.T)
    out = W.forward(x)
    return out if b is None else out + b


def apply_t(W: LinearMap, r: Tensor, add: Tensor | None = None) -> Tensor:
    """``r W + add`` for a batch ``r`` (B, n_out) -> (B, n_in) (``W^T r`` per sample): a matrix
    product, or the operator's ``adjoint``."""
    if isinstance(W, Tensor):
        return r @ W if add is None else torch.addmm(add, r, W)
    out = W.adjoint(r)
    return out if add is None else out + add


def cast(W: LinearMap, dtype: torch.dtype) -> LinearMap:
    """``W`` in ``dtype``: a matrix converted, an operator as it is (it computes in float64 and
    returns its input's dtype)."""
    return W.to(dtype) if isinstance(W, Tensor) else W


def left_apply(W: LinearMap, M: Tensor) -> Tensor:
    """``W @ M`` for a matrix ``M`` (n_in, k) -> (n_out, k): the operator on the ``k`` columns
    as a batch when ``W`` is matrix-free."""
    if isinstance(W, Tensor):
        return W @ M
    return W.forward(M.T).T


class _Apply(torch.autograd.Function):
    """``W x`` (``adjoint`` False) or ``W^T x`` (True) of a matrix-free operator. Its backward and
    its tangent are the other product (the map is linear), themselves differentiable, so gradient
    methods, autograd and ``torch.func`` (vjp, jvp) run through the layer."""

    @staticmethod
    def forward(x: Tensor, op: ChainOperator, adjoint: bool) -> Tensor:  # type: ignore[override]
        return op._apply_t(x) if adjoint else op._apply(x)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        ctx.op, ctx.adjoint = inputs[1], inputs[2]

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        return _Apply.apply(g, ctx.op, not ctx.adjoint), None, None

    @staticmethod
    def jvp(ctx: Any, x_t: Tensor, *_: Any) -> Tensor:
        return _Apply.apply(x_t, ctx.op, ctx.adjoint)  # type: ignore[no-any-return]


class ChainOperator(LayerOperator):
    """The linear part of a chain of affine maps ``f = f_k o ... o f_1``, matrix-free.

    Parameters
    ----------
    fns : sequence of callables
        ``(B, *shape_in) -> (B, *shape_out)`` float64 affine maps (a module's convolutions,
        batch-norm, upsampling, reshapes), applied in order.
    in_shape : tuple of int
        Per-sample input shape of the first map.
    n_out : int
        Number of outputs (the last map's output, flattened).

    Notes
    -----
    ``W x = f(x) - f(0)`` (one pass of the module's operations on the batch) and
    ``W^T u = J_f^T u``, the vector-Jacobian product of ``f`` (one backward pass); for affine ``f``
    ``J_f = W`` at every point, so ``<W x, u> = <x, W^T u>`` to rounding. Both run in float64 on the
    module's device and return the input's dtype and device.
    """

    matrix_free = True

    def __init__(self, fns: Sequence[Callable[[Tensor], Tensor]], in_shape: Sequence[int], n_out: int) -> None:
        self.fns = list(fns)
        self.in_shape = tuple(int(s) for s in in_shape)
        self.shape = (int(n_out), int(math.prod(self.in_shape)))
        with torch.no_grad():
            self._b = self._f(torch.zeros(1, self.shape[1], dtype=torch.float64))

    def _f(self, x: Tensor) -> Tensor:
        h = x.reshape(x.shape[0], *self.in_shape)
        for fn in self.fns:
            h = fn(h)
        return h.reshape(x.shape[0], -1)

    def forward(self, x: Tensor) -> Tensor:
        """``W x`` (B, n_in) -> (B, n_out); differentiable in ``x`` (its backward is :meth:`adjoint`)."""
        self._check(x, 1, "x")
        return _Apply.apply(x, self, False)  # type: ignore[no-any-return]

    def adjoint(self, u: Tensor) -> Tensor:
        """``W^T u`` (B, n_out) -> (B, n_in); differentiable in ``u`` (its backward is :meth:`forward`)."""
        self._check(u, 0, "u")
        return _Apply.apply(u, self, True)  # type: ignore[no-any-return]

    def _apply(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            out = self._f(x.detach().to(device="cpu", dtype=torch.float64)) - self._b
        return out.to(device=x.device, dtype=x.dtype)

    def _apply_t(self, u: Tensor) -> Tensor:
        u64 = u.detach().to(device="cpu", dtype=torch.float64)
        with torch.enable_grad():
            x = torch.zeros(u.shape[0], self.shape[1], dtype=torch.float64, requires_grad=True)
            (g,) = torch.autograd.grad(self._f(x), x, grad_outputs=u64)
        return g.to(device=u.device, dtype=u.dtype)

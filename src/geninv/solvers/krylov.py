"""Batched Krylov supported least squares on layer operators, and the layer-wise Oracle on them.

:func:`cg_supported_lstsq` solves every sample's supported least-squares problem
``min ||W^{R_b, T_b} x - t_b^{R_b}||`` with conjugate gradients on the normal equations (CGLS),
the supports as 0/1 masks on the rows and columns of one operator: each iteration is one
``forward`` and one ``adjoint`` of the whole batch, so a matrix-free
:class:`~geninv.model.layer_ops.ChainOperator` (a convolution) is never formed, and the memory is
a few (B, n) vectors instead of the dense path's (B, t, t) Gram matrices and factors.
:func:`krylov_layerwise` is the Oracle's layer-wise recursion with these solves;
:func:`dense_fits` is the memory rule that picks it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from geninv.model.generator import Generator
from geninv.model.layer_ops import LayerOperator
from geninv.solvers.measurement import Measurement, preactivation_target, unsaturated

__all__ = ["cg_supported_lstsq", "krylov_layerwise", "krylov_chosen", "dense_fits", "ORACLE_SOLVERS", "DENSE_BUDGET"]

#: Values of the Oracle's ``solver`` option.
ORACLE_SOLVERS = ("auto", "dense", "krylov")

#: Bytes one sample's dense supported solves may take before the Oracle's ``"auto"`` solver is CG.
DENSE_BUDGET = 2**28


def cg_supported_lstsq(
    op: LayerOperator,
    rhs: Tensor,
    rows: Tensor | None,
    cols: Tensor | None,
    *,
    x0: Tensor | None = None,
    tol: float | None = None,
    max_iter: int | None = None,
    dtype: torch.dtype = torch.float64,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-sample supported least squares by CGLS: ``x^{T_b} = argmin ||W^{R_b, T_b} x - rhs_b^{R_b}||``.

    Parameters
    ----------
    op : LayerOperator
        ``W`` of shape (n_out, n_in) (dense or matrix-free).
    rhs : Tensor of shape (B, n_out)
    rows : bool Tensor of shape (B, n_out) or None (all rows)
    cols : bool Tensor of shape (B, n_in) or None (all columns)
    x0 : Tensor of shape (B, n_in), optional
        Start (zero by default); entries off ``T_b`` are ignored.
    tol : float, optional
        A sample stops when ``||A^T (t - A x)|| <= tol ||A^T t||`` (``A = W^{R_b, T_b}``); default
        ``100 eps`` of ``dtype`` (rounding level of the normal equations' residual).
    max_iter : int, optional
        Iterations at most (default ``2 * n_in``: CG on an ``n_in``-dimensional system is exact
        after ``n_in`` steps in exact arithmetic; the factor covers rounding).
    dtype : torch.dtype
        Working precision.

    Returns
    -------
    x : Tensor of shape (B, n_in), in ``dtype``, zero off ``T_b``
    n_iter : Tensor of shape (B,), int64
    converged : Tensor of shape (B,), bool

    Notes
    -----
    With ``A v = D_R W D_T v`` and ``A^T u = D_T W^T D_R u`` (``D`` the 0/1 masks), CGLS is::

        r_0 = D_R t - A x_0,  s_0 = A^T r_0,  p_0 = s_0,  gamma_0 = ||s_0||^2
        q_k = A p_k,  alpha_k = gamma_k / ||q_k||^2
        x_{k+1} = x_k + alpha_k p_k,  r_{k+1} = r_k - alpha_k q_k
        s_{k+1} = A^T r_{k+1},  gamma_{k+1} = ||s_{k+1}||^2,  p_{k+1} = s_{k+1} + (gamma_{k+1} / gamma_k) p_k

    the conjugate-gradient method on ``A^T A x = A^T t`` without forming ``A^T A``; from ``x_0 = 0``
    it converges to the minimum-norm solution (``pinv`` semantics). A finished sample's step is
    set to zero and the batch iterates on; the error after ``k`` steps falls like
    ``((kappa - 1) / (kappa + 1))^k`` with ``kappa = cond(A)``.
    """
    B, n_out = rhs.shape
    n_in = op.shape[1]
    dev = rhs.device
    tol = 100 * torch.finfo(dtype).eps if tol is None else float(tol)
    max_iter = 2 * n_in if max_iter is None else int(max_iter)
    dr = None if rows is None else rows.to(dev, dtype)
    dc = None if cols is None else cols.to(dev, dtype)

    def A(v: Tensor) -> Tensor:
        out = op.forward(v if dc is None else v * dc)
        return out if dr is None else out * dr

    def At(u: Tensor) -> Tensor:
        out = op.adjoint(u if dr is None else u * dr)
        return out if dc is None else out * dc

    t = rhs.to(dtype) if dr is None else rhs.to(dtype) * dr
    x = torch.zeros(B, n_in, dtype=dtype, device=dev) if x0 is None else x0.to(dtype) * (1.0 if dc is None else dc)
    r = t - A(x) if x0 is not None else t.clone()
    s = At(r)
    ref = At(t).norm(dim=1)
    p = s.clone()
    gamma = s.square().sum(dim=1)
    n_iter = torch.zeros(B, dtype=torch.int64, device=dev)
    done = s.norm(dim=1) <= tol * ref
    for _ in range(max_iter):
        if bool(done.all()):
            break
        q = A(p)
        qq = q.square().sum(dim=1)
        alpha = torch.where(done | (qq == 0), torch.zeros_like(gamma), gamma / qq.clamp_min(torch.finfo(dtype).tiny))
        x = x + alpha[:, None] * p
        r = r - alpha[:, None] * q
        s = At(r)
        g_new = s.square().sum(dim=1)
        beta = torch.where(gamma > 0, g_new / gamma.clamp_min(torch.finfo(dtype).tiny), torch.zeros_like(g_new))
        p = s + beta[:, None] * p
        gamma = torch.where(done, gamma, g_new)
        n_iter += (~done).to(torch.int64)
        done = done | (g_new.sqrt() <= tol * ref) | (qq == 0)
    return x, n_iter, done


def krylov_chosen(solver: str, G: Generator, supports: list[Tensor], meas: Measurement,
                  budget: int = DENSE_BUDGET) -> bool:
    """Whether the Oracle's layer-wise solves run by CG: ``solver="krylov"``, or ``"auto"`` where one
    sample's dense supported matrices do not fit ``budget`` bytes (the dense path's chunks cannot
    get below one sample). Needs a pixel mask or no measure and a non-ReLU output (else dense)."""
    from geninv.exceptions import InputError, describe
    from geninv.solvers.relu_output import is_relu_output

    if solver not in ORACLE_SOLVERS:
        raise InputError(f"solver: expected one of {', '.join(map(repr, ORACLE_SOLVERS))}, received {describe(solver)}")
    able = meas.diagonal and not is_relu_output(G)
    if solver == "krylov" and not able:
        raise InputError("solver: expected 'auto' or 'dense' for a ReLU output or a general measurement operator, "
                         "received 'krylov' (its layer-wise solves run on the pixel equations of an invertible output)")
    if solver == "dense" or not able:
        return False
    return solver == "krylov" or not dense_fits(G, 1, supports, budget)


def dense_fits(G: Generator, B: int, supports: list[Tensor], budget: int) -> bool:
    """Whether the dense supported solves fit ``budget`` bytes: the largest layer's per-sample
    supported matrix and Gram matrix, ``B (r t + t^2)`` float64 entries (``r`` rows, ``t`` columns
    at their largest cardinality)."""
    n_out_last = G.dims[-1]
    widest = 0
    cards = [int(s.sum(dim=1).max()) for s in supports]
    rows = [n_out_last, *cards[::-1]]  # rows of the image layer, then of each hidden layer's solve
    colz = [*cards[::-1], G.latent_dim]
    for r, t in zip(rows, colz):
        widest = max(widest, r * t + t * t)
    return B * widest * 8 <= budget


def krylov_layerwise(G: Generator, y: Tensor, sup: list[Tensor], meas: Measurement, *, tol: float | None = None,
                     max_iter: int | None = None) -> tuple[Tensor, list[Tensor], Tensor, Tensor]:
    """The Oracle's layer-wise recursion with every supported solve by :func:`cg_supported_lstsq`
    on the layers' operators (``G.operators``), for a pixel mask or no measure and an invertible
    output activation.

    Returns ``z`` (B, n_0) float64, the layer estimates ``x_1..x_L`` (float64), and per sample the
    total CG iterations and whether every solve converged.
    """
    L = G.n_hidden
    ops = G.operators
    bs = G.biases
    m = unsaturated(G, y, meas)  # saturated pixels give no equation on the pre-activation
    t = preactivation_target(G, y, m).to(torch.float64) - bs[-1].to(torch.float64)
    x, it, ok = cg_supported_lstsq(ops[-1], t, m.obs, sup[-1] if L else None, tol=tol, max_iter=max_iter)
    if L == 0:
        return x, [], it, ok
    layers = [x]
    for i in range(L - 1, -1, -1):
        cols = sup[i - 1] if i > 0 else None
        x, it_i, ok_i = cg_supported_lstsq(ops[i], x - bs[i].to(torch.float64), sup[i], cols, tol=tol,
                                           max_iter=max_iter)
        it, ok = it + it_i, ok & ok_i
        if i > 0:
            layers.insert(0, x)
    return x, layers, it, ok

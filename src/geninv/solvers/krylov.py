"""Batched Krylov supported least squares on layer operators, and the layer-wise Oracle on them.

:func:`cg_supported_lstsq` (in :mod:`geninv.solvers.linalg`) solves every sample's supported least-squares problem
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
from geninv.solvers.linalg import cg_supported_lstsq
from geninv.solvers.measurement import Measurement, preactivation_target, unsaturated

__all__ = ["cg_supported_lstsq", "krylov_layerwise", "krylov_chosen", "dense_fits", "ORACLE_SOLVERS", "DENSE_BUDGET"]

#: Values of the Oracle's ``solver`` option.
ORACLE_SOLVERS = ("auto", "dense", "krylov")

#: Bytes one sample's dense supported solves may take before the Oracle's ``"auto"`` solver is CG.
DENSE_BUDGET = 2**28


def krylov_chosen(solver: str, G: Generator, supports: list[Tensor], meas: Measurement,
                  budget: int = DENSE_BUDGET) -> bool:
    """Whether the Oracle's layer-wise solves run by CG: ``solver="krylov"``, or ``"auto"`` where a
    layer is matrix-free or one sample's dense supported matrices do not fit ``budget`` bytes (the
    dense path's chunks cannot get below one sample). Needs a pixel mask or no measure and a non-ReLU output (else dense)."""
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
    return solver == "krylov" or G.matrix_free or not dense_fits(G, 1, supports, budget)


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

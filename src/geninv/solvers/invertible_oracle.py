"""The Oracle for generators with invertible hidden layers (LeakyReLU, PLU, tanh, sigmoid, softplus,
ELU), alone or mixed with ReLU layers.

A ReLU layer ``x_i = relu(W_i x_{i-1} + b_i)`` gives equations only on its support ``S_i`` (the
Oracle's known supports, the paper's Algorithm 1); an invertible layer gives one on every row,
through its inverse activation: ``W_i x_{i-1} + b_i = phi_i^{-1}(x_i)``. Its unknown has no
zeros to exploit either, so where the sparsity conditions of Theorem 1 ask for
``spark(W_i^{S_i}) > 2 s_{i-1}``, an invertible layer asks for the rank condition
``rank(W_i^{R_i, T_{i-1}}) = |T_{i-1}|`` (rows ``R_i``: the support for ReLU, all rows
otherwise, the observed unsaturated pixels for the image layer; columns ``T_{i-1}``: the support
of a ReLU ``x_{i-1}``, all of an invertible one). Where every rank condition holds, the
recursion recovers ``z`` exactly from exact data.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from geninv.exceptions import ConvergenceWarning, InputError, ShapeError, UnsupportedLayerError, describe
from geninv.model.generator import Generator
from geninv.solvers.checks import check_option
from geninv.solvers.linalg import supported_lstsq
from geninv.solvers.loop import Callback
from geninv.solvers.measurement import preactivation_target, resolve_measurement, unsaturated
from geninv.solvers.result import SolveResult, finish

__all__ = ["oracle_invertible", "supported_ranks"]


def supported_ranks(W: Tensor, rows: Tensor | None, cols: Tensor | None, B: int) -> Tensor:
    """``rank(W^{R_b, T_b})`` per sample (B,), int64, float64 SVD with the tolerance
    ``max(r, t) eps sigma_max`` (as :func:`torch.linalg.matrix_rank`)."""
    W64 = W.to(torch.float64)
    if rows is None and cols is None:
        return torch.full((B,), int(torch.linalg.matrix_rank(W64)), dtype=torch.int64, device=W.device)
    A = W64[None].expand(B, -1, -1)
    if rows is not None:
        A = A * rows.to(torch.float64)[:, :, None]
    if cols is not None:
        A = A * cols.to(torch.float64)[:, None, :]
    # Masked rows and columns are zero: they do not change the rank, and the tolerance uses the
    # supported matrix's own size.
    r = (rows.sum(dim=1) if rows is not None else torch.full((B,), W.shape[0], device=W.device)).to(torch.float64)
    t = (cols.sum(dim=1) if cols is not None else torch.full((B,), W.shape[1], device=W.device)).to(torch.float64)
    S = torch.linalg.svdvals(A)
    tol = torch.maximum(r, t) * torch.finfo(torch.float64).eps * S[:, :1].squeeze(1)
    return (S > tol[:, None]).sum(dim=1)


def _supports(supports: Any, G: Generator, B: int, device: torch.device) -> list[Tensor | None]:
    """One entry per hidden layer: a (B, n_i) bool support for ReLU layers, None for invertible ones."""
    L = G.n_hidden
    relu = [a.name == "relu" for a in G.hidden_activations]
    if hasattr(supports, "supports") and not isinstance(supports, (list, tuple)):
        supports = supports.supports
    if supports is None:
        if any(relu):
            raise InputError(f"supports: expected a list of {L} entries with a support for each ReLU hidden layer, "
                             "received None")
        return [None] * L
    if not isinstance(supports, (list, tuple)) or len(supports) != L:
        raise ShapeError(f"supports: expected a list of {L} entries (one per hidden layer; None for an invertible "
                         f"layer), received {describe(supports)}")
    out: list[Tensor | None] = []
    for i, (s, n_i, is_relu) in enumerate(zip(supports, G.dims[1:-1], relu)):
        if not is_relu:
            out.append(None)  # every unit of an invertible layer carries an equation
            continue
        if not isinstance(s, Tensor) or s.shape[-1] != n_i or s.ndim not in (1, 2) or (s.ndim == 2 and s.shape[0] not in (1, B)):
            raise ShapeError(f"supports[{i}]: expected a boolean tensor of shape ({B}, {n_i}) for ReLU hidden layer "
                             f"{i + 1}, received {describe(s)}")
        s = (s != 0).to(device)
        out.append((s[None] if s.ndim == 1 else s).expand(B, n_i))
    return out


def oracle_invertible(G: Generator, y: Tensor, *, supports: Sequence[Tensor | None] | None = None, measure: Any = None,
                      mask: Tensor | None = None, callback: Callback | None = None) -> SolveResult:
    """The layer-wise Oracle on a generator with invertible (and possibly ReLU) hidden layers.

    Parameters
    ----------
    G : Generator
        Hidden activations ReLU or invertible; an invertible output activation.
    y : Tensor of shape (B, n)
    supports : list of L entries, optional
        ``(B, n_i)`` bool supports for the ReLU hidden layers; entries of invertible layers are
        ignored (None is fine, and ``supports=None`` when no hidden layer is ReLU).
    measure, mask :
        A pixel mask or no measure (the image layer's rows are the observed unsaturated pixels).
    callback : callable, optional
        Called once, ``callback(0, {"stage": "oracle", "x": z})``.

    Returns
    -------
    SolveResult
        ``converged`` (B,) True where every rank condition holds; ``info["rank"]`` the rank of
        each supported ``W_i`` (B,) int64 in the order ``W_1, ..., W_{L+1}``, ``info["n_unknowns"]``
        the matching column counts, ``info["full_rank"]`` (B,) bool.

    Notes
    -----
    From the output down (``R``, ``T`` as in the module docstring)::

        x_L     = pinv(W_{L+1}^{M, T_L}) (phi^{-1}(y^M) - b_{L+1}^M)
        x_{i-1} = pinv(W_i^{R_i, T_{i-1}}) (t_i^{R_i} - b_i^{R_i}),   t_i = x_i (ReLU) or phi_i^{-1}(x_i)

    (supported least squares in float64, :func:`geninv.solvers.linalg.supported_lstsq`).
    """
    t0 = time.perf_counter()
    for i, a in enumerate(G.hidden_activations):
        if a.name != "relu" and not a.invertible:
            src = f" ({G.layers[i].name})" if G.layers[i].name else ""
            raise UnsupportedLayerError(f"G: the Oracle expected ReLU or invertible hidden layers, received hidden layer "
                                        f"{i + 1}{src} with {a.name}; use method='gd' or 'adam'")
    callback = check_option("callback", callback, kind="callable", allow_none=True)
    yy, meas = resolve_measurement(measure, mask, G, y)
    Gl = G.like(yy)
    if not meas.diagonal or not Gl.output_activation.invertible:
        raise InputError(f"G, measure: the Oracle on invertible hidden layers expected an invertible output activation "
                         f"and a pixel mask or no measure, received output {Gl.output_activation.name} with measure "
                         f"kind {meas.kind}")
    B = yy.shape[0]
    sup = _supports(supports, Gl, B, yy.device)
    f64 = torch.float64
    Ws, bs, acts = Gl.weights, Gl.biases, Gl.hidden_activations
    L = Gl.n_hidden
    m = unsaturated(Gl, yy, meas)
    rows: Tensor | None = m.obs
    rhs = preactivation_target(Gl, yy, m).to(f64) - bs[-1].to(f64)
    ranks: list[Tensor] = []
    unknowns: list[Tensor] = []
    layers: list[Tensor] = []
    x = rhs
    with torch.no_grad():
        for i in range(L, -1, -1):  # Ws[i] maps layer i to layer i + 1 (layer 0 is z, layer L + 1 is y)
            cols = sup[i - 1] if i > 0 else None
            x = supported_lstsq(Ws[i], rhs, rows, cols)
            ranks.insert(0, supported_ranks(Ws[i], rows, cols, B))
            unknowns.insert(0, cols.sum(dim=1) if cols is not None else torch.full((B,), Ws[i].shape[1],
                                                                                    device=yy.device))
            if i == 0:
                break
            layers.insert(0, x)
            act = acts[i - 1]
            if act.name == "relu":
                rows, target = sup[i - 1], x
            else:
                # A least-squares estimate can leave the open range only for inconsistent data.
                lo, hi = act.range
                margin = 8 * torch.finfo(f64).eps
                xc = x
                if lo > float("-inf"):
                    xc = xc.clamp_min(lo + margin * max(1.0, abs(lo)))
                if hi < float("inf"):
                    xc = xc.clamp_max(hi - margin * max(1.0, abs(hi)))
                rows, target = None, act.inverse(xc, name=f"x_{i}")
            rhs = target - bs[i - 1].to(f64)
    z = x
    full = torch.stack([r == k for r, k in zip(ranks, unknowns)]).all(dim=0)
    converged = full & torch.isfinite(z).all(dim=1)
    if callback is not None:
        callback(0, {"stage": "oracle", "x": z.to(yy.dtype)})
    n_def = int((~full).sum())
    if n_def:
        warnings.warn(f"oracle: {n_def} of {B} sample(s) have a rank-deficient supported layer: z is not unique there "
                      "(see result.info['rank'], ['full_rank'] and result.converged)", ConvergenceWarning, stacklevel=3)
    n_iter = torch.zeros(B, dtype=torch.int64, device=yy.device)
    supports_out = [s.clone() if s is not None else torch.ones_like(x_i, dtype=torch.bool)
                    for s, x_i in zip(sup, layers)]
    info: dict[str, Any] = {"mode": "layerwise", "solver": "dense", "rank": ranks, "n_unknowns": unknowns,
                            "full_rank": full,
                            "certificate": "rank conditions: z is unique where info['full_rank'] (every supported "
                                           "W_i of full column rank)"}
    return finish("oracle", Gl, z, layers, supports_out, converged, n_iter, history={}, t0=t0, info=info,
                  dtype=yy.dtype, y=yy, meas=meas)

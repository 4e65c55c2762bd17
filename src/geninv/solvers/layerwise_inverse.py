"""Layer-wise inverse of a generator whose activations are all invertible.

For ``y = phi(W_{L+1} x_L + b_{L+1})``, ``x_i = phi_i(W_i x_{i-1} + b_i)`` with every ``phi_i``
strictly monotone (leaky ReLU, tanh, sigmoid, PLU, softplus, ELU, identity), each layer is
inverted in turn, from the output down: the pre-activation ``a_i = phi_i^{-1}(x_i)`` and then the
least-squares solution ``x_{i-1} = argmin ||W_i x - (a_i - b_i)||``. The result is the unique
latent exactly when every ``W_i`` has full column rank (on the observed rows for the top layer):
the rank conditions that replace the sparsity conditions of Theorem 1 for a layer without
sparsity (Lei et al. invert LeakyReLU generators this way).
"""

from __future__ import annotations

import time
import warnings

import torch
from torch import Tensor

from geninv.exceptions import ConvergenceWarning, InputError, UnsupportedLayerError, describe
from geninv.model.generator import Generator
from geninv.solvers.measurement import resolve_measurement
from geninv.solvers.result import SolveResult
from geninv.solvers.verdict import rounding_tol

__all__ = ["layerwise_inverse"]


def _rank_tol(W: Tensor) -> float:
    return max(W.shape) * float(torch.finfo(W.dtype).eps)


def _lstsq_rows(W: Tensor, rhs: Tensor, rows: Tensor | None) -> tuple[Tensor, Tensor]:
    """Per sample ``argmin ||D_b (W x - rhs_b)||`` (D_b the observed rows) and the rank of ``D_b W``.

    W : (m, k); rhs : (B, m); rows : bool (B, m) or None (every row). Returns x (B, k), rank (B,).
    """
    if rows is None:
        U, S, Vh = torch.linalg.svd(W, full_matrices=False)
        keep = S > _rank_tol(W) * S[0]
        Sinv = torch.where(keep, 1.0 / S.clamp_min(torch.finfo(W.dtype).tiny), torch.zeros_like(S))
        x = ((rhs @ U) * Sinv) @ Vh
        return x, torch.full((rhs.shape[0],), int(keep.sum()), dtype=torch.int64, device=rhs.device)
    D = rows.to(W.dtype)
    A = D[:, :, None] * W[None]  # (B, m, k)
    U, S, Vh = torch.linalg.svd(A, full_matrices=False)
    keep = S > _rank_tol(W) * S[:, :1]
    Sinv = torch.where(keep, 1.0 / S.clamp_min(torch.finfo(W.dtype).tiny), torch.zeros_like(S))
    c = torch.einsum("bmk,bm->bk", U, D * rhs) * Sinv
    x = torch.einsum("bk,bkn->bn", c, Vh)
    return x, keep.sum(dim=1)


def layerwise_inverse(G: Generator, y: Tensor, *, measure: object = None, mask: object = None) -> SolveResult:
    """Invert ``y = A G(z)`` layer by layer through the inverse activations and least squares.

    Parameters
    ----------
    G : Generator
        Every activation (hidden and output) invertible: leaky ReLU, tanh, sigmoid, PLU,
        softplus, ELU or identity.
    y : Tensor of shape (B, n) or (B, *G.output_shape)
        Signals. With a pixel mask only the observed entries are used; an observed entry
        outside the open range of the output activation (e.g. a sigmoid pixel saturated at 0
        or 1 in the data's precision) is treated as unobserved for that sample.
    measure : Mask or operator, optional
        A pixel mask (per sample or shared); a general operator (m, n) only with an identity
        output activation (the top layer is then the linear system ``A W x = y - A b``).
    mask : Tensor of shape (n,) or (B, n), bool, optional
        Observed pixels; exclusive with ``measure``.

    Returns
    -------
    SolveResult
        ``z`` (B, n_0); ``layers`` the estimates ``[x_1, ..., x_L]``; ``converged`` (B,) True
        where every layer had full column rank and ``G(z)`` reproduces the observed ``y`` to
        the rounding level of its dtype; ``info["rank"]`` the rank of each ``W_i`` (observed rows
        for the top layer), a list of L + 1 tensors (B,) int64 in the order ``W_1, ..., W_{L+1}``;
        ``info["full_rank"]`` (B,) bool; ``info["saturated"]`` (B,)
        the observed entries dropped as outside the output activation's range;
        ``history["residual"]`` (1, B) the relative residual.

    Raises
    ------
    UnsupportedLayerError
        Naming the first layer whose activation is not invertible (ReLU: use the pursuits;
        GELU, SiLU: use the gradient methods).

    Notes
    -----
    From ``x_{L+1} = y`` down to ``x_0 = z``::

        a_i = phi_i^{-1}(x_i),   x_{i-1} = pinv(D_i W_i) D_i (a_i - b_i)

    with ``D_{L+1}`` the observed rows and ``D_i = I`` below (pseudo-inverses by SVD, singular
    values below ``max(m, k) eps sigma_max`` dropped). A least-squares estimate ``x_{i-1}``
    outside the range of ``phi_{i-1}`` (possible only for inconsistent data) is clipped into it.
    Exact data and full column rank everywhere give ``z`` exactly (to rounding).

    Examples
    --------
    >>> import torch, geninv
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(10, 40), nn.LeakyReLU(0.2), nn.Linear(40, 100), nn.Tanh()).double()
    >>> G = geninv.Generator.from_torch(net)
    >>> z, y = G.sample(3, seed=0)
    >>> res = geninv.layerwise_inverse(G, y)
    >>> bool((geninv.snr(z, res.z) > 200).all())
    True
    """
    t0 = time.perf_counter()
    if not isinstance(G, Generator):
        raise InputError(f"G: expected a geninv.Generator, received {describe(G)}")
    for i, layer in enumerate(G.layers):
        a = layer.activation
        if not a.invertible:
            alt = "the pursuits (ReLU: sparse)" if a.name == "relu" else "method='gd' or 'adam'"
            where = "output layer" if i == G.n_hidden else f"hidden layer {i + 1}"
            src = f" ({layer.name})" if layer.name else ""
            raise UnsupportedLayerError(
                f"G: layerwise_inverse expected invertible activations on every layer, received {where}{src} with "
                f"{a.name}; use {alt}"
            )
    yy, meas = resolve_measurement(measure, mask, G, y)
    Gl = G.like(yy)
    B, dt = yy.shape[0], yy.dtype
    phi = Gl.output_activation
    W, b = Gl.weights[-1], Gl.biases[-1]
    if not meas.diagonal:
        if phi.name != "identity":
            raise InputError(f"measure: layerwise_inverse takes a general operator only with an identity output, received "
                             f"output {phi.name} (phi^-1 needs the pixels themselves: use a Mask)")
        op = meas.op
        AW = op.forward(W.T.contiguous()).T.contiguous()  # (m, n_L): A applied to each column of W
        Ab = op.forward(b[None])[0]
        x, rank = _lstsq_rows(AW, yy - Ab, None)
        saturated = torch.zeros(B, dtype=torch.int64, device=yy.device)
    else:
        obs = meas.obs if meas.obs is not None else torch.ones_like(yy, dtype=torch.bool)
        ok = phi.in_range(yy) if phi.name != "identity" else torch.isfinite(yy)
        saturated = (obs & ~ok).sum(dim=1)
        rows = obs & ok
        if not bool(rows.any(dim=1).all()):
            raise InputError("y: expected at least one observed entry inside the output activation's range per signal, "
                             "received a signal with none")
        t = phi.inverse(torch.where(rows, yy, phi(b)[None].expand_as(yy)), name="y")
        x, rank = _lstsq_rows(W, t - b, None if bool(rows.all()) else rows)
    ranks = [rank]
    layers: list[Tensor] = [x]
    for i in range(G.n_hidden - 1, -1, -1):
        act = Gl.layers[i].activation
        lo, hi = act.range
        margin = 8 * torch.finfo(dt).eps
        if lo > float("-inf"):
            x = x.clamp_min(lo + margin * max(1.0, abs(lo)))
        if hi < float("inf"):
            x = x.clamp_max(hi - margin * max(1.0, abs(hi)))
        layers[0] = x
        a = act.inverse(x, name=f"x_{i + 1}")
        x, rank = _lstsq_rows(Gl.weights[i], a - Gl.biases[i], None)
        ranks.insert(0, rank)
        layers.insert(0, x)
    z = layers.pop(0)
    n_cols = [layer.n_in for layer in Gl.layers]
    full = torch.stack([r == k for r, k in zip(ranks, n_cols)]).all(dim=0)
    with torch.no_grad():
        yhat = Gl.forward_unchecked(z)
        res, ref = meas.residual(yhat, yy), meas.observed(yy)
        rel = res.norm(dim=1) / ref.norm(dim=1).clamp_min(torch.finfo(dt).tiny)
    converged = full & (rel <= rounding_tol(dt)) & torch.isfinite(z).all(dim=1)
    n_bad = int((~converged).sum())
    if n_bad:
        warnings.warn(
            f"layerwise_inverse: {n_bad} of {B} sample(s) not inverted exactly ({int((~full).sum())} with a "
            "rank-deficient layer, where z is not unique; see result.info['rank'] and result.converged)",
            ConvergenceWarning,
            stacklevel=2,
        )
    return SolveResult(
        method="layerwise_inverse",
        z=z,
        layers=layers,
        supports=[x > 0 for x in layers],
        converged=converged,
        n_iter=torch.ones(B, dtype=torch.int64, device=yy.device),
        history={"residual": rel[None]},
        seconds=time.perf_counter() - t0,
        info={"rank": ranks, "full_rank": full, "saturated": saturated,
              "certificate": "rank conditions: z is unique where info['full_rank'] (every W_i full column rank)"},
    )

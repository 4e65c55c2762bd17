"""The fast exact path: exactly realizable signals inverted layer by layer with shared
factorizations, each sample verified at the rounding level of its data.

For an exact signal ``y = G(z)`` of a generator with ReLU hidden layers and an invertible output
whose image layer has full column rank, every step of Latent-Pursuit's exact path is a linear
solve: the image layer is ``x_L = pinv(W_{L+1}) (phi^{-1}(y) - b_{L+1})`` (the warm start that
is already exact, so FISTA stops at its first check), each middle layer is the least-squares
solution on the rows of the support below it, and ``z`` the least-squares solution on ``S_1``.
Latent-Pursuit forms and factors one Gram matrix per sample for each of these (the middle
layer's ``B n_i^2 n_{i+1}`` product and ``B`` Cholesky factorizations are most of its time on
exact data). Here:

- the image layer's pseudo-inverse is computed once per layer and cached (one product per batch);
- each middle layer is solved by conjugate gradients on its supported normal equations
  ``W^T D_S W x = W^T D_S t``, preconditioned by the cached ``(W^T W / 2)^{-1}`` (a ReLU support
  keeps about half the rows, so ``W^T D_S W`` is about ``W^T W / 2``), each iteration two
  products of the batch with ``W``, each sample stopping on its own residual; for float32 data
  the CG runs in float32 and one round of iterative refinement (the residual in float64) follows,
  while the layer estimates are carried in float64;
- ``z`` solves the small (``n_0 x n_0``) normal equations on ``S_1``.

A sample is taken only where ``G(z)`` reproduces ``y`` to the rounding level of the data's dtype
(:func:`geninv.solvers.verdict.rounding_tol`); every other sample goes the full way
(:func:`geninv.solvers.auto.auto`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor

from geninv.model.generator import Generator
from geninv.model.layers import Layer
from geninv.solvers.image_layer import data_dtype
from geninv.solvers.loop import threshold_support
from geninv.solvers.measurement import Measurement
from geninv.solvers.result import SolveResult
from geninv.solvers.verdict import rounding_tol

__all__ = ["fast_exact", "with_fast_exact", "layer_cache", "pcg_rows"]

#: Middle-layer CG on float64 data stops at this many ulps (relative normal-equation residual).
CG_TOL = 10.0

#: Rounds of float64 iterative refinement of the middle layers' CG for float32 data.
REFINE = 1

#: Relative normal-equation residual at which each round's CG stops on float32 data: a round
#: gains three digits, float32 arithmetic limits one to about six, and the float64 residual of the
#: next round corrects what is left (measured, shipped generators, 1000 images: z SNR median
#: 103-114 dB with one round at 10 eps, 107-117 dB with two at 1e-3, at about the same cost).
REFINE_TOL = 1e-3

#: Support threshold relative to the layer's largest entry (Latent-Pursuit's default ``support_tol``).
SUPPORT_TOL = 1e-4


def layer_cache(layer: Layer, key: str, make: Any) -> Any:
    """``make()`` computed once per layer object and kept with it (its weights never change)."""
    store = layer.__dict__.setdefault("_exact_path_cache", {})
    if key not in store:
        store[key] = make()
    return store[key]


def _image_pinv(layer: Layer) -> Tensor | None:
    """``pinv(W)`` in float64, or None where ``W`` lacks full column rank (float64 SVD)."""
    def make() -> Tensor | None:
        W = layer.W.to(torch.float64)
        if W.shape[0] < W.shape[1]:
            return None
        U, S, Vh = torch.linalg.svd(W, full_matrices=False)
        if float(S[-1]) <= max(W.shape) * torch.finfo(torch.float64).eps * float(S[0]):
            return None
        return (Vh.T / S) @ U.T

    return layer_cache(layer, "pinv64", make)  # type: ignore[no-any-return]


def _half_gram_inverse(layer: Layer) -> Tensor:
    """``(W^T W / 2)^{-1}`` (n_in, n_in) in the layer's dtype: the middle layers' preconditioner."""
    def make() -> Tensor:
        W = layer.W.to(torch.float64)
        K = 0.5 * (W.T @ W)
        K = K + torch.eye(K.shape[0], dtype=K.dtype, device=K.device) * (K.diagonal().mean() * 1e-12)
        return torch.linalg.inv(K).to(layer.W.dtype)

    return layer_cache(layer, "half_gram_inv", make)  # type: ignore[no-any-return]


def pcg_rows(W: Tensor, t: Tensor, rows: Tensor, M: Tensor, *, tol: float, max_iter: int) -> tuple[Tensor, Tensor]:
    """Per sample ``argmin_x ||D_b (W x - t_b)||`` by preconditioned CG on the normal equations.

    Parameters
    ----------
    W : Tensor (n_out, n_in)
    t : Tensor (B, n_out)
    rows : Tensor (B, n_out), bool
    M : Tensor (n_in, n_in)
        Symmetric positive-definite preconditioner (applied as ``g M``).
    tol : float
        A sample stops when ``||W^T D (t - W x)|| <= tol ||W^T D t||``.
    max_iter : int

    Returns
    -------
    x : Tensor (B, n_in); n_iter : Tensor (B,) int64

    Notes
    -----
    ``K = W^T D W``, ``r_0 = W^T D t``, ``h_0 = M r_0``, ``p_0 = h_0``;
    ``alpha = (r.h) / ||D W p||^2``, ``x += alpha p``, ``r -= alpha W^T D W p``, ``h = M r``,
    ``p = h + ((r.h)_new / (r.h)) p``: CG on ``K x = W^T D t`` in the ``M``-inner product.
    """
    B = t.shape[0]
    tiny = torch.finfo(W.dtype).tiny
    x_out = torch.zeros(B, W.shape[1], dtype=W.dtype, device=t.device)
    n_iter = torch.zeros(B, dtype=torch.int64, device=t.device)
    D = rows.to(W.dtype)
    r = (t * D) @ W
    ref = r.norm(dim=1)
    idx = (ref > 0).nonzero().squeeze(1)  # the working set: samples still iterating
    D, r, ref = D[idx], r[idx], ref[idx]
    x = torch.zeros(idx.numel(), W.shape[1], dtype=W.dtype, device=t.device)
    h = r @ M
    p = h.clone()
    rh = (r * h).sum(dim=1)
    for _ in range(max_iter):
        if idx.numel() == 0:
            break
        q = (p @ W.T) * D
        alpha = rh / (q * q).sum(dim=1).clamp_min(tiny)
        x = x + alpha[:, None] * p
        r = r - alpha[:, None] * (q @ W)
        h = r @ M
        rh_new = (r * h).sum(dim=1)
        p = h + (rh_new / rh.clamp_min(tiny))[:, None] * p
        rh = rh_new
        n_iter[idx] += 1
        done = r.norm(dim=1) <= tol * ref
        if bool(done.any()):
            # Finished samples leave the working set (their products are no longer computed).
            x_out[idx[done]] = x[done]
            keep = ~done
            idx, D, r, ref, x, p, rh = idx[keep], D[keep], r[keep], ref[keep], x[keep], p[keep], rh[keep]
    x_out[idx] = x
    return x_out, n_iter


def fast_exact(G: Generator, y: Tensor, meas: Measurement) -> tuple[Tensor, Tensor, dict[str, Any]] | None:
    """The fast exact path on every sample of ``y`` (module docstring).

    Returns None where it does not apply (no hidden layer, a hidden layer that is not ReLU, a
    non-invertible output, a mask or an operator, an image layer without full column rank, an
    observed value outside the output's range or saturated); otherwise ``z`` (B, n_0) in ``y``'s
    dtype, ``ok`` (B,) bool (``G(z)`` reproduces ``y`` to the rounding level of the data's dtype),
    and ``info`` (the CG iterations per middle layer, (B,) each).
    """
    from geninv.solvers.measurement import saturated

    phi = G.output_activation
    if G.n_hidden == 0 or not G.relu_hidden or not phi.invertible or meas.kind != "identity" or G.matrix_free:
        return None  # a matrix-free layer has no dense W to factorize: the pursuits solve it
    if not G.dims[-1] >= G.dims[-2]:
        return None
    P = _image_pinv(G.layers[-1])
    if P is None:
        return None
    if not bool(phi.in_range(y).all()) or bool(saturated(phi, y).any()):
        return None
    dt = y.dtype
    eps = float(torch.finfo(dt).eps)
    Ws, bs = G.weights, G.biases
    f64 = torch.float64
    with torch.no_grad():
        # The layer estimates are carried in float64 (the image layer is one product): the data's
        # own rounding, not the solver's, then limits the accuracy of z.
        x = (phi.inverse(y.to(f64)) - bs[-1].to(f64)) @ P.T
        S = threshold_support(x, SUPPORT_TOL)
        x = x * S
        iters: dict[str, Tensor] = {}
        for i in range(G.n_hidden - 1, 0, -1):
            # x_{i+1} = relu(W x_i + b) on the support S of x_{i+1}; W = Ws[i].
            W, M = Ws[i], _half_gram_inverse(G.layers[i])
            t = x - bs[i].to(f64)
            xi = torch.zeros(t.shape[0], W.shape[1], dtype=f64, device=t.device)
            it = torch.zeros(t.shape[0], dtype=torch.int64, device=t.device)
            # CG in the data's dtype; for float32 data, rounds of iterative refinement (residual
            # in float64, correction by float32 CG) go past float32's accuracy at float32's cost.
            tol = CG_TOL * eps if dt == f64 else REFINE_TOL
            for _ in range(1 if dt == f64 else 1 + REFINE):
                r = (t - xi @ W.to(f64).T) * S
                dx, it_r = pcg_rows(W, r.to(dt), S, M, tol=tol, max_iter=4 * W.shape[1])
                xi, it = xi + dx.to(f64), it + it_r
            iters[f"x{i}"] = it
            x = xi.clamp_min(0)
            S = threshold_support(x, SUPPORT_TOL)
            x = x * S
        # z: the n_0 x n_0 normal equations on the rows S_1.
        # In float64: (B, n_1, n_0) is small, and the normal equations square the condition.
        W1, b1 = Ws[0].to(f64), bs[0].to(f64)
        D = S.to(f64)
        A = D[:, :, None] * W1[None]
        K = A.transpose(1, 2) @ A
        g = ((x - b1) * D) @ W1
        L, info = torch.linalg.cholesky_ex(K)
        z = torch.cholesky_solve(g.unsqueeze(-1), L).squeeze(-1).to(dt)
        z = torch.where((info == 0)[:, None], z, torch.zeros_like(z))
        rel = (G.forward_unchecked(z) - y).norm(dim=1) / y.norm(dim=1).clamp_min(torch.finfo(dt).tiny)
        ok = (info == 0) & torch.isfinite(rel) & (rel <= rounding_tol(data_dtype(y)))
    return z, ok, {"cg_iterations": iters, "relative_residual": rel}


def with_fast_exact(G: Generator, y: Tensor, meas: Measurement, given: Tensor | None, callback: Any, t0: float,
                    rest: Any, stages: tuple[str, ...]) -> SolveResult | None:
    """:func:`geninv.solvers.auto.auto` with the fast exact path first.

    The verified samples take the fast path's answer (``info["stage"]`` "exact",
    ``info["exact_path"]`` "fast"); ``rest(idx)`` solves the others the full way and the two are
    merged in the batch's order; ``stages`` is auto's tuple of stage names. None where the fast path does not apply, is not asked for
    (a noise level other than 0 is given), or verifies no sample.
    """
    import time

    from geninv.solvers.network import hidden_layers
    from geninv.solvers.result import finish, merge_results

    if given is not None and not bool((given == 0).all()):
        return None
    ts = time.perf_counter()
    fast = fast_exact(G, y, meas)
    if fast is None or not bool(fast[1].any()):
        return None
    z, ok, finfo = fast
    B, dev = y.shape[0], y.device
    io = ok.nonzero().squeeze(1)
    zo, yo = z[io], y[io]
    f64 = torch.float64
    zeros = torch.zeros(io.numel(), dtype=f64, device=dev)
    with torch.no_grad():
        layers = hidden_layers(G, zo)
        fit = 0.5 * (G.forward_unchecked(zo).to(f64) - yo.to(f64)).square().sum(dim=1)
    info: dict[str, Any] = {
        "stage": torch.zeros(io.numel(), dtype=torch.int64, device=dev), "noise_level": zeros,
        "noise_reference": zeros, "residual": finfo["relative_residual"][io].to(f64),
        "fits": torch.ones(io.numel(), dtype=torch.bool, device=dev), "objective": fit, "gamma": zeros.clone(),
        "exact_path": "fast", "cg_iterations": {k: v[io] for k, v in finfo["cg_iterations"].items()},
        "seconds": {"exact_fast": time.perf_counter() - ts},
    }
    info["stages"] = stages
    n_iter = sum((v[io] for v in finfo["cg_iterations"].values()), torch.ones(io.numel(), dtype=torch.int64, device=dev))
    res_f = finish("auto", G, zo, layers, [x > 0 for x in layers], torch.ones(io.numel(), dtype=torch.bool, device=dev),
                   n_iter, history={}, t0=t0, info=info, dtype=y.dtype, y=yo, meas=meas)
    if callback is not None:
        callback(0, {"stage": "exact", "x": z})
    if bool(ok.all()):
        return res_f
    ib = (~ok).nonzero().squeeze(1)
    res_r = rest(ib)
    res_r = dataclasses.replace(res_r, info=dict(res_r.info, exact_path="full"))
    merged = merge_results([(io, res_f), (ib, res_r)], B, time.perf_counter() - t0)
    # Stage seconds of the whole call (one number per stage, not per sample).
    secs = dict(res_f.info["seconds"], **res_r.info.get("seconds", {}))
    return dataclasses.replace(merged, info=dict(merged.info, seconds=secs))

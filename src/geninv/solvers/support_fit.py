"""Refinement of ``z`` through the whole network by support rounds: Levenberg-Marquardt on the
network with its ReLU supports frozen (an affine map of ``z``, built once per round), then the
supports re-read at the result, until they stop changing.

Why rounds instead of re-reading the supports at every step (as
:func:`geninv.solvers.hybrid.gauss_newton_refine` does): a step on the frozen network needs no
network pass (its residual is ``A phi(J z + c) - y``), and the affine map ``(J, c)`` costs
``sum_i n_i n_{i-1} n_0`` per sample, which a per-step re-read pays again for every sample whose
supports flicker. After a pursuit the supports are nearly right: one or two rounds settle almost
every sample, and a sample settled this way is at a minimum of the frozen network whose supports
are its own, i.e. a stationary point of the true objective (the two objectives agree on that
linear piece). The few samples still changing supports after the last round finish with the
per-step safeguarded refinement.
"""

from __future__ import annotations

import torch
from torch import Tensor

from geninv.model.generator import Generator
from geninv.solvers.measurement import Measurement, forward_meas, meas_index
from geninv.solvers.network import hidden_layers, support_affine
from geninv.solvers.refine import gauss_newton_refine, network_fit

__all__ = ["support_refine"]


def support_refine(
    G: Generator,
    y: Tensor,
    meas: Measurement,
    z0: Tensor,
    *,
    gamma: Tensor | float = 0.0,
    max_iter: int = 50,
    rel_decrease: float = 0.0,
    jac_dtype: torch.dtype = torch.float64,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Minimize ``F(z) = 1/2 ||A (y - G(z))||^2 + gamma/2 ||z||^2`` from ``z0``, supports re-read
    at every step, the products of a step in ``jac_dtype``.

    Parameters
    ----------
    G : Generator
    y : Tensor of shape (B, m)
        The observed data (unobserved entries of a pixel mask zeroed).
    meas : Measurement
        From :func:`geninv.solvers.measurement.resolve_measurement`.
    z0 : Tensor of shape (B, n_0)
    gamma : float or Tensor of shape (B,)
        Gaussian-prior weight (0: least squares).
    max_iter : int
        Levenberg-Marquardt steps per sample (accepted or rejected).
    rel_decrease : float
        A sample stops after an accepted step lowering ``F`` by at most ``rel_decrease F`` (the
        statistical criterion; 0: off), or at the rounding level of the data fit.
    jac_dtype : torch.dtype
        Precision of the supports' read, the affine map and the step's products (float32 for
        float32 data); the normal equations are solved, and every step accepted or rejected on
        the true network, in float64.

    Returns
    -------
    z : Tensor (B, n_0), float64
    objective : Tensor (B,), float64, ``F(z)`` on the true network
    n_iter : Tensor (B,), int64
    converged : Tensor (B,), bool

    Notes
    -----
    The step of :func:`geninv.solvers.hybrid.gauss_newton_refine` (same damping rule, same
    acceptance test, so ``F`` never increases), with ``K = A diag(phi'(a)) J`` and ``K^T K``,
    ``K^T r`` formed in ``jac_dtype`` and the damped ``n_0 x n_0`` system solved by a batched
    Cholesky factorization in float64. For float32 data the products' rounding (relative
    ``6e-8``) perturbs only the step's direction, far below the statistical criterion; the
    affine map is rebuilt only for the samples whose supports changed.
    """
    G64 = G.to(dtype=torch.float64) if G.dtype != torch.float64 else G
    Gw = G.to(dtype=jac_dtype) if G.dtype != jac_dtype else G
    phi = G64.output_activation
    f64 = torch.float64
    y = y.to(f64)
    z = z0.to(f64).clone()
    B, n0 = z.shape
    dev = z.device
    gam = torch.as_tensor(gamma, dtype=f64, device=dev).flatten()
    gam = gam.expand(B).clone() if gam.numel() == 1 else gam.clone()
    obj = network_fit(G64, y, z, meas, gam)
    n_iter = torch.zeros(B, dtype=torch.int64, device=dev)
    converged = torch.zeros(B, dtype=torch.bool, device=dev)
    y_obs = y * meas.w.to(f64) if meas.kind == "diag" else y  # type: ignore[union-attr]
    floor = 0.5 * (64 * torch.finfo(f64).eps * y_obs.norm(dim=1)) ** 2
    done0 = (obj <= floor) & (gam == 0)
    converged |= done0
    idx = (~done0).nonzero().squeeze(1)
    if G64.n_hidden == 0 or idx.numel() == 0 or max_iter == 0:
        if G64.n_hidden == 0 and idx.numel() and max_iter:
            return gauss_newton_refine(G64, y, meas, z, gamma=gam, max_iter=max_iter, rel_decrease=rel_decrease,
                                       jac_dtype=jac_dtype)
        return z, obj, n_iter, converged
    eye = torch.eye(n0, dtype=f64, device=dev)
    damp = torch.full((B,), 1e-6, dtype=f64, device=dev)
    n_out = G64.weights[-1].shape[0]
    J_all = torch.empty(B, n_out, n0, dtype=jac_dtype, device=dev)
    c_all = torch.empty(B, n_out, dtype=f64, device=dev)
    sup_all = [torch.zeros(B, W.shape[0], dtype=torch.bool, device=dev) for W in G64.weights[:-1]]
    have = torch.zeros(B, dtype=torch.bool, device=dev)
    for _ in range(max_iter):
        if idx.numel() == 0:
            break
        zb, yb, gb = z[idx], y[idx], gam[idx]
        mb = meas_index(meas, idx)
        sups = [x > 0 for x in hidden_layers(Gw, zb.to(jac_dtype))]
        stale = ~have[idx]
        for s_new, s_old in zip(sups, sup_all):
            stale |= (s_new != s_old[idx]).any(dim=1)
        if bool(stale.any()):
            st = idx[stale]
            Js, cs = support_affine(Gw, [x[stale] for x in sups], st.numel(), dtype=jac_dtype)
            # The offset in float64 from the float64 network: it dominates the pre-activation.
            _, c64 = support_affine_offset(G64, [x[stale] for x in sups])
            J_all[st], c_all[st] = Js, c64
            del Js, cs
            for s_new, s_old in zip(sups, sup_all):
                s_old[st] = s_new[stale]
            have[st] = True
        J, c = J_all[idx], c_all[idx]
        a = torch.bmm(J, zb.to(jac_dtype).unsqueeze(-1)).squeeze(-1).to(f64) + c
        r = forward_meas(mb, phi(a)) - yb
        K = mb.apply_cols(phi.derivative(a).to(jac_dtype)[:, :, None] * J)
        Kt = K.transpose(1, 2)
        H = (Kt @ K).to(f64) + gb[:, None, None] * eye
        g = (Kt @ r.to(jac_dtype).unsqueeze(-1)).squeeze(-1).to(f64) + gb[:, None] * zb
        del K, Kt, J, c
        sc = H.diagonal(dim1=1, dim2=2).mean(dim=1).clamp_min(torch.finfo(f64).tiny)
        Hd = H + (damp[idx] * sc)[:, None, None] * eye
        L, info = torch.linalg.cholesky_ex(Hd)
        if bool((info != 0).any()):
            dz = -torch.linalg.lstsq(Hd, g.unsqueeze(-1)).solution.squeeze(-1)
        else:
            dz = -torch.cholesky_solve(g.unsqueeze(-1), L).squeeze(-1)
        z_new = zb + dz
        o_new = network_fit(G64, yb, z_new, mb, gb)
        acc = (o_new <= obj[idx]) & torch.isfinite(o_new)
        obj_old = obj[idx]
        z[idx] = torch.where(acc[:, None], z_new, zb)
        obj[idx] = torch.where(acc, o_new, obj_old)
        damp[idx] = torch.where(acc, damp[idx] * 0.3, damp[idx] * 10.0).clamp(1e-12, 1e12)
        n_iter[idx] += 1
        small = dz.norm(dim=1) <= 1e-12 * zb.norm(dim=1).clamp_min(1e-30)
        if rel_decrease:
            small = small | (obj_old - obj[idx] <= rel_decrease * obj[idx])
        at_floor = (obj[idx] <= floor[idx]) & (gb == 0)
        ok = (acc & small) | at_floor
        stuck = damp[idx] >= 1e12
        converged[idx] = ok | stuck
        idx = idx[~(ok | stuck)]
    return z, obj, n_iter, converged


def support_affine_offset(G64: Generator, supports: list[Tensor]) -> tuple[None, Tensor]:
    """The offset ``c`` (B, n) of :func:`geninv.solvers.network.support_affine` alone, in float64:
    the network at ``z = 0`` with the supports frozen (``B sum_i n_i n_{i-1}``, no ``n_0`` factor)."""
    x = G64.biases[0][None] * supports[0]
    for i in range(1, G64.n_hidden):
        x = torch.addmm(G64.biases[i], x, G64.weights[i].T) * supports[i]
    return None, torch.addmm(G64.biases[-1], x, G64.weights[-1].T)

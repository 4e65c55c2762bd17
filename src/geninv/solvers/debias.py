"""Debiasing: the end-to-end fit of ``z`` with every hidden support frozen, the refinement of
those supports from the network at the fit, and the pursuits' debiasing stage."""

from __future__ import annotations

import time
import weakref
from collections.abc import Sequence

import torch
from torch import Tensor

from geninv.model.generator import Generator
from geninv.model.layer_ops import cast
from geninv.solvers.linalg import batched_lstsq, cg_supported_lstsq
from geninv.solvers.loop import StageLog
from geninv.solvers.measurement import Measurement, preactivation_target, unsaturated
from geninv.solvers.network import (
    FrozenNetwork,
    hidden_affine,
    hidden_layers,
    network_objective,
    output_preactivation,
    support_affine,
)
from geninv.solvers.relu_output import relu_output_fit
from geninv.solvers.spectral import cache_key

__all__ = ["debias_fit", "debias_stage", "fit_supports", "DEBIAS_BUDGET"]

#: Bytes the debiasing's Jacobian of a batch (B, n, n_0) float64 may take on a generator with a
#: matrix-free layer before it is formed in batch chunks (or, past one sample, not at all: CGLS).
DEBIAS_BUDGET = 2**28


def debias_fit(
    G: Generator,
    y: Tensor,
    supports: Sequence[Tensor],
    meas: Measurement,
    *,
    z0: Tensor | None = None,
    rounds: int = 3,
    max_iter: int = 50,
    tol: float = 1e-10,
) -> tuple[Tensor, Tensor, Tensor, list[Tensor]]:
    """Debiasing (docs/method.md sec. 6.4) with support refinement.

    Round 0 fits ``z`` end to end with the estimated supports frozen (:func:`fit_supports`).
    Each further round (up to ``rounds``) takes the supports of the network at the current fit,
    ``S_i = {W_i x_{i-1} + b_i > 0}``, refits, and keeps the refit for the samples where it
    lowers the true objective ``1/2 ||A (y - G(z))||^2``; it stops once no sample changes.
    Samples already fit to the rounding level of ``y`` (objective below
    ``1/2 (100 eps ||A y||)^2``) are not refit.

    Why: a true entry missed by the support threshold (or a spurious one) biases the frozen fit
    by about its size (measured: one missed entry of 2e-4 gave a relative error 4e-6 in z);
    the network's own supports at a fit that is already that close are exact, so one more
    round makes the recovery exact, and the acceptance test keeps it monotone.

    Returns
    -------
    z : Tensor (B, n_0), float64
    converged : Tensor (B,), bool
    objective : Tensor (B,), float64, the true objective at ``z``
    supports : list of bool Tensor (B, n_i), the supports of the final fit
    """
    z, conv, _ = fit_supports(G, y, supports, meas, z0=z0, max_iter=max_iter, tol=tol)
    sup = [s.clone() for s in supports]
    obj = network_objective(G, y, z, meas)
    G64 = G.to(dtype=torch.float64)
    # A sample whose fit is already at the rounding level of the data cannot improve.
    y64 = y.to(torch.float64)
    ynorm = meas.observed(y64).norm(dim=1)
    floor = 0.5 * (100 * torch.finfo(y.dtype).eps * ynorm) ** 2
    for _ in range(rounds):
        new = [x > 0 for x in hidden_layers(G64, z)]
        changed = obj > floor
        differ = torch.zeros_like(changed)
        for a, b in zip(new, sup):
            differ |= (a != b).any(dim=1)
        changed &= differ
        ch = changed.nonzero().squeeze(1)
        if ch.numel() == 0:
            break
        m_ch = meas.subset(ch)
        z2, conv2, _ = fit_supports(G, y[ch], [a[ch] for a in new], m_ch, z0=z[ch], max_iter=max_iter, tol=tol)
        obj2 = network_objective(G, y[ch], z2, m_ch)
        acc = (obj2 < obj[ch]) & torch.isfinite(obj2)
        if not bool(acc.any()):
            break
        gi = ch[acc]
        z[gi] = z2[acc]
        obj[gi] = obj2[acc]
        conv[gi] = conv2[acc]
        for a, b in zip(new, sup):
            b[gi] = a[gi]
    return z, conv, obj, sup


def debias_stage(log: StageLog, G: Generator, y: Tensor, supports: Sequence[Tensor], meas: Measurement, z: Tensor,
                 rounds: int) -> tuple[Tensor, list[Tensor]]:
    """The pursuits' last stage: :func:`debias_fit` from their ``z`` (B, n_0), recorded in ``log``
    (``info["debias_objective"]``, ``info["debias_supports"]``, its time, its convergence).

    Returns ``z`` in ``y``'s dtype and the hidden layers ``[x_1, ..., x_L]`` of the network at it.
    """
    ts = time.perf_counter()
    z64, ok, obj, fit_sup = debias_fit(G, y, supports, meas, z0=z, rounds=rounds)
    z = z64.to(y.dtype)
    log.converged = log.converged & ok
    log.info["debias_objective"] = obj
    log.info["debias_supports"] = fit_sup
    log.info["seconds"]["debias"] = time.perf_counter() - ts
    return z, hidden_layers(G, z)


_QR_CACHE: dict[tuple, tuple[weakref.ref, Tensor | None, Tensor, Tensor]] = {}


def _output_qr(W: Tensor, w0: Tensor | None) -> tuple[Tensor, Tensor]:
    """Thin QR of ``diag(w0) W`` in float64, cached per weight tensor (identity and version, as
    the spectral-norm cache) and row weights: 784 x 392 costs ~25 ms, a solve's debiasing calls
    it several times."""
    key = cache_key(W)
    hit = _QR_CACHE.get(key)
    if hit is not None and hit[0]() is W and ((hit[1] is None and w0 is None) or
                                              (hit[1] is not None and w0 is not None and torch.equal(hit[1], w0))):
        return hit[2], hit[3]
    W64 = W.detach().to(torch.float64)
    Q, R = torch.linalg.qr(W64 if w0 is None else W64 * w0[:, None])  # reduced: Q (n, n_L), R (n_L, n_L)
    if len(_QR_CACHE) > 64:
        _QR_CACHE.clear()
    _QR_CACHE[key] = (weakref.ref(W), None if w0 is None else w0.clone(), Q, R)
    return Q, R


def _reduced_linear_fit(G: Generator, y64: Tensor, supports: Sequence[Tensor], meas: Measurement,
                        w0: Tensor | None, work: torch.dtype) -> Tensor:
    """The linear pre-activation least squares of :func:`fit_supports` through a thin QR of the
    (shared, row-weighted) output layer instead of the full ``J = W_{L+1} M``.

    With ``x_L = M_b z + c_b`` (frozen supports) and ``diag(w) W_{L+1} = Q R`` (Q: n x n_L with
    orthonormal columns, R: n_L x n_L, n > n_L), for every ``v``:
    ``||diag(w)(W_{L+1} v + b - t)||^2 = ||R v - Q^T diag(w)(t - b)||^2 + (a term free of v)``,
    so ``argmin_z`` is the same with ``R M_b`` (n_L x n_0) in place of ``diag(w) J_b`` (n x n_0):
    half the products and half the memory of forming ``J`` for the MNIST generator (n = 784,
    n_L = 392). Needs the weights shared by the batch (no mask, or one mask for all).

    Returns ``z`` (B, n_0), float64.
    """
    Ws, bs = G.maps, G.biases  # the output layer is dense here; a hidden one may be matrix-free
    b = bs[-1].to(torch.float64)
    Q, R = _output_qr(G.weight(-1), w0)
    t = preactivation_target(G, y64, meas)
    tw = (t - b) if w0 is None else (t - b) * w0
    rhs = tw @ Q  # (B, n_L) = Q^T diag(w)(t - b) per sample
    Mh, cL = hidden_affine([cast(Wi, work) for Wi in Ws[:-1]], [bi.to(work) for bi in bs[:-1]], supports, work)
    n_L, B, n0 = Mh.shape
    RM = (R.to(work) @ Mh.reshape(n_L, B * n0)).reshape(n_L, B, n0).transpose(0, 1).to(torch.float64)
    return batched_lstsq(RM, rhs - cL.to(torch.float64) @ R.T)


def fit_supports(
    G: Generator,
    y: Tensor,
    supports: Sequence[Tensor],
    meas: Measurement,
    *,
    z0: Tensor | None = None,
    max_iter: int = 50,
    tol: float = 1e-10,
    memory_budget: int = DEBIAS_BUDGET,
) -> tuple[Tensor, Tensor, Tensor]:
    """Fit ``z`` end to end with every hidden support frozen (the Oracle with given supports).

    Minimizes ``1/2 || A (y - phi(J z + c)) ||^2`` over ``z`` (``J, c`` from
    :func:`support_affine`; ``A`` the measurement), in float64.

    Notes
    -----
    When ``phi`` is invertible and ``A`` a pixel mask (or absent), the start is the exact
    linear least-squares solution on the pre-activation, ``pinv(M J) M (phi^{-1}(y) - c)``
    (exact for noiseless data: the Oracle with estimated supports), per sample on its
    unsaturated observed pixels (:func:`unsaturated`), for the samples whose pixels there lie
    in the range of ``phi`` (the others start from ``z0``). Then Levenberg-Marquardt
    (Gauss-Newton with per-sample damping, accepted only where the objective decreases) runs
    in the signal domain, which is the objective of docs/method.md sec. 6.4 and the maximum-likelihood fit under
    Gaussian noise; it is skipped when ``phi`` is the identity and ``A`` diagonal (the linear
    solution is then already optimal). Each step solves ``B`` systems of size ``n_0``.

    A ReLU output with a pixel mask (or none) freezes the output's support too: the observed
    positive pixels ``P`` of ``y`` are the rows of the fit, ``min_z ||J^P z + c^P - y^P||``
    (linear, solved exactly); its zero pixels are the inequalities of the output layer, which a
    fit inside the true supports satisfies.

    On a generator with a matrix-free layer, ``J`` (B, n, n_0) is formed by passes of the layers'
    operators (``W`` itself never is) where it fits ``memory_budget`` bytes, in batch chunks where
    one sample's does; otherwise the linear start is solved by CGLS on the frozen network as an
    operator (:class:`geninv.solvers.network.FrozenNetwork`) and Levenberg-Marquardt, which needs ``J``, is not run: a
    sample whose linear fit leaves a residual above the rounding level of ``y`` (noise, or a
    non-identity ``phi`` off its range) is then reported not converged.

    Returns
    -------
    z : Tensor (B, n_0), float64
    converged : Tensor (B,), bool
    objective : Tensor (B,), float64
    """
    phi = G.output_activation
    # float32 data: the chain of products in float32 (the costly part), the solves in float64.
    work = torch.float64 if y.dtype == torch.float64 else torch.float32
    y64 = y.to(torch.float64)
    B = y.shape[0]
    dev = y.device
    converged = torch.ones(B, dtype=torch.bool, device=dev)
    z: Tensor | None = None
    w = meas.w.to(torch.float64) if meas.w is not None else None
    J: Tensor | None = None
    c: Tensor | None = None
    # The linear start, per sample: on the unsaturated observed entries (saturated ones carry no
    # equation on the pre-activation), for the samples whose such entries are all in range.
    lin = torch.zeros(B, dtype=torch.bool, device=dev)
    m_lin = meas
    if meas.diagonal and phi.invertible:
        m_lin = unsaturated(G, y, meas)
        ok_rows = phi.in_range(y64) if m_lin.obs is None else (phi.in_range(y64) | ~m_lin.obs)
        lin = ok_rows.all(dim=1) if m_lin.obs is None else ok_rows.all(dim=1) & m_lin.obs.any(dim=1)
    if phi.name == "relu" and meas.diagonal:
        return relu_output_fit(G, y64, supports, meas, work)
    per = G.output_dim * G.latent_dim * 8  # one sample's J in float64
    if G.matrix_free and B * per > memory_budget:
        if per <= memory_budget and B > 1:  # J in chunks of the batch (each sample's fit is its own)
            k = max(1, memory_budget // per)
            parts = [fit_supports(G, y[a:a + k], [s_[a:a + k] for s_ in supports],
                                  meas.subset(torch.arange(a, min(B, a + k), device=dev)),
                                  z0=None if z0 is None else z0[a:a + k], max_iter=max_iter, tol=tol,
                                  memory_budget=memory_budget) for a in range(0, B, k)]
            return tuple(torch.cat([p_[j] for p_ in parts]) for j in range(3))  # type: ignore[return-value]
        return _krylov_fit(G, y64, supports, meas, m_lin, lin, z0, y.dtype)
    w_lin = m_lin.w.to(torch.float64) if m_lin.w is not None else None
    shared_w = w_lin is None or bool((w_lin == w_lin[:1]).all())
    out = G.layers[-1]
    if bool(lin.all()) and shared_w and G.n_hidden >= 1 and not out.matrix_free and out.n_out > out.n_in:
        z = _reduced_linear_fit(G, y64, supports, m_lin, None if w_lin is None else w_lin[0], work)
    else:
        J, c = support_affine(G, supports, B, dtype=work)
        J, c = J.to(torch.float64), c.to(torch.float64)
        if bool(lin.any()):
            li = lin.nonzero().squeeze(1)
            t = preactivation_target(G, y64[li], m_lin.subset(li))
            Jw = J[li] if w_lin is None else J[li] * w_lin[li, :, None]
            tw = (t - c[li]) if w_lin is None else (t - c[li]) * w_lin[li]
            z_lin = batched_lstsq(Jw, tw)
            del Jw
            if bool(lin.all()):
                z = z_lin
            else:
                z = torch.zeros(B, G.latent_dim, dtype=torch.float64, device=dev) if z0 is None \
                    else z0.to(torch.float64).clone()
                z[li] = z_lin
    n0 = G.latent_dim
    if z is None:
        z = torch.zeros(B, n0, dtype=torch.float64, device=dev) if z0 is None else z0.to(torch.float64).clone()

    def signal_residual(a: Tensor, yb: Tensor, wb: Tensor | None) -> Tensor:
        p = phi(a)
        if not meas.diagonal:
            return meas.op.forward(p) - yb  # type: ignore[no-any-return]
        r = p - yb
        return r if wb is None else r * wb

    def residual(Jb: Tensor, cb: Tensor, zb: Tensor, yb: Tensor, wb: Tensor | None) -> tuple[Tensor, Tensor]:
        a = torch.baddbmm(cb.unsqueeze(-1), Jb, zb.unsqueeze(-1)).squeeze(-1)
        return signal_residual(a, yb, wb), a

    if J is None or c is None:
        # The reduced fit never formed J: the network itself gives the residual.
        r = signal_residual(output_preactivation(G, supports, z), y64, w)
    else:
        r, _ = residual(J, c, z, y64, w)
    obj = 0.5 * r.square().sum(dim=1)
    if phi.name == "identity" and meas.diagonal:
        return z, converged, obj
    # Levenberg-Marquardt on the samples whose residual is above rounding level.
    ynorm = (y64 if w is None else y64 * w).norm(dim=1)
    # Residuals at the rounding level of the data cannot be improved.
    floor = 0.5 * (100 * torch.finfo(y.dtype).eps * ynorm.clamp_min(1e-300)) ** 2
    idx = (obj > floor).nonzero().squeeze(1)
    if idx.numel() == 0:
        return z, converged, obj
    if J is None or c is None:
        Jb, cb = support_affine(G, [s_[idx] for s_ in supports], idx.numel(), dtype=work)
        Jb, cb = Jb.to(torch.float64), cb.to(torch.float64)
    else:
        Jb, cb = J[idx], c[idx]
    zb, yb, ob = z[idx], y64[idx], obj[idx]
    wb = w[idx] if w is not None else None
    damp = torch.full((idx.numel(), 1, 1), 1e-6, dtype=torch.float64, device=dev)
    eye = torch.eye(n0, dtype=torch.float64, device=dev)
    del J, c
    for _ in range(max_iter):
        rb, a = residual(Jb, cb, zb, yb, wb)
        if not meas.diagonal:
            Jac = meas.apply_cols(phi.derivative(a)[:, :, None] * Jb)
            rr = rb
        else:
            q = phi.derivative(a) if wb is None else phi.derivative(a) * wb
            Jac = q[:, :, None] * Jb
            rr = rb
        H = Jac.transpose(1, 2) @ Jac
        g = (Jac.transpose(1, 2) @ rr.unsqueeze(-1)).squeeze(-1)
        del Jac
        scale = H.diagonal(dim1=1, dim2=2).mean(dim=1).clamp_min(1e-300)[:, None, None]
        dz = -torch.linalg.solve(H + damp * scale * eye, g.unsqueeze(-1)).squeeze(-1)
        z_new = zb + dz
        r_new, _ = residual(Jb, cb, z_new, yb, wb)
        obj_new = 0.5 * r_new.square().sum(dim=1)
        accept = (obj_new <= ob) & torch.isfinite(obj_new)
        # An accepted step that lowers the objective by less than 1e-12 of itself: the fit is at
        # a (nonzero-residual) minimum to float64 precision; Gauss-Newton's linear rate there would
        # take many more steps to make dz itself small.
        flat = accept & (ob - obj_new <= 1e-12 * ob)
        zb = torch.where(accept[:, None], z_new, zb)
        ob = torch.where(accept, obj_new, ob)
        small = (dz.norm(dim=1) <= tol * zb.norm(dim=1).clamp_min(1e-30)) | flat
        damp = torch.where(accept[:, None, None], damp * 0.3, damp * 10.0).clamp(1e-12, 1e12)
        stuck = damp.view(-1) >= 1e12
        done = (accept & small) | stuck | (ob <= floor[idx])
        if bool(done.any()):
            z[idx[done]] = zb[done]
            obj[idx[done]] = ob[done]
            keep = ~done
            idx, Jb, cb, zb, yb, ob, damp = idx[keep], Jb[keep], cb[keep], zb[keep], yb[keep], ob[keep], damp[keep]
            wb = wb[keep] if wb is not None else None
            if idx.numel() == 0:
                break
    if idx.numel():
        z[idx] = zb
        obj[idx] = ob
        converged[idx] = False
    return z, converged, obj


def _krylov_fit(G: Generator, y64: Tensor, supports: Sequence[Tensor], meas: Measurement, m_lin: Measurement,
                lin: Tensor, z0: Tensor | None, data_dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`fit_supports` without ``J``: the linear start of the samples ``lin`` by CGLS on
    :class:`FrozenNetwork` (rows: the unsaturated observed entries), no Levenberg-Marquardt.
    ``converged``: the CGLS converged and the fit is at the rounding level of ``y`` (or ``phi`` is
    the identity with a pixel mask or none, where the linear fit is the optimum)."""
    B, n0, dev = y64.shape[0], G.latent_dim, y64.device
    phi = G.output_activation
    z = torch.zeros(B, n0, dtype=torch.float64, device=dev) if z0 is None else z0.to(torch.float64).clone()
    converged = torch.zeros(B, dtype=torch.bool, device=dev)
    if bool(lin.any()):
        li = lin.nonzero().squeeze(1)
        sup = [s_[li] for s_ in supports]
        c = output_preactivation(G, sup, torch.zeros(li.numel(), n0, dtype=torch.float64, device=dev))
        m_li = m_lin.subset(li)
        t = preactivation_target(G, y64[li], m_li) - c
        eps = float(torch.finfo(torch.float64).eps)
        z[li], _, converged[li] = cg_supported_lstsq(FrozenNetwork(G, sup), t, m_li.obs, None, tol=eps)
    obj = 0.5 * meas.residual(phi(output_preactivation(G, supports, z)), y64).square().sum(dim=1)
    floor = 0.5 * (100 * torch.finfo(data_dtype).eps * meas.observed(y64).norm(dim=1)) ** 2
    if not (phi.name == "identity" and meas.diagonal):
        converged &= obj <= floor
    return z, converged, obj

"""Refinement of ``z`` through the whole network for the default method: Levenberg-Marquardt with
the ReLU supports re-read at every step (:func:`support_refine`), and the same refinement from the
best-fitting latents of a seeded bank of prior draws (:func:`bank_refine`).

Why a second implementation of the step of :func:`geninv.solvers.hybrid.gauss_newton_refine`:
the residual and the gradient are formed in float64 on the network with the supports frozen, and
for float32 data the Jacobian that forms the Gauss-Newton matrix is built in ``jac_dtype`` or,
where the device multiplies bfloat16 matrices natively, in bfloat16; that matrix then only
preconditions a few conjugate-gradient iterations on the exact one (whose products are a forward
and a backward pass through the network). Measured on 512 8-bit MNIST-generator signals (one
thread, AVX-512 bfloat16 CPU) the Jacobian's product is 5x faster in bfloat16 than in float32,
and every signal's z SNR is the float32 step's to 0.01 dB; the acceptance test stays on the
float64 network.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
from torch import Tensor

from geninv.model.activations import Activation
from geninv.model.generator import Generator
from geninv.model.layer_ops import apply
from geninv.solvers.measurement import Measurement
from geninv.solvers.network import AffineCache, FrozenNetwork, hidden_layers, support_affine
from geninv.solvers.refine import gauss_newton_refine, network_fit

__all__ = ["support_refine", "bank_refine", "prior_bank", "hessian_dtype", "network_state", "statistical_decrease"]


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
    hess_dtype: torch.dtype | None = None,
    cg_iter: int = 8,
    cg_tol: float = 1e-4,
    step_callback: Callable[[int, Tensor, Tensor], bool] | None = None,
    give_up: tuple[int, Callable[[Tensor, Tensor], Tensor]] | None = None,
    acc_dtype: torch.dtype = torch.float64,
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
        Precision of the supports' read and of the Gauss-Newton products (float32 for float32
        data); the residual, the gradient and the normal equations' solve are in float64, and
        every step is accepted or rejected on the true network in float64.
    hess_dtype : torch.dtype, optional
        Precision of the Jacobian that forms the Gauss-Newton matrix (default
        :func:`hessian_dtype`: bfloat16 for float32 data where the device multiplies it natively,
        else ``jac_dtype``). Where it is below ``jac_dtype`` that matrix preconditions
        conjugate-gradient iterations on the exact one.
    cg_iter, cg_tol : int, float
        Those iterations per step: at most ``cg_iter`` (default 8), stopping once every sample's
        preconditioned residual is below ``cg_tol`` (default ``1e-4``) times its start. On 512
        8-bit MNIST-generator signals a fresh bfloat16 matrix lowers the residual about 100-fold
        per iteration, so three suffice, and every z SNR equals the float32 step's to 0.004 dB.
    step_callback : callable, optional
        ``step_callback(k, z, objective)`` after every step ``k`` (1, 2, ...) with the batch's
        ``z`` (B, n_0) and ``F`` (B,); returning True stops with what it has.
    give_up : (int, callable), optional
        ``(after, poor)``: from step ``after`` on, the samples still iterating for which
        ``poor(rows, z[rows])`` (rows: their indices in the batch) is True stop there, not converged
        (the default method stops fits that no noise level explains, whose last steps only creep
        along a region boundary, and searches around them instead).
    acc_dtype : torch.dtype
        Precision of the network passes of the residual, the gradient and the acceptance test
        (default float64). A search that only ranks where its steps lead can take ``jac_dtype``
        (float32 passes cost about a third of float64 ones on CPU); ``objective`` is then as
        accurate as that precision.

    Returns
    -------
    z : Tensor (B, n_0), float64
    objective : Tensor (B,), float64, ``F(z)`` on the true network
    n_iter : Tensor (B,), int64
    converged : Tensor (B,), bool

    Notes
    -----
    The step of :func:`geninv.solvers.hybrid.gauss_newton_refine` (same damping rule, same
    acceptance test, so ``F`` never increases) with ``K = A diag(phi'(a)) J``: the residual
    ``r`` and gradient ``g = K^T r + gamma z`` by a forward and a backward pass (in ``acc_dtype``,
    float64 by default) through the network with the supports frozen, ``H = K^T K`` from ``J`` kept per sample in
    ``hess_dtype`` (rebuilt only for the samples whose supports changed; ``H`` only where ``J`` or
    ``phi'(a)`` changed), and the damped system
    ``(H + gamma I + d s I) dz = -g`` solved by a batched Cholesky factorization in float64. With
    ``hess_dtype`` below ``jac_dtype`` (bfloat16: relative rounding ``4e-3`` of ``J``, which on an
    ill-conditioned ``H`` can change the step completely; ``K^T K`` itself is formed in
    ``jac_dtype``) that factor preconditions conjugate-gradient iterations on the exact matrix
    (``cg_iter``, ``cg_tol``), whose product ``K^T K v``
    costs a forward and a backward pass in ``jac_dtype`` (``2 sum_i n_i n_{i-1}``, against
    ``sum_i n_i n_{i-1} n_0`` for ``J``). Since ``g`` is exact, the step's fixed point is stationarity in
    ``acc_dtype`` whatever ``H``'s precision.
    """
    G64 = G.to(dtype=torch.float64) if G.dtype != torch.float64 else G
    Gw = G.to(dtype=jac_dtype) if G.dtype != jac_dtype else G
    Ga = G64 if acc_dtype == torch.float64 else Gw if acc_dtype == jac_dtype else G.to(dtype=acc_dtype)
    phi = G64.output_activation
    f64 = torch.float64
    y = y.to(f64)
    z = z0.to(f64).clone()
    B, n0 = z.shape
    dev = z.device
    gam = torch.as_tensor(gamma, dtype=f64, device=dev).flatten()
    gam = gam.expand(B).clone() if gam.numel() == 1 else gam.clone()
    obj = network_fit(Ga, y.to(acc_dtype), z.to(acc_dtype), meas, gam.to(acc_dtype)).to(f64)
    n_iter = torch.zeros(B, dtype=torch.int64, device=dev)
    converged = torch.zeros(B, dtype=torch.bool, device=dev)
    y_obs = meas.observed(y)
    floor = 0.5 * (64 * torch.finfo(acc_dtype).eps * y_obs.norm(dim=1)) ** 2
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
    hd = hessian_dtype(jac_dtype, dev) if hess_dtype is None else hess_dtype
    cache = AffineCache(G64, B, hd)
    precondition = hd != jac_dtype and cg_iter > 0
    # The network at the current z (supports, output pre-activation), carried from the
    # acceptance test's forward pass; and the Gauss-Newton matrix, formed again only where J
    # or phi'(a) changed.
    sups_all, a_all = network_state(Ga, z.to(acc_dtype))
    H_all = torch.zeros(B, n0, n0, dtype=f64, device=dev)
    q_all = torch.full_like(a_all, math.nan)
    for k in range(max_iter):
        if idx.numel() == 0:
            break
        zb, yb, gb = z[idx], y[idx], gam[idx]
        mb = meas.subset(idx)
        sups = [x[idx] for x in sups_all]
        # The residual and the gradient in float64 on the network with these supports: the
        # step's fixed point is then float64 stationarity, whatever the Hessian's precision.
        a = a_all[idx]
        r = mb.apply(phi(a)) - yb
        q = phi.derivative(a)
        g = FrozenNetwork(Ga, sups, acc_dtype).adjoint(q * mb.adjoint(r)).to(f64) + gb[:, None] * zb
        built = cache.refresh(idx, sups, lambda s, k: support_affine(G64, s, k, dtype=hd)[0])
        new_h = built | (q != q_all[idx]).any(dim=1)
        if bool(new_h.any()):
            jh = new_h.nonzero().squeeze(1)
            H_all[idx[jh]] = _gauss_newton_matrix(cache.J, idx[jh], mb.subset(jh), q[jh], jac_dtype)
            q_all[idx[jh]] = q[jh]
        H = H_all[idx] + gb[:, None, None] * eye
        sc = H.diagonal(dim1=1, dim2=2).mean(dim=1).clamp_min(torch.finfo(f64).tiny)
        Hd = H + (damp[idx] * sc)[:, None, None] * eye
        if precondition:
            # The bfloat16 matrix only preconditions conjugate gradients on the exact damped
            # Gauss-Newton matrix (its products through the network, no Jacobian formed), so the
            # step is the exact matrix's; where rounding left it indefinite it is shifted.
            dz = _preconditioned_step(Gw, mb, sups, q, gb + damp[idx] * sc, _spd_factor(Hd, sc), g, cg_iter,
                                      cg_tol, jac_dtype)
        else:
            L, info = torch.linalg.cholesky_ex(Hd)
            if bool((info != 0).any()):
                dz = -torch.linalg.lstsq(Hd, g.unsqueeze(-1)).solution.squeeze(-1)
            else:
                dz = -torch.cholesky_solve(g.unsqueeze(-1), L).squeeze(-1)
        z_new = zb + dz
        sups_new, a_new = network_state(Ga, z_new.to(acc_dtype))
        o_new = _fit_from(phi, mb, yb, a_new, z_new, gb)
        obj_old = obj[idx]
        acc = (o_new <= obj_old) & torch.isfinite(o_new)
        z[idx] = torch.where(acc[:, None], z_new, zb)
        obj[idx] = torch.where(acc, o_new, obj_old)
        ia = idx[acc]
        a_all[ia] = a_new[acc]
        for s_all, s_new in zip(sups_all, sups_new):
            s_all[ia] = s_new[acc]
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
        if give_up is not None and k + 1 >= give_up[0] and idx.numel():
            idx = idx[~give_up[1](idx, z[idx])]
        if step_callback is not None and step_callback(k + 1, z, obj):
            break
    return z, obj, n_iter, converged


def statistical_decrease(n0: int, m: int) -> float:
    """The ``rel_decrease`` of :func:`support_refine` that stops a noisy fit at the noise level:
    ``1e-2 n_0 / (m - n_0)``. Near the right latent ``F ~ sigma^2 (m - n_0) / 2``, so a step gaining
    less than this fraction of ``F`` gains under a hundredth of the Oracle's expected excess
    ``n_0 sigma^2 / 2``; what is left then changes ``||K (z_hat - z)||`` by about a tenth of its size
    (0.04 dB of z SNR)."""
    return 1e-2 * n0 / max(1, m - n0)


def network_state(G64: Generator, z: Tensor) -> tuple[list[Tensor], Tensor]:
    """The hidden supports ``[x_i > 0]`` and the output pre-activation ``a`` (B, n) of the network at ``z``
    (in ``z``'s and the generator's dtype)."""
    xs = hidden_layers(G64, z)
    return [x > 0 for x in xs], apply(G64.maps[-1], xs[-1] if xs else z, G64.biases[-1])


def _fit_from(phi: Activation, meas: Measurement, y: Tensor, a: Tensor, z: Tensor, gamma: Tensor) -> Tensor:
    """``1/2 ||A phi(a) - y||^2 + gamma/2 ||z||^2`` (B,): the objective from the pre-activation."""
    val = 0.5 * (meas.apply(phi(a)) - y).square().sum(dim=1)
    return val + 0.5 * gamma * z.square().sum(dim=1)


def hessian_dtype(jac_dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """The precision of the Jacobian that forms the Gauss-Newton matrix of :func:`support_refine`:
    bfloat16 for float32 data where the device multiplies bfloat16 matrices natively, else ``jac_dtype``."""
    if jac_dtype != torch.float32:
        return jac_dtype
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else jac_dtype
    if device.type == "cpu":
        return torch.bfloat16 if _cpu_bf16() else jac_dtype
    return jac_dtype


@functools.cache
def _cpu_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - a build without oneDNN
        return False


def _gauss_newton_product(net: FrozenNetwork, meas: Measurement, q: Tensor, v: Tensor) -> Tensor:
    """``K^T K v`` (B, n_0) in float64, ``K = A diag(q) J`` of the frozen-support network ``net``, by one
    forward and one backward pass in ``net.dtype`` (no ``J`` formed)."""
    qd = q.to(net.dtype)
    Kv = meas.apply(qd * net.forward(v))
    return net.adjoint(qd * meas.adjoint(Kv)).to(torch.float64)


def _preconditioned_step(Gw: Generator, meas: Measurement, supports: list[Tensor], q: Tensor, shift: Tensor,
                         L: Tensor, g: Tensor, iters: int, tol: float, dtype: torch.dtype) -> Tensor:
    """``dz`` (B, n_0) from ``iters`` conjugate-gradient iterations on ``(K^T K + shift I) dz = -g``,
    preconditioned by the Cholesky factor ``L`` of an approximation of that matrix."""
    net = FrozenNetwork(Gw, supports, dtype)

    def apply(v: Tensor) -> Tensor:
        return _gauss_newton_product(net, meas, q, v) + shift[:, None] * v

    def precond(v: Tensor) -> Tensor:
        return torch.cholesky_solve(v.unsqueeze(-1), L).squeeze(-1)

    return _pcg(apply, precond, -g, iters, tol)


def _spd_factor(H: Tensor, scale: Tensor) -> Tensor:
    """The Cholesky factor of ``H + t_b scale_b I`` (B, k, k), ``t_b`` 0 where ``H_b`` is positive
    definite, else the smallest of ``1e-4, 1e-3, ..., 1e4`` that makes it so (the identity beyond)."""
    L, info = torch.linalg.cholesky_ex(H)
    eye = torch.eye(H.shape[-1], dtype=H.dtype, device=H.device)
    t = 1e-4
    while bool((info != 0).any()) and t <= 1e4:
        bad = (info != 0).nonzero().squeeze(1)
        Lb, ib = torch.linalg.cholesky_ex(H[bad] + (t * scale[bad])[:, None, None] * eye)
        L[bad], info[bad] = Lb, ib
        t *= 10.0
    # Nothing left to precondition with (a matrix with no finite factor): plain conjugate gradients.
    L[info != 0] = eye
    return L


def _pcg(apply: Callable[[Tensor], Tensor], precond: Callable[[Tensor], Tensor], b: Tensor, iters: int,
         tol: float = 0.0) -> Tensor:
    """At most ``iters`` preconditioned conjugate-gradient iterations on the batched s.p.d. systems
    ``apply(x) = b`` (B, k) from 0 (each sample's scalars its own; a converged sample stays),
    stopped once every ``r^T P^{-1} r`` is below ``tol^2`` times its start (0: never)."""
    x = torch.zeros_like(b)
    r = b
    zc = precond(r)
    p = zc
    rz = (r * zc).sum(dim=1)
    stop = tol**2 * rz
    for _ in range(iters):
        if bool((rz <= stop).all()):
            break
        Ap = apply(p)
        pAp = (p * Ap).sum(dim=1)
        al = torch.where(pAp > 0, rz / pAp.clamp_min(torch.finfo(pAp.dtype).tiny), torch.zeros_like(rz))
        x = x + al[:, None] * p
        r = r - al[:, None] * Ap
        zc = precond(r)
        rz_new = (r * zc).sum(dim=1)
        be = torch.where(rz > 0, rz_new / rz.clamp_min(torch.finfo(rz.dtype).tiny), torch.zeros_like(rz))
        rz = rz_new
        p = zc + be[:, None] * p
    return x


def _gauss_newton_matrix(J_all: Tensor, rows: Tensor, meas: Measurement, q: Tensor, jac_dtype: torch.dtype, *,
                         chunk: int = 16) -> Tensor:
    """``K^T K`` (b, n_0, n_0) in float64, ``K = A diag(q) J`` with ``J = J_all[rows]`` (b, n, n_0),
    formed in ``jac_dtype`` (a bfloat16 ``J`` promotes in the product, so ``K^T K`` is not
    rounded to bfloat16) ``chunk`` samples at a time (small temporaries, reused)."""
    b, n0 = rows.numel(), J_all.shape[2]
    H = torch.empty(b, n0, n0, dtype=jac_dtype, device=J_all.device)
    w = q if meas.kind != "diag" else q * meas.w.to(q.dtype)  # type: ignore[union-attr]
    w = w.to(jac_dtype)
    for lo in range(0, b, chunk):
        hi = min(b, lo + chunk)
        J = J_all[rows[lo:hi]]
        if meas.kind == "operator":
            K = meas.apply_cols(w[lo:hi, :, None] * J.to(jac_dtype))
        else:
            K = w[lo:hi, :, None] * J
        torch.bmm(K.transpose(1, 2), K, out=H[lo:hi])
    return H.to(torch.float64)


def bank_refine(G64: Generator, y64: Tensor, meas: Measurement, idx: Tensor, gam: Tensor, starts: int,
                sigma_z: float, seed: int, max_iter: int, jac_dtype: torch.dtype, *, bank: int = 4096,
                probe_iter: int | tuple[int, ...] = 6, finalists: int = 1, search: bool = False,
                give_up: tuple[int, Callable[[Tensor, Tensor], Tensor]] | None = None,
                chunk: int = 1024) -> tuple[Tensor, Tensor, Tensor]:
    """The whole-network refinement from ``starts`` starts for each sample ``idx``; per sample the
    start with the lowest objective (weight ``gam`` (len(idx),) on the prior term).

    The starts are the ``starts`` latents of a seeded bank of ``bank`` draws ``z ~ N(0, sigma_z^2 I)``
    whose images fit the sample best (``||A (G(z_b) - y)||``: one network pass per bank entry,
    shared by every sample, and two products with the batch), so that the costly refinement
    only runs from starts already near the data. The starts are
    probed in rounds of ``probe_iter`` steps (an int: one round; a tuple: one round per entry,
    each keeping the better half of the starts, the last the ``finalists`` lowest), and the
    ``finalists`` continue to ``max_iter`` (default 1: on 64 real MNIST digits and 64
    compressed-sensing signals 2 gave the same median and 10 % quantile at a fifth more time).
    Default probing, one round of 6 steps: on 256 real MNIST digits (6 starts) two halving rounds of
    3 steps (6 -> 3 -> 1) lowered the median projection SNR by 0.10 dB (12.75 to 12.65 dB; on 64 of
    them it was the same, at 10 % less time), and ``(2, 2, 2)`` or one round of 3 or 4 steps by 0.18
    dB on 64 (a wrong start kept). With ``search`` the probing steps solve with the bfloat16 factor
    alone and test their steps on the network in ``jac_dtype`` (:func:`support_refine` with
    ``cg_iter=0``, ``acc_dtype=jac_dtype``): for fits that a search refines further (the default
    method's signals outside the range) this takes a fifth off the probing's time, but on signals
    at 20 dB input SNR it ranked the starts of 5 of 256 worse (by 0.09 to 1.9 dB), so a fit that
    ends here probes with the exact steps. ``give_up`` (:func:`support_refine`, with the rows of
    ``idx``) stops finalists early.

    Returns
    -------
    z : Tensor (len(idx), n_0), float64
        The kept start's refined latent.
    converged : Tensor (len(idx),), bool
    n_iter : Tensor (len(idx),), int64
        The steps summed over the starts.
    """
    n, n0 = idx.numel(), G64.latent_dim
    dev = y64.device
    k = min(starts, bank)
    zb = prior_bank(bank, n0, seed, sigma_z, y64)
    Gw = G64.to(dtype=jac_dtype) if jac_dtype != torch.float64 else G64
    P = Gw.forward_unchecked(zb.to(jac_dtype))  # (bank, n)
    yi = y64[idx].to(jac_dtype)
    if meas.kind == "operator":
        AP = meas.op.forward(P.to(y64.dtype)).to(jac_dtype)  # type: ignore[union-attr]
        d = (AP.square().sum(dim=1)[None] - 2.0 * yi @ AP.T)
    elif meas.kind == "diag":
        w = meas.w[idx].to(jac_dtype)  # type: ignore[index]
        d = (w.square() @ P.square().T - 2.0 * (w.square() * yi) @ P.T)
    else:
        d = (P.square().sum(dim=1)[None] - 2.0 * yi @ P.T)
    top = d.topk(k, dim=1, largest=False).indices  # (n, k)
    z0_all = zb[top]  # (n, k, n_0)
    z0_all = z0_all.reshape(n * k, n0)
    rel = statistical_decrease(n0, y64.shape[1])
    z_best = torch.empty(n, n0, dtype=torch.float64, device=dev)
    conv_best = torch.empty(n, dtype=torch.bool, device=dev)
    it_sum = torch.zeros(n, dtype=torch.int64, device=dev)
    fin = min(finalists, k)
    per = max(1, chunk // k)
    for lo in range(0, n, per):
        hi = min(n, lo + per)
        c = hi - lo
        rows = torch.arange(c, device=dev)
        rep = idx[lo:hi].repeat_interleave(k)
        zr, conv, sel = z0_all[lo * k:hi * k], torch.zeros(c * k, dtype=torch.bool, device=dev), None
        alive = torch.arange(c * k, device=dev)  # rows of zr still probed, (c, w) per sample
        w = k
        for steps, keep in _schedule(probe_iter, k, fin):
            rep = idx[lo:hi].repeat_interleave(w)
            za, oa, ita, ca = support_refine(G64, y64[rep], meas.subset(rep), zr[alive],
                                             gamma=gam[lo:hi].repeat_interleave(w), max_iter=min(steps, max_iter),
                                             rel_decrease=rel, jac_dtype=jac_dtype,
                                             **(dict(cg_iter=0, acc_dtype=jac_dtype) if search else {}))
            zr = zr.clone()
            zr[alive], conv[alive] = za, conv[alive] | ca
            it_sum[lo:hi] += ita.view(c, w).sum(dim=1)
            oa = torch.where(torch.isfinite(oa), oa, torch.full_like(oa, math.inf)).view(c, w)
            alive = alive.view(c, w).gather(1, oa.topk(keep, dim=1, largest=False).indices).reshape(-1)
            w = keep
        sel = alive
        rep_f = idx[lo:hi].repeat_interleave(fin)
        gu = None
        if give_up is not None:
            gu = (give_up[0], lambda rows, zz, _lo=lo: give_up[1](_lo + rows.div(fin, rounding_mode="floor"), zz))
        zf, of, itf, cf = support_refine(G64, y64[rep_f], meas.subset(rep_f), zr[sel],
                                         gamma=gam[lo:hi].repeat_interleave(fin), max_iter=max_iter,
                                         rel_decrease=rel, jac_dtype=jac_dtype, give_up=gu)
        it_sum[lo:hi] += itf.view(c, fin).sum(dim=1)
        of = torch.where(torch.isfinite(of), of, torch.full_like(of, math.inf)).view(c, fin)
        best = of.argmin(dim=1)
        z_best[lo:hi] = zf.view(c, fin, n0)[rows, best]
        conv_best[lo:hi] = (cf | conv[sel]).view(c, fin)[rows, best]
    return z_best, conv_best, it_sum


def prior_bank(bank: int, n0: int, seed: int, sigma_z: float, like: Tensor) -> Tensor:
    """The seeded bank of ``bank`` prior draws ``z ~ N(0, sigma_z^2 I)`` (bank, n_0) that the default
    method's starts are chosen from (:func:`bank_refine`, :func:`geninv.solvers.hidden_fit.nearest_bank_latent`),
    on ``like``'s device and dtype."""
    from geninv.solvers.gradient_setup import initial_latent

    return sigma_z * initial_latent(bank, n0, seed + 1, like)


def _schedule(probe_iter: int | tuple[int, ...], k: int, fin: int) -> list[tuple[int, int]]:
    """The probing rounds of :func:`bank_refine` as ``(steps, kept after it)``: one round of
    ``probe_iter`` steps keeping ``fin``; a tuple ``(p_1, ..., p_r)``: round ``j`` runs ``p_j``
    steps and keeps about ``k / 2^j`` (the last keeps ``fin``)."""
    ps = (probe_iter,) if isinstance(probe_iter, int) else tuple(probe_iter)
    out, w = [], k
    for j, p in enumerate(ps):
        w = fin if j == len(ps) - 1 else max(fin, -(-w // 2))
        out.append((p, w))
    return out

"""Gradient baselines (docs/method.md sec. 7): the paper's momentum gradient descent, and Adam with random restarts.

Both minimize the data fit ``f(z) = 1/2 ||A (G(z) - y)||^2`` directly over the latent ``z``, with
``A`` the measurement operator (identity when ``measure`` is None; a 0/1 pixel mask; or, for a
general operator, ``f(z) = 1/2 ||A G(z) - y||^2`` with ``y`` the (B, m) measurements). The gradient is written by
hand, for the whole batch at once with matrix-matrix products::

    a_i = W_i x_{i-1} + b_i,  x_i = relu(a_i)  (x_0 = z),  a_{L+1} = W_{L+1} x_L + b_{L+1}
    r   = A (phi(a_{L+1}) - y)                                   (B, m)
    g_{L+1} = phi'(a_{L+1}) * (A^T r),   g_i = (g_{i+1} W_{i+1}) * [a_i > 0],   grad f = g_1 W_1

Generators with other hidden activations (leaky ReLU, softplus, GELU, ... read by
``Generator.from_torch``) and any differentiable callable ``G(z)`` given with ``latent_dim=``
(e.g. a torch module that is not a chain) use the same iterations with the gradient from
autograd and ``J v`` / ``J^T u`` from ``torch.func``; there no certificate is available.

Samples are independent (the batch loss is a sum of per-sample losses), so every row of the
gradient is that sample's own gradient. The data fit and its gradient live in
:mod:`geninv.solvers.data_fit`, the argument checks in :mod:`geninv.solvers.gradient_setup`.
Finished samples are dropped from the working batch at each check, so they cost nothing.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor

from geninv._validate import as_batch
from geninv.exceptions import InputError, ShapeError
from geninv.model.generator import Generator
from geninv.operators import Operator
from geninv.solvers.data_fit import DataFit, lipschitz_bound
from geninv.solvers.gradient_setup import LatentMap, check_float, check_int, initial_latent, latent_size, setup_fit
from geninv.solvers.loop import Callback
from geninv.solvers.packing import pack_result
from geninv.solvers.result import SolveResult

__all__ = ["gd", "adam", "initial_latent"]


def _stop_requested(callback: Callback | None, stage: str, k: int, z: Tensor, objective: Tensor) -> bool:
    """Call ``callback(k, state)`` (the convention of every method) and say whether it asked to stop."""
    if callback is None:
        return False
    return bool(callback(k, {"stage": stage, "x": z, "z": z, "objective": objective}))


def _drop_finished(keep: Tensor, fit: DataFit, state: tuple[Tensor, ...]) -> tuple[DataFit, tuple[Tensor, ...]]:
    """The working batch without its finished samples (``keep`` False): the fit's data and every state tensor."""
    if bool(keep.all()):
        return fit, state
    idx = keep.nonzero().squeeze(1)
    return fit.select(idx), tuple(t[idx] for t in state)


def _outcome_notes(converged: Tensor, diverged: Tensor, max_iter: int) -> list[str]:
    """What the warning of a gradient method says: samples that diverged, samples left at ``max_iter``."""
    notes = []
    n_bad = int(diverged.sum())
    if n_bad:
        notes.append(f"{n_bad} of {diverged.numel()} sample(s) produced NaN/Inf and were stopped "
                     "(converged=False, last finite iterate returned)")
    n_left = int((~converged & ~diverged).sum())
    if n_left:
        notes.append(f"{n_left} of {converged.numel()} sample(s) did not converge within max_iter={max_iter} "
                     "(see result.converged)")
    return notes


def _pack(method: str, fit: DataFit, z: Tensor, converged: Tensor, diverged: Tensor, n_iter: Tensor,
          hist_f: list[Tensor], norm_ay: Tensor, t0: float, info: dict[str, Any], max_iter: int) -> SolveResult:
    """The gradient method's result (:func:`geninv.solvers.packing.pack_result`): layers and supports of
    ``G(z)``, the objective and relative residual histories (T, B)."""
    layers = fit.hidden(z)
    objective = torch.stack(hist_f)
    residual = torch.sqrt(2 * objective.clamp_min(0)) / norm_ay.clamp_min(torch.finfo(z.dtype).tiny)
    if fit.certificate is not None:
        info["certificate"] = fit.certificate
    return pack_result(method, z, layers, [x > 0 for x in layers], converged, n_iter,
                       {"objective": objective, "residual": residual}, t0, info, z.dtype,
                       notes=_outcome_notes(converged, diverged, max_iter), unconverged_hint=None,
                       warn=not info["stopped_by_callback"], stacklevel=4)


# -- gradient descent ---------------------------------------------------------------------------
def gd(
    G: Generator | LatentMap,
    y: Tensor,
    *,
    measure: Operator | None = None,
    max_iter: int = 3000,
    tol: float = 1e-7,
    lr: float = 1.0,
    momentum: float = 0.9,
    decay: float | None = 2000.0,
    seed: int = 0,
    z0: Tensor | None = None,
    check_every: int = 25,
    callback: Callback | None = None,
    latent_dim: int | None = None,
) -> SolveResult:
    """Invert ``y = G(z)`` by gradient descent with heavy-ball momentum (the paper's baseline).

    Minimizes ``f(z) = 1/2 ||A (y - G(z))||^2`` per sample from a random start.

    Parameters
    ----------
    G : Generator or callable
        The generator (moved to ``y``'s device and dtype), with any hidden activations; or any
        differentiable callable mapping latents (B, n_0) to signals (B, ...), e.g. a torch
        module, given with ``latent_dim`` (no certificate is available then:
        ``info["certificate"]`` says so).
    y : Tensor of shape (B, n) or (B, *G.output_shape), or (B, m) with a general operator
        Signals (for a pixel mask, hidden entries are ignored); with an operator other than
        Identity/Mask, the measurements ``A G(z)`` (the convention of :func:`geninv.invert`),
        and the objective is ``1/2 ||y - A G(z)||^2``.
    measure : operator, optional
        ``A`` with ``shape`` (m, n), ``forward``, ``adjoint``, ``norm`` (:mod:`geninv.operators`);
        None is the identity. A :class:`~geninv.operators.Mask` may differ per sample; any other
        operator must act identically on every sample.
    max_iter : int
        Iterations per sample.
    tol : float
        A sample stops (``converged=True``) when its objective decreased by less than ``tol``
        relative over the last ``check_every`` iterations (counting only windows in which some
        step was accepted), reached machine precision (``16 eps ||A y||``), or its backtracking
        shrank the gradient step below ``4 eps ||z||`` (a numerically stationary point).
    lr : float
        Base step in units of ``1 / L_b``, with ``L_b`` the sample's local Lipschitz constant of
        the gradient, ``||A J_G(z_0)||_2^2``, estimated at the start by 20 power iterations.
        The default 1.0 was chosen from measurements on random [20, n_1, 600] tanh (n_1 = 50, 200,
        1000) and [20, 128, 392, 784] PLU generators, float64, batch 32: 0.5 to 3 all converge; 1.0
        needs the fewest iterations on the well-posed cases (125-225 to machine precision) and
        2.0 is slightly better on the ill-conditioned n_1 = 50.
    momentum : float in [0, 1)
        Heavy-ball coefficient ``beta`` (the paper: 0.9).
    decay : float or None
        Step decay ``lr_k = lr / (L_b (1 + k / decay))``; None keeps the step constant. A faster
        decay (100 to 500) measurably slows the ill-conditioned cases; 2000 costs nothing.
    seed : int
        Seed of the random start ``z_0 ~ N(0, I)`` (drawn on the CPU in float64, so identical on
        every device); ignored when ``z0`` is given.
    z0 : Tensor of shape (B, n_0), optional
        Starting point.
    check_every : int
        Iterations between stopping checks and history records (the only host-device syncs).
    callback : callable, optional
        ``callback(k, state)`` at every check (``k`` the iteration count), ``state`` a dict with
        ``"stage"`` (``"gd"``), ``"x"`` and ``"z"`` (the batch's current latents (B, n_0), the same
        tensor) and ``"objective"`` (B,); returning True stops every sample (``converged=False``
        for those not done, ``info["stopped_by_callback"] = True``).
    latent_dim : int, optional
        ``n_0``, required when ``G`` is a callable (for a Generator: None or its own).

    Returns
    -------
    SolveResult
        ``z`` (B, n_0); ``layers`` the hidden layers of ``G(z)``; ``supports`` their ``x > 0``;
        ``history["objective"]`` and ``history["residual"]`` (relative: ``||A(G(z) - y)|| / ||A y||``,
        or ``||A G(z) - y|| / ||y||`` for a general operator),
        each (T, B), recorded at the start and every ``check_every`` iterations (a stopped sample
        keeps its final value); ``info`` holds ``lipschitz`` (B,), ``rejected`` (B,) steps,
        ``diverged`` (B,) and the options used.

    Notes
    -----
    Heavy-ball (Polyak) momentum with a function-value restart and backtracking::

        v_{k+1} = beta v_k - (lr / (L_b (1 + k / decay))) s_b grad f(z_k)
        z_{k+1} = z_k + v_{k+1}      if f(z_k + v_{k+1}) <= f(z_k)   (accept)
        z_{k+1} = z_k, v_{k+1} = 0   otherwise                      (reject: restart the momentum)

    and when a step with zero momentum (a plain gradient step) is rejected, the sample's
    backtracking factor ``s_b`` (initially 1) is halved. The objective therefore never increases,
    from the first iteration on, whatever the step schedule; the decaying step and the
    backtracking make the plain gradient step a descent step eventually (for an ``f`` with
    ``L``-Lipschitz gradient near ``z_k``, any step ``<= 1/L``), which is the convergence
    condition. The restart also removes the oscillations of heavy-ball momentum: measured on
    random generators it reaches 300 dB several times faster than plain heavy-ball (O'Donoghue
    and Candes, 2015, for the same idea with Nesterov's method).

    Examples
    --------
    >>> import torch, geninv
    >>> G = geninv.random_generator([20, 200, 600], seed=0, dtype=torch.float64)
    >>> z, y = G.sample(4, seed=1)
    >>> res = gd(G, y, max_iter=1000)
    >>> bool((geninv.snr(z, res.z) > 60).all())
    True
    """
    t0 = time.perf_counter()
    Gl, yy, fit, op_norm = setup_fit(G, y, measure, "gd", latent_dim)
    y = yy
    fit_full = fit
    max_iter = check_int(max_iter, "max_iter", 1)
    check_every = check_int(check_every, "check_every", 1)
    tol = check_float(tol, "tol", positive=False)
    lr = check_float(lr, "lr")
    beta = check_float(momentum, "momentum", positive=False, upper=1.0)
    if decay is not None:
        decay = check_float(decay, "decay")
    seed = check_int(seed, "seed", 0)
    B, n0 = y.shape[0], latent_size(Gl, latent_dim)
    if z0 is None:
        z = initial_latent(B, n0, seed, y)
    else:
        z = as_batch(z0, n0, "z0").detach().to(y.device, y.dtype).clone()
        if z.shape[0] != B:
            raise ShapeError(f"z0: expected a batch of {B} latents to match y, received shape {tuple(z.shape)}")
    dt, dev = y.dtype, y.device
    with torch.no_grad():
        L_bound = lipschitz_bound(Gl, op_norm)
        lip = fit.lipschitz(z)
        # A vanishing local constant (dead ReLUs at z_0) would give a huge first step: floor it.
        step = lr / lip.clamp_min(max(1e-6 * L_bound, torch.finfo(dt).tiny))
        f, g = fit.value_grad(z)
        floor = fit.floor()
        norm_ay = torch.sqrt(2 * floor) / (16 * torch.finfo(dt).eps)

        z_out, f_out = z.clone(), f.clone()
        conv_out = torch.zeros(B, dtype=torch.bool, device=dev)
        bad_out = torch.zeros(B, dtype=torch.bool, device=dev)
        n_iter = torch.zeros(B, dtype=torch.int64, device=dev)
        rej_out = torch.zeros(B, dtype=torch.int64, device=dev)
        hist_f = [f_out.clone()]

        ids = torch.arange(B, device=dev)
        v = torch.zeros_like(z)
        plain = torch.ones(B, dtype=torch.bool, device=dev)  # the next step has no momentum
        rej = torch.zeros(B, dtype=torch.int64, device=dev)
        f_check = f.clone()
        k = 0
        stopped_by_callback = False
        while True:
            moved = torch.zeros_like(plain)
            for _ in range(min(check_every, max_iter - k)):
                k += 1
                lr_k = 1.0 if decay is None else 1.0 / (1.0 + k / decay)
                v_new = torch.addcmul(v * beta, step[:, None], g, value=-lr_k)
                z_try = z + v_new
                f_try, g_try = fit.value_grad(z_try)
                acc = f_try <= f  # False for NaN: a non-finite trial is rejected like an increase
                step = torch.where(acc | ~plain, step, 0.5 * step)
                a = acc[:, None]
                z = torch.where(a, z_try, z)
                v = torch.where(a, v_new, 0.0)
                f = torch.where(acc, f_try, f)
                g = torch.where(a, g_try, g)
                plain = ~acc
                moved |= acc
                rej += (~acc).to(torch.int64)
            # -- check (one host sync per check_every iterations) --
            bad = ~torch.isfinite(f) | ~torch.isfinite(g).all(dim=1)
            rel = (f_check - f) / f_check.clamp_min(torch.finfo(dt).tiny)
            # A window of rejected steps says nothing about progress. A sample whose plain gradient
            # step no longer changes z at working precision has stalled: a numerically stationary point.
            stalled = plain & (step * g.norm(dim=1) <= 4 * torch.finfo(dt).eps * z.norm(dim=1))
            conv = ~bad & (((rel <= tol) & moved) | (f <= floor[ids]) | stalled)
            z_out[ids], f_out[ids], n_iter[ids], rej_out[ids] = z, f, k, rej
            conv_out[ids], bad_out[ids] = conv, bad
            hist_f.append(f_out.clone())
            if _stop_requested(callback, "gd", k, z_out.clone(), f_out.clone()):
                stopped_by_callback = True
                break
            keep = ~(conv | bad)
            if k >= max_iter or not bool(keep.any()):
                break
            fit, (ids, z, v, f, g, step, plain, rej) = _drop_finished(keep, fit, (ids, z, v, f, g, step, plain, rej))
            f_check = f.clone()
    info: dict[str, Any] = {
        "lr": lr, "momentum": beta, "decay": decay, "seed": seed, "check_every": check_every,
        "variant": "heavy-ball with function-value restart and backtracking",
        "lipschitz": lip, "rejected": rej_out, "diverged": bad_out, "stopped_by_callback": stopped_by_callback,
    }
    return _pack("gd", fit_full, z_out, conv_out, bad_out, n_iter, hist_f, norm_ay, t0, info, max_iter)


# -- Adam with random restarts ------------------------------------------------------------------
def adam(
    G: Generator | LatentMap,
    y: Tensor,
    *,
    measure: Operator | None = None,
    latent_dim: int | None = None,
    restarts: int = 4,
    seed: int = 0,
    max_iter: int = 3000,
    tol: float = 1e-7,
    check_every: int = 25,
    callback: Callback | None = None,
    lr: float = 0.1,
    decay: float | None = 500.0,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> SolveResult:
    """Invert ``y = G(z)`` with Adam from several random starts, keeping the best (CSGM-style).

    Parameters
    ----------
    G, y, measure, max_iter, tol, check_every, latent_dim
        As in :func:`gd` (the relative-change test is applied to each restart's best objective).
    restarts : int
        Number of random starts per sample; restart ``r`` starts from ``z_0 ~ N(0, I)`` drawn
        with seed ``seed + r`` (so ``restarts=1, seed=s + r`` reruns restart ``r`` alone). The
        restarts are stacked into the batch dimension and run together.
    lr : float
        Adam's step (in latent units, as Adam's steps are scale-free), decayed as
        ``lr / (1 + k / decay)``; None for ``decay`` keeps it constant. Defaults (0.1, 500) from
        measurements on random [20, n_1, 600] tanh and [20, 128, 392, 784] PLU generators
        (float64, batch 32): about 650 iterations to machine precision where the start lies in the
        right basin; 0.01-0.03 did not reach 100 dB in 3000 iterations on most samples.
    betas, eps : Adam's moment coefficients and denominator guard (Kingma and Ba's defaults).
    seed : int
        Seed of restart 0.
    callback : callable, optional
        ``callback(k, state)`` at every check, ``state`` a dict with ``"stage"`` (``"adam"``),
        ``"x"`` and ``"z"`` (the best-so-far latents over restarts (B, n_0)) and ``"objective"``
        (B,) their objective; returning True stops.

    Returns
    -------
    SolveResult
        ``z`` the best iterate of the best restart (smallest residual), ``layers``/``supports``
        from ``G(z)``; ``converged`` and ``n_iter`` (summed over restarts) per sample;
        ``history`` the best-over-restarts objective and relative residual (T, B), recorded at
        every check;
        ``info["objective_restarts"]``, ``info["n_iter_restarts"]``, ``info["converged_restarts"]``
        (each (restarts, B)) and ``info["best_restart"]`` (B,).

    Notes
    -----
    Per restart and sample, with ``g_k = grad f(z_k)`` (the same hand-written gradient as :func:`gd`)::

        m_k = b1 m_{k-1} + (1 - b1) g_k,   v_k = b2 v_{k-1} + (1 - b2) g_k^2
        z_{k+1} = z_k - lr_k (m_k / (1 - b1^k)) / (sqrt(v_k / (1 - b2^k)) + eps),   lr_k = lr / (1 + k / decay)

    Adam does not decrease ``f`` monotonically, so each restart keeps its best iterate; Adam's
    per-coordinate steps are bounded by about ``lr_k``, and the decaying ``lr_k`` lets the iterates
    settle (no Lipschitz condition is needed for the step, unlike :func:`gd`).

    Examples
    --------
    >>> import torch, geninv
    >>> G = geninv.random_generator([20, 200, 600], seed=0, dtype=torch.float64)
    >>> z, y = G.sample(4, seed=1)
    >>> res = adam(G, y, restarts=2, max_iter=1000)
    >>> res.info["objective_restarts"].shape
    torch.Size([2, 4])
    """
    t0 = time.perf_counter()
    Gl, yy, fit1, _ = setup_fit(G, y, measure, "adam", latent_dim)
    y = yy
    R = check_int(restarts, "restarts", 1)
    max_iter = check_int(max_iter, "max_iter", 1)
    check_every = check_int(check_every, "check_every", 1)
    tol = check_float(tol, "tol", positive=False)
    lr = check_float(lr, "lr")
    if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
        raise InputError(f"betas: expected a pair (b1, b2) in [0, 1), received {betas!r}")
    b1 = check_float(betas[0], "betas[0]", positive=False, upper=1.0)
    b2 = check_float(betas[1], "betas[1]", positive=False, upper=1.0)
    eps = check_float(eps, "eps")
    if decay is not None:
        decay = check_float(decay, "decay")
    seed = check_int(seed, "seed", 0)
    B, n0 = y.shape[0], latent_size(Gl, latent_dim)
    dt, dev = y.dtype, y.device
    N = R * B
    with torch.no_grad():
        z = torch.cat([initial_latent(B, n0, seed + r, y) for r in range(R)])  # restart-major (R*B, n_0)
        fit = fit1.repeat(R)
        floor = fit.floor()
        norm_ay = (torch.sqrt(2 * floor) / (16 * torch.finfo(dt).eps))[:B]

        inf = torch.full((N,), float("inf"), dtype=dt, device=dev)
        z_best_out, f_best_out = z.clone(), inf.clone()
        conv_out = torch.zeros(N, dtype=torch.bool, device=dev)
        bad_out = torch.zeros(N, dtype=torch.bool, device=dev)
        n_iter = torch.zeros(N, dtype=torch.int64, device=dev)
        hist_f: list[Tensor] = []

        ids = torch.arange(N, device=dev)
        m1 = torch.zeros_like(z)
        m2 = torch.zeros_like(z)
        z_best, f_best = z.clone(), inf.clone()
        f_check = inf.clone()
        k = 0
        stopped_by_callback = False
        bad = torch.zeros(N, dtype=torch.bool, device=dev)
        stall = torch.zeros(N, dtype=torch.int64, device=dev)
        while True:
            improved = torch.zeros_like(bad)
            for _ in range(min(check_every, max_iter - k)):
                k += 1
                f, g = fit.value_grad(z)
                better = f < f_best  # False for NaN
                improved |= better
                z_best = torch.where(better[:, None], z, z_best)
                f_best = torch.where(better, f, f_best)
                bad = bad | ~torch.isfinite(f)
                m1.mul_(b1).add_(g, alpha=1 - b1)
                m2.mul_(b2).addcmul_(g, g, value=1 - b2)
                lr_k = lr if decay is None else lr / (1.0 + k / decay)
                denom = (m2 / (1 - b2**k)).sqrt_().add_(eps)
                z = z.addcdiv(m1, denom, value=-lr_k / (1 - b1**k))
            rel = (f_check - f_best) / f_check.clamp_min(torch.finfo(dt).tiny)
            floor_w = floor[ids]
            # Adam is not monotone: ask for two quiet windows (the best improved, by less than tol)
            # before calling it converged; a window without improvement (Adam wandering away from
            # its best, e.g. an absurd step) is no evidence of convergence.
            stall = torch.where(rel > tol, 0, torch.where(improved, stall + 1, stall))
            conv = ~bad & ((stall >= 2) | (f_best <= floor_w))
            z_best_out[ids], f_best_out[ids], n_iter[ids] = z_best, f_best, k
            conv_out[ids], bad_out[ids] = conv, bad
            hist_f.append(f_best_out.view(R, B).min(dim=0).values)
            if callback is not None:
                best_r = f_best_out.view(R, B).argmin(dim=0)
                zb = z_best_out.view(R, B, n0)[best_r, torch.arange(B, device=dev)]
                if _stop_requested(callback, "adam", k, zb, hist_f[-1].clone()):
                    stopped_by_callback = True
                    break
            keep = ~(conv | bad)
            if k >= max_iter or not bool(keep.any()):
                break
            fit, (ids, z, m1, m2, z_best, f_best, bad, stall) = _drop_finished(
                keep, fit, (ids, z, m1, m2, z_best, f_best, bad, stall))
            f_check = f_best.clone()

        f_r = f_best_out.view(R, B)
        best_r = f_r.argmin(dim=0)  # first minimum: ties go to the earliest restart
        cols = torch.arange(B, device=dev)
        z_hat = z_best_out.view(R, B, n0)[best_r, cols]
        conv_r, bad_r, n_r = conv_out.view(R, B), bad_out.view(R, B), n_iter.view(R, B)
        converged = conv_r[best_r, cols]
        diverged = bad_r.all(dim=0)
    info: dict[str, Any] = {
        "lr": lr, "betas": (b1, b2), "eps": eps, "decay": decay, "seed": seed, "restarts": R,
        "check_every": check_every, "best_restart": best_r, "objective_restarts": f_r.clone(),
        "n_iter_restarts": n_r.clone(), "converged_restarts": conv_r.clone(), "diverged": diverged,
        "stopped_by_callback": stopped_by_callback,
    }
    return _pack("adam", fit1, z_hat, converged, diverged & ~converged, n_r.sum(dim=0), hist_f, norm_ay, t0, info,
                 max_iter)

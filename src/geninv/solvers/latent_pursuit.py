"""Latent-Pursuit (docs/method.md sec. 6; the paper's Algorithms 3, 4 and 5)."""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor

from geninv.model.generator import Generator
from geninv.model.layer_ops import apply_t
from geninv.solvers.debias import debias_stage
from geninv.solvers.image_layer import image_problem
from geninv.solvers.linalg import supported_lstsq
from geninv.solvers.loop import StageLog, threshold_support
from geninv.solvers.measurement import Measurement
from geninv.solvers.network import downward
from geninv.solvers.options import PursuitOptions, keyword_options
from geninv.solvers.pursuits import solve_pursuit
from geninv.solvers.relu_output import (
    output_support,
    relu_image_admm,
    relu_image_start,
)
from geninv.solvers.result import SolveResult, finish
from geninv.solvers.spectral import masked_gram_norm
from geninv.solvers.steps import LinearLS
from geninv.solvers.subproblems import auto_lam, fista_layer, ladmm_layer

__all__ = ["latent_pursuit"]


@keyword_options(PursuitOptions, without=(), defaults={"tol": None}, annotations={"tol": "float | None"})
def latent_pursuit(G: Generator, y: Tensor, *, measure: Any = None, mask: Tensor | None = None, **options: Any) -> SolveResult:
    """Invert ``y = A G(z)`` layer by layer from the image back to ``z`` (Latent-Pursuit).

    Parameters
    ----------
    G : Generator
        ``L >= 1`` hidden ReLU layers and an output activation ``phi``.
    y : Tensor of shape (B, n) (or (B, m) for a general ``measure`` of shape (m, n))
        Signals (measurements); device and dtype of the computation follow ``y``.
    measure : operator, optional
        ``geninv.Mask`` (pixel mask), any operator with ``forward``/``adjoint``/``shape``/``norm``
        (e.g. ``GaussianMatrix``), or None (the identity).
    mask : Tensor of shape (n,) or (B, n), bool, optional
        Shorthand for ``measure=Mask(mask)`` (True = observed).
    lam : float, optional
        Absolute l1 weight of the image and middle layers. Default None: ``lam_rel * lam_max``
        per sample and layer, ``lam_max`` being the smallest weight that makes ``x = 0`` optimal.
    lam_rel : float
        Relative l1 weight used when ``lam`` is None (default 1e-6: the noiseless setting; raise
        it for noisy signals).
    rho : float
        Linearized-ADMM penalty (default 1, for which the step ``mu = 1/||W||^2`` is exact).
    gamma : float
        Weight of the Gaussian prior ``gamma/2 ||z||^2`` of the first layer (eq. 16; default 0.0:
        no prior, the first layer is a constrained least-squares fit).
    max_iter : int
        Iteration cap of each stage (image layer, each middle layer, first layer; default 2000).
    tol : float, optional
        Per-sample stopping tolerance on the relative change (and on the relative primal
        residual in ADMM); default 1e-7 in float64, 1e-5 in float32.
    debias : bool
        Refit ``z`` end to end with every estimated support frozen (default True).
    debias_rounds : int
        Support-refinement rounds of the debiasing (default 3; 0 = the paper's single fit with
        the estimated supports). Each round re-reads the supports of ``G`` at the current fit and
        refits, keeping the refit per sample only where it lowers ``1/2 ||A (y - G(z))||^2``
        (:func:`geninv.solvers.debias.debias_fit`; measured effect in the module report).
    seed : int, optional
        Unused: Latent-Pursuit is deterministic (accepted so every method takes the same options).
    callback : callable, optional
        ``callback(iteration, state) -> bool | None`` at every convergence check; ``state``
        has ``"stage"`` (``"x<L>"``, ..., ``"x1"``, ``"z"``), ``"x"`` (the stage's full-batch
        estimate), ``"active"``, ``"change"`` and ``"objective"``, and in the last stage
        ``"z"``. Returning True stops the pursuit: the later stages keep their warm starts
        (no iterations), debiasing is skipped, and ``info["stopped_by_callback"]`` is True.
    image_domain : {"auto", "pre", "signal"}
        Form of the image-layer problem. ``"signal"``: eq. (8),
        ``min_{x>=0} 1/2 ||A (y - phi(W x + b))||^2 + lam 1^T x``. ``"pre"``: the convex
        pre-activation form ``min_{x>=0} 1/2 ||M (phi^{-1}(y) - b - W x)||^2 + lam 1^T x``,
        available for an invertible ``phi`` and a pixel mask or no measure; pixels saturated at
        a bound of ``phi``'s range in the data's precision (float32 ``sigmoid(a) == 0`` for
        ``a < -104``) give no equation there and are left out of it, per sample
        (:func:`geninv.solvers.measurement.saturated`). ``"auto"`` (default) decides per sample:
        ``"pre"`` whenever it is available and every observed entry of the sample lies in the
        range of ``phi`` (at most at its bounds), ``"signal"`` otherwise (noisy tanh data beyond
        +-1, ReLU outputs, general operators); chosen from measurements (see Notes). A batch
        whose samples take different forms is solved as two groups, each sample as it would be
        alone, and ``info["image_domain"]`` is then a per-sample list. A ReLU output with ``"auto"`` is one
        more sparse layer (``info["image_domain"] == "support"``): its positive pixels are
        equations and its observed zero pixels inequalities ``W^Z x_L + b^Z <= 0``, solved as a
        middle layer of eq. (9) (:mod:`geninv.solvers.relu_output`); through a general operator
        that support is not observed and the call raises InputError.
    support_tol : float
        Support threshold relative to the layer's largest entry (default 1e-4).
    mu : float, optional
        Linearized-ADMM step; default the largest allowed (see Notes). A larger one raises.
    check_every : int
        Iterations between per-sample convergence checks (host syncs); default 10.
    restart : bool
        Per-sample gradient restart of FISTA's momentum (default True).
    warm_start : bool
        Start each ADMM layer from the least-squares fit on the next layer's support, and the
        pre-activation image layer from the least-squares fit ``max(pinv(M W) M (t - b), 0)``
        (default True; see Notes and :func:`geninv.solvers.image_layer.image_warm_start`). A sample
        whose image-layer start fits to rounding (noiseless data) keeps it: its image-layer
        ``lam`` is 0 (:func:`geninv.solvers.image_layer.exact_fit`; ``info["lam"]`` shows it).
    power_iters : int
        Power iterations for per-sample spectral norms (default 30).
    image_start : ImageStart, optional
        The pre-activation image layer's start (warm start and exact test) already computed
        for this ``y`` (:func:`geninv.solvers.image_layer.image_start`; :func:`geninv.invert`'s
        per-sample default passes the one its exact test computed). Used where it serves the
        batch (the same data, observed pixels and image layer, and the same ``warm_start``:
        :meth:`geninv.solvers.image_layer.ImageStart.serves`); default None: computed here.

    Returns
    -------
    SolveResult
        ``z`` (B, n_0); ``layers`` = the hidden layers of ``G(z)`` after debiasing (the pursuit's
        own estimates without it); ``supports`` = the estimated supports (frozen in the
        debiasing); ``converged`` = every stage converged; ``n_iter`` summed over stages;
        ``history`` keys ``"<stage>.objective"`` and ``"<stage>.change"``, each (T, B);
        ``info`` holds ``image_domain``, ``lam`` per stage (B,), ``mu`` per stage (B,), the
        per-stage ``n_iter`` and ``seconds``.

    Notes
    -----
    1. Image layer (FISTA, step ``1/L``): ``x_L^{k+1} = max(v^k - (grad f(v^k) + lam)/L, 0)``,
       ``t_{k+1} = (1 + sqrt(1 + 4 t_k^2))/2``, ``v^{k+1} = x^{k+1} + (t_k - 1)/t_{k+1} (x^{k+1} - x^k)``
       (with per-sample gradient restart). ``L = ||W^T M W||`` (pre) or that times
       ``sup phi'^2 + sup|phi''| sup|phi(a) - y|`` (signal, a global bound of the Hessian of the
       loss in the pre-activation; for a general operator ``A`` the same with ``||A||^2 ||W||^2``).
    2. Middle layers ``i = L-1, ..., 1`` (linearized ADMM, eq. (9)-(12)), with
       ``A = W_{i+1}^S``, ``C = W_{i+1}^{S^c}``, ``S = supp(x_{i+1})``::

           x <- max(0, x - mu (A^T (A x + b^S - x_{i+1}^S) + rho C^T (C x + b^{S^c} - u + v) + lam))
           u <- min(0, C x + b^{S^c} + v)
           v <- v + C x + b^{S^c} - u

       with ``mu = 1/||A^T A + rho C^T C||_2`` (batched power iteration over the masked full
       matrices; the condition of eq. (12) is checked, a user ``mu`` above it raises).
    3. First layer (eq. 16-18): the same iteration for ``z`` without the projection and with
       ``gamma z`` in the gradient (``mu = 1/(||A^T A + rho C^T C|| + gamma)``), warm-started
       from ``pinv(W_1^{S_1}) (x_1^{S_1} - b_1^{S_1})``.
    4. Debiasing: ``min_z 1/2 ||A (y - phi(W_{L+1} D_L (... D_1 (W_1 z + b_1) ...) + b_{L+1}))||^2``
       with the estimated supports ``D_i`` frozen (:func:`geninv.solvers.debias.debias_fit`).

    Supports are ``x_j > support_tol * max_j x_j``. Every stage runs for the whole batch with
    matrix-matrix products; per-sample supports are 0/1 masks on full matrices; convergence is
    decided per sample every ``check_every`` iterations and finished samples leave the working
    batch. Image domain: both forms reach the same z SNR, and the pre-activation form needs fewer
    iterations of a cheaper step (a signal-domain step costs three products instead of two because
    it needs backtracking: tanh's curvature has no useful global bound), so ``"auto"`` takes
    ``"pre"`` wherever it is available (docs/method.md sec. 9.2; the measurements are in
    benchmarks/NOTES.md).

    Image-layer warm start (``warm_start``, pre-activation form, unless a sample observes fewer
    pixels than ``n_L``): FISTA starts from ``max(pinv(M W_{L+1}) M (phi^{-1}(y) - b_{L+1}), 0)``,
    exact for noiseless signals, so it stops at its first check. From zero, float32 FISTA stops
    (``tol`` 1e-5) with off-support entries above ``support_tol``, whose false supports then fail
    the lower layers (docs/method.md sec. 9.3; the measurements are in benchmarks/NOTES.md).

    Examples
    --------
    >>> G = random_generator([20, 200, 600], "tanh", dtype=torch.float64)
    >>> z, y = G.sample(8, seed=1)
    >>> seen = torch.rand(600, generator=torch.Generator().manual_seed(0)) < 0.8  # 80 % of the pixels
    >>> res = latent_pursuit(G, y, mask=seen)
    >>> bool(res.fits.all()), bool((relative_error(z, res.z) < 1e-6).all())
    (True, True)
    """
    return solve_pursuit("latent_pursuit", latent_pursuit, _run, G, y, measure=measure, mask=mask, options=options)


def _run(G: Generator, y: Tensor, meas: Measurement, domain: str, o: PursuitOptions, t0: float) -> SolveResult:
    B = y.shape[0]
    dtype = y.dtype
    info: dict[str, Any] = {"image_domain": domain, "lam": {}, "mu": {}}  # StageLog adds "n_iter", "seconds"
    log = StageLog(B, y.device, info)
    loop = {"tol": o.tol, "check_every": o.check_every, "callback": o.callback}

    # 1. image layer
    ts = time.perf_counter()
    W, b = G.maps[-1], G.biases[-1]  # a matrix-free layer's operator in place of its matrix
    stage = f"x{G.n_hidden}"
    if domain == "support":
        W = G.weight(-1)  # the ReLU output's inequalities need the dense output layer
        pos, zero = output_support(y, meas)
        x0_img, exact = None, None
        if o.warm_start:
            x0_img, exact = relu_image_start(W, b, y, pos, zero, dtype)
            if not bool(exact.all()):
                # Fewer positive pixels than hidden units (or noise): start the ADMM from the
                # nonnegative basis pursuit on the equations alone (Layered BP's image layer).
                # Measured, random [20, 350, 600] ReLU-output generators, 16 signals: the ADMM
                # from the least-squares start ran to 2000 iterations and recovered 11; from
                # this start (FISTA: 250-480 iterations) it recovers them all.
                ts0 = time.perf_counter()
                wp = pos.to(dtype)
                start, _ = fista_layer(LinearLS(W, b), y, wp, lip=masked_gram_norm(W, wp, iters=o.power_iters), lam=o.lam,
                                       lam_rel=o.lam_rel, x0=x0_img, max_iter=o.max_iter, restart=o.restart,
                                       stage=f"{stage}_start", exact=exact, **loop)
                log.record(f"{stage}_start", start, ts0)
                x0_img = start.state.x
        else:
            x0_img = torch.zeros(B, W.shape[1], dtype=dtype, device=y.device)
        out, lam_t, mu_t = relu_image_admm(W, b, y, pos, zero, lam=o.lam, lam_rel=o.lam_rel, rho=o.rho, mu=o.mu,
                                           x0=x0_img, exact=exact, max_iter=log.iterations(o.max_iter),
                                           power_iters=o.power_iters, stage=stage, **loop)
        info["mu"][stage] = mu_t.squeeze(1)
    else:
        p = image_problem(G, y, meas, domain, warm_start=o.warm_start, power_iters=o.power_iters,
                          start=o.image_start)
        out, lam_t = fista_layer(p.f, p.t, p.w, lip=p.lip, lam=o.lam, lam_rel=o.lam_rel, x0=p.x0, max_iter=o.max_iter,
                                 restart=o.restart, stage=stage, exact=p.exact, **loop)
    log.record(stage, out, ts)
    info["lam"][stage] = lam_t.squeeze(1)
    x_next = out.state.x
    est = [x_next]
    s_next = threshold_support(x_next, o.support_tol)
    supports = [s_next]

    # 2. middle layers, then 3. the first layer (z)
    for i, stage, W, b in downward(G):
        ts = time.perf_counter()
        first = i == 0
        s = s_next.to(dtype)
        target = x_next
        n_in = W.shape[1]
        if o.warm_start:
            # The warm start only needs the data's precision.
            x0 = supported_lstsq(W, target - b, s_next, None, refine=0,
                                 dtype=torch.float64 if dtype == torch.float64 else torch.float32).to(dtype)
            if not first:
                x0 = x0.clamp_min(0)
        else:
            x0 = torch.zeros(B, n_in, dtype=dtype, device=y.device)
        if first:
            lam_i = torch.zeros(B, 1, dtype=dtype, device=y.device)
        elif o.lam is None:
            g0 = -apply_t(W, s * (target - b))
            lam_i = auto_lam(g0, o.lam_rel)
        else:
            lam_i = torch.full((B, 1), float(o.lam), dtype=dtype, device=y.device)
        out_l, mu_t = ladmm_layer(W, b, target, s, lam=lam_i, rho=o.rho, gamma=o.gamma if first else 0.0,
                                  nonneg=not first, mu=o.mu, x0=x0, max_iter=log.iterations(o.max_iter),
                                  power_iters=o.power_iters, stage=stage, **loop)
        log.record(stage, out_l, ts)
        info["lam"][stage] = lam_i.squeeze(1)
        info["mu"][stage] = mu_t.squeeze(1)
        if first:
            z = out_l.state.x
            info["ladmm_state_z"] = out_l.state
        else:
            x_next = out_l.state.x
            est.insert(0, x_next)
            s_next = threshold_support(x_next, o.support_tol)
            supports.insert(0, s_next)
            info[f"ladmm_state_{stage}"] = out_l.state

    layers = est
    if o.debias and not log.stopped:
        z, layers = debias_stage(log, G, y, supports, meas, z, o.debias_rounds)
    return finish("latent_pursuit", G, z, layers, supports, log.converged, log.n_iter, history=log.history, t0=t0, info=info,
                  dtype=dtype, y=y, meas=meas)

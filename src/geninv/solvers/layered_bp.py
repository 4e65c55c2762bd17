"""Layered Basis-Pursuit (docs/method.md sec. 5; the paper's Algorithm 2)."""

from __future__ import annotations

import time
from typing import Any

from torch import Tensor

from geninv.model.generator import Generator
from geninv.solvers.debias import debias_stage
from geninv.solvers.image_layer import ImageProblem, image_problem
from geninv.solvers.linalg import supported_lstsq
from geninv.solvers.loop import StageLog, threshold_support
from geninv.solvers.measurement import Measurement
from geninv.solvers.network import downward
from geninv.solvers.options import PursuitOptions, keyword_options
from geninv.solvers.pursuits import solve_pursuit
from geninv.solvers.relu_output import output_support, relu_image_start
from geninv.solvers.result import SolveResult, finish
from geninv.solvers.spectral import masked_gram_norm
from geninv.solvers.steps import LinearLS
from geninv.solvers.subproblems import fista_layer

__all__ = ["layered_bp"]


@keyword_options(PursuitOptions, without=("rho", "gamma", "mu"), defaults={"tol": None}, annotations={"tol": "float | None"})
def layered_bp(G: Generator, y: Tensor, *, measure: Any = None, mask: Tensor | None = None, **options: Any) -> SolveResult:
    """Invert ``y`` by one nonnegative Lagrangian basis pursuit per layer (Layered Basis-Pursuit).

    Parameters
    ----------
    G : Generator
    y : Tensor of shape (B, n) (or (B, m) for a general ``measure`` of shape (m, n))
    measure, mask :
        As in :func:`geninv.latent_pursuit`.
    lam : float, optional
        Absolute l1 weight of every layer; default None: ``lam_rel * lam_max`` per sample and layer.
    lam_rel : float
        Default 1e-6 (noiseless; the false positives it causes are about ``lam_rel`` times the
        layer's scale, measured, so keep ``support_tol`` well above it).
    max_iter : int
        FISTA iterations per layer (default 2000).
    tol : float, optional
        Per-sample relative-change tolerance; default 1e-7 (float64), 1e-5 (float32).
    debias : bool
        Fit ``z`` end to end with the estimated supports frozen, with support refinement
        (:func:`geninv.solvers.debias.debias_fit`; default True).
    debias_rounds : int
        Support-refinement rounds of the debiasing (default 3; 0 = a single frozen-support fit).
    seed : int, optional
        Unused (deterministic).
    callback : callable, optional
        ``callback(iteration, state) -> bool | None`` at every check, ``state["stage"]`` in
        ``"x<L>"``, ..., ``"x1"`` and ``state["x"]`` the stage's full-batch estimate. Returning
        True stops the pursuit: the later stages get no iterations, debiasing is skipped, and
        ``info["stopped_by_callback"]`` is True.
    image_domain : {"auto", "pre", "signal"}
        Form of the first problem. ``"auto"`` (default): the pre-activation ``phi^{-1}(y)`` of
        docs/method.md sec. 5 for an invertible output, a pixel mask or no measure and observed ``y``
        inside the activation's range; otherwise the signal domain of eq. (8) (noisy tanh
        data beyond +-1, ReLU output, general operators), decided per sample as in
        :func:`geninv.latent_pursuit` (saturated pixels are left out of ``phi^{-1}(y)``).
        ``"pre"`` forces the pre-activation form (DomainError for ``y`` outside the range). A ReLU output with ``"auto"``: the first
        problem is that of a middle layer, on the rows of the positive pixels of ``y``
        (``info["image_domain"] == "support"``, :mod:`geninv.solvers.relu_output`); InputError
        through a general operator, which does not observe that support.
    support_tol : float
        Relative support threshold (default 1e-4).
    check_every, restart, power_iters :
        As in :func:`geninv.latent_pursuit`.
    warm_start : bool
        Start the pre-activation image layer from the least-squares fit
        ``max(pinv(M W_{L+1}) M (phi^{-1}(y) - b_{L+1}), 0)`` (default True; as in
        :func:`geninv.latent_pursuit`; :func:`geninv.solvers.image_layer.image_warm_start`); a start
        that fits to rounding gets ``lam = 0`` (:func:`geninv.solvers.image_layer.exact_fit`).
    image_start : ImageStart, optional
        As in :func:`geninv.latent_pursuit` (default None).

    Returns
    -------
    SolveResult
        ``layers``: hidden layers of ``G(z)`` after debiasing (the per-layer pursuits' estimates
        without it); ``supports``: the estimated supports.

    Notes
    -----
    With ``S = supp(x_i)`` (threshold ``support_tol`` relative to the layer's largest entry)::

        x_L     = argmin_{x >= 0} 1/2 ||M (phi^{-1}(y) - b_{L+1} - W_{L+1} x)||^2 + lam 1^T x
        x_{i-1} = argmin_{x >= 0} 1/2 ||x_i^S - b_i^S - W_i^S x||^2 + lam 1^T x        i = L..2
        z       = pinv(W_1^{S_1}) (x_1^{S_1} - b_1^{S_1})

    (the Lagrangian form of docs/method.md sec. 5 with nonnegativity, since ReLU outputs are >= 0). Each
    problem is solved for the whole batch by FISTA with step ``1 / ||W^T diag(s_b) W||``
    (batched power iteration), the row supports ``s_b`` being 0/1 masks on the full matrix.
    The warm start changes where FISTA starts, not the problem it solves: from zero, in
    float32, the image layer stops (``tol`` 1e-5) with off-support entries above
    ``support_tol``, and those false supports fail the layers below (docs/method.md sec. 9.3;
    the measurements are in benchmarks/NOTES.md).

    Examples
    --------
    >>> G = random_generator([20, 200, 600], "tanh", dtype=torch.float64)
    >>> z, y = G.sample(8, seed=1)
    >>> res = layered_bp(G, y)
    >>> res.info["image_domain"], bool((relative_error(z, res.z) < 1e-6).all())
    ('pre', True)
    """
    return solve_pursuit("layered_bp", layered_bp, _run, G, y, measure=measure, mask=mask, options=options)


def _run(G: Generator, y: Tensor, meas: Measurement, domain: str, o: PursuitOptions, t0: float) -> SolveResult:
    B = y.shape[0]
    dtype = y.dtype
    info: dict[str, Any] = {"image_domain": domain, "lam": {}}  # StageLog adds "n_iter", "seconds"
    log = StageLog(B, y.device, info)
    loop = {"lam": o.lam, "lam_rel": o.lam_rel, "tol": o.tol, "check_every": o.check_every, "restart": o.restart,
            "callback": o.callback}

    ts = time.perf_counter()
    W, b = G.maps[-1], G.biases[-1]  # a matrix-free layer's operator in place of its matrix
    if domain == "support":
        # As a middle layer of Layered Basis-Pursuit: the equations on the positive pixels.
        W = G.weight(-1)  # the ReLU output's inequalities need the dense output layer
        pos, zero = output_support(y, meas)
        w_img = pos.to(dtype)
        x0_img, exact = relu_image_start(W, b, y, pos, zero, dtype) if o.warm_start else (None, None)
        p = ImageProblem(LinearLS(W, b), y, w_img, masked_gram_norm(W, w_img, iters=o.power_iters), x0_img, exact)
    else:
        p = image_problem(G, y, meas, domain, warm_start=o.warm_start, power_iters=o.power_iters,
                          start=o.image_start)
    stage = f"x{G.n_hidden}"
    out, lam_t = fista_layer(p.f, p.t, p.w, lip=p.lip, x0=p.x0, max_iter=o.max_iter, stage=stage, exact=p.exact, **loop)
    est = [out.state.x]
    supports = [threshold_support(out.state.x, o.support_tol)]
    log.record(stage, out, ts)
    info["lam"][stage] = lam_t.squeeze(1)

    for _, stage, W, b in downward(G, last=1):
        ts = time.perf_counter()
        s = supports[0].to(dtype)
        lip = masked_gram_norm(W, s, iters=o.power_iters)
        out, lam_t = fista_layer(LinearLS(W, b), est[0], s, lip=lip, x0=None, max_iter=log.iterations(o.max_iter),
                                 stage=stage, **loop)
        est.insert(0, out.state.x)
        supports.insert(0, threshold_support(out.state.x, o.support_tol))
        log.record(stage, out, ts)
        info["lam"][stage] = lam_t.squeeze(1)

    z = supported_lstsq(G.maps[0], est[0] - G.biases[0], supports[0], None).to(dtype)
    layers = est
    if o.debias and not log.stopped:
        z, layers = debias_stage(log, G, y, supports, meas, z, o.debias_rounds)
    return finish("layered_bp", G, z, layers, supports, log.converged, log.n_iter, history=log.history, t0=t0, info=info,
                  dtype=dtype, y=y, meas=meas)

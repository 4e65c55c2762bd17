"""Noisy signals ``y = A G(z) + e``, ``e ~ N(0, sigma^2 I)``: the pursuits' parameters from
``sigma``, an estimate of ``sigma`` (``noise_level="auto"``), and the Oracle's expected error
(Theorem 3) to compare the achieved error with.

Parameter rules (the statistics of one LASSO step, applied layer by layer; see
:func:`noisy_pursuit` Notes for the exact formulas):

* ``lam_i`` (image and middle layers): the universal threshold of the LASSO for white noise,
  ``lam = sigma_in sqrt(2 log p) max_j ||a_j||`` (``p`` unknowns, ``a_j`` the columns of the
  layer's matrix, ``sigma_in`` the per-entry noise of the layer's data): the smallest weight for
  which, with high probability, no pure-noise correlation ``|a_j^T e|`` exceeds ``lam``, so
  no unit outside the true support is switched on by the noise (a false positive turns a true
  inequality into a wrong equality in the layer below; docs/method.md sec. 9.1).
* ``sigma_i``, the per-entry noise of the estimate of layer ``i``, propagated as the Oracle's
  (least squares on the estimated support): ``sigma_i = sigma_in sqrt(tr((M^T M)^{-1}) / s_i)``.
* ``eps_i = sigma_in sqrt(r_i)`` (``r_i`` rows of the layer's data): the expected l2 size of the
  layer's data noise, Theorem 2's ``eps`` (reported; the solver uses the Lagrangian form).
* ``gamma`` (first layer, eq. (16)) ``= sigma_1^2 / sigma_z^2``: the Gaussian MAP weight of
  ``z ~ N(0, sigma_z^2 I)`` given ``x_1`` with per-entry noise ``sigma_1``; and for the final
  fit on the whole network ``gamma_end = sigma^2 / sigma_z^2`` (the exact MAP for white image noise).
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Any

import torch
from torch import Tensor

from geninv.exceptions import ConvergenceWarning, InputError, ShapeError, describe
from geninv.model.generator import Generator
from geninv.solvers.checks import check_informative, check_problem, default_tol
from geninv.solvers.debias import debias_fit, fit_supports
from geninv.solvers.expected_error import oracle_expected_error
from geninv.solvers.image_layer import choose_domain, image_warm_start
from geninv.solvers.latent_pursuit import latent_pursuit
from geninv.solvers.linalg import one_thread, supported_lstsq
from geninv.solvers.loop import StageLog, threshold_support
from geninv.solvers.measurement import Measurement, preactivation_target, unsaturated
from geninv.solvers.network import downward, hidden_layers
from geninv.solvers.options import NoiseOptions, keyword_options
from geninv.solvers.refine import gauss_newton_refine, network_fit
from geninv.solvers.result import SolveResult, finish
from geninv.solvers.spectral import masked_gram_norm
from geninv.solvers.steps import LinearLS, SignalLS
from geninv.solvers.subproblems import fista_layer, image_lipschitz, ladmm_layer

__all__ = [
    "estimate_noise", "noisy_pursuit", "universal_lam", "propagated_sigma", "oracle_expected_error",
    "resolve_noise_level", "NOISY_PURSUIT_OPTIONS",
]

NOISY_PURSUIT_OPTIONS = (
    "noise_level", "method", "lam_scale", "sigma_z", "margin", "image_domain", "max_iter", "tol", "support_tol", "rho",
    "refine", "refine_iter", "gamma_end", "check_every", "power_iters", "callback", "seed",
)


# -- the noise level ------------------------------------------------------------------------------


def estimate_noise(
    G: Generator,
    y: Tensor,
    *,
    measure: Any = None,
    mask: Tensor | None = None,
    z: Tensor | None = None,
    refine_iter: int = 50,
) -> Tensor:
    """Estimate the standard deviation of white noise on ``y`` from the residual of a fit.

    Parameters
    ----------
    G : Generator
    y : Tensor of shape (B, n) (or (B, m) with a general ``measure``)
    measure, mask :
        As in :func:`geninv.invert`.
    z : Tensor of shape (B, n_0), optional
        A fit to use; default: Latent-Pursuit (noiseless defaults) followed by Gauss-Newton on
        the whole network (:func:`geninv.solvers.refine.gauss_newton_refine`), i.e. the least
        squares fit of ``y`` by the generator near the pursuit's estimate.

    Returns
    -------
    Tensor of shape (B,), float64
        ``sigma_hat = ||A (y - G(z_hat))|| / sqrt(m - n_0)`` (``m`` observed entries).

    Notes
    -----
    Near the true ``z`` (supports fixed) the model is locally an ``n_0``-dimensional manifold, so
    the least-squares residual is the noise projected off an ``n_0``-dimensional tangent space:
    ``E ||r||^2 = sigma^2 (m - n_0)`` (to first order). Relative standard deviation of the
    estimate ``1 / sqrt(2 (m - n_0))``: 2.6 % for ``m = 784``. A fit stuck in a wrong basin
    overestimates ``sigma``. Measured on a random ``[20, 128, 392, 784]`` PLU generator with
    biases (32 signals, input SNR 10-40 dB): ``sigma_hat / sigma`` median 0.99-1.03 after the
    Gauss-Newton refinement (see :mod:`geninv.experiments.noise_exp` for the records).
    """
    G, yy, meas = check_problem(G, y, measure, mask)
    G64 = G.to(dtype=torch.float64)
    # Unobserved entries carry no data (they would add 1/2 ||y_unobserved||^2 to every fit).
    y64 = meas.observed(yy.to(torch.float64))
    with torch.no_grad():
        if z is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                # Capped like the hybrid's pursuit: the refinement only needs the right basin.
                z0 = latent_pursuit(G, yy, measure=meas.as_measure(), max_iter=300).z
            z, _, _, _ = gauss_newton_refine(G64, y64, meas, z0.to(torch.float64), max_iter=refine_iter)
        else:
            if not isinstance(z, Tensor) or z.shape != (yy.shape[0], G.latent_dim):
                raise ShapeError(f"z: expected a tensor of shape ({yy.shape[0]}, {G.latent_dim}), received {describe(z)}")
        F = network_fit(G64, y64, z.to(torch.float64), meas)
    dof = (meas.n_observed(yy).to(torch.float64) - G.latent_dim).clamp_min(1.0)
    return torch.sqrt(2.0 * F / dof)


def resolve_noise_level(noise_level: object, G: Generator, y: Tensor, meas: Measurement) -> Tensor:
    """``noise_level`` (float >= 0, Tensor (B,) or (), or "auto") as a float64 Tensor (B,)."""
    B = y.shape[0]
    if isinstance(noise_level, str):
        if noise_level != "auto":
            raise InputError(f"noise_level: expected a number >= 0, a (B,) tensor or 'auto', received {noise_level!r}")
        return estimate_noise(G, y, measure=meas.as_measure())
    if isinstance(noise_level, bool) or not isinstance(noise_level, (int, float, Tensor)):
        raise InputError(f"noise_level: expected a number >= 0, a (B,) tensor or 'auto', received {describe(noise_level)}")
    s = torch.as_tensor(noise_level, dtype=torch.float64).to(y.device).flatten()
    if s.numel() not in (1, B):
        raise ShapeError(f"noise_level: expected a scalar or shape ({B},), received {tuple(torch.as_tensor(noise_level).shape)}")
    if not bool(torch.isfinite(s).all()) or bool((s < 0).any()):
        raise InputError(f"noise_level: expected finite values >= 0, received {describe(noise_level)}")
    return s.expand(B).clone()


# -- the parameter rules --------------------------------------------------------------------------


def universal_lam(sigma_in: Tensor, col_norm: Tensor, p: int) -> Tensor:
    """``sigma_in sqrt(2 log p) col_norm``: the LASSO weight above the noise correlations (B,)."""
    return sigma_in * math.sqrt(2.0 * math.log(max(p, 2))) * col_norm


def propagated_sigma(sigma_in: Tensor, W: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """Per-entry noise of the supported least squares ``x^T = pinv(M) (data)``, ``M = diag(rows) W[:, T]``.

    Parameters
    ----------
    sigma_in : Tensor (B,)
        Per-entry standard deviation of the (white) noise on the data.
    W : Tensor (n_out, n_in) or (B, n_out, n_in)
    rows : Tensor (B, n_out), float >= 0
        Row weights (0/1 support or observation mask; may carry ``phi'`` factors).
    cols : Tensor (B, n_in), bool
        The support ``T``.

    Returns
    -------
    Tensor (B,)
        ``sigma_in sqrt(tr((M^T M)^{-1}) / |T|)`` (pseudo-inverse trace: directions with
        eigenvalue below ``1e-10 lambda_max`` are dropped), 0 where ``|T| = 0``.
    """
    dt = torch.float64
    Wd = W.to(dt)
    r = rows.to(dt)
    # Only the columns in T enter: gather them first (k = max_b |T_b|), so the Gram matrices are
    # k x k instead of n_in x n_in (the support is typically a third to a half of the layer).
    k = max(1, int(cols.sum(dim=1).max()))
    order = torch.argsort((~cols).to(torch.int8), dim=1, stable=True)[:, :k]  # T_b first
    c = torch.gather(cols.to(dt), 1, order)  # (B, k): 1 on T_b, 0 on the padding
    if Wd.ndim == 2:
        Wg = Wd.T[order]  # (B, k, n_out)
    else:
        Wg = torch.gather(Wd.transpose(1, 2), 1, order[:, :, None].expand(-1, -1, Wd.shape[1]))
    Wg = Wg * c[:, :, None]
    Gm = Wg @ (r[:, :, None] * Wg.transpose(1, 2))  # (B, k, k)
    scale = (Gm.diagonal(dim1=1, dim2=2).sum(dim=1) / c.sum(dim=1).clamp_min(1)).clamp_min(1e-300)
    # Unit-size padding outside T keeps the matrix block diagonal; its eigenvalues are removed below.
    Gp = Gm + torch.diag_embed((1.0 - c) * scale[:, None])
    with one_thread():
        ev = torch.linalg.eigvalsh(Gp)
    cut = 1e-10 * ev[:, -1:]
    inv = torch.where(ev > cut, 1.0 / ev.clamp_min(1e-300), torch.zeros_like(ev)).sum(dim=1)
    tr = (inv - (1.0 - c).sum(dim=1) / scale).clamp_min(0)
    s = c.sum(dim=1)
    return torch.where(s > 0, sigma_in.to(dt) * torch.sqrt(tr / s.clamp_min(1)), torch.zeros_like(tr))


# -- noise-aware pursuit ---------------------------------------------------------------------------


@keyword_options(NoiseOptions, defaults={"tol": 1e-5}, annotations={"tol": "float | None"})
def noisy_pursuit(G: Generator, y: Tensor, *, measure: Any = None, mask: Tensor | None = None,
                  noise_level: float | Tensor | str = "auto", **options: Any) -> SolveResult:
    """Latent-Pursuit or Layered Basis-Pursuit for noisy signals, every parameter from ``sigma``.

    Parameters
    ----------
    G : Generator
    y : Tensor of shape (B, n) (or (B, m) for a general ``measure``)
        ``A G(z) + e`` with ``e`` white, standard deviation ``sigma`` per observed entry.
    measure, mask :
        As in :func:`geninv.invert` (pixel mask, ``GaussianMatrix``, any operator).
    noise_level : float, Tensor of shape (B,), or "auto"
        ``sigma``; ``"auto"`` estimates it per signal (:func:`estimate_noise`).
    method : {"latent_pursuit", "layered_bp"}
        Which pursuit: the middle layers with the next layer's zeros as inequalities (eq. (9),
        linearized ADMM) or plain nonnegative LASSO (docs/method.md sec. 5, FISTA).
    lam_scale : float
        Multiplies every ``lam_i`` of the universal rule (default 0.1, measured: see Notes).
    sigma_z : float
        Prior standard deviation of ``z`` (``z ~ N(0, sigma_z^2 I)``; default 1).
    margin : float
        An estimated unit becomes an equality row of the next problem only when it exceeds
        ``margin`` times its propagated noise ``sigma_i`` (default 3); units estimated at zero
        stay inequalities, the ones in between are left free (see Notes).
    image_domain : {"signal", "pre"}
        Image-layer loss. Default ``"signal"``: ``1/2 ||A (y - phi(W x + b))||^2``, the likelihood
        of white image noise. ``"pre"`` (``phi^{-1}(y)``, needs an invertible ``phi``, a pixel mask
        or none and ``y`` in range) amplifies the noise by ``(phi^{-1})'`` (10x on PLU's outer pieces).
    max_iter, tol : int, float
        Iteration cap and relative-change tolerance of every stage (default 500 and 1e-5: the
        estimates only need the accuracy of the noise, the final refinement does the rest;
        measured on a random ``[20, 128, 392, 784]`` PLU generator at 20 and 40 dB: the same SNR
        of ``z`` with 100, 300 or 2000 iterations).
    support_tol, rho, check_every, power_iters :
        As in :func:`geninv.latent_pursuit`.
    refine : {"network", "supports", "none"}
        Final fit of ``z``. ``"network"`` (default): the debiasing of docs/method.md sec. 6.4 (supports frozen,
        with support refinement) followed by Gauss-Newton on the whole network
        (:func:`geninv.solvers.refine.gauss_newton_refine`) on the MAP objective
        ``1/2 ||A (y - G(z))||^2 + gamma_end/2 ||z||^2``; ``"supports"``: the debiasing only;
        ``"none"``: the pursuit's own ``z``.
    gamma_end : float, optional
        Default ``sigma^2 / sigma_z^2`` (the MAP weight of white image noise).
    callback : callable, optional
        ``callback(iteration, state) -> bool | None``, passed to every stage's iteration
        (``state["stage"]`` names it; as in :func:`geninv.latent_pursuit`). Returning True stops:
        the later stages get no iterations, the refinement is skipped, and
        ``info["stopped_by_callback"]`` is True.
    seed : int, optional
        Unused (deterministic).

    Returns
    -------
    SolveResult
        As :func:`geninv.latent_pursuit`, with ``info`` holding ``sigma`` (B,), ``lam``
        ``{stage: (B,)}``, ``layer_sigma`` ``{stage: (B,)}`` (the propagated per-entry noise of
        each estimate), ``eps`` ``{stage: (B,)}``, ``gamma`` (B,), ``gamma_end`` (B,) and the
        pursuit's own estimates ``pursuit_layers``.

    Notes
    -----
    With ``sigma_in`` the per-entry noise of a stage's data and ``p`` its unknowns:

    1. Image layer, ``sigma_in = sigma`` (signal domain) or ``sigma rms_j((phi^{-1})'(y_j))``
       (pre-activation domain); columns ``a_j = A W_{L+1}[:, j]`` (times ``Lip(phi)`` in the signal
       domain):  ``lam_L = lam_scale sigma_in sqrt(2 log n_L) max_j ||a_j||``,
       ``x_L = argmin_{x>=0} 1/2 ||A (y - phi(W_{L+1} x + b))||^2 + lam_L 1^T x`` (FISTA with
       backtracking), ``S_L = supp(x_L)`` (threshold ``support_tol`` relative);
       ``sigma_L = sigma_in sqrt(tr((K^T K)^{-1}) / s_L)``, ``K = A diag(phi'(W x_L + b)) W[:, S_L]``.
    2. Middle layers ``i = L-1..1``, ``M = W_{i+1}[S_{i+1}, :]``:
       ``lam_i = lam_scale sigma_{i+1} sqrt(2 log n_i) max_j ||M[:, j]||``, solved as in
       Latent-Pursuit (linearized ADMM with the zeros of ``x_{i+1}`` as inequalities) or Layered
       BP (nonnegative LASSO by FISTA, step ``1/||M^T M||``);
       ``sigma_i = sigma_{i+1} sqrt(tr((M_T^T M_T)^{-1}) / s_i)``, ``M_T = M[:, S_i]``.
    3. First layer: Latent-Pursuit's eq. 16 with ``gamma = sigma_1^2 / sigma_z^2``
       (per sample; step ``mu = 1/(||A^T A + rho C^T C|| + gamma)``); Layered BP's
       ``z = pinv(W_1^{S_1}) (x_1^{S_1} - b_1^{S_1})``.
    ``lam_scale``: the universal threshold keeps every noise correlation below ``lam`` (no false
    positive, with high probability), but its shrinkage ``lam (M_T^T M_T)^{-1} sign(x)`` is the
    dominant error wherever a layer's problem is overdetermined (``s_{i+1} > n_i``, the case of
    expanding generators), and the false positives a smaller ``lam`` lets in are neutralised by
    the margin rule below and by the refinement. Hence the default 0.1 (docs/method.md sec. 9.5;
    the measurements are in benchmarks/NOTES.md).

    Rows of stage ``i``: the units of ``x_{i+1}`` estimated above ``margin sigma_{i+1}`` are
    equalities (in Layered BP the only rows), the ones estimated at zero inequalities
    (Latent-Pursuit), the ones in between free. Why: a false positive of the noisy estimate (a
    unit that is off, with a possibly large negative pre-activation) made an equality is a wrong
    equation, while a small true unit left free costs one equation (the measurement is in
    benchmarks/NOTES.md).

    4. ``refine``: see above. ``eps_i = sigma_in sqrt(rows)`` is reported as Theorem 2's noise
       level of each stage (the l2 size of its data noise).

    Examples
    --------
    >>> G = random_generator([20, 128, 392, 784], "plu", bias=True, dtype=torch.float64)
    >>> z, y0 = G.sample(4, seed=1)
    >>> y, sigma = add_noise(y0, 30, seed=2)
    >>> res = noisy_pursuit(G, y, noise_level=sigma)
    >>> res.info["sigma"].shape
    torch.Size([4])
    """
    t0 = time.perf_counter()
    G, yy, meas = check_problem(G, y, measure, mask)
    o = NoiseOptions(**dict(options, tol=default_tol(yy.dtype) if options["tol"] is None else options["tol"]))
    if o.image_domain == "signal":
        domain = "signal"
    else:
        domain = choose_domain(o.image_domain, G, yy, meas)
    check_informative(G, yy, meas)
    if G.n_hidden == 0:
        raise InputError("G: expected at least one hidden layer for a pursuit, received a generator without one")
    sigma = resolve_noise_level(noise_level, G, yy, meas)
    with torch.no_grad():
        return _run(G, yy, meas, sigma, domain, o, t0)


def _partition(x: Tensor, s: Tensor, sigma_x: Tensor, margin: float) -> tuple[Tensor, Tensor]:
    """Rows of the next problem: equalities where ``x > margin sigma_x`` (surely active), inequalities
    where ``x`` is off (``~s``); the entries in between are left unconstrained."""
    strong = s & (x.to(torch.float64) > margin * sigma_x[:, None])
    return strong, ~s


def _run(G: Generator, y: Tensor, meas: Measurement, sigma: Tensor, domain: str, o: NoiseOptions, t0: float) -> SolveResult:
    L = G.n_hidden
    Ws, bs = G.weights, G.biases
    B = y.shape[0]
    dt, dev = y.dtype, y.device
    phi = G.output_activation
    info: dict[str, Any] = {"sigma": sigma, "image_domain": domain, "lam": {}, "layer_sigma": {}, "eps": {}}
    log = StageLog(B, dev, info)
    record = log.record
    loop = {"tol": o.tol, "check_every": o.check_every, "callback": o.callback}

    # 1. image layer
    ts = time.perf_counter()
    W, b = Ws[-1], bs[-1]
    m_obs = meas.n_observed(y).to(torch.float64)
    col = meas.max_column_norm(W.to(torch.float64))
    if domain == "signal":
        t = y
        f: LinearLS | SignalLS = SignalLS(W, b, phi, meas.op)
        lip = image_lipschitz(W, meas, phi, power_iters=o.power_iters)
        sig_in = sigma
        col = col * phi.lipschitz
    else:
        t = preactivation_target(G, y, meas)
        f = LinearLS(W, b)
        lip = image_lipschitz(W, meas, None, power_iters=o.power_iters)
        dinv = 1.0 / phi.derivative(t.to(torch.float64)).clamp_min(1e-12)  # (phi^{-1})'(y) = 1 / phi'(phi^{-1}(y))
        wobs = meas.w.to(torch.float64) if meas.w is not None else torch.ones_like(dinv)
        sig_in = sigma * torch.sqrt((dinv.square() * wobs).sum(dim=1) / m_obs.clamp_min(1))
    lam_L = o.lam_scale * universal_lam(sig_in, col.expand(B), W.shape[1])
    stage = f"x{L}"
    # Start from the image layer's least squares where it exists (as Latent-Pursuit does): from zero
    # the signal-domain FISTA runs to its iteration cap on noisy data.
    x0 = None
    if meas.diagonal and phi.invertible and choose_domain("auto", G, y, meas) == "pre":
        m_ws = unsaturated(G, y, meas)  # saturated pixels carry no equation on the pre-activation
        x0 = image_warm_start(W, preactivation_target(G, y, m_ws) - b, m_ws.obs, dt)
    out, _ = fista_layer(f, t, meas.w, lip=lip, lam=lam_L.to(dt)[:, None], lam_rel=0.0, x0=x0, max_iter=o.max_iter,
                         restart=True, stage=stage, **loop)
    record(stage, out, ts)
    x_next = out.state.x
    s_next = threshold_support(x_next, o.support_tol)
    # Propagated noise of x_L: supported LS through the linearized output activation.
    a_hat = torch.addmm(b, x_next, W.T).to(torch.float64)
    q = phi.derivative(a_hat) if domain == "signal" else torch.ones_like(a_hat)
    if not meas.diagonal:
        K = meas.apply_cols(q[:, :, None] * W.to(torch.float64)[None])
        sig_next = propagated_sigma(sig_in, K, torch.ones(B, K.shape[1], dtype=torch.float64, device=dev), s_next)
    else:
        rows = q.square() * (meas.w.to(torch.float64) if meas.w is not None else 1.0)
        sig_next = propagated_sigma(sig_in, W, rows, s_next)
    info["lam"][stage] = lam_L
    info["eps"][stage] = sig_in * torch.sqrt(m_obs)
    info["layer_sigma"][stage] = sig_next
    s_next, z_next = _partition(x_next, s_next, sig_next, o.margin)
    est = [x_next]
    supports = [s_next]

    # 2. middle layers, 3. the first layer
    gamma = torch.zeros(B, dtype=torch.float64, device=dev)
    z: Tensor | None = None
    for i, stage, W, b in downward(G, dense=True):
        ts = time.perf_counter()
        first = i == 0
        s = s_next.to(dt)
        sc = z_next.to(dt)
        Ms = W.to(torch.float64)[None] * s.to(torch.float64)[:, :, None]
        info["eps"][stage] = sig_next * torch.sqrt(s.to(torch.float64).sum(dim=1))
        if first:
            gamma = sig_next.square() / o.sigma_z**2
            info["gamma"] = gamma
            if o.method == "layered_bp":
                z = supported_lstsq(W, x_next - b, s_next, None).to(dt)
                break
            x0 = supported_lstsq(W, x_next - b, s_next, None, dtype=dt)
            out_l, _ = ladmm_layer(W, b, x_next, s, lam=torch.zeros(B, 1, dtype=dt, device=dev), rho=o.rho,
                                   gamma=gamma.to(dt)[:, None], nonneg=False, mu=None, x0=x0,
                                   max_iter=log.iterations(o.max_iter), power_iters=o.power_iters, stage=stage, sc=sc, **loop)
            record(stage, out_l, ts)
            z = out_l.state.x
            break
        col_i = Ms.norm(dim=1).amax(dim=1)
        lam_i = o.lam_scale * universal_lam(sig_next, col_i, W.shape[1])
        if o.method == "layered_bp":
            lip_i = masked_gram_norm(W, s, iters=o.power_iters)
            out_l, _ = fista_layer(LinearLS(W, b), x_next, s, lip=lip_i, lam=lam_i.to(dt)[:, None], lam_rel=0.0, x0=None,
                                   max_iter=log.iterations(o.max_iter), restart=True, stage=stage, **loop)
        else:
            x0 = supported_lstsq(W, x_next - b, s_next, None, dtype=dt).clamp_min(0)
            out_l, _ = ladmm_layer(W, b, x_next, s, lam=lam_i.to(dt)[:, None], rho=o.rho, gamma=0.0, nonneg=True, mu=None,
                                   x0=x0, max_iter=log.iterations(o.max_iter), power_iters=o.power_iters, stage=stage,
                                   sc=sc, **loop)
        record(stage, out_l, ts)
        x_i = out_l.state.x
        s_i = threshold_support(x_i, o.support_tol)
        info["lam"][stage] = lam_i
        sig_next = propagated_sigma(sig_next, W, s.to(torch.float64), s_i)
        info["layer_sigma"][stage] = sig_next
        s_i, z_i = _partition(x_i, s_i, sig_next, o.margin)
        est.insert(0, x_i)
        supports.insert(0, s_i)
        x_next, s_next, z_next = x_i, s_i, z_i
    assert z is not None
    info["pursuit_layers"] = est
    g_end = sigma.square() / o.sigma_z**2 if o.gamma_end is None else torch.full_like(sigma, float(o.gamma_end))
    info["gamma_end"] = g_end
    layers = est
    if o.refine != "none" and not log.stopped:
        ts = time.perf_counter()
        if o.refine == "network":
            # The frozen-support fit only has to land in the right basin: a few Levenberg-Marquardt
            # steps, then Gauss-Newton on the whole network re-reads the supports as it goes.
            z64, ok, obj = fit_supports(G, y, supports, meas, z0=z, max_iter=5)
        else:
            z64, ok, obj, _ = debias_fit(G, y, supports, meas, z0=z)
            log.converged = log.converged & ok
        if o.refine == "network" and o.refine_iter:
            z64, obj, it, _ = gauss_newton_refine(G, y, meas, z64, gamma=g_end, max_iter=o.refine_iter)
            log.n_iter = log.n_iter + it
        info["objective"] = obj
        info["seconds"]["refine"] = time.perf_counter() - ts
        z = z64.to(dt)
        layers = hidden_layers(G, z)
    return finish(f"noisy_{o.method}", G, z, layers, supports, log.converged, log.n_iter, history=log.history, t0=t0,
                  info=info, dtype=dt)

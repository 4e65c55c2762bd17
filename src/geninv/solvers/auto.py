"""The default inversion method: per sample, the fast exact path where the signal is exactly
realizable, the pursuit refined through the whole network where it is not (noise, quantization,
signals outside the range of ``G``), and more starts of that refinement where the fit is in
doubt (a wrong basin, a signal outside the range).

Why this composition (measured on the shipped MNIST generator, float32, one thread;
``python -m geninv.bench.noise_grid`` runs the whole grid): Levenberg-Marquardt on the whole
network (supports re-read at every step) reaches the end-to-end Oracle's median z SNR from a start
in the right basin, and converges quadratically there, so what it costs is the number of steps
its start needs. Where the image layer determines the last hidden layer (more unsaturated observed
pixels than ``n_L``), the start is ``z`` fitted through the hidden layers to the image layer's
least-squares estimate of ``x_L`` (:mod:`geninv.solvers.hidden_fit`): on 512 8-bit signals the
refinement then passes gd's final median after one step and stops after four, where from
Latent-Pursuit's estimate (capped at 20 iterations per stage, no debiasing; z SNR near 1 dB) it
needs seven; elsewhere (compressed sensing, a contracting image layer) the capped pursuit is the
start. A few starts (1-2 in 64 on 8-bit data, 8 in 64 on compressed sensing, where the fit's
residual is consistent with noise but its level is several times the batch's) and signals outside
the range get the refinement from latents of a seeded bank whose images fit them best: on
compressed sensing every one of them then reaches the Oracle's basin, where gradient descent from
a random start rescued none. A fit no noise level explains (a signal outside the range) stops
refining early, takes half those starts, and is then searched around (seeded perturbations, each
refined a few steps, kept where the fit is lower) and polished by Adam steps: on 256 real digits
that reaches Adam's median projection SNR with 10 restarts x 1,000 steps in under a tenth of its
time, where the best of 6 starts alone ends 0.04 dB below it. The noise-aware pursuit
(:func:`geninv.solvers.noise.noisy_pursuit`) reaches the same medians at several times the cost
(its image-layer FISTA runs to its cap, its propagated noise levels take an eigen-decomposition per
sample and layer), so it is an opt-in candidate.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from geninv.exceptions import ConvergenceWarning
from geninv.model.generator import Generator
from geninv.solvers.auto_options import AutoOptions, noise_arg
from geninv.solvers.auto_steps import (
    fallback_candidate,
    fit_level,
    map_refit,
    noisy_candidate,
    refine_subset,
    residual_noise_level,
    resume_refine,
    robust_level,
    suspect_fits,
    take_better,
    warn_fits,
)
from geninv.solvers.checks import check_generator, check_informative, check_option
from geninv.solvers.error_bound import z_error_bound
from geninv.solvers.hidden_fit import hidden_target_fit, nearest_bank_latent
from geninv.solvers.image_layer import data_dtype
from geninv.solvers.loop import Callback
from geninv.solvers.measurement import (
    Measurement,
    resolve_measurement,
)
from geninv.solvers.network import hidden_layers
from geninv.solvers.per_sample import exact_samples, image_test
from geninv.solvers.polish import adam_polish, hop_refine
from geninv.solvers.refine import network_fit
from geninv.solvers.result import SolveResult, finish
from geninv.solvers.support_fit import bank_refine
from geninv.solvers.verdict import fit_verdict, noise_tol

__all__ = ["auto", "AutoOptions", "STAGES", "exact_samples", "residual_noise_level", "z_error_bound"]

#: A refinement step count and a residual multiple: from this many steps on, a fit whose residual
#: is more than ``POOR_MARGIN`` times what its reference level allows stops refining (Notes, 2.).
POOR_ITER = 10
POOR_MARGIN = 1.5

#: Per-sample ``info["stage"]`` values: index into this tuple.
STAGES = ("exact", "refined", "noisy_pursuit", "gd", "adam", "multistart")


def auto(
    G: Generator,
    y: Tensor,
    *,
    measure: Any = None,
    mask: Tensor | None = None,
    noise_level: float | Tensor | str = "auto",
    sigma_z: float = 1.0,
    pursuit_iter: int = 20,
    refine_iter: int = 50,
    fallback: bool | Sequence[str] = (),
    fallback_iter: int = 3000,
    seed: int = 0,
    suspect_ratio: float = 2.0,
    map_fit: bool = True,
    bound: bool = False,
    callback: Callback | None = None,
    starts: int = 6,
    noisy_candidate: bool = False,
    second_start_snr: float = 25.0,
    target_residual: float = 0.6,
    hops: int = 6,
    fast_path: bool | str = "auto",
) -> SolveResult:
    """Invert ``y = A G(z) (+ e)`` doing the right thing per sample (the default of :func:`geninv.invert`).

    Parameters
    ----------
    G : Generator
    y : Tensor of shape (B, n) (or (B, m) for a general ``measure``)
        Exact, noisy, quantized, or not in the range of ``G`` at all (then the result is the
        best-fitting latent found, and says so per sample).
    measure, mask :
        As in :func:`geninv.invert`.
    noise_level : float, Tensor of shape (B,), "auto" or 0
        Standard deviation ``sigma`` of white noise on the observed entries. ``"auto"`` (default):
        estimated per sample from the residual of the refined fit. ``0``: exact data, nothing
        estimated (the fit is judged at the rounding level of the data's dtype).
    sigma_z : float
        Prior standard deviation of ``z`` (``z ~ N(0, sigma_z^2 I)``): with a given ``sigma`` the
        refinement is the Gaussian MAP fit, weight ``sigma^2 / sigma_z^2`` on ``1/2 ||z||^2``.
    pursuit_iter : int
        Iteration cap of each Latent-Pursuit stage for the samples that are not exact and whose
        image layer does not determine ``x_L`` (compressed sensing, too few observed pixels; default
        20: the refinement only needs the right basin; on 512 8-bit and 30 dB MNIST-generator
        signals started from the pursuit, 20 and 50 gave the same median and 10 % quantile of z SNR
        to 0.01 dB).
    refine_iter : int
        Levenberg-Marquardt steps of the whole-network refinement (default 50).
    fallback : bool or sequence of {"gd", "adam"}
        A gradient cascade (each followed by the refinement) for the samples still in doubt after
        the starts: gradient descent from its seeded start, then Adam with random restarts if
        listed (True: gd only; default none: on 64 real MNIST digits gd after the starts left the
        median projection SNR unchanged, 12.319 dB, at a fifth more time).
    fallback_iter : int
        ``max_iter`` of each fallback (default 3000).
    seed : int
        Seed of the bank of starts and of the fallbacks' random starts.
    suspect_ratio : float
        A fit whose noise level exceeds this multiple of the median level of the batch's refined
        fits (at least 8 of them) is in doubt and gets the further candidates (default 2; 1.5
        gave the same results on compressed sensing at a higher cost).
    map_fit : bool
        With ``noise_level="auto"``, refine once more as the Gaussian MAP fit with the estimated
        level (weight ``sigma_hat^2 / sigma_z^2``; default True: measured at 20 dB input SNR it
        lifts the 10 % quantile of z SNR by 0.3-0.7 dB; it costs a few more steps).
    bound : bool
        Also compute ``info["z_error_bound"]``, Theorem 2's a-posteriori bound on
        ``||z_hat - z||`` per sample (:func:`z_error_bound`; default False: it costs a few
        decompositions per sample and layer, in numpy).
    callback : callable, optional
        ``callback(k, state)`` once per stage (``"exact"``; with an estimated level and ``map_fit``
        ``"least_squares"``, the refinement before its MAP refit; ``"refine"``; then the stages
        that run) and after every Levenberg-Marquardt step of the refinement and its MAP refit
        (``"levenberg_marquardt"``, ``k`` the step), ``state = {"stage": name, "x": z, "z": z (B, n_0),
        "objective": (B,)}`` (``objective``: the data fit ``1/2 ||A (y - G(z))||^2``, plus the
        prior term once the MAP weight is set); returning True stops after that stage with what
        it has (``info["stopped_by_callback"]``).
    starts : int
        Starts of the whole-network refinement for each sample whose refined fit is in doubt
        (default 6; 0: none): the latents of a seeded bank of 4096 draws ``z ~ N(0, sigma_z^2 I)``
        whose images fit the sample best; the lowest data fit is kept. On compressed sensing
        (MNIST generator, m = 300, sigma = 0.01) they reach the Oracle's basin for each of the 8
        of 64 signals where the pursuit's start did not.
    hops : int
        Rounds of the search around fits that no noise level explains (Notes, 6.; default 6; 0:
        none, and those fits then take every start and refine to ``refine_iter``). Such fits sit
        in one of many nearby local minima of ``F``; perturbing and refining finds lower ones. On
        256 real MNIST digits against Adam with 10 restarts x 1,000 steps: median projection SNR
        +0.01 dB and mean +0.05 dB in 0.088 of its time (``hops=0``: -0.02 / -0.02 dB, slower).
    noisy_candidate : bool
        Also try the noise-aware pursuit (:func:`geninv.solvers.noise.noisy_pursuit`, refined)
        where the fit is still in doubt after the starts (default False: on real digits it took a
        quarter of the time and changed no median).
    second_start_snr : float
        Where a sample started from the hidden-layer fit (Notes, 2.) fits with an estimated input
        SNR ``20 log10(||y|| / (sigma_hat sqrt(m)))`` below this many dB, the refinement also runs
        from the capped Latent-Pursuit's estimate and the lower objective is kept (default 25; 0:
        never). Under strong noise the refinement's basin depends on its start: 256 signals at
        20 dB input SNR, median / 10 % quantile of z SNR 0.20 / 0.88 dB below the end-to-end
        Oracle's from the hidden-layer fit alone, 0.03 / 0.68 dB with the second start, at about
        twice the time; from 30 dB up the one start is within 0.15 dB.
    target_residual : float
        The hidden-layer fit of Notes, 2. is the start where it leaves at most this fraction of
        its target unexplained (``||x_L(z) - x_hat|| / ||x_hat||``; default 0.6); elsewhere the
        target is mostly no image of a latent (a signal outside the range of ``G``, or noise
        stronger than about 20 dB input SNR), and the capped pursuit is the start. Measured on 256
        signals each: 8-bit 0.01-0.15, 30 dB 0.18-0.51, 20 dB 0.44-0.73, real digits 0.65-0.89; on
        the digits the pursuit's start gives a median projection SNR of 12.75 dB, the hidden-layer
        fit's 12.65.
    fast_path : bool or "auto"
        Try the fast exact path first (:mod:`geninv.solvers.exact_path`): where ``noise_level``
        is ``"auto"`` or 0, every hidden layer ReLU, the output invertible and unsaturated, no mask
        or operator, and the image layer of full column rank, each sample is inverted layer by
        layer with shared factorizations (cached pseudo-inverse, preconditioned CG) and kept where
        ``G(z)`` reproduces ``y`` to the rounding level of the data's dtype (``info["exact_path"]``
        "fast"); the other samples take the path below ("full"; a per-sample list where both
        occur). ``"auto"`` (default): for generators with layers read from convolutions (large
        ``W``, where it is many times faster than the pursuit); on fully connected generators
        Latent-Pursuit's exact path is as fast and more accurate, so the default keeps it
        (``latent_pursuit``'s result on exact data, bit for bit).

    Returns
    -------
    SolveResult
        ``z`` (B, n_0); ``layers``/``supports`` of ``G(z)``; ``info``: ``"stage"`` (B,) int, an
        index into ``STAGES`` (``"exact"``: Latent-Pursuit's exact path, the result is
        Latent-Pursuit's own; ``"refined"``: the start of Notes, 2. refined through the network;
        ``"noisy_pursuit"``; ``"gd"``, ``"adam"``: a fallback; ``"multistart"``: the refinement
        from a bank start), ``"noise_level"`` (B,) float64 (the given sigma, the
        estimate ``||A (y - G(z_hat))|| / sqrt(m - n_0)``, 0 for exact samples), ``"noise_reference"``
        (B,) the level each fit was judged against (the given ``sigma``; for ``"auto"`` the robust
        level of the final residual, 0 for samples judged at rounding level), ``"residual"`` and ``"fits"`` (B,) (:func:`geninv.solvers.verdict.fit_verdict`),
        ``"seconds"`` per stage, ``"stopped_by_callback"``; with ``bound=True`` ``"z_error_bound"`` (B,) float64, NaN where
        Theorem 2's conditions do not hold at the estimate.

    Notes
    -----
    Per sample:

    0. **Fast exact path** (``fast_path``, where it applies): samples whose layer-wise solve
       with shared factorizations reproduces ``y`` to the rounding level are final.
    1. **Exact path.** For the others, where the image layer's least-squares start fits ``y`` to
       the rounding level of the data's dtype (:func:`exact_samples`), Latent-Pursuit runs with
       its defaults; if every sample is exact (and ``fast_path=False`` or the fast path does not
       apply) the result *is* ``latent_pursuit(G, y)``. Its answer is kept where its residual is
       at rounding level.
    2. **Refinement.** Every other sample gets a start: where the exact test's image layer
       determines ``x_L`` (more unsaturated observed pixels than ``n_L``), ``z`` fitted through the
       hidden layers to the image layer's least-squares estimate ``x_hat`` (the latent of a seeded
       bank of 4096 prior draws whose ``x_L`` is nearest to it, then five Levenberg-Marquardt steps
       on ``1/2 ||x_L(z) - x_hat||^2``: :mod:`geninv.solvers.hidden_fit`), where that fit leaves at
       most ``target_residual`` of its target unexplained; elsewhere Latent-Pursuit capped at
       ``pursuit_iter``, no debiasing (and, below ``second_start_snr``, that estimate as a second
       start of the hidden-layer fit's samples). Then Levenberg-Marquardt on the whole network
       (:func:`geninv.solvers.support_fit.support_refine`) minimizing
       ``F = 1/2 ||A (y - G(z))||^2 + gamma/2 ||z||^2`` with ``gamma = sigma^2 / sigma_z^2`` (given
       ``sigma``), or 0 and then (``map_fit``) once more with the estimated ``sigma``. It stops on a statistical criterion: once a step lowers ``F`` by less than
       ``1e-2 n_0 / (m - n_0)`` of ``F``. For noisy data ``F ~ sigma^2 (m - n_0) / 2``, so that is
       a hundredth of the Oracle's expected excess ``E 1/2 ||K (z_hat - z)||^2 = n_0 sigma^2 / 2``;
       exact data converge quadratically and run to the rounding level. With ``hops``, a fit whose
       residual after ``POOR_ITER`` (10) steps is more than ``POOR_MARGIN`` (1.5) times what its
       reference level (3.) allows stops there: no noise level explains it, its further steps
       creep along a region boundary (on 64 real MNIST digits, 27 steps on average for a few
       hundredths of a dB), and 4. and 6. search around it instead. Where a noise level explains
       it after the starts of 4. after all, and its own fit is kept, its refinement resumes.
    3. **Verdict.** The refined fit *fits* when its residual is consistent with a reference level
       (:func:`geninv.solvers.verdict.fit_verdict`): the given ``sigma``; with ``"auto"`` the
       robust level of the fit's own residual (:func:`residual_noise_level`, its median absolute
       value), which a wrong basin or a signal outside the range of ``G`` leaves far below the
       residual's root mean square. Samples the exact test took as exact are judged at rounding
       level.
    4. **Starts.** Where it does not fit, or where its noise level is more than
       ``suspect_ratio`` times the median level of the batch's refined fits (at least 8 of them):
       the refinement from ``starts`` bank latents whose images fit the sample best
       (:func:`geninv.solvers.support_fit.bank_refine`), the lowest data fit kept where it is
       lower than the refined one (then refit as the MAP with its own estimated level).
       Candidates are compared on the data fit: a level estimated from a wrong basin's residual
       is far too high and would weigh the prior too much. With ``hops``, fits that stopped early
       in 2. and are still unexplained take half the starts, probed with float32 steps
       (:func:`geninv.solvers.support_fit.bank_refine`'s ``search``; 6. searches around them);
       other unexplained fits, often a wrong basin of a signal in the range, take every start.
    5. **Further candidates** (opt-in), where the fit is still in doubt: the noise-aware pursuit
       (``noisy_candidate``; :func:`geninv.solvers.noise.noisy_pursuit` with the reference
       ``sigma``), then the gradient ``fallback``; each refined and kept where its objective is lower.
    6. **Search and polish.** A fit still not consistent with any noise level (a signal outside
       the range of ``G``; no statistical stopping rule applies) gets ``hops`` rounds of an
       iterated local search (:func:`geninv.solvers.polish.hop_refine`: two seeded perturbations
       of the fit, each refined a few steps, the better refined on, kept where ``F`` is lower),
       then Adam steps on ``F`` (:func:`geninv.solvers.polish.adam_polish`), the lowest ``F`` seen
       kept.

    The reported ``noise_level`` for ``"auto"`` is ``||A (y - G(z_hat))|| / sqrt(m - n_0)``: near
    the right latent the residual is the noise projected off the ``n_0``-dimensional tangent
    space, ``E ||r||^2 = sigma^2 (m - n_0)`` (relative standard deviation ``1/sqrt(2 (m - n_0))``).

    Examples
    --------
    >>> G = random_generator([20, 200, 600], "tanh", dtype=torch.float64)
    >>> z, y = G.sample(4, seed=1)
    >>> res = auto(G, y)
    >>> bool((relative_error(z, res.z) < 1e-6).all())
    True
    """
    t0 = time.perf_counter()
    G = check_generator(G)
    yy, meas = resolve_measurement(measure, mask, G, y)
    G = G.like(yy)
    opts = AutoOptions.checked(sigma_z=sigma_z, pursuit_iter=pursuit_iter, refine_iter=refine_iter, fallback=fallback,
                               fallback_iter=fallback_iter, seed=seed, suspect_ratio=suspect_ratio, map_fit=map_fit,
                               bound=bound, callback=callback, starts=starts,
                               noisy_candidate=noisy_candidate, second_start_snr=second_start_snr,
                               target_residual=target_residual, hops=hops)
    if fast_path == "auto":
        fast_path = any(layer.op is not None for layer in G.layers)
    fast_path = check_option("fast_path", fast_path, kind="bool")
    check_informative(G, yy, meas)
    B, dev = yy.shape[0], yy.device
    given = noise_arg(noise_level, B, dev)
    with torch.no_grad():
        # -- the fast exact path first (module exact_path); the other samples go the full way --
        from geninv.solvers.exact_path import with_fast_exact

        def full(idx: Tensor | None = None) -> SolveResult:
            if idx is None:
                return _run(G, yy, meas, given, opts, t0)
            return _run(G, yy[idx], meas.subset(idx), None if given is None else given[idx], opts, t0)

        res = with_fast_exact(G, yy, meas, given, opts.callback, t0, full, STAGES) if fast_path else None
        if res is None:
            res = full()
            res = dataclasses.replace(res, info=dict(res.info, exact_path="full"))
        # -- end of the fast-exact dispatch --
    if opts.bound:
        t1 = time.perf_counter()
        zb = z_error_bound(G, yy, meas, res.z, res.info["noise_level"])
        info = dict(res.info, z_error_bound=zb)
        info["seconds"] = dict(info.get("seconds", {}), bound=time.perf_counter() - t1)
        res = dataclasses.replace(res, info=info, seconds=res.seconds + time.perf_counter() - t1)
    return res


def _run(G: Generator, y: Tensor, meas: Measurement, given: Tensor | None, opts: AutoOptions,
         t0: float) -> SolveResult:
    from geninv.solvers.latent_pursuit import latent_pursuit

    sigma_z, pursuit_iter, refine_iter = opts.sigma_z, opts.pursuit_iter, opts.refine_iter
    fallback, fallback_iter, seed, suspect_ratio = opts.fallback, opts.fallback_iter, opts.seed, opts.suspect_ratio
    map_fit, callback = opts.map_fit, opts.callback

    B, dev, dt = y.shape[0], y.device, y.dtype
    f64 = torch.float64
    data_dt = data_dtype(y)
    seconds: dict[str, float] = {}
    m_obs = meas.n_observed(y).to(f64)
    # Unobserved entries carry no data: zero them, so the fit's residual is the observed one.
    y64 = meas.observed(y.to(f64))
    y_norm = y64.norm(dim=1)
    G64 = G.to(dtype=f64)
    exact_given = given is not None and bool((given == 0).all())

    def verdict(z64: Tensor, sig: Tensor | None) -> tuple[Tensor, Tensor]:
        F = network_fit(G64, y64, z64, meas)
        rn = torch.sqrt(2.0 * F)
        return fit_verdict(rn, y_norm, m_obs, data_dtype=data_dt, noise_level=sig)

    # 1. the exact path
    ts = time.perf_counter()
    test = image_test(G, y, meas)
    exact = None if test is None else test.exact
    if exact is None:
        exact = torch.full((B,), exact_given, dtype=torch.bool, device=dev)
    if exact_given:
        exact = torch.ones(B, dtype=torch.bool, device=dev)
    z = torch.zeros(B, G.latent_dim, dtype=f64, device=dev)
    stage = torch.ones(B, dtype=torch.int64, device=dev)
    converged = torch.ones(B, dtype=torch.bool, device=dev)
    n_iter = torch.zeros(B, dtype=torch.int64, device=dev)
    res_lp: SolveResult | None = None
    stopped = False

    def report(k: int, name: str, obj_k: Tensor | None = None, z_k: Tensor | None = None) -> bool:
        """The callback once per stage and Levenberg-Marquardt step (``z_k``: the estimate then, else
        ``z``); True once it asks to stop."""
        nonlocal stopped
        if callback is not None and not stopped:
            o = network_fit(G64, y64, z, meas) if obj_k is None else obj_k
            zc = (z if z_k is None else z_k).to(dt)
            stopped = callback(k, {"stage": name, "x": zc, "z": zc, "objective": o}) is True
        return stopped

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if bool(exact.any()):
            ie = exact.nonzero().squeeze(1)
            res_e = latent_pursuit(G, y if bool(exact.all()) else y[ie], measure=meas.as_measure(None if bool(exact.all())
                                                                                              else ie))
            if bool(exact.all()):
                res_lp = res_e
            z[ie] = res_e.z.to(f64)
            converged[ie] = res_e.converged
            n_iter[ie] = res_e.n_iter
        residual0, fits = verdict(z, None)
        ok = exact & fits
        stage[ok] = 0
        seconds["exact"] = time.perf_counter() - ts
        report(0, "exact")
        if bool(ok.all()) and res_lp is not None and not stopped:
            # Every sample exactly realizable: Latent-Pursuit's own result.
            zeros = torch.zeros(B, dtype=f64, device=dev)
            info_lp = dict(res_lp.info, stage=stage, stages=STAGES, noise_level=zeros, noise_reference=zeros,
                           residual=residual0, fits=fits, seconds_auto=seconds)
            return dataclasses.replace(res_lp, method="auto", info=info_lp, seconds=time.perf_counter() - t0)

        # 2. the refinement for every other sample
        ts = time.perf_counter()
        todo = ~ok
        fresh = todo & ~exact  # no estimate yet
        hidden = torch.zeros(B, dtype=torch.bool, device=dev)  # started from the hidden-layer fit
        if test is not None and bool(fresh.any()) and not stopped:
            # Where the image layer determines x_L: z fitted to its estimate through the hidden layers.
            ih = (fresh & test.determined).nonzero().squeeze(1)
            if ih.numel():
                xh = test.x_hat[ih]
                z0 = nearest_bank_latent(G, xh, seed=seed, sigma_z=sigma_z, dtype=data_dt)
                zh, rel = hidden_target_fit(G, xh, z0, jac_dtype=data_dt)
                # A target mostly left unexplained is no image of a latent (a signal outside the
                # range, or strong noise): there the capped pursuit's start reaches better fits.
                ok_h = rel <= opts.target_residual
                ih = ih[ok_h]
                z[ih] = zh[ok_h]
                hidden[ih] = True
                fresh[ih] = False
            seconds["hidden_fit"] = time.perf_counter() - ts
        if bool(fresh.any()) and not stopped:
            ts = time.perf_counter()
            iff = fresh.nonzero().squeeze(1)
            res_p = latent_pursuit(G, y[iff], measure=meas.as_measure(iff), max_iter=pursuit_iter, debias=False)
            z[iff] = res_p.z.to(f64)
            n_iter[iff] = res_p.n_iter
            seconds["pursuit"] = time.perf_counter() - ts
    ts = time.perf_counter()
    idx = todo.nonzero().squeeze(1)
    robust = (todo & ~exact).nonzero().squeeze(1)

    def reference(zc: Tensor) -> Tensor:
        """The level each fit is judged against (see Notes, 3.)."""
        r = given.clone() if given is not None else torch.zeros(B, dtype=f64, device=dev)
        if given is None and robust.numel():
            r[robust] = residual_noise_level(G, y[robust], meas.subset(robust), zc[robust])
        # Samples the exact test took as exact (whose pursuit did not fit) are exact data.
        return torch.where(exact, torch.zeros_like(r), r)

    def on_step(k: int, zc: Tensor, oc: Tensor) -> bool:
        return report(k, "levenberg_marquardt", oc, zc)

    def hopeless(g: Tensor, zg: Tensor) -> Tensor:
        """Samples ``g`` whose fit ``zg`` leaves more than ``POOR_MARGIN`` times the residual that
        its reference level allows (never those judged at rounding level)."""
        mg = meas.subset(g)
        r = mg.apply(G64.forward_unchecked(zg)) - y64[g]
        lvl = given[g] if given is not None else robust_level(r, mg)
        return ~exact[g] & (r.norm(dim=1) > POOR_MARGIN * noise_tol(lvl, m_obs[g]))

    searching = bool(opts.hops) and not exact_given  # the search of Notes, 6., and the early stop for it
    crept = torch.zeros(B, dtype=torch.bool, device=dev)  # the refinement stopped early as unexplained

    def hopeless_first(g: Tensor, zg: Tensor) -> Tensor:
        out = hopeless(g, zg)
        crept[g[out]] = True
        return out

    gam = torch.zeros(B, dtype=f64, device=dev) if given is None else given.square() / sigma_z**2
    z, obj, conv_r, it_r = refine_subset(G64, y64, meas, z, idx, gam, 0 if stopped else refine_iter, data_dt,
                                         on_step=on_step if callback is not None else None,
                                         give_up=(POOR_ITER, hopeless_first) if searching else None)
    n_iter[idx] += it_r
    converged[idx] = conv_r
    if given is None and robust.numel() and map_fit:
        report(1, "least_squares", obj)
    if given is None and robust.numel() and map_fit and not stopped:
        # The Gaussian MAP fit with the estimated level, from the least-squares one, where that
        # fit is consistent with noise (elsewhere its residual is not noise, and no level applies).
        im = robust[verdict(z, reference(z))[1][robust]]
        if im.numel():
            z, obj, conv_r, it_r = map_refit(G64, y64, meas, z, im, gam, m_obs, sigma_z, refine_iter, data_dt,
                                             on_step=on_step if callback is not None else None)
            n_iter[im] += it_r
            converged[im] = conv_r
    seconds["refine"] = time.perf_counter() - ts
    report(1, "refine", obj)

    def judged() -> Tensor:
        return verdict(z, reference(z))[1]

    if opts.second_start_snr > 0 and bool(hidden.any()) and not stopped:
        # Strong noise: the refinement's basin depends on its start; the capped pursuit is a second one.
        F_data = network_fit(G64, y64, z, meas)
        level = fit_level(F_data, m_obs, G.latent_dim)
        snr_in = 20.0 * torch.log10(y_norm / (level * m_obs.sqrt()).clamp_min(torch.finfo(f64).tiny))
        iw = (hidden & judged() & (snr_in < opts.second_start_snr)).nonzero().squeeze(1)
        if iw.numel():
            ts = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                res_p = latent_pursuit(G, y[iw], measure=meas.as_measure(iw), max_iter=pursuit_iter, debias=False)
            zc = z.clone()
            zc[iw] = res_p.z.to(f64)
            zc, _, conv_c, it_c = refine_subset(G64, y64, meas, zc, iw, gam, refine_iter, data_dt)
            take_better(z, obj, stage, converged, n_iter, G64, y64, meas, gam, iw, zc[iw], conv_c, it_c + res_p.n_iter,
                        STAGES.index("refined"))
            seconds["second_start"] = time.perf_counter() - ts

    # 3.-5. second candidate and fallback where the fit is not consistent with the reference level
    def suspect() -> Tensor:
        return suspect_fits(G64, y64, meas, z, robust, m_obs, suspect_ratio)

    fit_now = judged()
    need = todo & (~fit_now | suspect()) & (not stopped)
    if bool(need.any()) and opts.starts:
        ts = time.perf_counter()
        ineed = need.nonzero().squeeze(1)
        mi = meas.subset(ineed)
        # Candidates are compared on the data fit (a level estimated from a wrong basin's fit
        # would weigh the prior far too much); with a given level, on the MAP objective.
        g_cmp = torch.zeros_like(gam[ineed]) if given is None else gam[ineed]
        # Fits whose refinement stopped early as unexplained, and that still are, take half the
        # starts: the hops (6.) search around them. (Other unexplained fits, often a wrong basin of a
        # signal in the range, take every start: the bank is what rescues them.)
        poor_now = (crept & ~fit_now)[ineed]
        zc = torch.empty(ineed.numel(), G.latent_dim, dtype=f64, device=dev)
        conv_c = torch.empty(ineed.numel(), dtype=torch.bool, device=dev)
        it_c = torch.empty(ineed.numel(), dtype=torch.int64, device=dev)
        for grp, poor_grp in ((poor_now.nonzero().squeeze(1), True), ((~poor_now).nonzero().squeeze(1), False)):
            if grp.numel():
                gu = (POOR_ITER, lambda pos, zz, _g=grp: hopeless(ineed[_g[pos]], zz)) if poor_grp else None
                zc[grp], conv_c[grp], it_c[grp] = bank_refine(
                    G64, y64, meas, ineed[grp], g_cmp[grp], max(1, opts.starts // 2) if poor_grp else opts.starts,
                    sigma_z, seed, refine_iter, data_dt, give_up=gu, search=poor_grp)
        better = network_fit(G64, y64[ineed], zc, mi, g_cmp) < network_fit(G64, y64[ineed], z[ineed], mi, g_cmp)
        gi = ineed[better]
        n_iter[ineed] += it_c
        if gi.numel():
            z[gi], stage[gi], converged[gi] = zc[better], STAGES.index("multistart"), conv_c[better]
            gam[gi] = g_cmp[better]
            if given is None and map_fit:
                # The MAP refit where the kept fit is consistent with noise (as in 2.).
                gm = gi[verdict(z, reference(z))[1][gi]]
                if gm.numel():
                    z, obj, conv_r, it_r = map_refit(G64, y64, meas, z, gm, gam, m_obs, sigma_z, refine_iter, data_dt)
                    n_iter[gm] += it_r
            obj[gi] = network_fit(G64, y64[gi], z[gi], meas.subset(gi), gam[gi])
        # A fit stopped early as unexplained that its own refinement keeps, and that a noise level
        # explains after all, resumes its refinement (then its MAP refit, as in 2.).
        back = ineed[poor_now & ~better]
        back = back[judged()[back]]
        if back.numel():
            z, obj, converged[back], it_r = resume_refine(G64, y64, meas, z, back, gam, m_obs, sigma_z, refine_iter,
                                                          data_dt, map_fit and given is None)
            n_iter[back] += it_r
        seconds["multistart"] = time.perf_counter() - ts
        need = need & (~judged() | suspect()) & (not report(STAGES.index("multistart"), "multistart", obj))
    ref = reference(z)
    if bool(need.any()) and opts.noisy_candidate:
        ts = time.perf_counter()
        ineed = need.nonzero().squeeze(1)
        zn, conv_n, it_n = noisy_candidate(G, y, meas, ineed, ref[ineed], G64, y64, z, m_obs, sigma_z, pursuit_iter,
                                           refine_iter)
        take_better(z, obj, stage, converged, n_iter, G64, y64, meas, gam, ineed, zn, conv_n, it_n, 2)
        seconds["noisy_pursuit"] = time.perf_counter() - ts
        need = need & (~judged() | suspect()) & (not report(2, "noisy_pursuit", obj))
    for name in fallback:
        if not bool(need.any()):
            break
        ts = time.perf_counter()
        ineed = need.nonzero().squeeze(1)
        zg, conv_g, it_g = fallback_candidate(name, G, y, meas, ineed, seed, fallback_iter, G64, y64, gam, refine_iter,
                                              data_dt)
        take_better(z, obj, stage, converged, n_iter, G64, y64, meas, gam, ineed, zg, conv_g, it_g, STAGES.index(name))
        seconds[f"fallback_{name}"] = time.perf_counter() - ts
        need = need & (~judged() | suspect()) & (not report(STAGES.index(name), f"fallback_{name}", obj))

    # A fit no noise level explains: its residual is not noise, so the statistical stopping rule
    # does not apply; it is polished by Adam (the best-fitting latent the method reports).
    poor = (todo & ~judged()).nonzero().squeeze(1)
    if poor.numel() and not stopped:
        ts = time.perf_counter()
        if opts.hops:
            z, _, it_h = hop_refine(G64, y64, meas, z, poor, gam, sigma_z, data_dt, rounds=opts.hops, seed=seed)
            n_iter[poor] += it_h
            seconds["hops"] = time.perf_counter() - ts
            ts = time.perf_counter()
        z, obj, conv_r, it_r = adam_polish(G64, y64, meas, z, poor, gam, sigma_z, data_dt)
        n_iter[poor] += it_r
        converged[poor] = conv_r
        seconds["polish"] = time.perf_counter() - ts
    # The noise level per sample: given, or estimated from the final fit (0 for the exact path).
    F_data = network_fit(G64, y64, z, meas)
    est = fit_level(F_data, m_obs, G.latent_dim)
    sigma = given.clone() if given is not None else torch.where(stage == 0, torch.zeros_like(est), est)
    ref = reference(z)
    residual, fits = fit_verdict(torch.sqrt(2.0 * F_data), y_norm, m_obs, data_dtype=data_dt, noise_level=ref)
    layers = hidden_layers(G64, z)
    supports = [x > 0 for x in layers]
    info: dict[str, Any] = {
        "stage": stage, "stages": STAGES, "noise_level": sigma, "noise_reference": ref, "residual": residual,
        "fits": fits, "objective": obj, "gamma": gam, "seconds": seconds, "stopped_by_callback": stopped,
    }
    with warnings.catch_warnings():
        # finish()'s "raise max_iter" is the wrong advice where the fit is the issue; said below.
        warnings.filterwarnings("ignore", message="auto: .* did not converge", category=ConvergenceWarning)
        res = finish("auto", G, z, layers, supports, converged, n_iter, history={}, t0=t0, info=info, dtype=dt)
    against = ("the rounding level of exact data" if exact_given else "the given noise level" if given is not None
               else "the noise level estimated from the residual")
    warn_fits(res.info["fits"], residual, res.converged, against)
    return res

"""The default noise behaviour of the pursuits called through :func:`geninv.invert`: decided per sample.

Without ``noise_level=``, a batch usually mixes signals that ``G`` realizes exactly (up to the
rounding of the data's dtype) with signals that it does not (noise, 8-bit quantization, a signal
outside the range of ``G``). The exact form of a pursuit is fast and exact on the first kind and
fails on the second; its noisy form (every parameter from an estimated noise level) serves the
second. :func:`exact_or_noisy` splits the batch by the exact test of the image layer
(:func:`exact_samples`), solves each group with its form, and merges the two results back in the
batch's order, each judged by its own rule. The exact samples' pursuit takes the image layer's
start that the test computed (:class:`geninv.solvers.image_layer.ImageStart`).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor

from geninv.model.generator import Generator
from geninv.solvers.image_layer import ImageStart, choose_domains, image_start
from geninv.solvers.measurement import Measurement, unsaturated
from geninv.solvers.registry import MethodSpec
from geninv.solvers.result import SolveResult, merge_results
from geninv.solvers.verdict import estimated_noise_level, self_check

__all__ = ["exact_or_noisy", "exact_samples", "exact_test", "image_test", "ImageTest", "judge", "result_rows"]


def exact_test(G: Generator, y: Tensor, meas: Measurement) -> tuple[Tensor | None, ImageStart | None]:
    """Which samples the image layer fits exactly (B,) bool, and the image layer's start it computed.

    The samples are None where the test is not available (no pre-activation form: a
    non-invertible output, a general operator; or no sample observes more than ``n_L``
    unsaturated pixels, as for a contracting image layer); the start is None where it was not computed. A
    sample with an observed value outside the output range, or observing at most ``n_L``
    unsaturated pixels, is not exact; saturated pixels are left out
    (:func:`geninv.solvers.measurement.unsaturated`).

    A sample is exact when the nonnegative least-squares start of the image layer solves it to the
    rounding level of the data's dtype (:func:`geninv.solvers.image_layer.image_start`, the rule
    Latent-Pursuit itself applies). The start is that of the samples taking the pre-activation
    form (the whole batch, or those samples where the batch mixes forms); a pursuit given it as
    ``image_start`` on those samples starts from it instead of computing it again.
    """
    t = image_test(G, y, meas)
    return (None, None) if t is None else (t.exact, t.start)


class ImageTest(NamedTuple):
    """The per-sample exact test with the image layer's estimate of ``x_L`` (:func:`image_test`).

    exact : Tensor of shape (B,), bool, or None
        As :func:`exact_test` (None where the test is not available).
    start : ImageStart or None
        As :func:`exact_test`: the start of the samples ``rows``.
    rows : Tensor of shape (k,), int64
        The samples the start was computed for.
    determined : Tensor of shape (B,), bool
        Samples whose unsaturated observed pixels outnumber ``n_L``: there the start is the image
        layer's least-squares solution (nonnegative part) and ``x_hat`` holds it.
    x_hat : Tensor of shape (B, n_L)
        That estimate of the last hidden layer (rows not ``determined``: zero).
    """

    exact: Tensor | None
    start: ImageStart | None
    rows: Tensor
    determined: Tensor
    x_hat: Tensor


def image_test(G: Generator, y: Tensor, meas: Measurement) -> ImageTest | None:
    """The exact test of :func:`exact_test` with the estimate of ``x_L`` it computed per sample
    (:class:`ImageTest`); None where no sample has a pre-activation form with more than ``n_L``
    unsaturated observed pixels."""
    if G.n_hidden == 0 or not G.output_activation.invertible:
        return None
    domain, pre = choose_domains("auto", G, y, meas)
    if domain == "signal":
        return None
    idx = pre.nonzero().squeeze(1)
    yp = y if domain == "pre" else y[idx]
    mp = meas if domain == "pre" else meas.subset(idx)
    few = _few_equations(G, yp, mp)
    if bool(few.all()):  # no sample has more equations than n_L: the test would prove nothing
        return None
    start = image_start(G, yp, mp)
    B, dev = y.shape[0], y.device
    determined = torch.zeros(B, dtype=torch.bool, device=dev)
    x_hat = torch.zeros(B, G.layers[-1].n_in, dtype=y.dtype, device=dev)
    if start.x0 is not None:
        determined[idx] = ~few
        x_hat[idx] = start.x0
    if start.exact is None:
        return ImageTest(None, start, idx, determined, x_hat)
    out = torch.zeros(B, dtype=torch.bool, device=dev)
    out[idx] = start.exact & ~few  # too few equations: an exact fit proves nothing
    return ImageTest(out, start, idx, determined, x_hat)


def exact_samples(G: Generator, y: Tensor, meas: Measurement) -> Tensor | None:
    """The samples of :func:`exact_test` (B,) bool, or None where the test is not available."""
    return exact_test(G, y, meas)[0]


def result_rows(res: SolveResult, idx: Tensor) -> SolveResult:
    """The samples ``idx`` of a result: every per-sample tensor (leading dimension B, or the
    second dimension of a (T, B) history) indexed, ``info`` entries of that kind too."""
    B = res.batch_size

    def pick(v: Any) -> Any:
        if isinstance(v, Tensor) and v.ndim >= 1 and v.shape[0] == B:
            return v[idx]
        if isinstance(v, dict):
            return {k: pick(x) for k, x in v.items()}
        return v

    return dataclasses.replace(
        res, z=res.z[idx], layers=[x[idx] for x in res.layers], supports=[s[idx] for s in res.supports],
        converged=res.converged[idx], n_iter=res.n_iter[idx], history={k: h[:, idx] for k, h in res.history.items()},
        info=pick(res.info), residual=None if res.residual is None else res.residual[idx],
        fits=None if res.fits is None else res.fits[idx])


def _noisy_solver(spec: MethodSpec, options: dict[str, Any]) -> Callable[..., SolveResult]:
    """The method's solver for the samples that are not exact: ``noise_level="auto"``."""
    if spec.noise == "noisy_form":
        from geninv.solvers.noise import noisy_pursuit

        shared = {k: v for k, v in options.items() if k in spec.noisy_shared}
        return functools.partial(noisy_pursuit, method=spec.name, noise_level="auto", **shared)
    return functools.partial(spec.load(), **dict(options, noise_level="auto"))


def exact_or_noisy(spec: MethodSpec, G: Generator, y: Tensor, meas: Measurement, measure: object,
                   options: dict[str, Any], *, data_dtype: torch.dtype) -> SolveResult:
    """Solve each sample by the exact form where ``G`` realizes it exactly, by the noisy form elsewhere.

    Parameters
    ----------
    spec : MethodSpec
        A method with ``noise_default="per_sample"`` (``latent_pursuit``, ``layered_bp``, ``hybrid``).
    G : Generator
    y : Tensor of shape (B, m)
        The data as :func:`geninv.solvers.measurement.resolve_measurement` returned it.
    meas : Measurement
        How ``y`` is measured.
    measure : operator or None
        The public measure the method is called with on the whole batch.
    options : dict
        The method's options (without ``noise_level``). The exact samples take them all; the
        others take ``spec.noisy_shared`` of them (a pursuit: ``max_iter``, ``callback``,
        ``seed``; every option for a method with its own ``noise_level``) and
        ``noise_level="auto"``.
    data_dtype : torch.dtype
        The dtype of the data as the caller gave it (the rounding level of the exact test and of
        the verdict).

    Returns
    -------
    SolveResult
        ``info["noise_form"]`` (B,) bool, True where the sample was solved with
        ``noise_level="auto"``; where some is, ``info["noise_reference"]`` (B,) float64, the level
        each sample is judged against (0: the rounding level; for the others the level their
        solve estimated). :func:`judge` gives the verdict.

    Notes
    -----
    A sample is exact when the nonnegative least-squares start of the image layer fits it to the
    rounding level of ``data_dtype`` (:func:`exact_samples`). Where every
    sample is exact the result is the exact form's on the whole batch, bit for bit. Where the test
    proves nothing (no pre-activation form: a general operator, a non-invertible output
    activation, the signal-domain image layer; or at most ``n_L`` unsaturated observed pixels),
    the exact form is tried, and the samples whose result it does not fit at rounding level are
    solved again by the noisy form. A callback sees each group's batch in turn. The exact form
    takes the image layer's start the test computed (:func:`exact_test`), where it serves.
    """
    t0 = time.perf_counter()
    B, dev = y.shape[0], y.device
    Gl = G.like(y)
    ex, start = exact_test(Gl, y, meas)
    solve_exact = functools.partial(spec.load(), **_with_start(spec, options, start))
    if ex is None:  # no exact test: every sample is tried by the exact form
        exact, trial = torch.zeros(B, dtype=torch.bool, device=dev), torch.ones(B, dtype=torch.bool, device=dev)
    else:  # too few equations: the test proves nothing, the exact form is tried
        exact, trial = ex, ~ex & _few_equations(Gl, y, meas)
    if bool(exact.all()):
        res = solve_exact(G, y, measure=measure)
        return dataclasses.replace(res, info=dict(res.info, noise_form=~exact))
    parts = []
    if bool(exact.any()):
        ie = exact.nonzero().squeeze(1)
        parts.append((ie, solve_exact(G, y[ie], measure=meas.as_measure(ie))))
    if bool(trial.any()):
        it = trial.nonzero().squeeze(1)
        whole = bool(trial.all())
        r = solve_exact(G, y[it], measure=measure if whole else meas.as_measure(it))
        r = self_check(G, y[it], meas if whole else meas.subset(it), r, data_dtype=data_dtype)
        assert r.fits is not None
        if bool(r.fits.all()):
            if whole:
                return dataclasses.replace(r, info=dict(r.info, noise_form=torch.zeros(B, dtype=torch.bool, device=dev)))
            parts.append((it, r))
        elif bool(r.fits.any()):
            kept = r.fits.nonzero().squeeze(1)
            parts.append((it[kept], result_rows(r, kept)))
        exact = exact.clone()
        exact[it[r.fits]] = True
    noisy = ~exact
    reference = torch.zeros(B, dtype=torch.float64, device=dev)  # exact samples: judged at rounding level
    if bool(noisy.any()):
        i_n = noisy.nonzero().squeeze(1)
        r = _noisy_solver(spec, options)(G, y[i_n], measure=meas.as_measure(i_n))
        level = estimated_noise_level(r.info, r.batch_size, dev)
        if level is not None:
            reference[i_n] = level
        parts.append((i_n, r))
    merged = merge_results(parts, B, time.perf_counter() - t0)
    info = dict(merged.info, noise_form=noisy, noise_reference=reference)
    return dataclasses.replace(merged, method=spec.name, info=info)


def _with_start(spec: MethodSpec, options: dict[str, Any], start: ImageStart | None) -> dict[str, Any]:
    """``options`` with the image layer's start where the method takes one (``spec.image_start``);
    a start the caller gave is kept."""
    if start is None or spec.image_start is None:
        return options
    if spec.image_start == "option":
        return dict({"image_start": start}, **options)
    inner = dict(options.get("pursuit_options") or {})
    inner.setdefault("image_start", start)
    return dict(options, pursuit_options=inner)


def _few_equations(G: Generator, y: Tensor, meas: Measurement) -> Tensor:
    """Samples (B,) bool whose unsaturated observed pixels number at most ``n_L``: there an exact
    fit of the image layer proves nothing (:func:`exact_samples`)."""
    m = unsaturated(G, y, meas)
    return m.n_observed(y) <= G.layers[-1].n_in


def judge(G: Generator, y: Tensor, meas: Measurement, res: SolveResult, *, data_dtype: torch.dtype) -> SolveResult:
    """``res`` of :func:`exact_or_noisy` with its per-sample ``residual`` and ``fits``
    (:func:`geninv.solvers.verdict.self_check`): the samples solved by the exact form judged at the
    rounding level of ``data_dtype``, the others against the noise level their solve estimated
    (``info["noise_reference"]``)."""
    noisy = res.info["noise_form"]
    return self_check(G, y, meas, res, data_dtype=data_dtype, noise_level="auto" if bool(noisy.any()) else None)

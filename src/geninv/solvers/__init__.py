"""Inversion methods. Each is a function ``method(G, y, *, measure=None, ...) -> SolveResult``;
:func:`invert` is the one public entry point that validates and dispatches by name."""

from __future__ import annotations

import dataclasses
import functools
import time
import warnings
from typing import Any

import torch
from torch import Tensor

from geninv.exceptions import ConvergenceWarning, InputError, describe
from geninv.integrations import is_deepinv_physics
from geninv.model.generator import Generator
from geninv.operators import Mask, Operator
from geninv.solvers.checks import check_generator, check_informative, check_option, check_seed
from geninv.solvers.debias import debias_fit
from geninv.solvers.gradient_setup import LatentMap
from geninv.solvers.image_layer import data_dtype as stored_dtype
from geninv.solvers.latent_pursuit import latent_pursuit
from geninv.solvers.layered_bp import layered_bp
from geninv.solvers.measurement import Measurement, resolve_measurement
from geninv.solvers.network import hidden_layers, network_objective
from geninv.solvers.oracle import oracle
from geninv.solvers.per_sample import exact_or_noisy, judge
from geninv.solvers.registry import (
    METHODS,
    NOISY_FORM_OPTIONS,
    REGISTRY,
    MethodSpec,
    accepted_options,
    load_method,
    method_spec,
    takes_noise_level,
)
from geninv.solvers.result import SolveResult
from geninv.solvers.verdict import fit_message, noise_level_of, self_check

__all__ = ["SolveResult", "invert", "takes_noise_level", "oracle", "layered_bp", "latent_pursuit", "METHODS", "REGISTRY",
           "MethodSpec", "method_spec", "load_method", "accepted_options", "debias_result"]


def _is_exact_request(noise: object) -> bool:
    """``noise_level=0`` (a plain number): exact data, no noise level estimated."""
    return isinstance(noise, (int, float)) and not isinstance(noise, bool) and noise == 0


def invert(
    G: Generator | LatentMap,
    y: Tensor,
    method: str = "auto",
    mask: Tensor | Mask | None = None,
    measure: Operator | object | None = None,
    **options: Any,
) -> SolveResult:
    """Invert a batch of signals ``y = A G(z)`` with the named method.

    Parameters
    ----------
    G : Generator
        (for ``gd`` and ``adam``, also any differentiable callable ``G(z)``, e.g. a torch module,
        with its latent size given as ``latent_dim=``; no certificate is available there)
    y : Tensor of shape (B, n) or (n,), or in the generator's ``output_shape`` (B, C, H, W)
        Signals (with a general ``measure`` of shape (m, n): measurements of shape (B, m)).
        Must be finite; methods that apply ``phi^{-1}`` (``oracle``, ``layered_bp`` and
        ``latent_pursuit`` with their default pre-activation form) need the observed entries
        inside the range of the output activation (e.g. ``|y| < 1`` for tanh), else DomainError.
    method : str
        ``"auto"`` (default: per sample, Latent-Pursuit's exact path for exactly realizable
        signals, otherwise the pursuit refined through the whole network with the noise level
        estimated, and a gradient fallback only where nothing fits;
        :func:`geninv.solvers.auto.auto`), ``"latent_pursuit"``, ``"layered_bp"``, ``"hybrid"``,
        ``"oracle"`` (needs ``supports=``), ``"gd"``, ``"adam"`` or ``"lp_layerwise"``.
    mask : Tensor of shape (n,) or (B, n), bool, optional
        Observed pixels (True); becomes ``geninv.Mask(mask)``. Exclusive with ``measure``.
    measure : operator, optional
        A ``Mask``, ``Matrix``, ``GaussianMatrix`` or any object with ``forward``, ``adjoint``,
        ``shape`` and ``norm``; or a deepinv ``LinearPhysics``, wrapped by
        :func:`geninv.integrations.deepinv.as_operator` (its noiseless ``A``, ``y`` of shape
        (B, *measurement_shape) flattened, its Gaussian ``noise_model.sigma`` as ``noise_level``).
    **options
        The method's keyword options (same names everywhere: ``lam``, ``rho``, ``gamma``,
        ``max_iter``, ``tol``, ``debias``, ``seed``, ``callback``, ...). An option the method does
        not take raises InputError naming it and listing the accepted ones. ``debias=True`` for a
        method without its own debiasing (``gd``, ``adam``) applies :func:`debias_result` to its
        result (supports of ``G(z_hat)`` frozen, ``z`` refit end to end, kept where better).
        ``noise_level=sigma`` (a float, a (B,) tensor or ``"auto"``) with ``latent_pursuit`` or
        ``layered_bp`` runs their noisy form (:func:`geninv.solvers.noise.noisy_pursuit`: every
        ``lam_i``, the latent prior and the support thresholds set from ``sigma``, then a
        refinement) on every sample; ``hybrid`` and ``auto`` take ``noise_level`` themselves.
        ``noise_level=0`` means exact data, nothing estimated: the pursuits' exact form, the
        noiseless ``hybrid``.

        Without ``noise_level``, ``latent_pursuit``, ``layered_bp`` and ``hybrid`` decide per
        sample (:func:`geninv.solvers.per_sample.exact_or_noisy`): a sample the generator
        realizes exactly (the image layer's least-squares start fits it to the rounding level of
        the data's dtype) gets the exact form, bit for bit what ``noise_level=0`` gives; every
        other sample (noisy, quantized, outside the range of ``G``) is solved as with
        ``noise_level="auto"``. The exact form's options apply to the exact samples; the others
        take ``max_iter``, ``callback`` and ``seed`` of them (``hybrid``: every option); a
        callback then sees each group's batch in turn. ``info["noise_form"]`` (B,) bool marks
        the samples solved with ``noise_level="auto"``.

    Returns
    -------
    SolveResult
        With per-sample ``residual`` (``||A G(z) - y|| / ||y||``, float64 (B,)) and ``fits``
        (bool (B,)): the residual is at the rounding level of ``y``'s dtype, or consistent with
        the noise level (``noise_level=`` when a number or tensor, else the one the method
        estimated; per sample without ``noise_level``: the exact samples at rounding level). When some sample does not fit, one ``ConvergenceWarning`` per call gives the
        counts and residuals (the method's own convergence warnings are folded into it); none
        when every sample fits.

    Raises
    ------
    InputError, ShapeError, DomainError
        Naming the offending argument.

    Examples
    --------
    >>> G = random_generator([20, 200, 600], "tanh", dtype=torch.float64)
    >>> z, y = G.sample(4, seed=0)
    >>> res = invert(G, y, method="latent_pursuit")
    >>> res.z.shape
    torch.Size([4, 20])
    """
    spec = method_spec(method)
    if spec.any_generator and not isinstance(G, Generator) and callable(G):
        # Any differentiable callable G(z) with latent_dim=: gradient methods only, no certificate.
        _check_common_options(options)
        return spec.load()(G, y, measure=Mask(mask) if mask is not None and not isinstance(mask, Mask) else
                           (mask if mask is not None else measure), **options)
    G = check_generator(G, relu_hidden=not spec.any_generator and spec.name != "oracle")  # the Oracle reads invertible layers too
    mask_flat = G.flatten_output(mask)  # a mask in the output's shape (B, C, H, W)
    if is_deepinv_physics(measure):  # wrapped: its noiseless A / A_adjoint; its Gaussian sigma becomes noise_level
        from geninv.integrations.deepinv_physics import noise_options, wrap_measurement

        measure, y = wrap_measurement(measure, G, y)
        options = noise_options(measure, method, options, takes_noise=spec.takes_noise_level)
    yy, meas = resolve_measurement(measure, mask_flat, G, y)
    if mask_flat is not None:
        measure = mask_flat if isinstance(mask_flat, Mask) else Mask(mask_flat)  # type: ignore[arg-type]  # validated above
    fn = spec.load()
    accepted = spec.options
    per_sample = spec.noise_default == "per_sample" and "noise_level" not in options
    if spec.noise_default == "per_sample" and "noise_level" in options and _is_exact_request(options["noise_level"]):
        # noise_level=0: exact data, nothing estimated: the method without noise_level (its exact form)
        options = {k: v for k, v in options.items() if k != "noise_level"}
    elif spec.noise == "noisy_form" and "noise_level" in options:
        # Noisy signals: the pursuit with every parameter set from sigma (geninv.solvers.noise).
        from geninv.solvers.noise import noisy_pursuit

        fn = functools.partial(noisy_pursuit, method=method)
        accepted = NOISY_FORM_OPTIONS
    post_debias = False
    if not spec.own_debias and "debias" in options:
        # A method without its own debiasing (gd, adam, ...): invert() adds the common one.
        post_debias = options.pop("debias")
        if not isinstance(post_debias, bool):
            raise InputError(f"debias: expected True or False, received {describe(post_debias)}")
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise InputError(
            f"{unknown[0]}: expected an option of method {method!r} ({', '.join(accepted)}), "
            f"received unknown option(s) {', '.join(repr(u) for u in unknown)}"
        )
    _check_common_options(options)
    if spec.needs_supports and "supports" not in options:
        raise InputError(
            f"supports: expected supports=[S_1, ..., S_L] (bool (B, n_i), e.g. G.trace(z).supports) for method "
            f"{method!r}, received none"
        )
    if not spec.needs_supports:
        check_informative(G, yy, meas)
    # the precision the signals carry: float32 values stored in float64 (data made in float32,
    # solved in float64) are judged at float32's rounding level
    data_dtype = stored_dtype(y if isinstance(y, torch.Tensor) and y.dtype in (torch.float32, torch.float64) else yy)
    try:
        with warnings.catch_warnings(record=True) as caught:
            # The method's own ConvergenceWarnings are replaced by the one verdict below.
            warnings.simplefilter("always")
            if per_sample:
                res = exact_or_noisy(spec, G, yy, meas, measure, options, data_dtype=data_dtype)
            else:
                res = fn(G, yy, measure=measure, **options)
            if post_debias:
                res = debias_result(G, yy, meas, res)
    finally:
        for w in caught:
            if not issubclass(w.category, ConvergenceWarning):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
    if per_sample:
        # the exact samples judged at rounding level, the others against their estimated level
        res = judge(G, yy, meas, res, data_dtype=data_dtype)
        noise_known = bool(res.info["noise_form"].any())
    else:
        noise = options.get("noise_level")
        res = self_check(G, yy, meas, res, data_dtype=data_dtype, noise_level=noise)
        noise_known = noise_level_of(noise, res.info, res.batch_size, yy.device) is not None
    msg = fit_message(res, noise_known=noise_known)
    if msg:
        warnings.warn(msg, ConvergenceWarning, stacklevel=2)
    return res


# The options every method shares, validated here once whatever the method (the methods check
# them again when called directly).
_COMMON: dict[str, dict[str, Any]] = {
    "lam": dict(kind="float", low=0.0, allow_none=True),
    "rho": dict(kind="float", low=0.0),
    "gamma": dict(kind="float", low=0.0),
    "max_iter": dict(kind="int", low=1),
    "tol": dict(kind="float", low=0.0, allow_none=True),
    "debias": dict(kind="bool"),
    "callback": dict(kind="callable", allow_none=True),
}


def _check_common_options(options: dict[str, Any]) -> None:
    for name, spec in _COMMON.items():
        if name in options:
            check_option(name, options[name], **spec)
    if "rho" in options and options["rho"] == 0:
        raise InputError("rho: expected a value > 0, received 0")
    if "seed" in options:
        check_seed(options["seed"])


def debias_result(G: Generator, y: Tensor, meas: Measurement, res: SolveResult) -> SolveResult:
    """Debias any method's result (docs/method.md sec. 6.4): freeze the supports of ``G(res.z)`` and fit ``z``
    end to end (:func:`geninv.solvers.debias.debias_fit`); the fit is kept per sample only where
    it lowers ``1/2 ||A (y - G(z))||^2``."""
    t0 = time.perf_counter()
    with torch.no_grad():
        Gl = G.like(y)
        z0 = res.z.to(y.dtype)
        sup = [x > 0 for x in hidden_layers(Gl, z0)]
        before = network_objective(Gl, y, z0, meas)
        z, ok, after, fit_sup = debias_fit(Gl, y, sup, meas, z0=z0)
        better = torch.isfinite(after) & (after < before)
        z = torch.where(better[:, None], z.to(y.dtype), z0)
        layers = hidden_layers(Gl, z)
        supports = [torch.where(better[:, None], a, b) for a, b in zip(fit_sup, sup)]
    info = dict(res.info, debiased=better)
    return dataclasses.replace(res, z=z, layers=layers, supports=supports, seconds=res.seconds + time.perf_counter() - t0,
                               info=info, residual=None, fits=None)

"""Inversion methods. Each is a function ``method(G, y, *, measure=None, ...) -> SolveResult``;
:func:`invert` is the one public entry point that validates and dispatches by name."""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import time
from collections.abc import Callable
from typing import Any

import torch

from geninv.exceptions import InputError, describe
from geninv.operators import Mask
from geninv.solvers.common import (
    check_generator,
    check_informative,
    check_option,
    check_seed,
    debias_fit,
    hidden_layers,
    network_objective,
    resolve_measurement,
)
from geninv.solvers.latent_pursuit import latent_pursuit
from geninv.solvers.layered_bp import layered_bp
from geninv.solvers.oracle import oracle
from geninv.solvers.result import SolveResult

__all__ = ["SolveResult", "invert", "oracle", "layered_bp", "latent_pursuit", "METHODS", "debias_result"]

# name -> (module, function). The baselines are imported on first use, so this module works
# before (or without) them.
METHODS: dict[str, tuple[str, str]] = {
    "oracle": ("geninv.solvers.oracle", "oracle"),
    "layered_bp": ("geninv.solvers.layered_bp", "layered_bp"),
    "latent_pursuit": ("geninv.solvers.latent_pursuit", "latent_pursuit"),
    "gd": ("geninv.solvers.gradient", "gd"),
    "adam": ("geninv.solvers.gradient", "adam"),
    "lp_layerwise": ("geninv.solvers.lp_layerwise", "lp_layerwise"),
    "hybrid": ("geninv.solvers.hybrid", "hybrid"),
    "auto": ("geninv.solvers.auto", "auto"),
}

# Methods that take ``noise_level=`` through invert(): routed to geninv.solvers.noise.noisy_pursuit.
NOISY = ("latent_pursuit", "layered_bp")

# Parameters of a method function that are not user options of invert().
_NOT_OPTIONS = ("G", "y", "measure", "mask")


def _load(method: str) -> Callable[..., SolveResult]:
    module, name = METHODS[method]
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name != module:
            raise
        raise InputError(
            f"method: {method!r} is not available in this installation (module {module} is missing)"
        ) from None
    fn = getattr(mod, name, None)
    if fn is None:
        raise InputError(f"method: {method!r} is not available ({module} has no function {name})")
    return fn  # type: ignore[no-any-return]


def accepted_options(method: str) -> tuple[str, ...] | None:
    """Option names ``invert(..., method=method, **options)`` accepts (None: any)."""
    fn = _load(method)
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return tuple(
        k for k, p in params.items()
        if k not in _NOT_OPTIONS and p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    )


def invert(
    G: Any,
    y: Any,
    method: str = "auto",
    mask: Any = None,
    measure: Any = None,
    **options: Any,
) -> SolveResult:
    """Invert a batch of signals ``y = A G(z)`` with the named method.

    Parameters
    ----------
    G : Generator
    y : Tensor of shape (B, n) or (n,)
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
        A ``Mask``, ``GaussianMatrix`` or any object with ``forward``, ``adjoint``, ``shape``
        and ``norm``.
    **options
        The method's keyword options (same names everywhere: ``lam``, ``rho``, ``gamma``,
        ``max_iter``, ``tol``, ``debias``, ``seed``, ``callback``, ...). An option the method does
        not take raises InputError naming it and listing the accepted ones. ``debias=True`` for a
        method without its own debiasing (``gd``, ``adam``) applies :func:`debias_result` to its
        result (supports of ``G(z_hat)`` frozen, ``z`` refit end to end, kept where better).
        ``noise_level=sigma`` (a float, a (B,) tensor or ``"auto"``) with ``latent_pursuit`` or
        ``layered_bp`` runs their noisy form (:func:`geninv.solvers.noise.noisy_pursuit`: every
        ``lam_i``, the latent prior and the support thresholds set from ``sigma``, then a
        refinement); ``hybrid`` takes ``noise_level`` itself.

    Returns
    -------
    SolveResult

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
    if not isinstance(method, str) or method not in METHODS:
        raise InputError(f"method: expected one of {sorted(METHODS)}, received {describe(method)}")
    G = check_generator(G)
    yy, meas = resolve_measurement(measure, mask, G, y)
    if mask is not None:
        measure = mask if isinstance(mask, Mask) else Mask(mask)  # validated above
    fn = _load(method)
    accepted = accepted_options(method)
    if "noise_level" in options and method in NOISY:
        # Noisy signals: the pursuit with every parameter set from sigma (geninv.solvers.noise).
        from geninv.solvers.noise import noisy_pursuit

        fn = functools.partial(noisy_pursuit, method=method)
        accepted = tuple(k for k in inspect.signature(noisy_pursuit).parameters
                         if k not in _NOT_OPTIONS and k != "method")
    post_debias = False
    if accepted is not None and "debias" in options and "debias" not in accepted:
        # A method without its own debiasing (gd, adam): invert() adds the common one.
        post_debias = options.pop("debias")
        if not isinstance(post_debias, bool):
            raise InputError(f"debias: expected True or False, received {describe(post_debias)}")
    if accepted is not None:
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise InputError(
                f"{unknown[0]}: expected an option of method {method!r} ({', '.join(accepted)}), "
                f"received unknown option(s) {', '.join(repr(u) for u in unknown)}"
            )
    _check_common_options(options)
    if method == "oracle" and "supports" not in options:
        raise InputError(
            "supports: expected supports=[S_1, ..., S_L] (bool (B, n_i), e.g. G.trace(z).supports) for method "
            "'oracle', received none"
        )
    if method != "oracle":
        check_informative(G, yy, meas)
    res = fn(G, yy, measure=measure, **options)
    if post_debias:
        res = debias_result(G, yy, meas, res)
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


def debias_result(G: Any, y: Any, meas: Any, res: SolveResult) -> SolveResult:
    """Debias any method's result (SPEC sec. 6): freeze the supports of ``G(res.z)`` and fit ``z``
    end to end (:func:`geninv.solvers.common.debias_fit`); the fit is kept per sample only where
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
                               info=info)

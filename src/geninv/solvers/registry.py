"""The inversion methods :func:`geninv.invert` knows, each described once.

A :class:`MethodSpec` says where a method lives (it is imported on first use, so the registry
works before, or without, the optional ones), which keyword options it takes, how it reads a noise
level, whether it debiases its own result, whether it needs true supports, and whether it inverts
any differentiable ``G``. Every rule of :func:`geninv.invert` reads these fields; nothing
inspects a signature.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from geninv.exceptions import InputError, describe
from geninv.solvers.result import SolveResult

__all__ = ["MethodSpec", "REGISTRY", "METHODS", "NOISY_FORM_OPTIONS", "method_spec", "load_method", "accepted_options",
           "takes_noise_level"]

#: Options of the noisy form of a pursuit (:func:`geninv.solvers.noise.noisy_pursuit`), ``method`` aside.
NOISY_FORM_OPTIONS: tuple[str, ...] = (
    "noise_level", "lam_scale", "sigma_z", "margin", "image_domain", "max_iter", "tol", "support_tol", "rho", "refine",
    "refine_iter", "gamma_end", "check_every", "power_iters", "callback", "seed",
)


@dataclass(frozen=True)
class MethodSpec:
    """One inversion method as :func:`geninv.invert` dispatches it.

    Attributes
    ----------
    name : str
        The name given as ``invert(..., method=name)``.
    module, function : str
        Where the method's function ``function(G, y, *, measure=None, **options) -> SolveResult`` lives.
    options : tuple of str
        The keyword options ``invert`` passes on (every keyword parameter but ``G``, ``y``,
        ``measure`` and ``mask``).
    noise : {"none", "noisy_form", "own"}
        How ``noise_level=`` is read: refused (``"none"``); the pursuit's noisy form
        (``"noisy_form"``: :func:`geninv.solvers.noise.noisy_pursuit` with ``method=name``, whose
        options are :data:`NOISY_FORM_OPTIONS`); or an option of the method itself (``"own"``).
    noise_default : {None, "per_sample", "own"}
        What ``invert`` does without ``noise_level=``: nothing to decide (None: no noise model);
        ``"per_sample"``: the exactly realizable samples are solved by the exact form and the others
        with ``noise_level="auto"`` (:func:`geninv.solvers.per_sample.exact_or_noisy`); ``"own"``:
        the method decides per sample itself.
    noisy_shared : tuple of str
        With ``noise="noisy_form"`` and ``noise_default="per_sample"``: the options given for the
        exact form that the noisy samples take too (the others keep the noisy form's defaults). A
        method with its own ``noise_level`` takes every option on both kinds of samples.
    own_debias : bool
        The method takes ``debias=`` itself; for the others ``debias=True`` makes ``invert`` apply
        :func:`geninv.solvers.debias_result` to the result.
    needs_supports : bool
        ``supports=`` (the true supports) is required.
    any_generator : bool
        Inverts generators with any hidden activation and any differentiable callable ``G(z)``
        given with ``latent_dim=``.
    image_start : {None, "option", "pursuit_options"}
        How the method's exact form takes the image layer's start that the per-sample exact test
        computed (:class:`geninv.solvers.image_layer.ImageStart`): its own option ``image_start``
        (the pursuits), an entry of its option ``pursuit_options`` (the hybrid), or not at all.
    """

    name: str
    module: str
    function: str
    options: tuple[str, ...]
    noise: Literal["none", "noisy_form", "own"] = "none"
    noise_default: Literal["per_sample", "own"] | None = None
    noisy_shared: tuple[str, ...] = ()
    own_debias: bool = False
    needs_supports: bool = False
    any_generator: bool = False
    image_start: Literal["option", "pursuit_options"] | None = None

    def load(self) -> Callable[..., SolveResult]:
        """The method's function (InputError where its module is missing from this installation)."""
        try:
            mod = importlib.import_module(self.module)
        except ModuleNotFoundError as err:
            if err.name != self.module:
                raise
            raise InputError(
                f"method: {self.name!r} is not available in this installation (module {self.module} is missing)"
            ) from None
        fn = getattr(mod, self.function, None)
        if fn is None:
            raise InputError(f"method: {self.name!r} is not available ({self.module} has no function {self.function})")
        return fn  # type: ignore[no-any-return]

    @property
    def takes_noise_level(self) -> bool:
        """Whether ``invert(..., method=name, noise_level=...)`` is accepted."""
        return self.noise != "none"


_PURSUIT_SHARED = ("max_iter", "callback", "seed")

REGISTRY: dict[str, MethodSpec] = {s.name: s for s in (
    MethodSpec("oracle", "geninv.solvers.oracle", "oracle",
               ("supports", "mode", "max_iter", "tol", "seed", "callback", "solver"), needs_supports=True),
    MethodSpec("layered_bp", "geninv.solvers.layered_bp", "layered_bp",
               ("lam", "lam_rel", "max_iter", "tol", "debias", "debias_rounds", "seed", "callback", "image_domain",
                "support_tol", "check_every", "restart", "power_iters", "warm_start", "image_start"),
               noise="noisy_form", noise_default="per_sample", noisy_shared=_PURSUIT_SHARED, own_debias=True,
               image_start="option"),
    MethodSpec("latent_pursuit", "geninv.solvers.latent_pursuit", "latent_pursuit",
               ("lam", "lam_rel", "rho", "gamma", "max_iter", "tol", "debias", "debias_rounds", "seed", "callback",
                "image_domain", "support_tol", "mu", "check_every", "restart", "warm_start", "power_iters",
                "image_start"),
               noise="noisy_form", noise_default="per_sample", noisy_shared=_PURSUIT_SHARED, own_debias=True,
               image_start="option"),
    MethodSpec("gd", "geninv.solvers.gradient", "gd",
               ("max_iter", "tol", "lr", "momentum", "decay", "seed", "z0", "check_every", "callback", "latent_dim"),
               any_generator=True),
    MethodSpec("adam", "geninv.solvers.gradient", "adam",
               ("latent_dim", "restarts", "seed", "max_iter", "tol", "check_every", "callback", "lr", "decay", "betas",
                "eps"),
               any_generator=True),
    MethodSpec("lp_layerwise", "geninv.solvers.lp_layerwise", "lp_layerwise",
               ("noise", "tol", "support_tol", "clamp", "callback")),
    MethodSpec("hybrid", "geninv.solvers.hybrid", "hybrid",
               ("noise_level", "gamma", "pursuit", "pursuit_iter", "refine_iter", "fallback", "fallback_iter", "fit_tol",
                "seed", "tol", "callback", "pursuit_options", "order"),
               noise="own", noise_default="per_sample", image_start="pursuit_options"),
    MethodSpec("auto", "geninv.solvers.auto", "auto",
               ("noise_level", "sigma_z", "pursuit_iter", "refine_iter", "fallback", "fallback_iter", "seed",
                "suspect_ratio", "map_fit", "bound", "callback", "starts", "noisy_candidate", "second_start_snr",
                "target_residual", "hops", "fast_path"),
               noise="own", noise_default="own"),
)}

#: name -> (module, function) of every method, in the registry's order.
METHODS: dict[str, tuple[str, str]] = {name: (s.module, s.function) for name, s in REGISTRY.items()}


def method_spec(method: object) -> MethodSpec:
    """The registry entry of ``method`` (InputError listing the names for anything else)."""
    if not isinstance(method, str) or method not in REGISTRY:
        raise InputError(f"method: expected one of {sorted(REGISTRY)}, received {describe(method)}")
    return REGISTRY[method]


def load_method(method: str) -> Callable[..., SolveResult]:
    """The function of the named method."""
    return method_spec(method).load()


def accepted_options(method: str) -> tuple[str, ...]:
    """Option names ``invert(..., method=method, **options)`` passes to the method's exact form
    (with ``noise_level=`` a pursuit takes :data:`NOISY_FORM_OPTIONS` instead)."""
    return method_spec(method).options


def takes_noise_level(method: str) -> bool:
    """Whether ``invert(..., method=method)`` accepts ``noise_level=`` (its own option, or the noisy
    form of a pursuit)."""
    return method_spec(method).takes_noise_level

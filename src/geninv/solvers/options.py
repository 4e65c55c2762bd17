"""The pursuits' options as frozen dataclasses, each validated once when it is built (in the public
function), so the solvers' inner functions take one checked object instead of many arguments; the
pursuits' keyword options are declared once, as the fields of :class:`PursuitOptions`
(:func:`keyword_options` gives a public function their signature)."""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from geninv.exceptions import InputError, describe
from geninv.solvers.checks import check_option, check_seed
from geninv.solvers.image_layer import ImageStart
from geninv.solvers.loop import Callback

__all__ = ["PursuitOptions", "NoiseOptions", "keyword_options"]

F = TypeVar("F", bound=Callable[..., Any])


def _positive(name: str, value: float) -> None:
    if value == 0:
        raise InputError(f"{name}: expected a value > 0, received 0.0")


def _check_fields(opts: Any, kinds: dict[str, tuple[str, float | None, bool]]) -> None:
    """Validate the fields of ``opts`` named in ``kinds`` (``name -> (kind, low, allow_none)``), in
    the order of ``kinds``, storing the checked values (ints stay ints, reals become floats)."""
    for name, (kind, low, allow_none) in kinds.items():
        value = check_option(name, getattr(opts, name), kind=kind, low=low, allow_none=allow_none)
        object.__setattr__(opts, name, value)


@dataclass(frozen=True)
class PursuitOptions:
    """Options of Latent-Pursuit and Layered Basis-Pursuit (see :func:`geninv.latent_pursuit` for
    each one's meaning): the one declaration of their keyword options and defaults
    (:func:`keyword_options`). ``tol`` is the resolved tolerance (a number, not None; the public
    default None is the dtype's); ``image_domain`` is resolved per sample by the pursuit
    (:func:`geninv.solvers.image_layer.choose_domains`); ``seed`` is unused (the pursuits are
    deterministic); ``image_start`` the image layer's start already computed
    (:func:`geninv.solvers.image_layer.image_start`), or None."""

    lam: float | None = None
    lam_rel: float = 1e-6
    rho: float = 1.0
    gamma: float = 0.0
    max_iter: int = 2000
    tol: float = 1e-7
    debias: bool = True
    debias_rounds: int = 3
    seed: int | None = None
    callback: Callback | None = None
    image_domain: str = "auto"
    support_tol: float = 1e-4
    mu: float | None = None
    check_every: int = 10
    restart: bool = True
    warm_start: bool = True
    power_iters: int = 30
    image_start: ImageStart | None = None

    def __post_init__(self) -> None:
        if self.image_start is not None and not isinstance(self.image_start, ImageStart):
            raise InputError("image_start: expected None or an ImageStart (geninv.solvers.image_layer.image_start), "
                             f"received {describe(self.image_start)}")
        _check_fields(self, {"lam": ("float", 0.0, True), "lam_rel": ("float", 0.0, False), "rho": ("float", 0.0, False)})
        _positive("rho", self.rho)
        _check_fields(self, {
            "gamma": ("float", 0.0, False), "max_iter": ("int", 1, False), "tol": ("float", 0.0, False),
            "debias": ("bool", None, False), "debias_rounds": ("int", 0, False), "callback": ("callable", None, True),
            "support_tol": ("float", 0.0, False), "mu": ("float", 0.0, True), "check_every": ("int", 1, False),
            "restart": ("bool", None, False), "warm_start": ("bool", None, False), "power_iters": ("int", 0, False),
        })
        check_seed(self.seed)

    def replace(self, **changes: Any) -> PursuitOptions:
        """A copy with ``changes`` (validated again)."""
        return dataclasses.replace(self, **changes)


def keyword_options(options: type, *, without: Collection[str] = (), defaults: Mapping[str, Any] | None = None,
                    annotations: Mapping[str, str] | None = None) -> Callable[[F], F]:
    """Give ``fn(G, y, *, measure=None, mask=None, **options)`` the keyword options declared by
    the fields of the dataclass ``options``, less ``without``.

    The decorated function's signature (``inspect.signature``, ``help``) lists them after its own
    parameters, with the fields' annotations and defaults (``defaults`` / ``annotations`` where the
    public ones differ, e.g. ``tol=None`` resolved later); a call binds its arguments to that
    signature (a TypeError for an unknown or positional option, as for any Python function) and
    ``fn`` gets every option, the defaults filled in.
    """
    defaults = dict(defaults or {})
    annotations = dict(annotations or {})

    def decorate(fn: F) -> F:
        own = [p for p in inspect.signature(fn).parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        extra = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=annotations.get(f.name, f.type),
                                   default=defaults.get(f.name, f.default))
                 for f in dataclasses.fields(options) if f.name not in without]
        sig = inspect.signature(fn).replace(parameters=own + extra)

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            return fn(*bound.args, **bound.kwargs)

        call.__signature__ = sig  # type: ignore[attr-defined]
        return call  # type: ignore[return-value]

    return decorate


@dataclass(frozen=True)
class NoiseOptions:
    """Options of :func:`geninv.solvers.noise.noisy_pursuit` (see there for each one's meaning):
    the one declaration of its keyword options and defaults (:func:`keyword_options`). ``tol`` is
    the resolved tolerance (a number, not None; the public None is the dtype's); ``image_domain``
    is resolved by the pursuit; ``seed`` is unused (deterministic)."""

    method: str = "latent_pursuit"
    refine: str = "network"
    lam_scale: float = 0.1
    sigma_z: float = 1.0
    margin: float = 3.0
    image_domain: str = "signal"
    max_iter: int = 500
    tol: float = 1e-5
    support_tol: float = 1e-4
    rho: float = 1.0
    refine_iter: int = 50
    gamma_end: float | None = None
    check_every: int = 10
    power_iters: int = 30
    callback: Callback | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.method not in ("latent_pursuit", "layered_bp"):
            raise InputError(f"method: expected 'latent_pursuit' or 'layered_bp', received {describe(self.method)}")
        if self.refine not in ("network", "supports", "none"):
            raise InputError(f"refine: expected 'network', 'supports' or 'none', received {describe(self.refine)}")
        _check_fields(self, {"lam_scale": ("float", 0.0, False), "sigma_z": ("float", 0.0, False),
                             "margin": ("float", 0.0, False)})
        _positive("sigma_z", self.sigma_z)
        _check_fields(self, {"max_iter": ("int", 1, False), "tol": ("float", 0.0, False),
                             "support_tol": ("float", 0.0, False), "rho": ("float", 0.0, False)})
        _positive("rho", self.rho)
        _check_fields(self, {
            "refine_iter": ("int", 0, False), "gamma_end": ("float", 0.0, True), "check_every": ("int", 1, False),
            "power_iters": ("int", 0, False), "callback": ("callable", None, True),
        })

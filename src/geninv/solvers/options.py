"""The pursuits' options as frozen dataclasses, each validated once when it is built (in the public
function), so the solvers' inner functions take one checked object instead of many arguments."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from geninv.exceptions import InputError, describe
from geninv.solvers.checks import check_option
from geninv.solvers.image_layer import ImageStart
from geninv.solvers.loop import Callback

__all__ = ["PursuitOptions", "NoiseOptions"]


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
    each one's meaning). ``tol`` is the resolved tolerance (a number, not None); ``image_start``
    the image layer's start already computed (:func:`geninv.solvers.image_layer.image_start`), or None."""

    lam: float | None = None
    lam_rel: float = 1e-6
    rho: float = 1.0
    gamma: float = 0.0
    max_iter: int = 2000
    tol: float = 1e-7
    debias: bool = True
    debias_rounds: int = 3
    callback: Callback | None = None
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

    def replace(self, **changes: Any) -> PursuitOptions:
        """A copy with ``changes`` (validated again)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class NoiseOptions:
    """Options of :func:`geninv.solvers.noise.noisy_pursuit` (see there for each one's meaning).
    ``tol`` is the resolved tolerance (a number, not None)."""

    method: str = "latent_pursuit"
    refine: str = "network"
    lam_scale: float = 0.1
    sigma_z: float = 1.0
    margin: float = 3.0
    max_iter: int = 500
    tol: float = 1e-5
    support_tol: float = 1e-4
    rho: float = 1.0
    refine_iter: int = 50
    gamma_end: float | None = None
    check_every: int = 10
    power_iters: int = 30
    callback: Callback | None = None

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

"""The options of the default method :func:`geninv.solvers.auto.auto`, checked once."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from geninv.exceptions import InputError, describe
from geninv.solvers.checks import check_option, check_seed
from geninv.solvers.loop import Callback

__all__ = ["AutoOptions", "noise_arg"]


@dataclasses.dataclass(frozen=True)
class AutoOptions:
    """The options of :func:`geninv.solvers.auto.auto`, validated once (:meth:`checked`); see there
    for their meaning."""

    sigma_z: float = 1.0
    pursuit_iter: int = 20
    refine_iter: int = 50
    fallback: tuple[str, ...] = ()
    fallback_iter: int = 3000
    seed: int = 0
    suspect_ratio: float = 2.0
    map_fit: bool = True
    bound: bool = False
    callback: Callback | None = None
    starts: int = 6
    noisy_candidate: bool = False
    second_start_snr: float = 25.0
    target_residual: float = 0.6
    hops: int = 6

    @classmethod
    def checked(cls, *, sigma_z: Any = 1.0, pursuit_iter: Any = 20, refine_iter: Any = 50,
                fallback: Any = (), fallback_iter: Any = 3000, seed: Any = 0, suspect_ratio: Any = 2.0,
                map_fit: Any = True, bound: Any = False, callback: Any = None, starts: Any = 6,
                noisy_candidate: Any = False, second_start_snr: Any = 25.0,
                target_residual: Any = 0.6, hops: Any = 6) -> AutoOptions:
        """The options from user values, each checked (:class:`geninv.exceptions.InputError` naming it)."""
        sz = check_option("sigma_z", sigma_z, kind="float", low=0.0)
        if sz == 0:
            raise InputError("sigma_z: expected a value > 0, received 0.0")
        if isinstance(fallback, bool):
            fallback = ("gd",) if fallback else ()
        if isinstance(fallback, str) or not isinstance(fallback, Sequence) or \
                not all(f in ("gd", "adam") for f in fallback):
            raise InputError(f"fallback: expected True, False or a sequence of 'gd' / 'adam', received {describe(fallback)}")
        seed_v = check_seed(seed)
        return cls(
            sigma_z=sz,
            pursuit_iter=check_option("pursuit_iter", pursuit_iter, kind="int", low=1),
            refine_iter=check_option("refine_iter", refine_iter, kind="int", low=0),
            fallback=tuple(fallback),
            fallback_iter=check_option("fallback_iter", fallback_iter, kind="int", low=1),
            seed=0 if seed_v is None else seed_v,
            suspect_ratio=check_option("suspect_ratio", suspect_ratio, kind="float", low=1.0),
            map_fit=check_option("map_fit", map_fit, kind="bool"),
            bound=check_option("bound", bound, kind="bool"),
            callback=check_option("callback", callback, kind="callable", allow_none=True),
            starts=check_option("starts", starts, kind="int", low=0),
            noisy_candidate=check_option("noisy_candidate", noisy_candidate, kind="bool"),
            second_start_snr=check_option("second_start_snr", second_start_snr, kind="float", low=0.0),
            target_residual=check_option("target_residual", target_residual, kind="float", low=0.0),
            hops=check_option("hops", hops, kind="int", low=0),
        )


def noise_arg(noise_level: object, B: int, device: torch.device) -> Tensor | None:
    """``noise_level`` as a float64 (B,) tensor, or None for ``"auto"``."""
    if isinstance(noise_level, str):
        if noise_level != "auto":
            raise InputError(f"noise_level: expected a number >= 0, a (B,) tensor or 'auto', received {noise_level!r}")
        return None
    if isinstance(noise_level, bool) or not isinstance(noise_level, (int, float, Tensor)):
        raise InputError(f"noise_level: expected a number >= 0, a (B,) tensor or 'auto', received {describe(noise_level)}")
    s = torch.as_tensor(noise_level, dtype=torch.float64).to(device).flatten()
    if s.numel() not in (1, B):
        raise InputError(f"noise_level: expected a scalar or shape ({B},), received shape "
                         f"{tuple(torch.as_tensor(noise_level).shape)}")
    if not bool(torch.isfinite(s).all()) or bool((s < 0).any()):
        raise InputError(f"noise_level: expected finite values >= 0, received {describe(noise_level)}")
    return s.expand(B).clone()

"""Argument checks shared by the solvers: the generator, the problem (generator, signals and
measurement together), scalar options, seeds, the default tolerance per dtype, and the refusal of
signals that leave ``z`` undetermined."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from geninv.exceptions import InputError, describe
from geninv.model.generator import Generator
from geninv.solvers.measurement import Measurement, resolve_measurement

__all__ = ["check_generator", "check_problem", "check_option", "check_seed", "default_tol", "check_informative"]


def check_generator(G: object, *, relu_hidden: bool = True) -> Generator:
    """``G`` as a :class:`geninv.Generator` (InputError otherwise), with ReLU hidden layers when
    ``relu_hidden`` (what the pursuits and the Oracle invert)."""
    if not isinstance(G, Generator):
        hint = " (convert a torch module with geninv.Generator.from_torch(module))" if isinstance(G, torch.nn.Module) else ""
        raise InputError(f"G: expected a geninv.Generator{hint}, received {describe(G)}")
    if relu_hidden:
        G.require_relu_hidden("the pursuits and the Oracle")
    return G


def check_option(name: str, value: Any, *, kind: str, low: float | None = None, allow_none: bool = False) -> Any:
    """Validate one solver option (``kind`` in 'float', 'int', 'bool', 'callable')."""
    if value is None:
        if allow_none:
            return None
        raise InputError(f"{name}: expected a {kind}, received None")
    if kind == "bool":
        if not isinstance(value, bool):
            raise InputError(f"{name}: expected True or False, received {describe(value)}")
        return value
    if kind == "callable":
        if not callable(value):
            raise InputError(f"{name}: expected a callable(iteration, state_dict), received {describe(value)}")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{name}: expected an int, received {describe(value)}")
    else:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
            raise InputError(f"{name}: expected a finite real number, received {describe(value)}")
        value = float(value)
    if low is not None and not value >= low:
        raise InputError(f"{name}: expected a value >= {low}, received {value!r}")
    return value


def check_seed(seed: object) -> int | None:
    """``seed`` as an int or None (InputError otherwise)."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InputError(f"seed: expected an int or None, received {describe(seed)}")
    return seed


def check_informative(G: Generator, y: Tensor, meas: Measurement, *, name: str = "y") -> None:
    """Refuse signals equal to ``A phi(b_{L+1})``: the output when every unit of the last hidden
    layer is off, which leaves ``z`` undetermined (any ``z`` switching that layer off fits)."""
    if G.n_hidden == 0:
        return
    base = G.output_activation(G.biases[-1].to(y.device, y.dtype))[None].expand(y.shape[0], -1)
    ref = meas.apply(base)
    yy = meas.observed(y)
    diff = (yy - ref).abs().amax(dim=1)
    scale = 1.0 + ref.abs().amax(dim=1)
    dead = diff <= 64 * torch.finfo(y.dtype).eps * scale
    if bool(dead.any()):
        which = dead.nonzero().flatten().tolist()[:5]
        raise InputError(
            f"{name}: expected signals that depend on z, received sample(s) {which} equal to phi(b_(L+1)), the output "
            "with every unit of the last hidden layer off, for which the latent z is not determined"
        )


def default_tol(dtype: torch.dtype) -> float:
    """Relative-change tolerance: 1e-7 in float64, 1e-5 in float32 (a few float32 ulps times
    the problems' conditioning: float32 iterates stop changing at about 1e-6)."""
    return 1e-7 if dtype == torch.float64 else 1e-5


def check_problem(G: object, y: object, measure: object, mask: object) -> tuple[Generator, Tensor, Measurement]:
    """The checked generator (hidden layers ReLU), signals (B, m) and measurement, ``G`` on the
    device and dtype of ``y``."""
    Gc = check_generator(G)
    yy, meas = resolve_measurement(measure, mask, Gc, y)
    return Gc.like(yy), yy, meas

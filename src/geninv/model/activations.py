"""Activation functions with value, inverse, derivative and Lipschitz constant.

Every activation is elementwise. ReLU is the sparse activation of the paper's model; leaky
ReLU, tanh, sigmoid, PLU, softplus, ELU and the identity are strictly monotone, so a layer that
uses one can be inverted (``phi.inverse(y)`` gives the pre-activation); GELU and SiLU are
differentiable but not monotone (gradient methods only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from geninv.exceptions import DomainError, InputError, describe

__all__ = ["Activation", "PLU", "get_activation", "activation_of_module", "ACTIVATIONS"]


@dataclass(frozen=True)
class Activation:
    """An elementwise activation ``phi``.

    Parameters
    ----------
    name : str
        One of ``relu``, ``leaky_relu``, ``tanh``, ``sigmoid``, ``plu``, ``softplus``, ``elu``,
        ``gelu``, ``silu``, ``identity``.
    params : dict
        ``slope`` for leaky ReLU; ``alpha`` and ``c`` for PLU; ``beta`` and ``threshold`` for
        softplus (torch's: linear where ``beta x > threshold``); ``alpha`` for ELU; ``tanh``
        (1.0 for torch's ``approximate="tanh"``, 0.0 for the exact erf form) for GELU.

    Notes
    -----
    PLU (piecewise linear unit) is ``x`` on ``[-c, c]`` and has slope ``alpha`` outside:
    ``plu(x) = max(alpha (x + c) - c, min(alpha (x - c) + c, x))``.
    """

    name: str
    params: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or self.name not in _DEFAULTS:
            raise InputError(
                f"activation: expected one of {sorted(_DEFAULTS)}, received {self.name!r}"
            )
        if not isinstance(self.params, dict):
            raise InputError(f"activation {self.name!r} params: expected a dict, received {type(self.params).__name__}")
        merged = dict(_DEFAULTS[self.name])
        unknown = set(self.params) - set(merged)
        if unknown:
            raise InputError(
                f"activation {self.name!r}: expected parameters {sorted(merged)}, "
                f"received unknown {sorted(unknown)}"
            )
        for k, v in self.params.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
                raise InputError(f"activation {self.name!r} parameter {k}: expected a finite number, received {v!r}")
        merged.update({k: float(v) for k, v in self.params.items()})
        object.__setattr__(self, "params", merged)
        if self.name == "leaky_relu" and not merged["slope"] > 0:
            raise InputError(f"leaky_relu slope: expected > 0, received {merged['slope']}")
        if self.name == "plu" and not (merged["alpha"] > 0 and merged["c"] > 0):
            raise InputError(f"plu alpha and c: expected > 0, received {merged}")
        if self.name == "softplus" and not merged["beta"] > 0:
            raise InputError(f"softplus beta: expected > 0, received {merged['beta']}")
        if self.name == "elu" and not merged["alpha"] > 0:
            raise InputError(f"elu alpha: expected > 0 (a monotone ELU), received {merged['alpha']}")
        if self.name == "gelu" and merged["tanh"] not in (0.0, 1.0):
            raise InputError(f"gelu tanh: expected 0.0 (erf form) or 1.0 (tanh approximation), received {merged['tanh']}")

    # -- evaluation -------------------------------------------------------------
    def __call__(self, x: Tensor) -> Tensor:
        n, p = self.name, self.params
        if n == "relu":
            return torch.relu(x)
        if n == "leaky_relu":
            return torch.where(x >= 0, x, p["slope"] * x)
        if n == "tanh":
            return torch.tanh(x)
        if n == "sigmoid":
            return torch.sigmoid(x)
        if n == "plu":
            a, c = p["alpha"], p["c"]
            return torch.maximum(a * (x + c) - c, torch.minimum(a * (x - c) + c, x))
        if n == "softplus":
            return torch.nn.functional.softplus(x, beta=p["beta"], threshold=p["threshold"])
        if n == "elu":
            return torch.nn.functional.elu(x, alpha=p["alpha"])
        if n == "gelu":
            return torch.nn.functional.gelu(x, approximate="tanh" if p["tanh"] else "none")
        if n == "silu":
            return torch.nn.functional.silu(x)
        return x

    def derivative(self, x: Tensor) -> Tensor:
        """``phi'(x)`` elementwise (the right derivative at kinks)."""
        n, p = self.name, self.params
        if n == "relu":
            return (x > 0).to(x.dtype)
        if n == "leaky_relu":
            return torch.where(x >= 0, torch.ones_like(x), torch.full_like(x, p["slope"]))
        if n == "tanh":
            return 1 - torch.tanh(x) ** 2
        if n == "sigmoid":
            s = torch.sigmoid(x)
            return s * (1 - s)
        if n == "plu":
            inside = (x >= -p["c"]) & (x <= p["c"])
            return torch.where(inside, torch.ones_like(x), torch.full_like(x, p["alpha"]))
        if n == "softplus":
            return torch.where(p["beta"] * x > p["threshold"], torch.ones_like(x), torch.sigmoid(p["beta"] * x))
        if n == "elu":
            return torch.where(x > 0, torch.ones_like(x), p["alpha"] * torch.exp(x.clamp_max(0)))
        if n in ("gelu", "silu"):
            with torch.enable_grad():
                xx = x.detach().requires_grad_(True)
                (g,) = torch.autograd.grad(self(xx).sum(), xx)
            return g
        return torch.ones_like(x)

    @property
    def lipschitz(self) -> float:
        """Lipschitz constant of ``phi`` (``sup |phi'|``)."""
        if self.name == "sigmoid":
            return 0.25
        if self.name == "elu":
            return max(1.0, self.params["alpha"])
        if self.name == "gelu":
            return 1.13  # max of phi' = Phi(x) + x phi(x), about 1.129 at x = 1.414 (both forms)
        if self.name == "silu":
            return 1.1  # max of phi' = s(x) (1 + x (1 - s(x))), about 1.0998 at x = 2.4
        if self.name == "leaky_relu":
            return max(1.0, self.params["slope"])
        if self.name == "plu":
            return max(1.0, self.params["alpha"])
        return 1.0

    @property
    def invertible(self) -> bool:
        """Strictly monotone, so ``phi^{-1}`` exists on its range (not ReLU, GELU, SiLU)."""
        return self.name not in ("relu", "gelu", "silu")

    @property
    def sparse(self) -> bool:
        """ReLU: the sparse activation of the paper's pursuits."""
        return self.name == "relu"

    @property
    def range(self) -> tuple[float, float]:
        """Open interval of values ``phi`` attains (closed at 0 for ReLU)."""
        if self.name == "tanh":
            return (-1.0, 1.0)
        if self.name == "sigmoid":
            return (0.0, 1.0)
        if self.name in ("relu", "softplus"):
            return (0.0, float("inf"))
        if self.name == "elu":
            return (-self.params["alpha"], float("inf"))
        return (float("-inf"), float("inf"))

    def in_range(self, y: Tensor) -> Tensor:
        """Boolean tensor: where ``phi^{-1}(y)`` is defined."""
        lo, hi = self.range
        if self.name == "relu":
            return y >= 0
        return (y > lo) & (y < hi) & torch.isfinite(y)

    def inverse(self, y: Tensor, *, clamp: float | None = None, name: str = "y") -> Tensor:
        """``phi^{-1}(y)``.

        Parameters
        ----------
        y : Tensor
            Values in the range of ``phi``.
        clamp : float, optional
            For tanh/sigmoid, clip ``y`` into ``[lo + clamp, hi - clamp]`` instead of
            raising on values outside the open range (useful for noisy signals).
        name : str
            Argument name used in the error message.

        Raises
        ------
        DomainError
            If some value lies outside the range and ``clamp`` is None.
        """
        n, p = self.name, self.params
        if not isinstance(y, Tensor) or y.is_complex() or y.dtype == torch.bool:
            raise InputError(f"{name}: expected a real torch.Tensor, received {describe(y)}")
        if not y.is_floating_point():
            y = y.to(torch.get_default_dtype())
        if n == "relu":
            raise DomainError(f"{name}: expected an invertible output activation, received relu (relu is not invertible: it zeroes negatives)")
        if not self.invertible:
            raise DomainError(f"{name}: expected an invertible activation, received {n} (not monotone, so phi^-1 is undefined)")
        if clamp is not None and n in ("tanh", "sigmoid", "softplus", "elu"):
            lo, hi = self.range
            y = y.clamp(lo + clamp, hi - clamp) if math.isfinite(hi) else y.clamp_min(lo + clamp)
        bad = ~self.in_range(y)
        if bool(bad.any()):
            lo, hi = self.range
            worst = y[bad].flatten()[0].item()
            raise DomainError(
                f"{name}: expected values in the open range ({lo}, {hi}) of the {n} output "
                f"activation, received {int(bad.sum())} value(s) outside it (e.g. {worst:.6g})"
            )
        if n == "leaky_relu":
            return torch.where(y >= 0, y, y / p["slope"])
        if n == "tanh":
            return torch.atanh(y)
        if n == "sigmoid":
            return torch.log(y) - torch.log1p(-y)
        if n == "plu":
            a, c = p["alpha"], p["c"]
            return torch.where(
                y > c, c + (y - c) / a, torch.where(y < -c, -c + (y + c) / a, y)
            )
        if n == "softplus":
            beta, thr = p["beta"], p["threshold"]
            # log(expm1(beta y)) / beta, written as beta y + log(-expm1(-beta y)) to avoid overflow
            inv = (beta * y + torch.log(-torch.expm1(-beta * y))) / beta
            return torch.where(beta * y > thr, y, inv)
        if n == "elu":
            return torch.where(y > 0, y, torch.log1p(y.clamp_max(0) / p["alpha"]))
        return y

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": dict(self.params)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Activation:
        return cls(str(d["name"]), dict(d.get("params", {})))


_DEFAULTS: dict[str, dict[str, float]] = {
    "relu": {},
    "leaky_relu": {"slope": 0.01},
    "tanh": {},
    "sigmoid": {},
    "plu": {"alpha": 0.1, "c": 1.0},
    "softplus": {"beta": 1.0, "threshold": 20.0},
    "elu": {"alpha": 1.0},
    "gelu": {"tanh": 0.0},
    "silu": {},
    "identity": {},
}
ACTIVATIONS = tuple(_DEFAULTS)


def get_activation(spec: str | Activation, **params: float) -> Activation:
    """Return an :class:`Activation` from a name (``"tanh"``) or pass one through."""
    if isinstance(spec, Activation):
        return spec
    if not isinstance(spec, str):
        raise InputError(f"activation: expected a name in {list(ACTIVATIONS)}, received {spec!r}")
    return Activation(spec, params)


class PLU(nn.Module):
    """Piecewise linear unit as a torch module (Nicolae, 2018).

    ``PLU(x) = max(alpha (x + c) - c, min(alpha (x - c) + c, x))``; the output activation of
    the paper's MNIST generator. :meth:`geninv.Generator.from_torch` reads it.
    """

    def __init__(self, alpha: float = 0.1, c: float = 1.0) -> None:
        super().__init__()
        self.alpha = float(alpha)
        self.c = float(c)
        self._act = Activation("plu", {"alpha": self.alpha, "c": self.c})

    def forward(self, x: Tensor) -> Tensor:
        return self._act(x)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, c={self.c}"


def activation_of_module(m: nn.Module) -> Activation | None:
    """The :class:`Activation` a torch activation module computes, or None for any other module."""
    if isinstance(m, nn.ReLU):
        return Activation("relu")
    if isinstance(m, nn.LeakyReLU):
        return Activation("leaky_relu", {"slope": float(m.negative_slope)})
    if isinstance(m, nn.Tanh):
        return Activation("tanh")
    if isinstance(m, nn.Sigmoid):
        return Activation("sigmoid")
    if isinstance(m, PLU):
        return Activation("plu", {"alpha": m.alpha, "c": m.c})
    if isinstance(m, nn.Softplus):
        return Activation("softplus", {"beta": float(m.beta), "threshold": float(m.threshold)})
    if isinstance(m, nn.ELU):
        return Activation("elu", {"alpha": float(m.alpha)})
    if isinstance(m, nn.GELU):
        return Activation("gelu", {"tanh": 1.0 if m.approximate == "tanh" else 0.0})
    if isinstance(m, nn.SiLU):
        return Activation("silu")
    return None

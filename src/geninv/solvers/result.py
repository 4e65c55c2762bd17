"""The one result type every inversion method returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

__all__ = ["SolveResult"]


@dataclass(frozen=True)
class SolveResult:
    """Result of inverting a batch of B signals.

    Attributes
    ----------
    method : str
        Name of the method that produced it.
    z : Tensor of shape (B, n_0)
        The latent estimate.
    layers : list of Tensor
        Hidden estimates ``[x_1, ..., x_L]``, each (B, n_i).
    supports : list of Tensor
        Estimated supports of the hidden layers, each bool (B, n_i).
    converged : Tensor of shape (B,), bool
        Per-sample: the stopping criterion was met (False at ``max_iter`` or on divergence).
    n_iter : Tensor of shape (B,), int64
        Per-sample iteration count (summed over the stages of multi-stage methods).
    history : dict of str to Tensor
        One tensor per recorded quantity (e.g. ``"objective"``, ``"residual"``), each (T, B).
    seconds : float
        Wall time of the solve.
    info : dict
        Method-specific extras (parameters actually used, stage timings, ...).
    """

    method: str
    z: Tensor
    layers: list[Tensor]
    supports: list[Tensor]
    converged: Tensor
    n_iter: Tensor
    history: dict[str, Tensor] = field(default_factory=dict)
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return int(self.z.shape[0])

    def to(self, device: torch.device | str) -> SolveResult:
        """A copy with every tensor on ``device``."""
        return SolveResult(
            self.method,
            self.z.to(device),
            [x.to(device) for x in self.layers],
            [s.to(device) for s in self.supports],
            self.converged.to(device),
            self.n_iter.to(device),
            {k: v.to(device) for k, v in self.history.items()},
            self.seconds,
            dict(self.info),
        )

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
    residual : Tensor of shape (B,), float64, or None
        Per-sample relative residual of the measurements, ``||A G(z) - y|| / ||y||`` (the
        absolute norm where ``y = 0``; ``inf`` for a non-finite ``z``).
    fits : Tensor of shape (B,), bool, or None
        Per-sample verdict: True where ``z`` explains ``y``, i.e. the residual is at the rounding
        level of the data's dtype (exact data) or consistent with the noise level given or
        estimated (:func:`geninv.solvers.verdict.fit_verdict`). Unlike ``converged`` (the
        iteration stopped by its own criterion), a False here means ``z`` is not a preimage of
        ``y``. Both are None only on a result built by hand; :func:`geninv.invert` and the
        pursuits fill them.
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
    residual: Tensor | None = None
    fits: Tensor | None = None

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
            None if self.residual is None else self.residual.to(device),
            None if self.fits is None else self.fits.to(device),
        )

    def __repr__(self) -> str:
        B = self.batch_size
        parts = [f"method={self.method!r}", f"B={B}", f"converged={int(self.converged.sum())}/{B}"]
        if self.fits is not None:
            parts.append(f"fits={int(self.fits.sum())}/{B}")
        if self.residual is not None and self.residual.numel():
            parts.append(f"median residual={float(self.residual.median()):.3g}")
        parts.append(f"seconds={self.seconds:.3g}")
        return f"SolveResult({', '.join(parts)})"

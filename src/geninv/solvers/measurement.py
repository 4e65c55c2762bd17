"""The observed signal: how ``y`` was measured from the generator's image (no operator, a pixel
mask, or a general linear operator), its validation, and the saturated entries of a bounded
output activation."""

from __future__ import annotations

import math
import warnings
from typing import Any, NamedTuple

import torch
from torch import Tensor

from geninv._validate import as_batch
from geninv.exceptions import InputError, ShapeError, describe
from geninv.integrations import is_deepinv_physics
from geninv.model.generator import Generator
from geninv.operators import Identity, Mask

__all__ = ["Measurement", "resolve_measurement", "saturated", "unsaturated", "preactivation_target"]


class Measurement(NamedTuple):
    """The observed signal's measurement: how ``y`` was taken from the image
    ``p = phi(W_{L+1} x_L + b_{L+1})`` (width n), as one object the solvers apply.

    Built by :func:`resolve_measurement` (the one place that tells operators apart). Fields:

    kind : str
        'identity' (``y = p``), 'diag' (a 0/1 pixel mask) or 'operator' (a general linear
        operator, ``y`` of width ``op.shape[0]``).
    w : Tensor of shape (B, n) or None
        The mask as 0/1 floats (None unless 'diag').
    obs : Tensor of shape (B, n), bool, or None
        The observed pixels (None unless 'diag').
    op : operator or None
        The general operator with ``forward`` / ``adjoint`` (None unless 'operator').
    """

    kind: str
    w: Tensor | None
    obs: Tensor | None
    op: Any

    @classmethod
    def for_width(cls, measure: object, n: int, y: object, *, name: str = "y",
                  mname: str = "measure") -> tuple[Tensor, Measurement]:
        """Validate ``y`` against ``measure`` on signals of width ``n`` and return ``(y, Measurement)``.

        The checks of :func:`resolve_measurement` once ``y`` is flat (B, m): None, an
        :class:`~geninv.operators.Identity` of width ``n``, a :class:`~geninv.operators.Mask` of
        width ``n`` (shape (1, n) or (B, n), at least one observed entry per sample), or an
        operator of shape (m, n) with ``forward`` / ``adjoint`` / ``shape`` / ``norm``. Used
        directly where no :class:`~geninv.model.generator.Generator` is known (a callable ``G``).

        Parameters
        ----------
        measure : None or operator
        n : int
            Width of the signals the measurement acts on.
        y : Tensor of shape (B, m) or (m,)
        name, mname : str
            The argument names in error messages (the data, the measurement).

        Returns
        -------
        (Tensor of shape (B, m), Measurement)
        """
        if measure is None or isinstance(measure, Identity):
            if isinstance(measure, Identity) and measure.n != n:
                raise ShapeError(f"{mname}: expected an operator on R^{n}, received Identity({measure.n})")
            yy = as_batch(y, n, name)
            return yy, cls("identity", None, None, None)
        if isinstance(measure, Mask):
            if measure.mask.ndim != 2 or measure.mask.shape[1] != n:
                raise ShapeError(f"{mname}: expected a mask of width {n} (the generator's output), received shape {tuple(measure.mask.shape)}")
            _check_width(y, n, name, f"{mname} of width {n}")
            yy = as_batch(y, n, name)
            B = yy.shape[0]
            if measure.mask.shape[0] not in (1, B):
                raise ShapeError(f"{mname}: expected a mask of shape ({n},), (1, {n}) or ({B}, {n}), received {tuple(measure.mask.shape)}")
            obs = measure.mask.to(yy.device).expand(B, n)
            if not bool(obs.any(dim=1).all()):
                raise InputError(f"{mname}: expected at least one observed entry per signal, received a mask hiding everything")
            return yy, cls("diag", obs.to(yy.dtype), obs, None)
        for attr in ("forward", "adjoint", "shape", "norm"):
            if not hasattr(measure, attr):
                raise InputError(f"measure: expected a geninv operator (forward, adjoint, shape, norm), received {describe(measure)}")
        shape = tuple(measure.shape)  # type: ignore[attr-defined]
        if len(shape) != 2 or shape[1] != n:
            raise ShapeError(f"measure: expected an operator of shape (m, {n}), received shape {shape}")
        _check_width(y, int(shape[0]), name, f"{mname} of shape {shape}")
        yy = as_batch(y, int(shape[0]), name)
        return yy, cls("operator", None, None, measure)

    @property
    def diagonal(self) -> bool:
        """True for no operator or a pixel mask (the measurement acts entrywise)."""
        return self.kind in ("identity", "diag")

    @property
    def is_identity(self) -> bool:
        """True when ``y`` is the image itself."""
        return self.kind == "identity"

    def apply(self, p: Tensor) -> Tensor:
        """``A p`` for signals ``p`` of shape (B, n); (B, m) out."""
        return self._through(p, adjoint=False)

    def adjoint(self, r: Tensor) -> Tensor:
        """``A^T r`` for data-space ``r`` of shape (B, m); (B, n) out."""
        return self._through(r, adjoint=True)

    def _through(self, x: Tensor, *, adjoint: bool) -> Tensor:
        # The identity and a pixel mask are diagonal, so A^T = A; an operator has both products.
        if self.kind == "identity":
            return x
        if self.kind == "diag":
            return x * self.w.to(x.dtype)  # type: ignore[union-attr]
        return self.op.adjoint(x) if adjoint else self.op.forward(x)  # type: ignore[no-any-return]

    def apply_cols(self, M: Tensor) -> Tensor:
        """``A M_b`` for a batch of matrices ``M`` of shape (B, n, k): the measurement applied to
        every column (a general operator in one call on all ``B k`` columns); (B, m, k) out."""
        if self.kind == "identity":
            return M
        if self.kind == "diag":
            return M * self.w.to(M.dtype)[:, :, None]  # type: ignore[union-attr]
        B, n, k = M.shape
        out = self.op.forward(M.transpose(1, 2).reshape(B * k, n))
        return out.reshape(B, k, -1).transpose(1, 2)  # type: ignore[no-any-return]

    def observed(self, y: Tensor) -> Tensor:
        """The data ``y`` (B, m) with unobserved entries zeroed (a pixel mask); unchanged otherwise."""
        return y * self.w.to(y.dtype) if self.kind == "diag" else y  # type: ignore[union-attr]

    def residual(self, p: Tensor, y: Tensor) -> Tensor:
        """``A p - y`` for signals ``p`` (B, n) and data ``y`` (B, m), zero on unobserved pixels."""
        if self.kind == "identity":
            return p - y
        if self.kind == "diag":
            return (p - y) * self.w.to(p.dtype)  # type: ignore[union-attr]
        return self.op.forward(p) - y  # type: ignore[no-any-return]

    def n_observed(self, y: Tensor) -> Tensor:
        """Number of observed entries per sample (B,) in ``y``'s dtype: the mask's count, else ``m``."""
        if self.kind == "diag":
            return self.w.sum(dim=1)  # type: ignore[union-attr]
        return torch.full((y.shape[0],), float(y.shape[1]), dtype=y.dtype, device=y.device)

    def max_column_norm(self, W: Tensor) -> Tensor:
        """``max_j ||A W[:, j]||`` for a matrix ``W`` (n, k): shape (1,) without an operator, else (B,)."""
        if self.kind == "identity":
            return W.norm(dim=0).amax()[None]
        if self.kind == "diag":
            # Column norms of the masked matrix, without forming B copies of it.
            return (self.w.to(W.dtype) @ W.square()).sqrt().amax(dim=1)  # type: ignore[union-attr]
        return self.apply_cols(W[None]).norm(dim=1).amax(dim=1)

    def subset(self, idx: Tensor) -> Measurement:
        """The measurement of the samples ``idx`` (int64 of shape (b,))."""
        return Measurement(self.kind, self.w[idx] if self.w is not None else None,
                           self.obs[idx] if self.obs is not None else None, self.op)

    def as_measure(self, idx: Tensor | None = None) -> Any:
        """The public ``measure=`` argument for the samples ``idx`` (all when None): None, a
        :class:`geninv.operators.Mask` or the operator."""
        if self.kind == "identity":
            return None
        if self.kind == "diag":
            assert self.obs is not None
            return Mask(self.obs if idx is None else self.obs[idx])
        return self.op


def resolve_measurement(measure: object, mask: object, G: Generator, y: object, *, name: str = "y") -> tuple[Tensor, Measurement]:
    """Validate ``y`` against the measurement and return ``(y, Measurement)``.

    ``y`` becomes a finite (B, m) float32 or float64 tensor (m = n, or ``measure.shape[0]``);
    half precisions are refused (the solvers' least squares and stopping tests need at least
    float32).
    """
    if isinstance(y, Tensor) and y.dtype in (torch.float16, torch.bfloat16):
        raise InputError(f"{name}: expected a float32 or float64 tensor, received dtype {y.dtype} (convert with y.float())")
    y, mask = G.flatten_output(y), G.flatten_output(mask)  # signals and masks in the output's shape (B, C, H, W)
    n = G.output_dim
    if mask is not None and measure is not None:
        raise InputError("mask, measure: expected at most one of them, received both")
    if is_deepinv_physics(measure):  # a direct solver call: wrapped (noiseless A / A_adjoint), noise not read
        from geninv.integrations.deepinv_physics import wrap_measurement

        measure, y = wrap_measurement(measure, G, y)
        if measure.noise_level is not None:
            warnings.warn(
                f"measure: the deepinv physics adds Gaussian noise (sigma {measure.noise_level}), which a direct solver "
                "call does not read; pass it through geninv.invert(..., measure=physics) or give noise_level=",
                UserWarning, stacklevel=3,
            )
    mname = "measure"
    if mask is not None:
        mname = "mask"
        if isinstance(mask, Mask):
            measure = mask
        else:
            if not isinstance(mask, Tensor):
                raise InputError(f"mask: expected a boolean tensor of shape ({n},) or (B, {n}), received {describe(mask)}")
            measure = Mask(mask)
    return Measurement.for_width(measure, n, y, name=name, mname=mname)


def _check_width(y: object, m: int, name: str, what: str) -> None:
    if isinstance(y, Tensor) and y.ndim in (1, 2) and y.shape[-1] != m:
        raise ShapeError(f"{name}: expected shape (B, {m}) or ({m},) to match the {what}, received shape {tuple(y.shape)}")


def preactivation_target(G: Generator, y: Tensor, meas: Measurement, *, name: str = "y") -> Tensor:
    """``phi^{-1}(y)`` on observed entries (unobserved ones get 0, they carry no weight).

    Raises DomainError (naming ``name``) if an observed value lies outside the range of the
    output activation, and InputError for a non-diagonal measurement or a ReLU output.
    """
    phi = G.output_activation
    if not meas.diagonal:
        raise InputError(f"measure: the pre-activation form needs a pixel mask or no measure, received {describe(meas.op)}")
    if not phi.invertible:
        raise InputError(f"G: the pre-activation form needs an invertible output activation, received {phi.name}")
    if meas.obs is None:
        return phi.inverse(y, name=name)
    fill = phi(torch.zeros((), dtype=y.dtype, device=y.device))
    t = phi.inverse(torch.where(meas.obs, y, fill), name=name)
    return t * meas.w  # type: ignore[operator]


def saturated(phi: Any, y: Tensor) -> Tensor:
    """Entries of ``y`` at a bound of the output activation's range in the data's precision.

    A bounded activation (tanh, sigmoid) rounds to its bound, or to a few ulps from it, where
    its pre-activation is large: ``sigmoid(a) == 0`` in float32 for ``a < -104`` and ``== 1`` for
    ``a > 17``. There ``phi^{-1}(y)`` is undefined or known only roughly: one rounding of ``y``
    (one ulp, ``eps max(|y|, tiny)``) moves ``a`` by ``ulp / phi'(a)``. An entry is saturated
    when that exceeds ``sqrt(eps) max(1, |a|)``: the value says only that ``a`` is large, an
    inequality, not an equation. Entries beyond the bounds (noise) are out of range, not
    saturated. Other activations never saturate.

    Parameters
    ----------
    phi : Activation
    y : Tensor of shape (B, n)

    Returns
    -------
    Tensor of shape (B, n), bool
    """
    if phi.name not in ("tanh", "sigmoid"):
        return torch.zeros(y.shape, dtype=torch.bool, device=y.device)
    fi = torch.finfo(y.dtype)
    lo, hi = phi.range
    y64 = y.to(torch.float64)
    inside = (y64 >= lo) & (y64 <= hi)
    yc = y64.clamp(lo, hi)
    # phi'(a) as a function of y = phi(a): y (1 - y) for sigmoid, (1 + y)(1 - y) for tanh
    dphi = (yc - lo) * (hi - yc) / (hi - lo) if phi.name == "sigmoid" else (yc - lo) * (hi - yc)
    with torch.no_grad():
        if phi.name == "sigmoid":
            a = (torch.log(yc) - torch.log1p(-yc)).abs()
        else:
            a = torch.atanh(yc).abs()
    ulp = fi.eps * yc.abs().clamp_min(fi.tiny)
    precise = ulp <= math.sqrt(fi.eps) * dphi * torch.nan_to_num(a, posinf=1.0).clamp_min(1.0)
    return inside & ~precise


def unsaturated(G: Generator, y: Tensor, meas: Measurement) -> Measurement:
    """``meas`` with the saturated entries of each sample (:func:`saturated`) unobserved.

    The pre-activation form ``phi^{-1}(y)`` uses this: a saturated pixel gives no equation on
    ``W_{L+1} x_L + b_{L+1}``, and treating it as observed (``phi^{-1}`` of a rounded bound) makes
    the linear system inconsistent. Decided per sample, so a sample's problem does not depend on
    its batch mates. ``meas`` itself (the signal-domain fit, the debiasing) keeps every observed
    entry. Returned unchanged when nothing is saturated or ``meas`` is not diagonal.
    """
    if not meas.diagonal:
        return meas
    sat = saturated(G.output_activation, y)
    if meas.obs is not None:
        sat = sat & meas.obs
    if not bool(sat.any()):
        return meas
    obs = ~sat if meas.obs is None else meas.obs & ~sat
    return Measurement("diag", obs.to(y.dtype), obs, None)


# Function forms of the Measurement methods, for callers written against them.

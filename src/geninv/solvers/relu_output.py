"""A ReLU (non-invertible) output layer, ``y = A relu(W_{L+1} x_L + b_{L+1})``, as one more sparse layer.

A ReLU output hides the negative pre-activations, so ``phi^{-1}`` does not exist; but the output
is a sparse layer exactly like the hidden ones. With ``P`` the observed positive pixels and
``Z`` the observed zero pixels of ``y``:

* positive pixels are equations on the last hidden layer: ``W^P x_L + b^P = y^P``;
* zero pixels are inequalities: ``W^Z x_L + b^Z <= 0``, as the zeros of a middle layer in the
  paper's Latent-Pursuit (eq. (9)).

So the image layer becomes a middle-layer problem (linearized ADMM with the output support as
``S``) for Latent-Pursuit, a nonnegative basis pursuit on the rows ``P`` for Layered
Basis-Pursuit (which, as for its middle layers, drops the inequalities), and a supported least
squares on the rows ``P`` for the Oracle. Unobserved pixels (a pixel mask) are neither.

Through a general operator ``A`` the zero pixels are not observed individually (each
measurement mixes positive and zero pixels), so the output support is unknown and none of this
applies: the pursuits and the Oracle refuse such a problem with an InputError naming the output
activation (gradient descent, ``method="gd"``, fits it in the signal domain).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from geninv.exceptions import InputError
from geninv.model.generator import Generator
from geninv.solvers.linalg import batched_lstsq, supported_lstsq
from geninv.solvers.loop import LoopOutput
from geninv.solvers.measurement import Measurement
from geninv.solvers.network import support_affine
from geninv.solvers.subproblems import auto_lam, ladmm_layer

__all__ = ["is_relu_output", "check_relu_measure", "output_support", "relu_image_start", "relu_image_admm",
           "relu_output_fit"]


def is_relu_output(G: Any) -> bool:
    """True when the output activation of ``G`` is ReLU (not invertible)."""
    return bool(G.output_activation.name == "relu")


def check_relu_measure(method: str, G: Any, meas: Measurement) -> None:
    """InputError for a ReLU output seen through a general operator (see the module notes)."""
    if is_relu_output(G) and not meas.diagonal:
        raise InputError(
            f"measure: expected a pixel mask or no measure for {method} on a generator with a relu output (the "
            f"output's zero pixels are its inequality constraints, which a general operator does not observe "
            f"individually), received {type(meas.op).__name__} of shape {tuple(meas.op.shape)}; use method='gd' or 'adam'"
        )


def output_support(y: Tensor, meas: Measurement) -> tuple[Tensor, Tensor]:
    """Observed positive pixels ``P`` and observed zero pixels ``Z`` of a ReLU output, bool (B, n).

    A pixel is positive when ``y > 0``; every other observed pixel (0, or a negative value of
    noisy data) is an inequality ``W x + b <= 0``.
    """
    pos = y > 0
    obs = meas.obs if meas.obs is not None else torch.ones_like(pos)
    return pos & obs, obs & ~pos


def relu_image_start(W: Tensor, b: Tensor, y: Tensor, pos: Tensor, zero: Tensor,
                     dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Least-squares start of the image layer and the samples it already solves exactly.

    ``x0 = max(pinv(W^P) (y^P - b^P), 0)`` per sample (minimum norm where ``|P| < n_L``), in
    ``dtype``; ``exact`` (B,) bool where ``x0`` satisfies the equations on ``P`` to the rounding
    level of the data (relative residual <= ``1000 eps``) and the inequalities on ``Z`` to the
    same level: for noiseless data with ``W^P`` of full column rank this is the answer, and the
    pursuit keeps it (its ``lam`` is 0), as for an invertible output.
    """
    work = torch.float64 if dtype == torch.float64 else torch.float32
    x0 = supported_lstsq(W, y - b, pos, None, dtype=work, refine=2).to(dtype).clamp_min(0)
    a = torch.addmm(b, x0, W.T)
    p = pos.to(dtype)
    eps = torch.finfo(dtype).eps
    scale = ((y - b) * p).norm(dim=1)
    ok_eq = ((a - y) * p).norm(dim=1) <= 1000 * eps * scale.clamp_min(torch.finfo(dtype).tiny)
    viol = (a * zero.to(dtype)).clamp_min(0).amax(dim=1) if a.shape[1] else torch.zeros_like(scale)
    ok_in = viol <= 1000 * eps * (y * p).abs().amax(dim=1).clamp_min(torch.finfo(dtype).tiny)
    return x0, ok_eq & ok_in


def relu_image_admm(
    W: Tensor,
    b: Tensor,
    y: Tensor,
    pos: Tensor,
    zero: Tensor,
    *,
    lam: float | None,
    lam_rel: float,
    rho: float,
    mu: float | None,
    x0: Tensor,
    exact: Tensor | None,
    **iteration: Any,
) -> tuple[LoopOutput, Tensor, Tensor]:
    """The image layer of a ReLU output as a middle layer of eq. (9), by linearized ADMM.

    ``min_{x >= 0} 1/2 ||y^P - b^P - W^P x||^2 + lam 1^T x  s.t.  W^Z x + b^Z <= 0``, with the
    iteration of :func:`geninv.solvers.subproblems.ladmm_layer` (which it calls); the
    rows ``S^c`` of that problem are the observed zero pixels ``Z`` only (an unobserved pixel is
    neither an equation nor a constraint).

    Parameters
    ----------
    W, b : Tensor (n, n_L), (n,)
        The output layer.
    y : Tensor (B, n)
        The signals (unobserved entries ignored).
    pos, zero : bool Tensor (B, n)
        :func:`output_support`.
    lam : float or None
        Absolute l1 weight; None: ``lam_rel * lam_max`` per sample.
    exact : bool Tensor (B,) or None
        Samples whose start solves the layer exactly (:func:`relu_image_start`): ``lam = 0``.
    **iteration :
        ``max_iter``, ``tol``, ``check_every``, ``power_iters``, ``callback`` and ``stage`` of
        :func:`geninv.solvers.subproblems.ladmm_layer`.

    Returns
    -------
    (LoopOutput, lam (B, 1), mu (B, 1))
    """
    dtype = y.dtype
    B = y.shape[0]
    s = pos.to(dtype)
    sc = zero.to(dtype)
    if lam is None:
        lam_t = auto_lam(-((s * (y - b)) @ W), lam_rel)
    else:
        lam_t = torch.full((B, 1), float(lam), dtype=dtype, device=y.device)
    if exact is not None:
        lam_t = lam_t.masked_fill(exact[:, None], 0.0)
    out, mu_t = ladmm_layer(W, b, y, s, sc=sc, lam=lam_t, rho=rho, gamma=0.0, nonneg=True, mu=mu, x0=x0, **iteration)
    return out, lam_t, mu_t


def relu_output_fit(G: Generator, y64: Tensor, supports: Sequence[Tensor], meas: Measurement,
                     work: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`geninv.solvers.debias.fit_supports` for a ReLU output seen through a pixel mask (or none): least squares
    on the observed positive pixels with every support frozen; the objective is the true
    ``1/2 ||M (relu(J z + c) - y)||^2``."""
    B = y64.shape[0]
    pos = y64 > 0
    if meas.obs is not None:
        pos = pos & meas.obs
    J, c = support_affine(G, supports, B, dtype=work)
    J, c = J.to(torch.float64), c.to(torch.float64)
    wp = pos.to(torch.float64)
    z = batched_lstsq(J * wp[:, :, None], (y64 - c) * wp)
    a = torch.baddbmm(c.unsqueeze(-1), J, z.unsqueeze(-1)).squeeze(-1)
    r = torch.relu(a) - y64
    if meas.w is not None:
        r = r * meas.w.to(torch.float64)
    converged = torch.isfinite(z).all(dim=1)
    return z, converged, 0.5 * r.square().sum(dim=1)

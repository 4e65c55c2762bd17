"""The image-layer stage of the pursuits: the choice of domain (pre-activation or signal), the
problem of the domain (loss, target, weights, step bound), the warm start, the data's precision
and the exact-fit test."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from geninv.exceptions import InputError, describe
from geninv.model.generator import Generator
from geninv.model.layer_ops import LinearMap, apply
from geninv.solvers.linalg import supported_lstsq
from geninv.solvers.measurement import Measurement, preactivation_target, saturated, unsaturated
from geninv.solvers.steps import LinearLS, SignalLS
from geninv.solvers.subproblems import image_lipschitz

__all__ = ["choose_domains", "choose_domain", "ImageProblem", "image_problem", "image_warm_start", "data_dtype",
           "exact_fit", "ImageStart", "image_start"]


def choose_domains(image_domain: object, G: Generator, y: Tensor, meas: Measurement, *,
                   out_of_range: str = "signal") -> tuple[str, Tensor]:
    """Resolve ``image_domain`` ('auto', 'pre' or 'signal') per sample.

    'auto' takes, for each sample, 'pre' when the output activation is invertible, the
    measurement diagonal (a pixel mask or none), and the sample has at least one observed entry
    that is not saturated (:func:`saturated`; saturated entries are left out of the
    pre-activation form, :func:`unsaturated`), and 'signal' otherwise (ReLU outputs, general
    operators). A sample with an observed entry outside the activation's range (noise) gets
    'signal' if ``out_of_range == "signal"`` (Latent-Pursuit: fit phi(.) to noisy data) and
    'pre' otherwise, whose ``phi^{-1}(y)`` then raises DomainError (Layered Basis-Pursuit,
    defined on ``phi^{-1}(y)``).

    Returns
    -------
    domain : str
        'pre' or 'signal' when every sample takes it, 'mixed' otherwise.
    pre : Tensor of shape (B,), bool
        The samples that take 'pre'.
    """
    if image_domain not in ("auto", "pre", "signal"):
        raise InputError(f"image_domain: expected 'auto', 'pre' or 'signal', received {describe(image_domain)}")
    phi = G.output_activation
    pre_ok = meas.diagonal and phi.invertible
    B = y.shape[0]
    if image_domain == "pre" and not pre_ok:
        raise InputError(
            "image_domain: expected 'auto' or 'signal' for this problem ('pre' needs an invertible output "
            f"activation and a pixel mask or no measure), received 'pre' with output {phi.name} and measure {meas.kind}"
        )
    every = torch.ones(B, dtype=torch.bool, device=y.device)
    if image_domain == "signal" or not pre_ok:
        return "signal", ~every
    if image_domain == "pre":
        return "pre", every
    observed = torch.ones_like(y, dtype=torch.bool) if meas.obs is None else meas.obs
    lo, hi = phi.range
    beyond = observed & ~((y >= lo) & (y <= hi) & torch.isfinite(y))
    usable = observed & ~beyond & ~saturated(phi, y)
    pre = usable.any(dim=1)
    if out_of_range == "signal":
        pre = pre & ~beyond.any(dim=1)
    elif bool(beyond.any()):
        pre = every  # phi^{-1} raises DomainError naming the values out of range
    n_pre = int(pre.sum())
    return ("pre" if n_pre == B else "signal" if n_pre == 0 else "mixed"), pre


def choose_domain(image_domain: object, G: Generator, y: Tensor, meas: Measurement, *,
                  out_of_range: str = "signal") -> str:
    """One ``image_domain`` for the whole batch: that of :func:`choose_domains` when every sample
    takes the same, 'signal' otherwise."""
    domain, _ = choose_domains(image_domain, G, y, meas, out_of_range=out_of_range)
    return "signal" if domain == "mixed" else domain


def image_warm_start(W: LinearMap, rhs: Tensor, obs: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """Start of the pre-activation image-layer pursuit: ``max(pinv(W^{O_b}) rhs_b^{O_b}, 0)``.

    ``rhs = phi^{-1}(y) - b_{L+1}`` (B, n); ``obs`` the observed pixels ``O_b`` (B, n) or None.
    Exact for noiseless signals, so FISTA stops at its first check. A sample that observes fewer
    pixels than ``W`` has columns starts from zero (its least squares is then not determined,
    and the pseudo-inverse fallback costs more than it saves); decided per sample, so a sample's
    start does not depend on its batch mates. Returns None when every sample starts from zero.

    Why: from zero, the float32 FISTA stops (relative change 1e-5) with off-support entries
    still above the support threshold; those false supports then fail every lower layer
    (measured, shipped MNIST generator, float32: median image SNR 107 dB clean and 20 dB with
    per-sample 45 % masks, against 133 dB warm; and 5-6x slower).

    Cost: rows shared by the batch: one ``n_L x n_L`` factorization in float64 (the normal
    equations square the condition number, and one factorization is cheap). Per-sample masks:
    B gathered factorizations in the data's precision, with two refinement steps.
    """
    if obs is None:
        return supported_lstsq(W, rhs, None, None, dtype=torch.float64, refine=2).to(dtype).clamp_min(0)
    few = obs.sum(dim=1) < W.shape[1]
    if bool(few.all()):
        return None
    if bool(few.any()):
        keep = (~few).nonzero().squeeze(1)
        x0 = torch.zeros(rhs.shape[0], W.shape[1], dtype=dtype, device=rhs.device)
        x0[keep] = image_warm_start(W, rhs[keep], obs[keep], dtype)  # type: ignore[assignment]
        return x0
    if bool((obs == obs[:1]).all()):
        return supported_lstsq(W, rhs, obs, None, dtype=torch.float64, refine=2).to(dtype).clamp_min(0)
    work = torch.float64 if dtype == torch.float64 else torch.float32
    return supported_lstsq(W, rhs, obs, None, dtype=work, refine=2).to(dtype).clamp_min(0)


def data_dtype(y: Tensor) -> torch.dtype:
    """The precision the data ``y`` carry: float32 for a float64 tensor whose every value is a
    float32 number (data made or stored in float32, solved in float64), else ``y.dtype``."""
    if y.dtype == torch.float64 and torch.equal(y.to(torch.float32).to(torch.float64), y):
        return torch.float32
    return y.dtype


def exact_fit(W: LinearMap, b: Tensor, t: Tensor, w: Tensor | None, x0: Tensor | None, *,
              rounding: torch.dtype | None = None) -> Tensor | None:
    """Samples whose image-layer start already solves ``W x + b = t`` (on the observed rows) to
    the rounding level of the data: relative residual <= ``1000 eps`` of ``rounding`` (the data's
    dtype, :func:`data_dtype`; default ``t``'s). None without a start.

    Why: for noiseless signals the image layer is the linear system itself; its l1 weight only
    guards against noise. Run from the exact least-squares start, float64 FISTA drifts towards
    the LASSO minimizer and its support (measured, shipped MNIST generator, 45 % of the pixels
    hidden, 64 images: 45 support errors in x_2 and 19 failed images; float32 stopped at its first
    check by its looser tolerance and had 0). The pursuits give these samples ``lam = 0``, so
    the start is kept (nonnegative least squares, already optimal).
    """
    if x0 is None:
        return None
    r = apply(W, x0, b) - t
    d = t - b
    if w is not None:
        r, d = r * w, d * w
    eps = torch.finfo(t.dtype if rounding is None else rounding).eps
    return r.norm(dim=1) <= 1000 * eps * d.norm(dim=1).clamp_min(torch.finfo(t.dtype).tiny)


class ImageStart(NamedTuple):
    """The pre-activation image layer of one batch before its pursuit: its equations, warm start
    and exact test (:func:`image_start`), computed once where the per-sample exact test
    (:func:`geninv.solvers.per_sample.exact_test`) and the pursuit's image layer both need them.

    y : Tensor of shape (B, n)
        The data it was computed for.
    obs : Tensor of shape (B, n), bool, or None
        The observed pixels of the measurement it was computed for.
    W, b : Tensor of shape (n, n_L) (or a matrix-free layer's operator) and (n,)
        The image layer it was computed for.
    m : Measurement
        The observed pixels that are not saturated (:func:`geninv.solvers.measurement.unsaturated`).
    t : Tensor of shape (B, n)
        The target ``phi^{-1}(y)`` on those pixels (:func:`geninv.solvers.measurement.preactivation_target`).
    x0 : Tensor of shape (B, n_L) or None
        The warm start (:func:`image_warm_start`).
    exact : Tensor of shape (B,), bool, or None
        The samples whose start fits to the rounding level of the data (:func:`exact_fit`).
    warm_start : bool
        Whether ``x0`` and ``exact`` were computed (False: both None).
    """

    y: Tensor
    obs: Tensor | None
    W: LinearMap
    b: Tensor
    m: Measurement
    t: Tensor
    x0: Tensor | None
    exact: Tensor | None
    warm_start: bool

    def serves(self, G: Generator, y: Tensor, meas: Measurement) -> bool:
        """Whether it was computed for the data ``y``, the observed pixels of ``meas`` and the
        image layer of ``G`` (compared by value)."""
        return (_same(self.y, y) and _same(self.obs, meas.obs) and _same(self.W, G.maps[-1])
                and _same(self.b, G.biases[-1]))


def _same(a: LinearMap | None, b: LinearMap | None) -> bool:
    if not isinstance(a, Tensor) or not isinstance(b, Tensor):
        return a is b  # None, or a matrix-free layer's operator: the same object
    return a is b or (a.shape == b.shape and a.dtype == b.dtype and a.device == b.device and torch.equal(a, b))


def image_start(G: Generator, y: Tensor, meas: Measurement, *, warm_start: bool = True) -> ImageStart:
    """The pre-activation image layer of ``y`` before its pursuit (:class:`ImageStart`): the
    unsaturated observed pixels, the target ``phi^{-1}(y)``, and with ``warm_start`` (default
    True) the start :func:`image_warm_start` and its exact test :func:`exact_fit` at the rounding
    level of the data (:func:`data_dtype`)."""
    W, b = G.maps[-1], G.biases[-1]  # a matrix-free output layer's operator in place of its matrix
    m = unsaturated(G, y, meas)  # saturated pixels give no equation on the pre-activation
    t = preactivation_target(G, y, m)
    x0 = exact = None
    if warm_start:
        x0 = image_warm_start(W, t - b, m.obs, y.dtype)
        exact = exact_fit(W, b, t, m.w, x0, rounding=data_dtype(y))
    return ImageStart(y, meas.obs, W, b, m, t, x0, exact, warm_start)


class ImageProblem(NamedTuple):
    """The image layer's nonnegative LASSO ``min_{x >= 0} f(x) + lam 1^T x`` as the pursuits set it up.

    f : LinearLS or SignalLS
        The loss on ``x_L``: linear on the pre-activation, or through ``phi`` and the measurement.
    t : Tensor of shape (B, n) or (B, m)
        Its target: ``phi^{-1}(y)`` ('pre') or ``y`` ('signal').
    w : Tensor of shape (B, n) or None
        Row weights (the observed, unsaturated pixels), None for all rows.
    lip : Tensor of shape (B, 1)
        Step bound of the gradient (:func:`geninv.solvers.subproblems.image_lipschitz`).
    x0 : Tensor of shape (B, n_L) or None
        Warm start (:func:`image_warm_start`), None for zero.
    exact : Tensor of shape (B,), bool, or None
        Samples whose start already fits (:func:`exact_fit`): their ``lam`` is 0.
    """

    f: LinearLS | SignalLS
    t: Tensor
    w: Tensor | None
    lip: Tensor
    x0: Tensor | None
    exact: Tensor | None


def image_problem(G: Generator, y: Tensor, meas: Measurement, domain: str, *, warm_start: bool,
                  power_iters: int, start: ImageStart | None = None) -> ImageProblem:
    """The image layer's problem in ``domain`` ('pre' or 'signal', :func:`choose_domains`).

    'pre': ``1/2 ||M (phi^{-1}(y) - W_{L+1} x - b_{L+1})||^2`` on the observed pixels that are not
    saturated (:func:`geninv.solvers.measurement.unsaturated`), from :func:`image_warm_start`
    when ``warm_start``; ``start`` (:func:`image_start`) where it serves this batch with the same
    ``warm_start`` (:meth:`ImageStart.serves`), else computed here. 'signal': ``1/2 ||A (y - phi(W_{L+1} x +
    b_{L+1}))||^2`` from zero.
    """
    W, b = G.maps[-1], G.biases[-1]  # a matrix-free output layer's operator in place of its matrix
    phi = G.output_activation
    if domain == "pre":
        served = start is not None and start.warm_start == warm_start and start.serves(G, y, meas)
        s = start if served else image_start(G, y, meas, warm_start=warm_start)
        assert s is not None
        lip = image_lipschitz(W, s.m, None, power_iters=power_iters, dtype=y.dtype)
        return ImageProblem(LinearLS(W, b), s.t, s.m.w, lip, s.x0, s.exact)
    lip = image_lipschitz(W, meas, phi, power_iters=power_iters, dtype=y.dtype)
    return ImageProblem(SignalLS(W, b, phi, meas.op), y, meas.w, lip, None, None)

"""The hybrid's order of candidates: gradient descent first where the image layer cannot be
inverted layer by layer.

Latent-Pursuit starts at the image layer: it recovers ``x_L`` from ``y = phi(W_{L+1} x_L + b)``
alone. Where ``W_{L+1}`` has more columns than rows (the last layer contracts, ``n_L > n``) only
the sparsity of ``x_L`` can make that step unique, and Corollary 1 asks for ``s_L < m / 2`` on the
``m`` observed entries. When the generator's own latents violate it (the median ``s_L`` over
draws from its prior), the pursuit's first step has no unique answer for typical signals and
its cost (per-sample supported systems of the wide last hidden layer) buys nothing the
whole-network methods do not give: measured on the shipped DCGAN-shaped convolutional generator
(20-1568-3136-784, ``s_2`` about 1600 against ``m / 2 = 392``), float32, 16 clean images, one
thread, the pursuit-first hybrid took 6.3x gradient descent's CPU time for the same answer. There
the hybrid runs its gradient stage first (gradient descent from the baseline's own start, at
the baseline's cost), refines it through the whole network, and keeps the pursuit as the next
candidate for the samples still unexplained (:func:`gradient_first_hybrid`).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from geninv.exceptions import ConvergenceWarning, InputError, describe
from geninv.model.generator import Generator
from geninv.solvers.loop import Callback
from geninv.solvers.measurement import Measurement
from geninv.solvers.network import hidden_layers
from geninv.solvers.refine import fit_threshold, gauss_newton_refine, network_fit
from geninv.solvers.result import SolveResult, finish

__all__ = ["ORDERS", "gradient_first", "prior_cardinality", "gradient_first_hybrid"]

#: Values of the hybrid's ``order`` option.
ORDERS = ("auto", "pursuit_first", "gradient_first")

#: Latents drawn from the prior to read the image layer's typical cardinality.
PRIOR_DRAWS = 64


def prior_cardinality(G: Generator, draws: int = PRIOR_DRAWS, seed: int = 0) -> Tensor:
    """``s_L`` (the last hidden layer's number of active units) of ``G(z)`` for ``draws`` latents
    ``z ~ N(0, I)`` drawn with ``seed`` (draws,), int64."""
    with torch.no_grad():
        z, _ = G.sample(draws, seed=seed)
        x_L = hidden_layers(G, z)[-1]
    return (x_L > 0).sum(dim=1)


def gradient_first(G: Generator, y: Tensor, meas: Measurement, order: str) -> tuple[bool, str]:
    """Whether the hybrid runs its gradient stage first, and why (one sentence).

    ``order="auto"``: gradient first when the image layer contracts (``n_L > n``) and the median
    ``s_L`` of :func:`prior_cardinality` is at least half the median number of observed entries
    (Corollary 1 fails at the image layer for typical latents of ``G``).
    """
    if order not in ORDERS:
        raise InputError(f"order: expected one of {', '.join(map(repr, ORDERS))}, received {describe(order)}")
    if order == "pursuit_first":
        return False, "order='pursuit_first'"
    if order == "gradient_first":
        return True, "order='gradient_first'"
    from geninv.solvers.relu_output import is_relu_output

    if G.n_hidden == 0 or is_relu_output(G):
        return False, "the image layer is read by the pursuit (no hidden layer, or a ReLU output)"
    n_L, n = G.dims[-2], G.dims[-1]
    if n_L <= n:
        return False, f"the image layer does not contract (n_L = {n_L} <= n = {n})"
    s_L = float(prior_cardinality(G).double().median())
    m = float(meas.n_observed(y).to(torch.float64).median())
    if s_L < m / 2:
        return False, f"Corollary 1 holds at the image layer for typical latents (median s_L = {s_L:.0f} < m/2 = {m / 2:.0f})"
    return True, (f"the image layer contracts (n_L = {n_L} > n = {n}) and Corollary 1 fails there for typical "
                  f"latents (median s_L = {s_L:.0f} >= m/2 = {m / 2:.0f} over {PRIOR_DRAWS} draws from the prior)")


def gradient_first_hybrid(G: Generator, yy: Tensor, meas: Measurement, *, reason: str, sigma: Tensor | None,
                          gam: Tensor, pursuit: str, pursuit_iter: int, refine_iter: int, fallback: tuple[str, ...],
                          fallback_iter: int, fit_tol: float, seed: int, tol: float, callback: Callback | None,
                          popts: dict[str, Any], t0: float,
                          fallback_solve: Callable[..., SolveResult]) -> SolveResult:
    """The hybrid with its candidates in the order ``(fallback[0], pursuit, *fallback[1:])``.

    Each candidate is refined through the whole network
    (:func:`geninv.solvers.hybrid.gauss_newton_refine`) and runs only on the samples the ones
    before it left unexplained (:func:`geninv.solvers.hybrid.fit_threshold`); per sample the
    candidate with the smallest objective is kept. The first candidate runs on the whole batch
    from the baseline's own seeded start, so that stage costs what the baseline costs.
    Same result fields as :func:`geninv.solvers.hybrid.hybrid`, with ``info["choices"]`` in
    the order run and ``info["order"] = "gradient_first"``.
    """
    from geninv.solvers.registry import load_method

    B, dev = yy.shape[0], yy.device
    f64 = torch.float64
    G64 = G.to(dtype=f64)
    y64 = yy.to(f64)
    thr = fit_threshold(yy, meas, sigma, fit_tol)
    choices = (fallback[0], "pursuit", *fallback[1:])
    # Stop a refinement once a step lowers F by less than a hundredth of n_0 / (m - n_0) of it:
    # exact data converge quadratically (each step lowers F by about F) and run to the rounding
    # level; float32 data fitted in float64 stall at float32's rounding level, where further
    # steps (measured: up to 22 on the DCGAN-shaped generator) change nothing visible.
    rel = 1e-2 * G.latent_dim / max(1, yy.shape[1] - G.latent_dim)
    seconds: dict[str, float] = {}

    def unexplained(obj: Tensor, z: Tensor) -> Tensor:
        return ((obj - 0.5 * gam * z.square().sum(dim=1)) > thr) | ~torch.isfinite(obj)

    def run(name: str, idx: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Candidate ``name`` on the samples ``idx``: raw objective, refined z, objective, converged, n_iter, s_L."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            if name == "pursuit":
                res = load_method(pursuit)(G, yy[idx], measure=meas.as_measure(idx),
                                           **dict({"max_iter": pursuit_iter}, **popts))
            else:
                res = fallback_solve(name, G, yy, meas, idx, seed, fallback_iter)
        mi = meas.subset(idx)
        z_c = res.z.to(f64)
        with torch.no_grad():
            obj_raw = network_fit(G64, y64[idx], z_c, mi, gam[idx])
            if refine_iter:
                z_c, obj_c, it_c, conv_c = gauss_newton_refine(G64, y64[idx], mi, z_c, gamma=gam[idx],
                                                               max_iter=refine_iter, tol=tol, rel_decrease=rel)
            else:
                obj_c, it_c, conv_c = obj_raw, torch.zeros_like(res.n_iter), res.converged.clone()
        s_L = res.supports[-1].sum(dim=1) if res.supports else torch.zeros(idx.numel(), dtype=torch.int64, device=dev)
        return obj_raw, z_c, obj_c, conv_c | res.converged, res.n_iter + it_c, s_L

    z_best = torch.zeros(B, G.latent_dim, dtype=f64, device=dev)
    obj_best = torch.full((B,), math.inf, dtype=f64, device=dev)
    candidate_converged = torch.zeros(B, dtype=torch.bool, device=dev)
    n_iter = torch.zeros(B, dtype=torch.int64, device=dev)
    choice = torch.zeros(B, dtype=torch.int64, device=dev)
    s_L = torch.zeros(B, dtype=torch.int64, device=dev)
    ran = torch.zeros(B, dtype=torch.bool, device=dev)
    nan = torch.full((B,), math.nan, dtype=f64, device=dev)
    obj_p, obj_first_raw, obj_first = nan.clone(), nan.clone(), nan.clone()
    obj_f = {name: nan.clone() for name in fallback}
    need = torch.ones(B, dtype=torch.bool, device=dev)
    hist: list[Tensor] = []
    for k, name in enumerate(choices):
        todo = unexplained(obj_best, z_best) if k else torch.ones(B, dtype=torch.bool, device=dev)
        if not bool(todo.any()):
            hist.append(obj_best.clone())
            continue
        ts = time.perf_counter()
        idx = todo.nonzero().squeeze(1)
        if k:
            ran |= todo
        raw, z_c, obj_c, conv_c, it_c, s_c = run(name, idx)
        if name == "pursuit":
            obj_p[idx] = raw
        else:
            obj_f[name][idx] = obj_c
        if k == 0:
            obj_first_raw, obj_first = raw.clone(), obj_c.clone()
        better = obj_c < obj_best[idx]
        gi = idx[better]
        z_best[gi], obj_best[gi] = z_c[better], obj_c[better]
        candidate_converged[gi] = conv_c[better]
        s_L[gi] = s_c[better]
        choice[gi] = k
        n_iter[idx] += it_c
        seconds[name if name == "pursuit" else f"{'gradient' if k == 0 else 'fallback'}_{name}"] = time.perf_counter() - ts
        if k == 0:
            need = unexplained(obj_best, z_best)
        hist.append(obj_best.clone())
        if callback is not None:
            callback(k, {"stage": name, "x": z_best.to(yy.dtype), "objective": obj_best})

    with torch.no_grad():
        layers = hidden_layers(G64, z_best)
    supports = [x > 0 for x in layers]
    converged = ~unexplained(obj_best, z_best)
    trusted = s_L.to(f64) < meas.n_observed(yy).to(f64) / 2
    info: dict[str, Any] = {
        "order": "gradient_first", "order_reason": reason,
        "choice": choice, "choices": choices, "stage": [choices[c] for c in choice.tolist()],
        "candidate_converged": candidate_converged, "fallback": ran, "unexplained": need,
        "threshold": thr, "objective_pursuit": obj_p, "objective_first": obj_first_raw,
        "objective_refined": obj_first, "objective_fallback": obj_f,
        "s_L": s_L, "pursuit_trusted": trusted, "sigma": sigma, "gamma": gam, "seconds": seconds,
        "pursuit": pursuit,
    }
    history = {"objective": torch.stack(hist)}
    return finish("hybrid", G, z_best, layers, supports, converged, n_iter, history=history, t0=t0, info=info,
                  dtype=yy.dtype, y=yy, meas=meas)

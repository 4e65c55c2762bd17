"""Analytic floating-point operation counts of the solvers' loops.

Only matrix products are counted (``2 m k n`` for an ``(m, k) @ (k, n)`` product): everything
else in an iteration is elementwise, ``O(B n)`` against the products' ``O(B n_in n_out)``, and
is what the roofline ratio is meant to expose as overhead. The counts follow the iterations of
:mod:`geninv.solvers` (``steps.py``, ``subproblems.py``, ``gradient.py``); per-sample iteration
counts come from the returned :class:`~geninv.solvers.result.SolveResult`, so early-stopped
samples are counted for the iterations they actually ran (the solvers drop finished samples
from the working batch).

Per sample and iteration, with ``W`` of shape ``(n_out, n_in)``:

* FISTA, pre-activation image layer / Layered-BP layer: ``x W^T`` and ``r W``: ``4 n_in n_out``;
  signal-domain backtracking FISTA: three products, ``6 n_in n_out``.
* Linearized ADMM (middle and first layers): ``r W`` and ``x W^T``: ``4 n_in n_out``.
* Gradient descent and Adam: one forward and one hand-written backward pass through the
  network, ``4 sum_i n_i n_{i-1}``.

:func:`count_matmul_flops` measures the same quantity independently with
``torch.utils.flop_counter.FlopCounterMode`` (every ``mm``/``addmm``/``bmm``/``baddbmm`` the call
dispatches), which the benchmark reports next to the analytic loop count.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor

__all__ = [
    "matmul_flops",
    "network_flops",
    "fista_stage_flops",
    "supported_lstsq_flops",
    "ladmm_stage_flops",
    "gradient_flops",
    "loop_flops",
    "count_matmul_flops",
]


def matmul_flops(m: int, k: int, n: int) -> int:
    """``2 m k n``: multiply-adds of an ``(m, k) @ (k, n)`` product, counted as two operations."""
    return 2 * int(m) * int(k) * int(n)


def network_flops(dims: Sequence[int]) -> int:
    """One forward pass of one sample through ``dims = [n_0, ..., n_L, n]``: ``2 sum_i n_i n_{i-1}``."""
    return sum(matmul_flops(1, dims[i], dims[i + 1]) for i in range(len(dims) - 1))


def _checks(n_iter: Tensor, check_every: int) -> int:
    """Number of (sample, convergence check) pairs: a sample with ``k`` iterations took part in
    ``ceil(k / check_every)`` checks."""
    return int(((n_iter + check_every - 1) // check_every).sum())


def fista_stage_flops(
    n_in: int,
    n_out: int,
    n_iter: Tensor,
    *,
    check_every: int = 10,
    signal_domain: bool = False,
    auto_lam: bool = True,
    power_iters: int = 0,
) -> dict[str, int]:
    """Products of one FISTA layer problem (:func:`geninv.solvers.subproblems.fista_layer`).

    Parameters
    ----------
    n_in, n_out : int
        Shape of the layer's ``W`` (n_out, n_in).
    n_iter : Tensor of shape (B,)
        Iterations each sample ran.
    check_every : int
        Iterations between checks; every check evaluates the objective (one ``x W^T``).
    signal_domain : bool
        Backtracking FISTA on ``phi(W x + b)`` (three products per step instead of two).
    auto_lam : bool
        ``lam`` from ``grad f(0)`` (one more gradient per sample).
    power_iters : int
        Masked power iterations for the step size (0 when the norm is the cached exact one).

    Returns
    -------
    dict with ``iterations``, ``setup`` and ``total``.
    """
    B = int(n_iter.shape[0])
    p = matmul_flops(1, n_in, n_out)  # one product of one sample
    per_iter = (3 if signal_domain else 2) * p
    it = per_iter * int(n_iter.sum()) + p * _checks(n_iter, check_every)
    setup = B * (2 * p * auto_lam + 2 * p * power_iters)
    return {"iterations": it, "setup": setup, "total": it + setup}


def supported_lstsq_flops(n_in: int, n_out: int, B: int, rows: Tensor | None, *, refine: int = 2,
                          budget: int = 2**25) -> int:
    """Products of :func:`geninv.solvers.linalg.supported_lstsq` with all columns free.

    When every sample has the same rows (always for ``B = 1``): one ``W^T diag(s) W``
    (``2 n_in^2 n_out``) and ``1 + 2 refine`` full-width products per sample. When the rows
    differ and ``n_out n_in^2 <= budget``: the masked full Gram matrices from one product,
    ``2 B n_out n_in^2``, and ``1 + 2 refine`` full-width products per sample. Otherwise every
    sample's rows are gathered into a batch padded to the largest count ``r``:
    ``2 B r n_in^2`` (Gram matrices) ``+ 2 B r n_in`` (right-hand sides) ``+ refine * 4 B r n_in``.
    """
    shared = rows is None or bool((rows == rows[:1]).all())
    p = matmul_flops(1, n_in, n_out)
    if shared:
        return matmul_flops(n_in, n_out, n_in) + B * p * (1 + 2 * refine)
    if n_out * n_in * n_in <= budget:
        # Masked full Gram matrices: one (B, n_out) @ (n_out, n_in^2) product.
        return B * (matmul_flops(1, n_out, n_in * n_in) + p * (1 + 2 * refine))
    r = max(int(rows.sum(dim=1).max()), 1)  # type: ignore[union-attr]
    q = matmul_flops(1, r, n_in)
    return B * (q * n_in + q + refine * 2 * q)


def ladmm_stage_flops(
    n_in: int,
    n_out: int,
    n_iter: Tensor,
    support_rows: Tensor | None,
    *,
    auto_lam: bool = True,
    warm_start: bool = True,
    refine: int = 0,
    power_iters: int = 0,
) -> dict[str, int]:
    """Products of one linearized-ADMM layer problem (:func:`geninv.solvers.subproblems.ladmm_layer`).

    Parameters
    ----------
    n_in, n_out : int
        Shape of ``W`` (n_out, n_in) of the layer above.
    n_iter : Tensor of shape (B,)
    support_rows : bool Tensor of shape (B, n_out) or None
        Support of the next layer: the rows of the warm start's least squares
        (:func:`supported_lstsq_flops`).
    auto_lam : bool
        A middle layer with ``lam`` from ``grad f(0)`` (one product per sample); False on the first layer.
    power_iters : int
        Power iterations for ``mu`` when ``rho != 1`` (0: the cached exact norm).

    Returns
    -------
    dict with ``iterations``, ``setup`` and ``total``.
    """
    B = int(n_iter.shape[0])
    p = matmul_flops(1, n_in, n_out)
    it = 2 * p * int(n_iter.sum())
    setup = B * p * (1 + int(auto_lam) + 2 * power_iters)  # ladmm_init's W x0 + b, lam, mu
    if warm_start:
        setup += supported_lstsq_flops(n_in, n_out, B, support_rows, refine=refine)
    return {"iterations": it, "setup": setup, "total": it + setup}


def gradient_flops(dims: Sequence[int], n_iter: Tensor, *, method: str, power_iters: int = 20) -> dict[str, int]:
    """Products of :func:`geninv.solvers.gradient.gd` or ``adam``.

    ``gd``: the local Lipschitz estimate (one forward pass, then ``power_iters`` forward and
    backward passes), the first gradient, one gradient per iteration, and the final hidden
    layers. ``adam``: ``n_iter`` is summed over restarts per sample (as the result reports it);
    one gradient per restart and iteration.
    """
    B = int(n_iter.shape[0])
    f = network_flops(dims)
    hidden = network_flops(dims[:-1])
    it = 2 * f * int(n_iter.sum())
    if method == "gd":
        setup = B * (f + power_iters * 2 * f + 2 * f + hidden)
    elif method == "adam":
        setup = B * hidden
    else:
        raise ValueError(f"method: expected 'gd' or 'adam', received {method!r}")
    return {"iterations": it, "setup": setup, "total": it + setup}


def loop_flops(method: str, dims: Sequence[int], res: Any, options: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Analytic products of a solve's iterative loops, from its result.

    Parameters
    ----------
    method : str
    dims : list of int
        The generator's ``[n_0, ..., n_L, n]``.
    res : SolveResult
    options : dict, optional
        The options the solve was called with (``check_every``, ``power_iters``, ...).

    Returns
    -------
    dict or None
        ``{"total": F, "stages": {stage: {"iterations", "setup", "total"}}}``; None for methods
        without an iteration loop of products (``oracle``: direct solves; ``lp_layerwise``:
        HiGHS) or unknown to this module.

    Notes
    -----
    ``latent_pursuit``: the image layer is FISTA on ``W_{L+1}`` (pre-activation form when
    ``res.info["image_domain"] == "pre"``, then warm-started by least squares; the count assumes
    no measurement mask), every lower stage linearized ADMM on ``W_{i+1}`` with the warm start
    on the estimated support of ``x_{i+1}`` (no refinement steps, as the solver does it). ``layered_bp``: FISTA on every
    layer (the image layer warm-started as in Latent-Pursuit; masked power iteration for the
    hidden layers' step sizes), then one supported least squares for ``z`` (stage ``"z"``). The debiasing (shared by both, and by the Oracle) is not part of the
    loops; it shows in the measured ``FlopCounterMode`` total instead. Stage ``"self_check"``:
    the one forward pass of the result's per-sample verdict (``residual``, ``fits``).
    """
    opts = dict(options or {})
    L = len(dims) - 2
    # The result's self-check (``geninv.solvers.verdict``): one forward pass of the batch.
    Bc = int(res.z.shape[0])
    fwd = sum(Bc * matmul_flops(1, dims[i], dims[i + 1]) for i in range(len(dims) - 1))
    check = {"iterations": 0, "setup": fwd, "total": fwd}
    if method in ("gd", "adam"):
        g = gradient_flops(dims, res.n_iter.cpu(), method=method)
        return {"total": g["total"] + fwd, "stages": {method: g, "self_check": check}}
    if method not in ("latent_pursuit", "layered_bp"):
        return None
    check_every = int(opts.get("check_every", 10))
    power_iters = int(opts.get("power_iters", 30))
    rho = float(opts.get("rho", 1.0))
    auto = opts.get("lam") is None
    n_iter = {k: v.cpu() for k, v in res.info["n_iter"].items()}
    signal = res.info.get("image_domain") == "signal"
    stages: dict[str, dict[str, int]] = {}
    top = f"x{L}"
    stages[top] = fista_stage_flops(dims[L], dims[L + 1], n_iter[top], check_every=check_every, signal_domain=signal,
                                    auto_lam=auto)
    if not signal and bool(opts.get("warm_start", True)):
        # Least-squares warm start of the image layer (rows shared: no mask): one Gram matrix,
        # one product per sample and two refinement steps; then the exact-fit check (one
        # product per sample, ``exact_fit``).
        Bz = int(res.z.shape[0])
        ws = supported_lstsq_flops(dims[L], dims[L + 1], Bz, None, refine=2) + Bz * matmul_flops(1, dims[L], dims[L + 1])
        stages[top] = {**stages[top], "setup": stages[top]["setup"] + ws, "total": stages[top]["total"] + ws}
    sup = [s.cpu() for s in res.supports]  # the pursuit's estimates (before debiasing's refits)
    if method == "latent_pursuit":
        warm = bool(opts.get("warm_start", True))
        for i in range(L - 1, -1, -1):
            stage = "z" if i == 0 else f"x{i}"
            stages[stage] = ladmm_stage_flops(dims[i], dims[i + 1], n_iter[stage], sup[i], auto_lam=auto and i > 0,
                                              warm_start=warm, power_iters=0 if rho == 1.0 else power_iters)
    else:
        for i in range(L - 1, 0, -1):
            stage = f"x{i}"
            stages[stage] = fista_stage_flops(dims[i], dims[i + 1], n_iter[stage], check_every=check_every, auto_lam=auto,
                                              power_iters=power_iters)
        B = int(res.z.shape[0])
        lsq = supported_lstsq_flops(dims[0], dims[1], B, sup[0])
        stages["z"] = {"iterations": 0, "setup": lsq, "total": lsq}
    stages["self_check"] = check
    return {"total": sum(s["total"] for s in stages.values()), "stages": stages}


def count_matmul_flops(fn: Callable[[], Any]) -> tuple[int, Any]:
    """Run ``fn()`` under ``FlopCounterMode`` and return (matrix-product FLOPs, its value).

    Counts ``mm``, ``addmm``, ``bmm``, ``baddbmm`` (and what ``matmul`` lowers to); factorizations
    and triangular solves are not counted.
    """
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        out = fn()
    return int(fc.get_total_flops()), out


def gflops(flops: int | float | None, seconds: float | None) -> float | None:
    """``flops / seconds / 1e9``, or None when either is missing or the time is not positive."""
    if flops is None or seconds is None or not seconds > 0 or not math.isfinite(seconds):
        return None
    return float(flops) / seconds / 1e9

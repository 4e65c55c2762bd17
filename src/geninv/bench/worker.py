"""One benchmark measurement, run in a fresh process: ``python -m geninv.bench.worker < task.json``.

A fresh process per configuration makes ``ru_maxrss`` (the resident-memory high-water mark)
that configuration's peak, and keeps one configuration's caches and allocator state from
flattering or penalizing the next. The task is a JSON object on stdin; the result is one line
``GENINV_BENCH <json>`` on stdout. :func:`run_task` does the same in-process (used by the
tests' tiny mode, where peak memory is then not per configuration and is reported as None).

Task kinds
----------
``solve``: time ``geninv.invert`` on a batch (best and median of repeats after a warm-up),
with final SNRs, peak memory, analytic loop FLOPs and counted matrix-product FLOPs.
``curve``: time to reach target image SNRs: from the solver's callback (``gd``, ``adam``,
``lp_layerwise``: median SNR over the batch at every check, the callback's own time excluded),
by a sweep of ``max_iter`` (staged methods whose final estimate only exists at the end; the
time to a target is that of the fastest run reaching it), or one point (``oracle``, methods
without ``max_iter``).
``cold``: the first call in a fresh process, then a second one (target c of the run).
``loops``: each iteration loop (Latent-Pursuit's FISTA and linearized-ADMM stages, gd's and
Adam's network gradient) run for a fixed number of iterations on the whole batch: GFLOP/s of
the loops themselves (target b of the run).
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

__all__ = ["run_task", "build_generator", "main", "MARKER", "jsonable"]

MARKER = "GENINV_BENCH "

# Methods whose callback hands out the latent estimate of the whole batch at every check (state["z"]).
TRACE_METHODS = ("gd", "adam", "lp_layerwise")
MNIST_DIMS = [20, 128, 392, 784]


def jsonable(x: Any) -> Any:
    """Plain JSON values: tensors to lists, non-finite floats to None, tuples to lists."""
    if isinstance(x, Tensor):
        return jsonable(x.detach().cpu().tolist())
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (str, int, bool)) or x is None:
        return x
    return str(x)


def build_generator(spec: dict[str, Any], dtype: torch.dtype, device: str) -> tuple[Any, dict[str, Any]]:
    """The generator a task names, and a description of what was used.

    ``{"name": "mnist"}``: the shipped MNIST generator (``geninv.load_mnist_generator()``) when
    its weights are installed, otherwise a random stand-in of the same architecture
    (20-128-392-784, PLU output, biases, seed 0), and the description says which.
    ``{"dims": [...], "output": "tanh", "seed": 0, "bias": False}``: a random generator.
    ``{"path": "file.safetensors"}``: a saved generator.
    """
    import geninv
    from geninv.exceptions import ModelFileError

    meta: dict[str, Any]
    if "path" in spec:
        G = geninv.load_generator(spec["path"]).to(device, dtype)
        meta = {"source": "file", "description": f"load_generator({spec['path']!r})"}
    elif spec.get("name") == "mnist" and "dims" not in spec:
        try:
            G = geninv.load_mnist_generator(dtype=dtype, device=device)
            meta = {"source": "shipped", "description": "geninv.load_mnist_generator() (trained MNIST GAN generator)"}
        except ModelFileError as e:
            G = geninv.random_generator(MNIST_DIMS, output="plu", seed=0, bias=True, dtype=dtype, device=device)
            meta = {"source": "random stand-in",
                    "description": "random_generator([20, 128, 392, 784], 'plu', seed=0, bias=True): the shipped "
                                   f"weights were not found ({str(e)[:120]})"}
    else:
        dims = [int(d) for d in spec["dims"]]
        G = geninv.random_generator(dims, output=spec.get("output", "tanh"), seed=int(spec.get("seed", 0)),
                                    bias=bool(spec.get("bias", False)), dtype=dtype, device=device)
        meta = {"source": "random",
                "description": f"random_generator({dims}, {spec.get('output', 'tanh')!r}, seed={spec.get('seed', 0)}, "
                               f"bias={bool(spec.get('bias', False))})"}
    meta.update(dims=list(G.dims), output=G.output_activation.name)
    return G, meta


def _median(x: Tensor) -> float:
    return float(x.double().median())


def _snr_stats(ref: Tensor, est: Tensor) -> dict[str, Any]:
    import geninv

    s = geninv.snr(ref, est)
    fin = torch.isfinite(s)
    return {"median": _median(s), "q10": float(s.double().quantile(0.1)), "q90": float(s.double().quantile(0.9)),
            "exact_frac": float((~fin).double().mean())}


def _data(G: Any, B: int, seed: int) -> tuple[Tensor, Tensor]:
    with torch.no_grad():
        z, y = G.sample(B, seed=seed)
    return z, y


def _options(task: dict[str, Any], G: Any, z: Tensor) -> dict[str, Any]:
    opts = dict(task.get("options") or {})
    if task["method"] == "oracle":
        opts["supports"] = G.trace(z).supports
    return opts


def _invert(G: Any, y: Tensor, method: str, opts: dict[str, Any], device: str) -> tuple[Any, float, int]:
    """One timed call; returns (result, seconds, number of ConvergenceWarnings)."""
    import geninv
    from geninv.exceptions import ConvergenceWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        from geninv.bench.machine import synchronize

        synchronize(device)
        t = time.perf_counter()
        res = geninv.invert(G, y, method=method, **opts)
        synchronize(device)
        dt = time.perf_counter() - t
    n_warn = sum(1 for w in caught if issubclass(w.category, ConvergenceWarning))
    return res, dt, n_warn


def _loop_seconds(method: str, res: Any, stages: dict[str, Any] | None) -> float | None:
    if stages is None:
        return None
    sec = res.info.get("seconds") if isinstance(res.info.get("seconds"), dict) else None
    if sec is not None and all(s in sec for s in stages):
        return float(sum(sec[s] for s in stages))
    return float(res.seconds)


def _chunk_opts(opts: dict[str, Any], lo: int, hi: int) -> dict[str, Any]:
    o = dict(opts)
    if "supports" in o:
        o["supports"] = [s[lo:hi] for s in o["supports"]]
    return o


def _solve(task: dict[str, Any], G: Any, meta: dict[str, Any], isolated: bool) -> dict[str, Any]:
    """Time ``invert`` on batches of ``batch`` signals.

    At ``batch == 1`` one pass inverts ``singles`` (default 8) different signals one call at a
    time, so that the reported time per signal and the SNR quantiles are not those of one draw
    (a single latent can fall outside the uniqueness conditions; the MNIST generator's
    ``sample(1, seed=1)`` does, s_1 = 58 > s_2 / 2 = 55.5).
    """
    from geninv.bench.flops import count_matmul_flops, gflops, loop_flops
    from geninv.bench.machine import max_rss_mb, reset_peak_rss, rss_mb

    method, B, device = task["method"], int(task["batch"]), task.get("device", "cpu")
    n_calls = max(1, int(task.get("singles", 8))) if B == 1 else 1
    z, y = _data(G, B * n_calls, int(task.get("data_seed", 1)))
    opts = _options(task, G, z)
    k = min(B, int(task.get("warmup_batch", 4)))
    if k > 0:
        _invert(G, y[:k], method, _chunk_opts(opts, 0, k), device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    was_reset = reset_peak_rss()
    rss0 = rss_mb()

    def one_pass() -> tuple[list[Any], float, int]:
        out, tot, nw = [], 0.0, 0
        for c in range(n_calls):
            r, dt, w = _invert(G, y[c * B:(c + 1) * B], method, _chunk_opts(opts, c * B, (c + 1) * B), device)
            out.append(r)
            tot += dt
            nw = max(nw, w)
        return out, tot, nw

    times: list[float] = []
    best: list[Any] | None = None
    n_warn = 0
    min_time, max_rep, min_rep = float(task.get("min_time", 2.0)), int(task.get("max_repeats", 10)), int(task.get("min_repeats", 1))
    total = 0.0
    while True:
        outs, dt, w = one_pass()
        n_warn = max(n_warn, w)
        times.append(dt / n_calls)
        total += dt
        if best is None or dt / n_calls <= min(times):
            best = outs
        if len(times) >= max_rep or (total >= min_time and len(times) >= min_rep):
            break
    assert best is not None
    peak = max_rss_mb()
    t_min = min(times)
    z_hat = torch.cat([r.z for r in best]).to(G.dtype)
    with torch.no_grad():
        y_hat = G(z_hat)
    rec: dict[str, Any] = {
        "seconds_min": t_min, "seconds_median": statistics.median(times), "repeats": len(times),
        "calls_per_pass": n_calls, "signals_timed": B * n_calls,
        "per_signal_ms": 1e3 * t_min / B, "signals_per_s": B / t_min,
        "snr_image_db": _snr_stats(y, y_hat), "snr_latent_db": _snr_stats(z, z_hat.to(z.dtype)),
        "converged_frac": float(torch.cat([r.converged for r in best]).double().mean()),
        "n_iter_mean": float(torch.cat([r.n_iter for r in best]).double().mean()),
        "convergence_warnings": n_warn,
    }
    if all(isinstance(r.info.get("seconds"), dict) for r in best):
        rec["stage_seconds"] = {s: sum(float(r.info["seconds"].get(s, 0.0)) for r in best) / n_calls
                                for s in best[0].info["seconds"]}
    if all(isinstance(r.info.get("n_iter"), dict) for r in best):
        rec["stage_n_iter_mean"] = {s: float(torch.cat([r.info["n_iter"][s] for r in best]).double().mean())
                                    for s in best[0].info["n_iter"]}
    if device.startswith("cuda"):
        rec["memory"] = {"gpu_peak_mb": torch.cuda.max_memory_allocated() / 2**20, "peak_rss_mb": peak}
    else:
        ok = isolated or was_reset
        rec["memory"] = {"peak_rss_mb": peak if ok else None,
                         "delta_mb": max(0.0, peak - rss0) if (ok and rss0 is not None) else None,
                         "baseline_rss_mb": rss0,
                         "note": ("high-water mark reset before the timed calls (/proc/self/clear_refs); delta = peak - "
                                  "RSS before them" if was_reset else
                                  "ru_maxrss of a fresh process (includes the imports); delta = peak - RSS before the timed calls")
                         if ok else "in-process run without a resettable high-water mark: peak memory not measured"}
    lfs = [loop_flops(method, list(G.dims), r, task.get("options") or {}) for r in best]
    fl: dict[str, Any] = {"loop": None, "loop_seconds": None, "loop_gflops": None}
    if all(lf is not None for lf in lfs):
        tot_fl = sum(lf["total"] for lf in lfs)  # type: ignore[index]
        ls_all = [_loop_seconds(method, r, lf["stages"]) for r, lf in zip(best, lfs)]  # type: ignore[index]
        ls = sum(x for x in ls_all if x is not None) if all(x is not None for x in ls_all) else None
        stages = {s: sum(lf["stages"][s]["total"] for lf in lfs) for s in lfs[0]["stages"]}  # type: ignore[index]
        fl.update(loop=tot_fl, loop_stages=stages, loop_seconds=ls, loop_gflops=gflops(tot_fl, ls))
    else:
        tot_fl = None
    if task.get("count_flops", True):
        counted, _ = count_matmul_flops(one_pass)
        fl.update(counted_total=counted, total_gflops=gflops(counted, t_min * n_calls),
                  loop_share_of_counted=(tot_fl / counted) if (tot_fl is not None and counted) else None)
    rec["flops"] = fl
    return rec


def _curve(task: dict[str, Any], G: Any, meta: dict[str, Any]) -> dict[str, Any]:
    import geninv
    from geninv.solvers import accepted_options

    method, B, device = task["method"], int(task["batch"]), task.get("device", "cpu")
    targets = sorted(float(t) for t in task.get("targets_db", [40.0]))
    z, y = _data(G, B, int(task.get("data_seed", 1)))
    opts = _options(task, G, z)
    k = min(B, int(task.get("warmup_batch", 4)))
    if k > 0:
        _invert(G, y[:k], method, _chunk_opts(opts, 0, k), device)
    points: list[list[float]] = []
    accepted = accepted_options(method)
    if method in TRACE_METHODS:
        mode = "trace"
        spent = [0.0]
        t0 = [0.0]

        def cb(it: int, state: dict[str, Any]) -> None:
            tc = time.perf_counter()
            with torch.no_grad():
                s = _median(geninv.snr(y, G(state["z"].to(G.dtype))))
            points.append([tc - t0[0] - spent[0], s, float(it)])
            spent[0] += time.perf_counter() - tc

        t0[0] = time.perf_counter()
        res, dt, _ = _invert(G, y, method, dict(opts, callback=cb), device)
        with torch.no_grad():
            final = _median(geninv.snr(y, G(res.z.to(G.dtype))))
        points.append([dt - spent[0], final, float(res.n_iter.double().max())])
    elif method != "oracle" and (accepted is None or "max_iter" in accepted):
        # The estimate exists only at the end (debiasing after the last stage), and a run cut
        # short can be slower than a converged one (the debiasing works harder), so every cap
        # is run until one no stage reaches: larger caps give the same run.
        mode = "sweep"
        sweep = [int(m) for m in task.get("sweep", [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 2000])]
        for m in sweep:
            res, dt, _ = _invert(G, y, method, dict(opts, max_iter=m), device)
            with torch.no_grad():
                final = _median(geninv.snr(y, G(res.z.to(G.dtype))))
            points.append([dt, final, float(m)])
            it = res.info.get("n_iter")
            used = max(int(v.max()) for v in it.values()) if isinstance(it, dict) and it else int(res.n_iter.max())
            if used < m:
                break
    else:
        mode = "single"
        res, dt, _ = _invert(G, y, method, opts, device)
        with torch.no_grad():
            final = _median(geninv.snr(y, G(res.z.to(G.dtype))))
        points.append([dt, final, 0.0])
    reach = []
    for t in targets:
        ts = [p[0] for p in points if p[1] >= t]
        reach.append({"target_db": t, "seconds": min(ts) if ts else None})
    return {"mode": mode, "points": points, "points_columns": ["seconds", "median_image_snr_db", "iteration_or_max_iter"],
            "final_snr_db": points[-1][1] if points else None, "seconds_to_target": reach, "targets_db": targets}


def _cold(task: dict[str, Any], G: Any, meta: dict[str, Any]) -> dict[str, Any]:
    method, B, device = task["method"], int(task["batch"]), task.get("device", "cpu")
    z, y = _data(G, B, int(task.get("data_seed", 1)))
    opts = _options(task, G, z)
    runs = []
    for label in ("cold", "warm"):
        res, dt, n_warn = _invert(G, y, method, opts, device)
        with torch.no_grad():
            snr_i = _snr_stats(y, G(res.z.to(G.dtype)))
        runs.append({"call": label, "seconds": dt, "snr_image_db": snr_i, "snr_latent_db": _snr_stats(z, res.z.to(z.dtype)),
                     "converged_frac": float(res.converged.double().mean()), "convergence_warnings": n_warn,
                     "stage_seconds": {s: float(v) for s, v in res.info.get("seconds", {}).items()}
                     if isinstance(res.info.get("seconds"), dict) else None})
    return {"runs": runs}


def _timed(fn: Callable[[], Any], device: str) -> tuple[Any, float]:
    from geninv.bench.machine import synchronize

    synchronize(device)
    t = time.perf_counter()
    out = fn()
    synchronize(device)
    return out, time.perf_counter() - t


def _loops(task: dict[str, Any], G: Any, meta: dict[str, Any]) -> dict[str, Any]:
    """Throughput of the iteration loops themselves at one batch size: each loop of the solvers
    run for a fixed number of iterations (``tol = 0``: no sample stops) on the whole batch, the
    driver's convergence checks included, timed, and its products counted exactly."""
    import geninv
    from geninv.bench.flops import (
        count_matmul_flops,
        fista_stage_flops,
        gflops,
        gradient_flops,
        ladmm_stage_flops,
        network_flops,
    )
    from geninv.solvers.spectral import spectral_norm
    from geninv.solvers.steps import LinearLS
    from geninv.solvers.subproblems import auto_lam, fista_layer, ladmm_layer

    B, device = int(task["batch"]), task.get("device", "cpu")
    N = int(task.get("loop_iters", 100))
    z, y = _data(G, B, int(task.get("data_seed", 1)))
    dims = list(G.dims)
    L = G.n_hidden
    Ws, bs = G.weights, G.biases
    out: list[dict[str, Any]] = []
    with torch.no_grad():
        tr = G.trace(z)
        runs: list[tuple[str, str, tuple[int, int], Callable[[], Any], Callable[[Any], int]]] = []

        def fista_run(W: Tensor, b: Tensor, t: Tensor, lip: Tensor) -> Callable[[], Any]:
            return lambda: fista_layer(LinearLS(W, b), t, None, lip=lip, lam=None, lam_rel=1e-6, x0=None, max_iter=N,
                                       tol=0.0, check_every=10, restart=True, callback=None, stage="x")

        def fista_count(W: Tensor) -> Callable[[Any], int]:
            return lambda o: fista_stage_flops(W.shape[1], W.shape[0], o[0].n_iter.cpu(), check_every=10)["total"]

        def ladmm_run(W: Tensor, b: Tensor, c: Tensor, s: Tensor, lam: Tensor, x0: Tensor, nonneg: bool) -> Callable[[], Any]:
            return lambda: ladmm_layer(W, b, c, s, lam=lam, rho=1.0, gamma=0.0, nonneg=nonneg, mu=None, x0=x0, max_iter=N,
                                       tol=0.0, check_every=10, power_iters=30, callback=None, stage="x")

        def ladmm_count(W: Tensor, s: Tensor) -> Callable[[Any], int]:
            return lambda o: ladmm_stage_flops(W.shape[1], W.shape[0], o[0].n_iter.cpu(), s > 0, auto_lam=False,
                                               warm_start=False)["total"]

        def grad_run(m: str) -> Callable[[], Any]:
            return lambda: geninv.invert(G, y, method=m, max_iter=N, tol=0.0)

        def grad_count(m: str) -> Callable[[Any], int]:
            # the loop, then invert's self-check of the result (one forward pass of the batch)
            return lambda o: gradient_flops(dims, o.n_iter.cpu(), method=m)["total"] + int(o.z.shape[0]) * network_flops(dims)

        methods = task.get("methods", ["latent_pursuit", "gd", "adam"])
        if G.output_activation.invertible and "latent_pursuit" in methods:
            W, b = Ws[-1], bs[-1]
            lip = torch.full((1,), spectral_norm(W) ** 2, dtype=y.dtype, device=y.device)
            runs.append(("latent_pursuit", f"x{L} FISTA", (W.shape[1], W.shape[0]),
                         fista_run(W, b, G.output_activation.inverse(y), lip), fista_count(W)))
            for i in range(L - 1, -1, -1):
                Wi, bi, c = Ws[i], bs[i], tr.post[i]
                s = (c > 0).to(y.dtype)
                lam = torch.zeros(B, 1, dtype=y.dtype, device=y.device) if i == 0 else auto_lam(-((s * (c - bi)) @ Wi), 1e-6)
                x0 = torch.zeros(B, Wi.shape[1], dtype=y.dtype, device=y.device)
                runs.append(("latent_pursuit", f"{'z' if i == 0 else f'x{i}'} linearized ADMM", (Wi.shape[1], Wi.shape[0]),
                             ladmm_run(Wi, bi, c, s, lam, x0, i > 0), ladmm_count(Wi, s)))
        for m in ("gd", "adam"):
            if m in methods:
                runs.append((m, "network gradient", (dims[0], dims[-1]), grad_run(m), grad_count(m)))
        for method, name, shape, fn, count in runs:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fn()  # warm-up (caches, allocator)
                o, dt = _timed(fn, device)
                flops = count(o)
                rec: dict[str, Any] = {"method": method, "loop": name, "n_in_out": list(shape), "batch": B, "iterations": N,
                                       "seconds": dt, "flops": flops}
                if task.get("verify_flops"):
                    rec["flops_counted"], _ = count_matmul_flops(fn)
            rec["gflops"] = gflops(flops, dt)
            out.append(rec)
    by_method: dict[str, Any] = {}
    for r in out:
        m = by_method.setdefault(r["method"], {"flops": 0, "seconds": 0.0})
        m["flops"] += r["flops"]
        m["seconds"] += r["seconds"]
    for m in by_method.values():
        m["gflops"] = gflops(m["flops"], m["seconds"])
    return {"loops": out, "by_method": by_method, "iterations": N}


def _formulations(task: dict[str, Any], G: Any, meta: dict[str, Any]) -> dict[str, Any]:
    """Per-sample supported matrices, three ways, side by side (the measurements behind the choice).

    One linearized-ADMM iteration of a hidden layer ``x_{i+1} = relu(W x_i + b)`` needs
    ``A_b x`` and ``A_b^T r`` with ``A_b`` the rows of ``W`` in sample b's support (and the
    complement ``C_b`` for the inequalities). Timed for ``loop_iters`` iterations each, at the
    task's batch, on the generator's hidden layer with the most rows (the MNIST generator's
    392 x 128):

    - ``masked``: the shipped formulation, full shared ``W`` with 0/1 row masks: two GEMMs for
      the whole batch, ``(B, n_out) x (n_out, n_in)`` and back (``steps.ladmm_step``);
    - ``gathered``: each sample's own supported matrices gathered once into padded
      ``(B, s_max, n_in)`` and ``(B, c_max, n_in)`` tensors, then batched products (``bmm``);
    - ``per_sample``: a Python loop over the samples with their own ``A_b`` and ``C_b``
      (matrix-vector products), on the first ``min(B, 64)`` samples, scaled to the batch.

    All three compute the same gradient ``A^T (A x + b_S - c_S) + rho C^T (C x + b_Sc - u + v)``;
    the largest relative disagreement with the masked one is recorded (it must be at rounding
    level, or the comparison is void).
    """
    from geninv.bench.flops import gflops

    B = int(task["batch"])
    N = int(task.get("loop_iters", 100))
    device = task.get("device", "cpu")
    z, _ = _data(G, B, int(task.get("data_seed", 1)))
    Ws, bs = G.weights, G.biases
    if G.n_hidden < 2:
        return {"formulations": [], "note": "needs a hidden layer between two hidden layers"}
    i = max(range(1, G.n_hidden), key=lambda j: Ws[j].shape[0])
    W, b = Ws[i], bs[i]
    n_out, n_in = W.shape
    rho = 1.0
    out: list[dict[str, Any]] = []
    with torch.no_grad():
        tr = G.trace(z)
        c = tr.post[i]
        s = (c > 0).to(W.dtype)
        x = tr.post[i - 1].clone()
        u = torch.zeros_like(c)
        v = torch.zeros_like(c)
        sc = 1.0 - s
        cs = s * c

        def masked() -> Tensor:
            P = torch.addmm(b, x, W.T)
            r = s * P - cs + rho * sc * (P + v - u)
            return r @ W

        # gathered: padded per-sample row blocks (zero rows for padding)
        ks = s.sum(dim=1).long()
        smax = int(ks.max())
        cmax = int((n_out - ks).max())
        order = torch.argsort(-s, dim=1, stable=True)  # support rows first, then the complement
        t_g0 = time.perf_counter()
        rows_s = order[:, :smax]
        rows_c = order[:, n_out - cmax:] if cmax else order[:, :0]
        pos = torch.arange(n_out, device=W.device)
        valid_s = (pos[:smax][None] < ks[:, None]).to(W.dtype)
        valid_c = (pos[:cmax][None] >= (cmax - (n_out - ks))[:, None]).to(W.dtype)
        A = W[rows_s] * valid_s[:, :, None]          # (B, smax, n_in)
        C = W[rows_c] * valid_c[:, :, None]          # (B, cmax, n_in)
        bA, bC = b[rows_s] * valid_s, b[rows_c] * valid_c
        cA = torch.gather(c, 1, rows_s) * valid_s
        uC, vC = torch.gather(u, 1, rows_c) * valid_c, torch.gather(v, 1, rows_c) * valid_c
        gather_s = time.perf_counter() - t_g0

        def gathered() -> Tensor:
            rA = torch.baddbmm(bA.unsqueeze(-1), A, x.unsqueeze(-1)).squeeze(-1) - cA
            rC = (torch.baddbmm(bC.unsqueeze(-1), C, x.unsqueeze(-1)).squeeze(-1) - uC + vC) * valid_c
            return (torch.bmm(A.transpose(1, 2), rA.unsqueeze(-1)) + rho * torch.bmm(C.transpose(1, 2), rC.unsqueeze(-1))).squeeze(-1)

        k_ps = min(B, 64)
        blocks = []
        for j in range(k_ps):
            sj = s[j] > 0
            blocks.append((W[sj], b[sj], c[j][sj], W[~sj], b[~sj], u[j][~sj], v[j][~sj]))

        def per_sample() -> Tensor:
            g = []
            for j, (Aj, bAj, cj, Cj, bCj, uj, vj) in enumerate(blocks):
                rA = Aj @ x[j] + bAj - cj
                rC = Cj @ x[j] + bCj - uj + vj
                g.append(Aj.T @ rA + rho * (Cj.T @ rC))
            return torch.stack(g)

        ref = masked()
        scale = ref.abs().max().clamp_min(1e-30)
        err_g = float((gathered() - ref).abs().max() / scale)
        err_p = float((per_sample() - ref[:k_ps]).abs().max() / scale)
        flops_iter = 2 * 2 * B * n_out * n_in  # two products of the full row count per sample
        for name, fn, nb, err, setup in (("masked", masked, B, 0.0, 0.0), ("gathered", gathered, B, err_g, gather_s),
                                         ("per_sample", per_sample, k_ps, err_p, 0.0)):
            fn()

            def loop(fn: Callable[[], Tensor] = fn) -> None:
                for _ in range(N):
                    fn()

            _, dt = _timed(loop, device)
            sec_iter = dt / N * (B / nb)
            out.append({"formulation": name, "seconds_per_iteration": sec_iter, "setup_seconds": setup,
                        "gflops": gflops(flops_iter, sec_iter), "samples_timed": nb,
                        "max_rel_diff_vs_masked": err})
    ref_t = out[0]["seconds_per_iteration"]
    for r in out:
        r["slowdown_vs_masked"] = r["seconds_per_iteration"] / ref_t
    return {"layer": i + 1, "W_shape": [n_out, n_in], "batch": B, "iterations": N, "rows_in_support_mean": float(ks.double().mean()),
            "formulations": out}


_KINDS: dict[str, Callable[..., dict[str, Any]]] = {"curve": _curve, "cold": _cold, "loops": _loops, "formulations": _formulations}


def run_task(task: dict[str, Any], *, isolated: bool = False) -> dict[str, Any]:
    """Run one task (see the module docstring) and return its JSON-ready record."""

    dtype = {"float32": torch.float32, "float64": torch.float64}[task.get("dtype", "float32")]
    device = task.get("device", "cpu")
    threads_before = torch.get_num_threads()
    if task.get("threads"):
        torch.set_num_threads(int(task["threads"]))
    try:
        return _run_task(task, dtype, device, isolated)
    finally:
        torch.set_num_threads(threads_before)  # in-process runs leave the caller's setting alone


def _run_task(task: dict[str, Any], dtype: torch.dtype, device: str, isolated: bool) -> dict[str, Any]:
    from geninv.bench.machine import load_average

    la0 = load_average()
    t_wall = time.perf_counter()
    rec: dict[str, Any] = {"kind": task["kind"], "generator": task.get("generator_label"), "method": task["method"],
                           "batch": int(task["batch"]), "dtype": task.get("dtype", "float32"), "device": device,
                           "threads": torch.get_num_threads(), "options": jsonable(task.get("options") or {})}
    try:
        G, meta = build_generator(task["generator"], dtype, device)
        rec["generator_source"] = meta["source"]
        if task["kind"] == "solve":
            rec.update(_solve(task, G, meta, isolated))
        else:
            rec.update(_KINDS[task["kind"]](task, G, meta))
        rec["status"] = "ok"
    except Exception as e:  # noqa: BLE001 - one failing configuration must not end the benchmark
        rec["status"] = "error"
        rec["reason"] = f"{type(e).__name__}: {' '.join(str(e).split())[:400]}"
    rec["load_average"] = {"start": la0, "end": load_average()}
    rec["task_wall_seconds"] = time.perf_counter() - t_wall
    return jsonable(rec)  # type: ignore[no-any-return]


def main() -> int:
    task = json.loads(sys.stdin.read())
    rec = run_task(task, isolated=True)
    sys.stdout.write(MARKER + json.dumps(rec) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())

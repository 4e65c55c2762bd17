"""Fig. 4 of the paper: inverting random two-layer generators as the hidden width grows.

``x_1 = relu(W_1 z)``, ``y = tanh(W_2 x_1)``, ``W_i`` i.i.d. Gaussian, ``n_0 = 20``, ``n = 600``,
``n_1`` swept from below ``4 n_0`` to well above ``n``. Every trial draws its own weights and
latent ``z ~ N(0, I)`` from a seed derived from ``(seed, n_1, trial)``; each method inverts the
clean ``y`` and the record holds the SNR of ``z``, ``x_1`` and ``y`` (docs/method.md sec. 8). Each
trial is also certified with ``geninv.certify`` (unique True / False / None).

Expected (docs/method.md sec. 8.1): nobody recovers ``z`` while ``s_1 < n_0`` (small
``n_1``, the inverse is not unique); in the middle regime Layered Basis-Pursuit and
Latent-Pursuit recover it exactly; once ``s_1 > n/2`` (``n_1`` well above ``n``) the image
layer cannot be inverted on its own and the layer-wise methods fail while gradient descent
succeeds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch

import geninv
from geninv.exceptions import GenInvError, InputError
from geninv.experiments import report as R
from geninv.experiments.common import (
    PAPER_COLORS,
    PAPER_LABELS,
    PAPER_METHODS,
    certify_status,
    check_methods,
    layer_snrs,
    say,
    solve,
    solver_of,
)
from geninv.experiments.records import RecordStore, Unit, UnitResult, derive_seed, run_units
from geninv.experiments.registry import Experiment, register

__all__ = ["RandomSweepConfig", "run_random_sweep", "random_trial", "random_units", "FULL_N1", "QUICK_N1", "certificate_verdict"]

#: Full grid: the three regimes (s_1 ~ n_1 / 2 < n_0 ; 2 n_0 < s_1 < n / 2 ; s_1 > n / 2).
FULL_N1 = (25, 30, 40, 50, 75, 100, 150, 200, 300, 400, 600, 800, 1000, 1500, 2000)
#: Quick grid (with n_0 = 10, n = 300, the paper's ratios halved): s_1 < n_0; two middle points; s_1 > n / 2.
QUICK_N1 = (15, 25, 100, 200, 1000)

_DEFAULT_OPTIONS: dict[str, dict[str, Any]] = {
    "oracle": {},
    "layered_bp": {"debias": True},
    "latent_pursuit": {"debias": True},
    "gd": {"debias": True},  # invert() applies the common debiasing fit to gd's result
    "lp_layerwise": {},
    "adam": {},
    "layered_bp:nodebias": {"debias": False},
    "latent_pursuit:nodebias": {"debias": False},
    "hybrid": {},  # pursuit + Gauss-Newton + fallback (geninv.solvers.hybrid)
}
_SEEDED = {"gd", "adam", "hybrid"}  # solvers with a random initialisation (the hybrid's fallback)


@dataclass
class RandomSweepConfig:
    """Settings of the random-generator sweep.

    ``n0``, ``n``, ``output``, ``dtype`` and ``seed`` decide each trial's result and are
    stored in ``settings.json``; each method's ``options`` are stored in its records and must
    match them on resume; ``n1_values``, ``trials`` and ``methods`` only say which trials to
    run, so a finished run can be extended (more trials, widths or methods).
    """

    n0: int = 20
    n: int = 600
    n1_values: Sequence[int] = FULL_N1
    trials: int = 50
    methods: Sequence[str] = (*PAPER_METHODS, "hybrid")
    seed: int = 0
    output: str = "tanh"
    dtype: str = "float64"
    certify: bool = True
    options: dict[str, dict[str, Any]] = field(default_factory=lambda: {k: dict(v) for k, v in _DEFAULT_OPTIONS.items()})

    @classmethod
    def quick(cls, **kw: Any) -> RandomSweepConfig:
        """About a minute on 2 idle CPU cores: the paper's sizes halved, 5 widths x 2 trials, shorter solvers.

        Halving (n_0 = 10, n = 300) keeps every ratio that decides the regimes (n_1 / n_0,
        n_1 / n). Where ``s_1 > n / 2`` the layer-wise solvers do not converge and run to
        ``max_iter``, which dominates the cost, so quick caps them at 500 iterations (they
        converge in about 100 in the middle regime, unaffected) and gradient descent at 2000.
        """
        kw.setdefault("n0", 10)
        kw.setdefault("n", 300)
        kw.setdefault("n1_values", QUICK_N1)
        kw.setdefault("trials", 2)
        cfg = cls(**kw)
        cfg.options["gd"] = {"debias": True, "max_iter": 2000}
        for m in ("layered_bp", "latent_pursuit", "layered_bp:nodebias", "latent_pursuit:nodebias"):
            cfg.options[m] = {**cfg.options[m], "max_iter": 500}
        return cfg

    def identity(self) -> dict[str, Any]:
        return {"n0": self.n0, "n": self.n, "output": self.output, "dtype": self.dtype, "seed": self.seed}

    def validate(self) -> None:
        if self.trials < 1:
            raise InputError(f"trials: expected a positive number of trials, received {self.trials}")
        if not self.n1_values or any(int(v) < 1 for v in self.n1_values):
            raise InputError(f"n1_values: expected positive widths, received {list(self.n1_values)}")
        if self.dtype not in ("float32", "float64"):
            raise InputError(f"dtype: expected 'float32' or 'float64', received {self.dtype!r}")
        unknown = [m for m in self.methods if m not in _DEFAULT_OPTIONS and m not in self.options]
        if unknown:
            raise InputError(f"methods: expected names among {sorted(_DEFAULT_OPTIONS)}, received {unknown}")


def certificate_verdict(report: Any) -> bool | None:
    """``report.unique`` as True / False / None (first sample if the report is batched)."""
    u = getattr(report, "unique", report)
    if isinstance(u, torch.Tensor):
        u = u.flatten()[0].item()
    elif isinstance(u, list | tuple):
        u = u[0]
    return None if u is None else bool(u)


def _key(n1: int, trial: int, what: str) -> str:
    return f"n1={n1}/trial={trial}/{what}"


def random_units(config: RandomSweepConfig, whats: Sequence[str]) -> list[Unit]:
    """One unit per ``(n_1, trial)`` writing the records of ``whats`` (methods, and ``"certify"``).

    Trial-major order: a partial run (interrupted, or still going) covers every width evenly.
    """
    return [Unit(f"n1={n1}/trial={t}", tuple(_key(int(n1), t, w) for w in whats), (int(n1), t))
            for t in range(config.trials) for n1 in config.n1_values]


def random_trial(config: RandomSweepConfig, unit: Unit, keys: list[str]) -> UnitResult:
    """One trial of the sweep (one ``n_1``, one trial index): every method in ``keys``, and the certificate.

    Module-level and of ``(config, unit, keys)`` only, so that any executor can run it; the
    driver writes what it returns.
    """
    dtype = getattr(torch, config.dtype)
    n1, t = unit.payload
    seed_t = derive_seed(config.seed, n1, t)
    G = geninv.random_generator([config.n0, n1, config.n], output=config.output, seed=seed_t, dtype=dtype)
    z, y = G.sample(1, seed=derive_seed(seed_t, "z"))
    tr = G.trace(z)
    s = [int(c[0]) for c in tr.cardinalities]
    base = {"n0": config.n0, "n1": n1, "n": config.n, "trial": t, "seed": seed_t, "dtype": config.dtype, "s": s}
    recs: list[dict[str, Any]] = []
    errors: list[tuple[str, str]] = []
    for key in keys:
        what = key.rsplit("/", 1)[1]
        try:
            if what == "certify":
                t0 = time.perf_counter()
                report = geninv.certify(G, z[0])  # type: ignore[attr-defined]
                recs.append({**base, "key": key, "kind": "certify", "method": "certify",
                             "unique": certificate_verdict(report), "certify_seconds": time.perf_counter() - t0})
                continue
            opts = dict(config.options.get(what, {}))
            if solver_of(what) in _SEEDED:
                opts.setdefault("seed", derive_seed(seed_t, what))
            res, secs = solve(G, y, what, supports=tr.supports, options=opts)
            snrs = layer_snrs(G, z, tr.hidden, y, res)[0]
            recs.append({**base, "key": key, "kind": "solve", "method": what, "options": opts, "snr": snrs,
                         "converged": bool(res.converged[0]), "n_iter": int(res.n_iter[0]), "seconds": secs})
        except Exception as e:  # noqa: BLE001 - a failing method must not stop the sweep
            errors.append((key, f"{type(e).__name__}: {e}"))
    return UnitResult(recs, errors)


def run_random_sweep(
    config: RandomSweepConfig,
    out_dir: str | Path,
    *,
    executor: Any = None,
    threads: int | None = None,
    progress: bool = True,
    max_units: int | None = None,
    callback: Callable[[Unit, int], None] | None = None,
    plots: bool = True,
) -> dict[str, Any]:
    """Run (or resume) the sweep, then write ``records.csv``, the figure and ``summary.md``.

    Parameters
    ----------
    out_dir : path
        Records and figures go here; an existing directory with the same settings is resumed.
    executor : str, concurrent.futures.Executor or None
        Where the trials run (``"serial"``, ``"processes:N"``, ``"dask:local:N"``,
        ``"dask:ADDRESS"``, or an executor); see :mod:`geninv.experiments.executors`.
    threads : int, optional
        Torch threads per worker, stamped on each record.
    max_units, callback
        See :func:`geninv.experiments.records.run_units` (used by the resume tests).

    Returns
    -------
    dict
        ``{"out": Path, "ran": int, "skipped": [reasons], "figures": [Path], "summary": Path}``.
    """
    config.validate()
    methods, missing = check_methods(config.methods)
    cert = certify_status() if config.certify else None
    if cert is not None and not cert.available:
        say(f"skipping certification: {cert.reason}")
    whats = list(methods) + (["certify"] if cert is not None and cert.available else [])
    if not methods:
        raise GenInvError("methods: expected at least one available method, received none that works: "
                          + "; ".join(f"{m.name}: {m.reason}" for m in missing))
    skipped = [f"{m.name}: {m.reason}" for m in missing] + ([f"certify: {cert.reason}"] if cert and not cert.available else [])

    units = random_units(config, whats)

    with RecordStore(out_dir, "random", config.identity()) as store:
        store.check_method_options({m: config.options.get(m, {}) for m in methods})
        if store.dropped_torn_line:
            say(f"{store.dir}: dropped a half-written last record left by an interrupted run")
        if store.other_code:
            say(f"{store.dir}: resuming records made by other geninv sources ({', '.join(store.other_code)}); "
                "each record carries its 'code' fingerprint")

        ran = run_units(store, units, partial(random_trial, config), executor=executor, threads=threads,
                        progress=progress, desc="random sweep", max_units=max_units, callback=callback)
        store.write_csv()
        out: dict[str, Any] = {"out": store.dir, "ran": ran, "skipped": skipped, "figures": [], "summary": None}
    if plots:
        from geninv.experiments import plots as P

        out["figures"] = P.plot_random_sweep(out_dir)
        out["summary"] = R.write_summary(out_dir)
    return out


def median_table(records: list[dict[str, Any]], layer: str = "z") -> dict[str, dict[int, float]]:
    """``{method: {n1: median SNR of layer}}`` from solve records (``inf`` counts as exact)."""
    import numpy as np

    acc: dict[str, dict[int, list[float]]] = {}
    for r in records:
        if r.get("kind") != "solve":
            continue
        acc.setdefault(r["method"], {}).setdefault(int(r["n1"]), []).append(float(r["snr"][layer]))
    return {m: {n1: float(np.median(v)) if not all(math.isnan(x) for x in v) else math.nan
                for n1, v in sorted(d.items())} for m, d in acc.items()}


register(Experiment("random", "Random two-layer generators (Fig. 4)", "random", RandomSweepConfig, random_units,
                    random_trial, R.random_section, PAPER_LABELS, PAPER_COLORS, rank=0))

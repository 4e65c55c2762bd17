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
import os
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

import geninv
from geninv.exceptions import InputError
from geninv.experiments.common import (
    PAPER_COLORS,
    PAPER_LABELS,
    PAPER_MARKERS,
    PAPER_METHODS,
    available_methods,
    certify_status,
    check_dtype,
    execute,
    layer_snrs,
    say,
    solve,
    solver_of,
)
from geninv.experiments.records import Unit, UnitResult, derive_seed, load_records, read_settings
from geninv.experiments.registry import Experiment, register
from geninv.experiments.report import DIFFERS, Section, Table, fmt_db, median_snr, runtime_table

__all__ = ["RandomSweepConfig", "run_random_sweep", "random_trial", "random_units", "FULL_N1", "QUICK_N1", "certificate_verdict",
           "random_claims", "random_section", "RECOVERED_DB", "GD_SUCCESS_DB"]

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
        check_dtype(self.dtype)
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


def run_random_sweep(config: RandomSweepConfig, out_dir: str | Path, *, plots: bool = True, **run: Any) -> dict[str, Any]:
    """Run (or resume) the sweep, then write ``records.csv``, the figure and ``summary.md``.

    Parameters
    ----------
    out_dir : path
        Records and figures go here; an existing directory with the same settings is resumed.
    plots : bool
        Also draw the figure and write the summary.
    **run
        Where and how the trials run: ``executor``, ``threads``, ``progress``, ``max_units``,
        ``callback`` (see :func:`geninv.experiments.common.execute`).

    Returns
    -------
    dict
        ``{"out": Path, "ran": int, "skipped": [reasons], "figures": [Path], "summary": Path}``.
    """
    config.validate()
    methods, skipped = available_methods(config.methods)
    cert = certify_status() if config.certify else None
    if cert is not None and not cert.available:
        say(f"skipping certification: {cert.reason}")
        skipped.append(f"certify: {cert.reason}")
    whats = list(methods) + (["certify"] if cert is not None and cert.available else [])
    ran = execute(out_dir, "random", config.identity(), random_units(config, whats), partial(random_trial, config),
                  desc="random sweep", options={m: config.options.get(m, {}) for m in methods}, **run)
    out: dict[str, Any] = {"out": Path(out_dir), "ran": ran, "skipped": skipped, "figures": [], "summary": None}
    if plots:
        from geninv.experiments import plots as P
        from geninv.experiments.report import write_summary

        out["figures"] = P.plot_random_sweep(out_dir)
        out["summary"] = write_summary(out_dir)
    return out


def median_table(records: list[dict[str, Any]], layer: str = "z") -> dict[str, dict[int, float]]:
    """``{method: {n1: median SNR of layer}}`` from solve records (``inf`` counts as exact)."""
    acc: dict[str, dict[int, list[float]]] = {}
    for r in records:
        if r.get("kind") != "solve":
            continue
        acc.setdefault(r["method"], {}).setdefault(int(r["n1"]), []).append(float(r["snr"][layer]))
    return {m: {n1: float(np.median(v)) if not all(math.isnan(x) for x in v) else math.nan
                for n1, v in sorted(d.items())} for m, d in acc.items()}


#: A latent counts as recovered (exactly, in float64) above this median SNR (60 dB).
RECOVERED_DB = 60.0
#: Gradient descent is a first-order method stopped after finitely many steps; it "succeeds" above this.
GD_SUCCESS_DB = 30.0


def _label(m: str) -> str:
    return PAPER_LABELS.get(m, m)


def _order(methods: Any) -> list[str]:
    ms = set(methods)
    return [m for m in PAPER_LABELS if m in ms] + sorted(ms - set(PAPER_LABELS))


# -- reading the records -------------------------------------------------------------------

def _random_stats(recs: list[dict[str, Any]]) -> dict[str, Any]:
    snr: dict[str, dict[int, dict[str, list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    secs: dict[str, list[float]] = defaultdict(list)
    s1: dict[int, dict[int, int]] = defaultdict(dict)
    cert: dict[int, list[Any]] = defaultdict(list)
    for r in recs:
        n1 = int(r["n1"])
        s1[n1][int(r["trial"])] = int(r["s"][0])
        if r["kind"] == "solve":
            for layer, v in r["snr"].items():
                snr[r["method"]][n1][layer].append(v)
            secs[r["method"]].append(float(r.get("seconds", math.nan)))
        elif r["kind"] == "certify":
            cert[n1].append(r["unique"])
    return {"snr": snr, "secs": secs, "s1": {k: float(np.median(list(v.values()))) for k, v in s1.items()},
            "trials": {k: len(v) for k, v in s1.items()}, "cert": cert}


def random_claims(out_dir: str | os.PathLike[str]) -> list[tuple[str, str, str]]:
    """The paper's qualitative claims on the random sweep, checked on the records.

    Regimes are read off the records by the median ``s_1`` at each ``n_1`` (Corollary 1 with
    one hidden layer): *below* when ``s_1 < n_0``, *middle* when ``2 n_0 <= s_1 < n / 2``
    (the expansion by 2 the paper asks for), *above* when ``n_1 >= 2 n`` (``s_1 > n / 2`` by a
    margin; widths in between are transitional and not judged).
    """
    st = read_settings(out_dir)["settings"]
    n0, n = int(st["n0"]), int(st["n"])
    S = _random_stats(load_records(out_dir))
    snr, s1 = S["snr"], S["s1"]
    below = [x for x in sorted(s1) if s1[x] < n0]
    middle = [x for x in sorted(s1) if 2 * n0 <= s1[x] < n / 2]
    above = [x for x in sorted(s1) if x >= 2 * n]

    def med(m: str, x: int) -> float:
        return median_snr(snr[m][x]["z"]) if m in snr and x in snr[m] else math.nan

    claims: list[tuple[str, str, str]] = []
    # 1. nobody recovers below the uniqueness line
    if below and snr:
        ms = _order(snr)
        vals = {(m, x): med(m, x) for m in ms for x in below}
        bad = {k: v for k, v in vals.items() if v >= RECOVERED_DB}
        ev = ", ".join(f"{_label(m)}@{x}: {fmt_db(v)}" for (m, x), v in vals.items())
        claims.append((f"below the uniqueness line (median s_1 < n_0 = {n0}: n_1 in {below}) no method recovers z "
                       f"(median SNR < {RECOVERED_DB:.0f} dB)", "holds" if not bad else "does not hold", ev))
    else:
        claims.append(("below the uniqueness line no method recovers z", "not measured", "no n_1 with s_1 < n_0 in the records"))
    # 2. middle: LBP and LP exact, LP >= LBP
    for m in ("layered_bp", "latent_pursuit"):
        if middle and m in snr:
            vals = {x: med(m, x) for x in middle}
            ok = all(v > RECOVERED_DB for v in vals.values())
            claims.append((f"middle regime (2 n_0 <= median s_1 < n/2: n_1 in {middle}): {PAPER_LABELS[m]} recovers z "
                           f"(median SNR > {RECOVERED_DB:.0f} dB)", "holds" if ok else "does not hold",
                           ", ".join(f"{x}: {fmt_db(v)}" for x, v in vals.items())))
        else:
            claims.append((f"middle regime: {PAPER_LABELS[m]} recovers z", "not measured",
                           "no records" if m not in snr else "no middle-regime n_1"))
    if middle and "layered_bp" in snr and "latent_pursuit" in snr:
        # "at least as good": median SNR not lower by more than 1 dB, or both exact beyond 250 dB
        comp = {x: (med("latent_pursuit", x), med("layered_bp", x)) for x in middle}
        ok = all(a >= b - 1.0 or (a > 250 and b > 250) for a, b in comp.values())
        claims.append(("middle regime: Latent-Pursuit at least as good as Layered BP (median z SNR, 1 dB slack; "
                       "both above 250 dB counts as equal)", "holds" if ok else "does not hold",
                       ", ".join(f"{x}: {fmt_db(a)} vs {fmt_db(b)}" for x, (a, b) in comp.items())))
    # 3. above: the paper's layer-wise estimates fail, gd succeeds; our debiased pursuits recover z
    if above:
        for m in ("layered_bp:nodebias", "latent_pursuit:nodebias"):
            if m in snr:
                vals = {x: med(m, x) for x in above}
                ok = all(v < RECOVERED_DB for v in vals.values())
                claims.append((f"n_1 >= 2n (n_1 in {above}): {PAPER_LABELS[m]} (the paper's layer-wise estimate) fails "
                               f"(median z SNR < {RECOVERED_DB:.0f} dB)",
                               "holds" if ok else "does not hold", ", ".join(f"{x}: {fmt_db(v)}" for x, v in vals.items())))
        for m in ("layered_bp", "latent_pursuit"):
            if m in snr:
                vals = {x: med(m, x) for x in above}
                ok = all(v > RECOVERED_DB for v in vals.values())
                claims.append((f"n_1 >= 2n (n_1 in {above}): {PAPER_LABELS[m]} with our debiasing recovers z (median z SNR > "
                               f"{RECOVERED_DB:.0f} dB); {DIFFERS}: there the layer-wise methods fail",
                               "holds" if ok else "does not hold", ", ".join(f"{x}: {fmt_db(v)}" for x, v in vals.items())))
        if "gd" in snr:
            vals = {x: med("gd", x) for x in above}
            ok = all(v > GD_SUCCESS_DB for v in vals.values())
            claims.append((f"n_1 >= 2n: gradient descent succeeds (median z SNR > {GD_SUCCESS_DB:.0f} dB)",
                           "holds" if ok else "does not hold", ", ".join(f"{x}: {fmt_db(v)}" for x, v in vals.items())))
        else:
            claims.append(("n_1 >= 2n: gradient descent succeeds", "not measured", "no gd records"))
    else:
        claims.append(("n_1 much larger than n: layer-wise methods fail, gradient descent succeeds", "not measured",
                       f"no n_1 >= 2n = {2 * n} in the records"))
    return claims


def random_section(d: Path, command: str) -> Section:
    """The section of a random-sweep directory (Fig. 4)."""
    from geninv.experiments.plots import uniqueness_boundaries

    recs = load_records(d)
    st = read_settings(d)["settings"]
    S = _random_stats(recs)
    snr, s1, cert, trials = S["snr"], S["s1"], S["cert"], S["trials"]
    methods = _order(snr)
    sec = Section("Random two-layer generators (Fig. 4)", d, command)
    sec.notes.append(f"x_1 = relu(W_1 z), y = {st['output']}(W_2 x_1), W i.i.d. Gaussian, n_0 = {st['n0']}, n = {st['n']}, "
                     f"{st['dtype']}, seed {st['seed']}. SNR in dB; 'exact (inf)' = bit-exact recovery. "
                     "Each row: one hidden width n_1, medians over its trials.")
    b = uniqueness_boundaries(d)
    lines = []
    for k, what in (("s1_eq_n0", "median s_1 = n_0"), ("s1_eq_half_n", "median s_1 = n/2"),
                    ("cert_rise", "certified-unique fraction rises through 50 %"),
                    ("cert_fall", "certified-unique fraction falls through 50 %")):
        if b.get(k):
            lines.append(f"{what} at n_1 ~ {b[k]:.0f}")
    if lines:
        sec.notes.append("Uniqueness boundaries (vertical lines of the figure): " + "; ".join(lines) + ".")
    for layer in ("z", "x1", "y"):
        rows = []
        for x in sorted(s1):
            u = cert.get(x, [])
            cf = f"{np.mean([v is True for v in u]):.2f}" if u else "-"
            rows.append([str(x), f"{s1[x]:.0f}", str(trials[x]), cf]
                        + [fmt_db(median_snr(snr[m][x][layer])) if x in snr[m] else "-" for m in methods])
        sec.tables.append(Table(["n_1", "median s_1", "trials", "certified unique"] + [_label(m) for m in methods],
                                rows, caption=f"Median SNR of {layer} [dB] per method"))
    sec.tables.append(runtime_table({m: S["secs"][m] for m in _order(S["secs"])}, "trial", _label))
    sec.claims = random_claims(d)
    sec.figures = [p for p in [d / "fig4_random_sweep.png"] if p.exists()]
    return sec


register(Experiment("random", "Random two-layer generators (Fig. 4)", "random", RandomSweepConfig, random_units,
                    random_trial, random_section, PAPER_LABELS, PAPER_COLORS, PAPER_MARKERS, rank=0))

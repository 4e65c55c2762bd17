"""Compressed sensing with the MNIST generator: ``y = A G(z) (+ e)`` with a Gaussian
``A`` of ``m`` rows; median image SNR against ``m / n`` for the pursuits, the hybrid and the
gradient baselines, and where each starts succeeding.

Every ``m`` has its own ``A = GaussianMatrix(m, n, seed)`` (seed derived from ``(seed, m)``);
image ``i`` has its own latent ``z_i ~ N(0, I)`` (seed derived from ``(seed, i)``), the same for
every ``m`` and method, so the curves differ only by ``m`` and the method. The SNR of the image is
that of the re-synthesis ``G(z_hat)`` against the clean ``G(z)`` on all ``n`` pixels.

What to expect: the layer-wise pursuit alone needs the image layer to be invertible through
``A``, ``m > 2 s_L`` (Corollary 1 for ``A W_{L+1}``; ``s_L`` is about half of the last hidden
width, about 200 for the MNIST generator), while fits of the whole network (``n_0`` = 20 unknowns)
can succeed from ``m`` of the order of ``2 n_0``: the hybrid (pursuit + Gauss-Newton, with the
gd / Adam + Gauss-Newton fallback) and Adam with restarts, gradient descent later. The measured
``m*`` of each method are in the README's results and in each run's ``summary.md``.

"Succeeds" at ``m``: the median image SNR is at least ``success_db`` (default 60 dB, the
exact-recovery level of the random sweep) at ``m`` and at every larger ``m`` of the grid; ``m*`` is the
smallest such ``m``.
"""

from __future__ import annotations

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
    Job,
    attempt,
    check_signal_config,
    execute,
    generator_fingerprint,
    generator_phrase,
    latents,
    layer_snrs,
    resolve_generator,
    save_figure,
    say,
    signal_identity,
)
from geninv.experiments.records import (
    Unit,
    UnitResult,
    derive_seed,
    iter_chunks,
    load_records,
    read_settings,
    snr_value,
)
from geninv.experiments.registry import Experiment, register
from geninv.experiments.report import Section, Table, write_section_summary
from geninv.solvers.registry import REGISTRY

__all__ = ["CSConfig", "cs_trial", "cs_units", "run_cs", "CS_METHODS", "success_m", "cs_summary", "cs_claims", "plot_cs"]

CS_METHODS = ("latent_pursuit", "hybrid", "gd", "adam")
FULL_M = (10, 20, 30, 34, 37, 40, 60, 80, 120, 160, 240, 320, 480)
QUICK_M = (40, 80, 160)
LABELS = {"latent_pursuit": "Latent-Pursuit", "layered_bp": "Layered BP", "hybrid": "Hybrid (ours)",
          "gd": "Gradient descent", "adam": "Adam (restarts)"}
COLORS = {"latent_pursuit": "#d62728", "layered_bp": "#1f77b4", "hybrid": "#ff7f0e", "gd": "#2ca02c",
          "adam": "#9467bd"}
MARKERS = {"latent_pursuit": "^", "layered_bp": "v", "hybrid": "o", "gd": "*", "adam": "s"}
_SEEDED = {"gd", "adam", "hybrid"}


@dataclass
class CSConfig:
    """Settings of the compressed-sensing reproduction (``m_values``, ``images`` and ``methods``
    choose the trials; the rest is stored in ``settings.json``)."""

    m_values: Sequence[int] = FULL_M
    snr_db: float | None = None
    success_db: float = 60.0
    images: int = 32
    batch: int = 16
    methods: Sequence[str] = CS_METHODS
    generator: str = "mnist"
    seed: int = 0
    dtype: str = "float64"
    options: dict[str, dict[str, Any]] = field(default_factory=lambda: {m: {} for m in CS_METHODS})

    @classmethod
    def quick(cls, **kw: Any) -> CSConfig:
        """About a minute on 2 CPU cores: m = 40, 80, 160 with 8 images, every method shortened."""
        kw.setdefault("m_values", QUICK_M)
        kw.setdefault("images", 8)
        kw.setdefault("batch", 8)
        cfg = cls(**kw)
        cfg.options["latent_pursuit"] = {"max_iter": 500}
        cfg.options["gd"] = {"max_iter": 1000}
        cfg.options["adam"] = {"max_iter": 1000}
        cfg.options["hybrid"] = {"fallback_iter": 1000}
        return cfg

    def identity(self, generator_id: str, description: str = "") -> dict[str, Any]:
        return {**signal_identity(self, generator_id, description), "snr_db": self.snr_db}

    def validate(self) -> None:
        check_signal_config(self, sorted({*CS_METHODS, "layered_bp"}))
        if not self.m_values or any(int(m) < 1 for m in self.m_values):
            raise InputError(f"m_values: expected positive numbers of measurements, received {list(self.m_values)}")


def cs_units(config: CSConfig, methods: Sequence[str], ms: Sequence[int] | None = None) -> list[Unit]:
    """One unit per ``m`` (of ``ms``, default ``config.m_values``) and fixed chunk of images."""
    ms = [int(m) for m in (config.m_values if ms is None else ms)]
    return [Unit(f"m={m} images {a}-{b - 1}", tuple(f"m={m}/image={i}/{k}" for i in range(a, b) for k in methods),
                 (m, a, b)) for m in ms for a, b in iter_chunks(config.images, config.batch)]


def cs_trial(job: Job, unit: Unit, keys: list[str]) -> UnitResult:
    """One unit of the compressed-sensing reproduction: a chunk of images measured with one ``A`` of ``m`` rows."""
    config, methods = job.config, list(job.methods)
    dtype = getattr(torch, config.dtype)
    G = job.source.get().to(dtype=dtype)
    n = G.output_dim
    errors: list[tuple[str, str]] = []
    m, a, b = unit.payload
    idx = list(range(a, b))
    z = latents(config.seed, idx, G.latent_dim, dtype)
    tr = G.trace(z)
    A = geninv.GaussianMatrix(m, n, seed=derive_seed(config.seed, "A", m), dtype=dtype)
    y = A.forward(tr.y)
    sigma = None
    if config.snr_db is not None:
        y, sigma = geninv.add_noise(y, float(config.snr_db), seed=derive_seed(config.seed, "noise", m, a))
    todo = {k.rsplit("/", 1)[1] for k in keys}
    recs: list[dict[str, Any]] = []
    for meth in [k for k in methods if k in todo]:
        opts = dict(config.options.get(meth, {}))
        if meth in _SEEDED:
            opts.setdefault("seed", derive_seed(config.seed, meth, m, a))
        if meth == "hybrid" and sigma is not None:
            opts.setdefault("noise_level", "auto")
        spec = REGISTRY.get(meth)
        if spec is not None and spec.noise_default == "per_sample":
            opts.setdefault("noise_level", 0)  # the method's exact form, as the table reports it
        got = attempt(f"{unit.name}/{meth}", errors, partial(geninv.invert, G, y, method=meth, measure=A, **opts))
        if got is None:
            continue
        res, secs = got
        snrs = layer_snrs(G, z, tr.hidden, tr.y, res)
        for j, i in enumerate(idx):
            rec = {"kind": "solve", "key": f"m={m}/image={i}/{meth}", "method": meth, "m": m, "n": n,
                   "image": i, "snr": snrs[j], "seconds": secs / len(idx), "converged": bool(res.converged[j]),
                   "s": [int(c[j]) for c in tr.cardinalities]}
            if meth == "hybrid":
                rec["fallback"] = bool(res.info["fallback"][j])
                rec["choice"] = int(res.info["choice"][j])
            recs.append(rec)
    return UnitResult(recs, errors)


def run_cs(config: CSConfig, out_dir: str | Path, *, generator: geninv.Generator | None = None, plots: bool = True,
           **run: Any) -> dict[str, Any]:
    """Run (or resume) the compressed-sensing reproduction, then write CSV, figure and summary.

    ``generator`` replaces the configured one (tests pass a small random one); ``**run``: where
    and how the units run (see :func:`geninv.experiments.common.execute`).
    """
    config.validate()
    G, gdesc, source = resolve_generator(generator, config)
    ms = [int(m) for m in config.m_values if int(m) <= G.output_dim]
    if len(ms) < len(config.m_values):
        say(f"m_values above n = {G.output_dim} dropped")
    methods = tuple(config.methods)
    ran = execute(out_dir, "cs", config.identity(generator_fingerprint(G), gdesc), cs_units(config, methods, ms),
                  partial(cs_trial, Job(config, methods, source)), desc="compressed sensing", **run)
    out: dict[str, Any] = {"out": Path(out_dir), "ran": ran, "skipped": [], "figures": [], "summary": None,
                           "generator": gdesc}
    if plots:
        out["figures"] = plot_cs(out_dir, config.success_db)
        out["summary"] = cs_summary(out_dir, success_db=config.success_db, generator=gdesc)
    return out


def _table(recs: list[dict[str, Any]], layer: str) -> dict[str, dict[int, list[float]]]:
    by: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in recs:
        if r.get("kind") == "solve":
            by[r["method"]][int(r["m"])].append(snr_value(r["snr"][layer]))
    return by


def success_m(medians: dict[int, float], success_db: float) -> int | None:
    """Smallest ``m`` from which the median stays at or above ``success_db`` for every larger ``m``."""
    best = None
    for m in sorted(medians, reverse=True):
        if medians[m] >= success_db:
            best = m
        else:
            break
    return best


def plot_cs(out_dir: str | Path, success_db: float = 60.0) -> list[Path]:
    """Median SNR of the image and of ``z`` against ``m / n`` (ribbon 25-75 %), ``m*`` marked."""
    from geninv._optional import pyplot

    plt = pyplot()

    out_dir = Path(out_dir)
    recs = load_records(out_dir)
    if not recs:
        return []
    n = int(recs[0]["n"])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    for ax, layer, title in ((axes[0], "y", "image $G(\\hat z)$"), (axes[1], "z", "latent $z$")):
        by = _table(recs, layer)
        for meth in [k for k in (*CS_METHODS, "layered_bp") if k in by]:
            xs = sorted(by[meth])
            q = np.array([np.percentile(np.clip(by[meth][x], -30, 330), (25, 50, 75)) for x in xs])
            r = [x / n for x in xs]
            c = COLORS.get(meth)
            ax.fill_between(r, q[:, 0], q[:, 2], color=c, alpha=0.15, lw=0)
            ax.plot(r, q[:, 1], marker=MARKERS.get(meth, "o"), ms=5, mfc="none", color=c, lw=1.6,
                    label=LABELS.get(meth, meth))
            if layer == "y":
                ms = success_m({x: float(np.median(by[meth][x])) for x in xs}, success_db)
                if ms is not None:
                    ax.axvline(ms / n, color=c, ls=":", lw=1.2)
        ax.axhline(success_db, color="k", lw=0.8, ls="--", label=f"success level {success_db:g} dB")
        ax.set_xscale("log")
        ax.set_xlabel("m / n (measurements per pixel)")
        ax.set_title(f"SNR of {title}")
        ax.grid(True, which="both", alpha=0.25)
    axes[0].set_ylabel("median SNR [dB] (ribbon 25-75 %; dotted: m* per method)")
    axes[0].legend(fontsize=9.5)
    st = read_settings(out_dir)["settings"]
    noise = "noiseless" if st.get("snr_db") is None else f"input SNR {st['snr_db']} dB"
    fig.suptitle(f"Compressed sensing y = A G(z), A Gaussian m x {n}; "
                 f"{generator_phrase(st.get('generator_description') or st['generator'])}, {noise}")
    fig.tight_layout()
    return [save_figure(fig, out_dir / "cs_snr.png")]


def _m_star(v: int | None) -> str:
    return "not reached" if v is None else str(v)


def cs_claims(stars: dict[str, int | None], success_db: float = 60.0) -> list[tuple[str, str, str]]:
    """The claim on compressed sensing, from ``m*`` per method (``None``: not reached on the grid):
    the hybrid reaches the success level at a strictly smaller ``m`` than gradient descent and Adam.
    A method that never reaches it counts as later than any ``m``; the hybrid not reaching it
    means the claim does not hold. Returns ``[(claim, verdict, evidence)]`` (empty without the records)."""
    peers = {k: stars[k] for k in ("gd", "adam") if k in stars}
    if "hybrid" not in stars or not peers:
        return []
    ours = stars["hybrid"]
    earlier = ours is not None and all(v is None or ours < v for v in peers.values())
    names = " and ".join(LABELS.get(k, k) for k in peers)
    return [(f"the hybrid reaches a median image SNR >= {success_db:g} dB (staying there for every larger m of the "
             f"grid) at a strictly smaller m than {names}", "holds" if earlier else "does not hold",
             ", ".join(f"{LABELS.get(k, k)} m* = {_m_star(v)}" for k, v in stars.items()))]


def section(out_dir: str | Path, command: str | None = None, *, success_db: float = 60.0,
            generator: str | None = None) -> Any:
    """Tables, ``m*`` and the claim of a compressed-sensing directory as a report ``Section``."""
    out_dir = Path(out_dir)
    if command is None and (out_dir / "command.txt").exists():
        command = (out_dir / "command.txt").read_text().strip()
    recs = load_records(out_dir)
    st = read_settings(out_dir)["settings"]
    n = int(recs[0]["n"]) if recs else 0
    sec = Section("Compressed sensing y = A G(z)", out_dir, command or "geninv reproduce cs")
    noise = "noiseless" if st.get("snr_db") is None else f"input SNR {st['snr_db']} dB"
    sec.notes.append(f"Generator: {generator or st.get('generator_description') or st['generator']}; A Gaussian m x {n} (N(0, 1/m) entries, one per m), "
                     f"{noise}. Image SNR of G(z_hat) against the clean G(z) on all pixels. m*: the smallest m from "
                     f"which the median image SNR stays >= {success_db:g} dB.")
    sec.figures = [f for f in (out_dir / "cs_snr.png",) if f.exists()]
    stars: dict[str, int | None] = {}
    for layer in ("y", "z"):
        by = _table(recs, layer)
        mvals = sorted({m for d in by.values() for m in d})
        rows = []
        for meth in [k for k in (*CS_METHODS, "layered_bp") if k in by]:
            med = {m: float(np.median(by[meth][m])) for m in by[meth]}
            rows.append([LABELS.get(meth, meth)] + [f"{med[m]:.1f}" if m in med else "-" for m in mvals])
            if layer == "y":
                stars[meth] = success_m(med, success_db)
        sec.tables.append(Table(["method"] + [f"m={m} ({m / n:.3f})" for m in mvals], rows,
                                caption=f"Median SNR of {'the image' if layer == 'y' else 'z'} [dB]"))
    sec.tables.append(Table(["method", "m*", "m*/n"], [[LABELS.get(k, k), _m_star(v),
                                                         f"{v / n:.3f}" if v is not None else "-"] for k, v in stars.items()],
                            caption=f"m* (median image SNR >= {success_db:g} dB from there on)"))
    fb = [r for r in recs if r.get("method") == "hybrid" and "fallback" in r]
    if fb:
        sec.notes.append(f"The hybrid ran its fallback cascade (gradient descent, then Adam) on "
                         f"{sum(r['fallback'] for r in fb)} of {len(fb)} signals and kept a fallback's answer on "
                         f"{sum(r.get('choice', 0) > 0 for r in fb)}.")
    sec.claims.extend(cs_claims(stars, success_db))
    sec.extra["m_star"] = stars
    return sec


def cs_summary(out_dir: str | Path, command: str | None = None, *, success_db: float = 60.0,
               generator: str | None = None) -> Path:
    """``summary.md`` / ``summary.json``: median image SNR per ``m``, ``m*`` per method, and the claim on compressed sensing."""
    return write_section_summary(section(out_dir, command, success_db=success_db, generator=generator),
                          "Compressed sensing")


register(Experiment("cs", "Compressed sensing y = A G(z)", "cs", CSConfig, cs_units, cs_trial, section, LABELS, COLORS,
                    MARKERS, claims_of="ours", rank=5))

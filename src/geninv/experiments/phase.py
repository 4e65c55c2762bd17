"""Phase diagrams: the success rate of every method over a 2-D grid of architecture parameters.

Each grid point is a random generator ``[n_0, n_1, ..., n_L, n]`` (``L`` = ``depth`` hidden ReLU
layers of widths ``n_1, growth n_1, growth^2 n_1, ...``) whose weights are i.i.d. Gaussian with the
chosen scaling (variance ``1/n_in``, ``1/n_out`` or 1), with or without biases and with the chosen
output activation. Each trial draws its own weights and ``z ~ N(0, I)`` from a seed derived from the
point's parameters and the trial index (so extending a grid never changes a finished point), observes
``y = G(z)`` (through a Gaussian ``A`` of ``m`` rows, a random mask, or white noise, if asked) and
runs every method. A trial succeeds when the SNR of ``z`` reaches ``success_db``.

The axes are any two of ``n0``, ``n1``, ``depth``, ``m``, ``snr_db``, ``missing`` (default: ``n1``
across, ``n0`` up). On an ``(n_1, n_0)`` diagram, Corollary 1's boundary is drawn on the same axes:
with ``s_1`` the number of active units of the first hidden layer, uniqueness needs ``n_0 <= s_1``
(drawn as ``n_0 = median s_1``, measured per ``n_1`` from the records, and ``n_0 = n_1 / 2``,
its value for bias-free Gaussian layers), and ``s_L < n / 2`` (or ``< m / 2`` through ``A``),
drawn where the measured median ``s_L`` crosses it.
"""

from __future__ import annotations

import math
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
from geninv.exceptions import GenInvError, InputError
from geninv.experiments.common import available_methods, check_dtype, execute, layer_snrs, save_figure, solve, solver_of
from geninv.experiments.records import (
    Unit,
    UnitResult,
    atomic_write_text,
    derive_seed,
    load_records,
    read_settings,
    snr_value,
)
from geninv.experiments.registry import Experiment, register
from geninv.experiments.report import Section, Table, write_section_summary
from geninv.model.activations import get_activation

__all__ = ["PhaseConfig", "run_phase", "phase_trial", "phase_units", "parse_phase", "reproduce_phase", "phase_generator",
           "section", "plot_phase", "corollary1_holds", "AXES", "PHASE_METHODS", "PHASE_HELP", "LABELS", "COLORS"]

#: Parameters that may span an axis of the diagram.
AXES = ("n0", "n1", "depth", "m", "snr_db", "missing")
PHASE_METHODS = ("oracle", "layered_bp", "latent_pursuit", "gd")
SCALINGS = ("1/n_in", "1/n_out", "1")
LABELS = {"oracle": "Oracle", "layered_bp": "Layered BP", "latent_pursuit": "Latent-Pursuit",
          "gd": "Gradient descent", "adam": "Adam", "lp_layerwise": "Layer-wise LP", "hybrid": "Hybrid"}
COLORS = {"oracle": "#555555", "layered_bp": "#1f77b4", "latent_pursuit": "#d62728", "gd": "#2ca02c",
          "adam": "#9467bd", "lp_layerwise": "#17becf", "hybrid": "#ff7f0e"}
_SEEDED = {"gd", "adam", "hybrid"}
_NOISE_AWARE = {"latent_pursuit", "hybrid"}
_PHASE_KEYS = ("x", "y", "n0", "n1", "n", "depth", "growth", "output", "bias", "weights", "m", "snr_db", "missing",
               "success_db")
PHASE_HELP = ("phase: the diagram as 'key=value;...' with x=NAME:v1,v2,..  y=NAME:v1,v2,.. (NAME among "
              "n0, n1, depth, m, snr_db, missing), n0, n1, n, depth, growth, output (activation), bias (std, 0 = none), "
              "weights (1/n_in, 1/n_out or 1), m, snr_db, missing, success_db; e.g. "
              "'x=n1:10,20,40,80;y=n0:2,4,8;n=120;output=identity;bias=0;weights=1/n_out'")


@dataclass
class PhaseConfig:
    """Settings of a phase diagram.

    ``x_values``, ``y_values``, ``trials`` and ``methods`` choose which trials run (so a finished
    diagram can be extended); the rest decides each trial's result and goes into ``settings.json``.

    Attributes
    ----------
    x, y : str
        The parameters along the horizontal and vertical axes (among :data:`AXES`).
    n0, n1, n, depth, growth
        The architecture where an axis does not set it: latent size, first hidden width, output
        size, number of hidden layers, width ratio between consecutive hidden layers.
    output : str
        Output activation (``"identity"``, ``"tanh"``, ``"sigmoid"``, ``"leaky_relu"``, ``"plu"``);
        the hidden layers are ReLU.
    bias : float
        Standard deviation of the Gaussian biases (0: bias-free).
    weights : "1/n_in", "1/n_out" or "1"
        Variance of the i.i.d. Gaussian weights of a layer of ``n_in`` inputs and ``n_out`` outputs.
    m : int or None
        Compressed sensing: observe ``A G(z)`` with ``A`` Gaussian ``m x n``.
    snr_db : float or None
        Add white noise at this input SNR (latent_pursuit and hybrid then estimate the noise level).
    missing : float or None
        Hide this fraction of the pixels (a random mask per trial).
    success_db : float or None
        Success threshold on the SNR of ``z`` (default 60 dB noiseless; input SNR - 10 dB with noise).
    """

    x: str = "n1"
    x_values: Sequence[float] = (10, 20, 40, 60, 80, 120, 160)
    y: str = "n0"
    y_values: Sequence[float] = (2, 5, 10, 20, 30)
    trials: int = 10
    methods: Sequence[str] = PHASE_METHODS
    seed: int = 0
    n0: int = 10
    n1: int = 100
    n: int = 120
    depth: int = 1
    growth: float = 2.0
    output: str = "identity"
    bias: float = 0.0
    weights: str = "1/n_out"
    m: int | None = None
    snr_db: float | None = None
    missing: float | None = None
    success_db: float | None = None
    dtype: str = "float64"
    options: dict[str, dict[str, Any]] = field(default_factory=lambda: {
        "oracle": {}, "layered_bp": {"debias": True}, "latent_pursuit": {"debias": True},
        "gd": {"debias": True, "max_iter": 2000}, "adam": {}, "lp_layerwise": {}, "hybrid": {}})

    @classmethod
    def quick(cls, **kw: Any) -> PhaseConfig:
        """Seconds on 2 cores: 5 x 4 points (n_1 = 8..128, n_0 = 2..16, n = 80), 3 trials, shortened solvers."""
        kw.setdefault("x_values", (8, 16, 32, 64, 128))
        kw.setdefault("y_values", (2, 4, 8, 16))
        kw.setdefault("trials", 3)
        kw.setdefault("n", 80)
        cfg = cls(**kw)
        cfg.options["gd"] = {"debias": True, "max_iter": 500}
        for m in ("layered_bp", "latent_pursuit"):
            cfg.options[m] = {**cfg.options[m], "max_iter": 500}
        return cfg

    def threshold(self, snr_db: float | None = None) -> float:
        """The success threshold [dB] at a point whose input SNR is ``snr_db`` (None: noiseless)."""
        if self.success_db is not None:
            return float(self.success_db)
        return 60.0 if snr_db is None else float(snr_db) - 10.0

    def identity(self) -> dict[str, Any]:
        keys = ("x", "y", "seed", "n0", "n1", "n", "depth", "growth", "output", "bias", "weights", "m", "snr_db",
                "missing", "dtype")
        ident = {k: getattr(self, k) for k in keys if k not in (self.x, self.y)}
        ident["x"], ident["y"], ident["success_db"] = self.x, self.y, self.success_db
        return ident

    def point(self, xv: float, yv: float) -> dict[str, Any]:
        """The parameters of one grid point (axis values cast to each parameter's type)."""
        p: dict[str, Any] = {k: getattr(self, k) for k in ("n0", "n1", "depth", "m", "snr_db", "missing")}
        for name, v in ((self.x, xv), (self.y, yv)):
            p[name] = float(v) if name in ("snr_db", "missing") else int(v)
        return p

    def validate(self) -> None:
        if self.x not in AXES or self.y not in AXES or self.x == self.y:
            raise InputError(f"x, y: expected two different axes among {list(AXES)}, received {self.x!r}, {self.y!r}")
        if not self.x_values or not self.y_values:
            raise InputError("x_values, y_values: expected at least one value on each axis")
        if self.trials < 1:
            raise InputError(f"trials: expected a positive number of trials, received {self.trials}")
        if self.weights not in SCALINGS:
            raise InputError(f"weights: expected one of {list(SCALINGS)}, received {self.weights!r}")
        if self.bias < 0 or not math.isfinite(self.bias):
            raise InputError(f"bias: expected a standard deviation >= 0, received {self.bias}")
        check_dtype(self.dtype)
        if sum(v is not None for v in (self.m, self.missing)) > 1 or "m" in (self.x, self.y) and (
                self.missing is not None or "missing" in (self.x, self.y)):
            raise InputError("m, missing: expected at most one of compressed sensing (m) and a mask (missing)")
        unknown = [m for m in self.methods if m not in self.options]
        if unknown:
            raise InputError(f"methods: expected names among {sorted(self.options)}, received {unknown}")
        get_activation(self.output)
        for xv in self.x_values:
            for yv in self.y_values:
                p = self.point(xv, yv)
                if min(p["n0"], p["n1"], p["depth"]) < 1 or (p["m"] is not None and not 1 <= p["m"] <= self.n):
                    raise InputError(f"{self.x}, {self.y}: expected positive sizes (and 1 <= m <= n = {self.n}), "
                                     f"received the point {self.x}={xv}, {self.y}={yv}")
                if p["missing"] is not None and not 0 <= p["missing"] < 1:
                    raise InputError(f"missing: expected a fraction in [0, 1), received {p['missing']}")


def parse_phase(spec: str | None, **kw: Any) -> PhaseConfig:
    """A :class:`PhaseConfig` from ``--phase 'key=value;...'`` (see :data:`PHASE_HELP`); ``kw`` for the rest.

    Examples
    --------
    >>> cfg = parse_phase("x=n1:10,20;y=n0:2,4;output=tanh;bias=0.1;weights=1/n_in")
    >>> cfg.x, list(cfg.x_values), cfg.output, cfg.bias
    ('n1', [10.0, 20.0], 'tanh', 0.1)
    """
    quick = kw.pop("quick", False)
    fields: dict[str, Any] = {}
    for part in (spec or "").split(";"):
        if not part.strip():
            continue
        key, sep, val = (t.strip() for t in part.partition("="))
        if not sep:
            raise InputError(f"--phase: expected 'key=value' parts separated by ';', received {part!r}")
        if key not in _PHASE_KEYS:
            raise InputError(f"--phase: expected keys among {', '.join(_PHASE_KEYS)}; received {key!r}")
        try:
            if key in ("x", "y"):
                name, _, vals = val.partition(":")
                fields[key] = name.strip()
                fields[f"{key}_values"] = tuple(float(v) for v in vals.split(",") if v.strip())
            elif key in ("n0", "n1", "n", "depth", "m"):
                fields[key] = None if key == "m" and val in ("", "none") else int(val)
            elif key in ("growth", "bias", "snr_db", "missing", "success_db"):
                fields[key] = None if val in ("", "none") and key not in ("growth", "bias") else float(val)
            else:
                fields[key] = val
        except ValueError:
            raise InputError(f"--phase: expected a number (or numbers) for {key!r}, received {val!r}") from None
    fields.update(kw)
    cfg = PhaseConfig.quick(**fields) if quick else PhaseConfig(**fields)
    cfg.validate()
    return cfg


def phase_generator(config: PhaseConfig, p: dict[str, Any], seed: int) -> geninv.Generator:
    """The random generator of grid point ``p``: Gaussian weights scaled as ``config.weights``, biases of std ``config.bias``."""
    widths = [max(1, int(round(p["n1"] * config.growth ** i))) for i in range(int(p["depth"]))]
    dims = [int(p["n0"]), *widths, int(config.n)]
    gen = torch.Generator().manual_seed(seed)
    out = get_activation(config.output)
    layers = []
    for i in range(len(dims) - 1):
        n_in, n_out = dims[i], dims[i + 1]
        var = {"1/n_in": 1.0 / n_in, "1/n_out": 1.0 / n_out, "1": 1.0}[config.weights]
        W = torch.randn(n_out, n_in, generator=gen, dtype=torch.float64) * math.sqrt(var)
        b = config.bias * torch.randn(n_out, generator=gen, dtype=torch.float64)
        act = out if i == len(dims) - 2 else geninv.Activation("relu")
        layers.append(geninv.Layer(W.to(getattr(torch, config.dtype)), b.to(getattr(torch, config.dtype)), act))
    return geninv.Generator(layers)


def _key(config: PhaseConfig, xv: float, yv: float, t: int, what: str) -> str:
    return f"{config.x}={xv:g}/{config.y}={yv:g}/trial={t}/{what}"


def phase_units(config: PhaseConfig, methods: Sequence[str]) -> list[Unit]:
    """One unit per (grid point, trial); trial-major, so an interrupted diagram covers every point evenly."""
    return [Unit(f"{config.x}={xv:g}/{config.y}={yv:g}/trial={t}",
                 tuple(_key(config, xv, yv, t, m) for m in methods), (float(xv), float(yv), t))
            for t in range(config.trials) for yv in config.y_values for xv in config.x_values]


def phase_trial(config: PhaseConfig, unit: Unit, keys: list[str]) -> UnitResult:
    """One trial at one grid point: draw the generator and the signal, observe it, run every method in ``keys``."""
    xv, yv, t = unit.payload
    p = config.point(xv, yv)
    seed_t = derive_seed(config.seed, *(str(p[k]) for k in ("n0", "n1", "depth", "m", "snr_db", "missing")), t)
    dtype = getattr(torch, config.dtype)
    G = phase_generator(config, p, seed_t)
    z, y0 = G.sample(1, seed=derive_seed(seed_t, "z"))
    tr = G.trace(z)
    y, measure, mask = y0, None, None
    if p["m"] is not None:
        measure = geninv.GaussianMatrix(int(p["m"]), config.n, seed=derive_seed(seed_t, "A"), dtype=dtype)
        y = measure.forward(y0)
    if p["missing"] is not None:
        mask = geninv.random_mask(config.n, float(p["missing"]), seed=derive_seed(seed_t, "mask"))
    if p["snr_db"] is not None:
        y, _ = geninv.add_noise(y, float(p["snr_db"]), seed=derive_seed(seed_t, "noise"))
    s = [int(c[0]) for c in tr.cardinalities]
    base = {"x": float(xv), "y": float(yv), "trial": t, "seed": seed_t, "dims": G.dims, "s": s,
            **{k: v for k, v in p.items()}}
    thr = config.threshold(p["snr_db"])
    recs: list[dict[str, Any]] = []
    errors: list[tuple[str, str]] = []
    for key in keys:
        what = key.rsplit("/", 1)[1]
        opts = dict(config.options.get(what, {}))
        if solver_of(what) in _SEEDED:
            opts.setdefault("seed", derive_seed(seed_t, what))
        if p["snr_db"] is not None and solver_of(what) in _NOISE_AWARE:
            opts.setdefault("noise_level", "auto")
        if measure is not None:
            opts["measure"] = measure
        try:
            res, secs = solve(G, y, what, mask=mask, supports=tr.supports, options=opts)
            snrs = layer_snrs(G, z, tr.hidden, y0, res)[0]
        except GenInvError as e:
            # The method refused this signal (e.g. every unit of the last hidden layer is off, so y
            # does not depend on z): a failure of the trial, recorded as such with the reason.
            opts.pop("measure", None)
            recs.append({**base, "key": key, "kind": "solve", "method": what, "options": opts, "snr": None,
                         "success": False, "refused": f"{type(e).__name__}: {e}", "converged": False, "seconds": 0.0})
            continue
        except Exception as e:  # noqa: BLE001 - a failing method must not stop the diagram; retried next run
            errors.append((key, f"{type(e).__name__}: {e}"))
            continue
        opts.pop("measure", None)
        recs.append({**base, "key": key, "kind": "solve", "method": what, "options": opts, "snr": snrs,
                     "success": bool(snr_value(snrs["z"]) >= thr), "success_db": thr,
                     "converged": bool(res.converged[0]),
                     "seconds": secs})
    return UnitResult(recs, errors)


def run_phase(config: PhaseConfig, out_dir: str | Path, *, plots: bool = True, **run: Any) -> dict[str, Any]:
    """Run (or resume) a phase diagram on an executor, then write CSV, heat maps and ``summary.md``.

    ``**run``: where and how the units run (see :func:`geninv.experiments.common.execute`).
    Returns ``{"out", "ran", "skipped", "figures", "summary", "seconds"}``.
    """
    config.validate()
    methods, skipped = available_methods(config.methods)
    t0 = time.perf_counter()
    ran = execute(out_dir, "phase", config.identity(), phase_units(config, methods), partial(phase_trial, config),
                  desc="phase diagram", options={m: config.options.get(m, {}) for m in methods}, **run)
    out: dict[str, Any] = {"out": Path(out_dir), "ran": ran, "skipped": skipped, "figures": [], "summary": None,
                           "seconds": time.perf_counter() - t0}
    if plots:
        out["figures"] = plot_phase(out_dir)
        out["summary"] = write_phase_summary(out_dir)
    return out


# -- reading the records ----------------------------------------------------------------------------

def success_rule(st: dict[str, Any]) -> str:
    """The success rule of a diagram's settings, in words (``">= 60 dB"``, ``">= input SNR - 10 dB"``)."""
    if st.get("success_db") is not None:
        return f">= {float(st['success_db']):g} dB"
    if st.get("snr_db") is not None or "snr_db" in (st.get("x"), st.get("y")):
        return ">= input SNR - 10 dB"
    return ">= 60 dB"


def success_grid(records: list[dict[str, Any]]) -> dict[str, dict[tuple[float, float], list[bool]]]:
    """``{method: {(x, y): [success per trial]}}`` from the solve records."""
    by: dict[str, dict[tuple[float, float], list[bool]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r.get("kind") == "solve":
            by[r["method"]][(float(r["x"]), float(r["y"]))].append(bool(r["success"]))
    return by


def corollary1(records: list[dict[str, Any]], st: dict[str, Any]) -> dict[str, Any]:
    """Corollary 1's boundary on an ``(n_1, n_0)`` diagram, from the measured cardinalities.

    Returns ``{"s1": {n1: median s_1}, "sL": {n1: median s_L}, "limit": n/2 or m/2, "holds": {(x, y): bool}}``:
    ``holds`` marks the points whose median cardinalities satisfy ``n_0 <= s_1``, ``s_{i-1} < s_i / 2``
    and ``s_L < n / 2`` (``m / 2`` through ``A``).
    """
    s_by: dict[tuple[float, float], list[list[int]]] = defaultdict(list)
    point: dict[tuple[float, float], dict[str, Any]] = {}
    seen: set[tuple[float, float, int]] = set()
    for r in records:
        k = (float(r["x"]), float(r["y"]), int(r["trial"]))
        if r.get("kind") == "solve" and k not in seen:
            seen.add(k)
            s_by[k[:2]].append(list(r["s"]))
            point[k[:2]] = r
    holds: dict[tuple[float, float], bool] = {}
    s1: dict[float, list[int]] = defaultdict(list)
    sl: dict[float, list[int]] = defaultdict(list)
    for (x, y), ss in s_by.items():
        med = np.median(np.array(ss), axis=0)
        rec = point[(x, y)]
        lim = (rec["m"] if rec.get("m") is not None else st["n"]) / 2
        ok = rec["n0"] <= med[0] and med[-1] < lim and all(med[i - 1] < med[i] / 2 for i in range(1, len(med)))
        holds[(x, y)] = bool(ok)
        s1[x] += [s[0] for s in ss]
        sl[x] += [s[-1] for s in ss]
    return {"s1": {x: float(np.median(v)) for x, v in sorted(s1.items())},
            "sL": {x: float(np.median(v)) for x, v in sorted(sl.items())}, "holds": holds}


def corollary1_holds(record: dict[str, Any], n: int) -> bool:
    """Whether one trial's own cardinalities ``s`` satisfy Corollary 1 (``n_0 <= s_1``, ``s_{i-1} < s_i / 2``,
    ``s_L < n / 2``, or ``< m / 2`` when observed through ``A`` with ``m`` rows)."""
    s = list(record["s"])
    lim = (record["m"] if record.get("m") is not None else n) / 2
    return bool(record["n0"] <= s[0] and s[-1] < lim and all(s[i - 1] < s[i] / 2 for i in range(1, len(s))))


def _log_axis(v: Sequence[float]) -> bool:
    """A geometric grid (positive, spanning 8x or more) is drawn on a log axis."""
    return min(v) > 0 and max(v) / min(v) >= 8


def _edges(v: Sequence[float]) -> np.ndarray:
    """Cell edges around the sorted values (midpoints, in log space for a log axis)."""
    log = _log_axis(v)
    a = np.log(np.asarray(sorted(v), dtype=float)) if log else np.asarray(sorted(v), dtype=float)
    if a.size == 1:
        e = np.array([a[0] - 0.5, a[0] + 0.5])
    else:
        mid = (a[1:] + a[:-1]) / 2
        e = np.concatenate([[a[0] - (mid[0] - a[0])], mid, [a[-1] + (a[-1] - mid[-1])]])
    return np.exp(e) if log else e


def plot_phase(out_dir: str | Path) -> list[Path]:
    """One heat map of the success rate per method (``phase_diagram.png``), Corollary 1's boundary on each."""
    from geninv._optional import pyplot

    plt = pyplot()

    out_dir = Path(out_dir)
    recs = load_records(out_dir)
    st = read_settings(out_dir)["settings"]
    by = success_grid(recs)
    if not by:
        return []
    xs = sorted({k[0] for d in by.values() for k in d})
    ys = sorted({k[1] for d in by.values() for k in d})
    methods = [m for m in (*PHASE_METHODS, *sorted(by)) if m in by]
    methods = list(dict.fromkeys(methods))
    cols = min(4, len(methods))
    rows = math.ceil(len(methods) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.0 * cols + 1.2, 3.6 * rows + 0.6), squeeze=False,
                             constrained_layout=True)
    cor = corollary1(recs, st) if (st["x"], st["y"]) == ("n1", "n0") else None
    mesh = None
    for ax, m in zip(axes.flat, methods):
        Z = np.full((len(ys), len(xs)), np.nan)
        for (x, y), v in by[m].items():
            Z[ys.index(y), xs.index(x)] = np.mean(v)
        mesh = ax.pcolormesh(_edges(xs), _edges(ys), Z, cmap="viridis", vmin=0, vmax=1, shading="flat")
        if cor is not None:
            s1x = list(cor["s1"])
            ax.plot(s1x, [cor["s1"][x] for x in s1x], color="w", lw=2.0, label="n_0 = median s_1 (measured)")
            ax.plot(s1x, [x / 2 for x in s1x], color="w", lw=1.2, ls="--", label="n_0 = n_1 / 2 (bias-free expectation)")
            lim = (st["m"] if st.get("m") is not None else st["n"]) / 2
            over = [x for x in s1x if cor["sL"][x] >= lim]
            if over:
                ax.axvline(over[0], color="#ff6666", lw=1.5, ls=":", label=f"first n_1 with median s_L >= {lim:g}")
        if _log_axis(xs):
            ax.set_xscale("log")
        if _log_axis(ys):
            ax.set_yscale("log")
        ax.set_xlim(_edges(xs)[0], _edges(xs)[-1])
        ax.set_ylim(_edges(ys)[0], _edges(ys)[-1])
        ax.set_xticks(xs, [f"{v:g}" for v in xs], minor=False, fontsize=7)
        ax.set_yticks(ys, [f"{v:g}" for v in ys], minor=False, fontsize=7)
        ax.minorticks_off()
        ax.set_title(LABELS.get(m, m))
        ax.set_xlabel(st["x"])
        ax.set_ylabel(st["y"])
    for ax in list(axes.flat)[len(methods):]:
        ax.axis("off")
    if cor is not None:
        h, lab = axes.flat[0].get_legend_handles_labels()
        fig.legend(h, lab, loc="outside lower center", ncol=len(lab), fontsize=8, frameon=True, facecolor="#8a8a8a",
                   title="Corollary 1 needs n_0 <= s_1 (below the solid line) and s_L < n/2 (left of the dotted line)",
                   title_fontsize=8)
    if mesh is not None:
        fig.colorbar(mesh, ax=axes, shrink=0.9, label=f"success rate (SNR of z {success_rule(st)})")
    fixed = {k: st.get(k) for k in ("n0", "n1", "n", "depth", "m", "snr_db", "missing") if k in st and st.get(k) is not None}
    fig.suptitle(f"Phase diagram: {st['output']} output, weights N(0, {st['weights']}), "
                 f"{'bias std ' + format(st['bias'], 'g') if st['bias'] else 'no bias'}; "
                 + ", ".join(f"{k} = {v}" for k, v in fixed.items()), fontsize=10)
    return [save_figure(fig, out_dir / "phase_diagram.png")]


def section(out_dir: str | Path, command: str | None = None) -> Any:
    """Success-rate tables, Corollary 1 agreement and the heat maps of a phase directory, as a report ``Section``."""
    out_dir = Path(out_dir)
    if command is None:
        f = out_dir / "command.txt"
        command = f.read_text().strip() if f.exists() else f"geninv reproduce phase --out {out_dir}"
    recs = load_records(out_dir)
    st = read_settings(out_dir)["settings"]
    by = success_grid(recs)
    sec = Section(f"Phase diagram over ({st['x']}, {st['y']})", out_dir, command)
    n_trials = len({(r["x"], r["y"], r["trial"]) for r in recs if r.get("kind") == "solve"})
    threads = sorted({int(r["threads"]) for r in recs if "threads" in r})
    sec.notes.append(f"Random generators with {st['output']} output, weights N(0, {st['weights']}), "
                     f"{'biases N(0, ' + format(st['bias'], 'g') + '^2)' if st['bias'] else 'no biases'}, "
                     f"output size n = {st['n']}; a trial succeeds when the SNR of z is {success_rule(st)}. "
                     f"{n_trials} trials in the records (torch threads per worker: {threads or 'not recorded'}).")
    refused = [r for r in recs if r.get("refused")]
    if refused:
        sec.notes.append(f"{len(refused)} method runs refused their signal and count as failures (first reason: "
                         f"{refused[0]['refused']}).")
    sec.figures = [f for f in (out_dir / "phase_diagram.png",) if f.exists()]
    xs = sorted({k[0] for d in by.values() for k in d})
    ys = sorted({k[1] for d in by.values() for k in d})
    for m in [m for m in dict.fromkeys((*PHASE_METHODS, *sorted(by))) if m in by]:
        rows = [[f"{y:g}"] + [f"{np.mean(by[m][(x, y)]):.2f}" if (x, y) in by[m] else "-" for x in xs]
                for y in reversed(ys)]
        sec.tables.append(Table([f"{st['y']} \\ {st['x']}"] + [f"{x:g}" for x in xs], rows,
                                caption=f"{LABELS.get(m, m)}: success rate"))
    solves = [r for r in recs if r.get("kind") == "solve"]
    for m in [m for m in dict.fromkeys((*PHASE_METHODS, *sorted(by))) if m in by]:
        a = [bool(r["success"]) for r in solves if r["method"] == m and corollary1_holds(r, st["n"])]
        b = [bool(r["success"]) for r in solves if r["method"] == m and not corollary1_holds(r, st["n"])]
        sec.claims.append((f"{LABELS.get(m, m)}: success on trials whose own cardinalities satisfy Corollary 1 "
                           "(n_0 <= s_1, s_(i-1) < s_i / 2, s_L < n/2 or m/2) vs on the others", "measured",
                           (f"{np.mean(a):.3f} of {len(a)} trials inside, " if a else "no trials inside, ")
                           + (f"{np.mean(b):.3f} of {len(b)} outside" if b else "none outside")))
        if m == "oracle" and a:
            # Theorem 1 with Gaussian weights: inside Corollary 1 the supported matrices have full
            # column rank with probability 1, so the Oracle's pseudo-inverses return z exactly.
            sec.claims.append(("Oracle recovers z on every trial inside Corollary 1 (Theorem 1, Gaussian weights)",
                               "holds" if all(a) else "does not hold", f"{sum(a)} of {len(a)} trials"))
    return sec


def write_phase_summary(out_dir: str | Path, command: str | None = None) -> Path:
    """``summary.md`` / ``summary.json`` of a phase directory."""
    return write_section_summary(section(out_dir, command), "Phase diagram")


def reproduce_phase(spec: str | None = None, *, quick: bool = False, out: str | Path | None = None,
                    trials: int | None = None, seed: int = 0, methods: Sequence[str] | None = None,
                    progress: bool = True, executor: Any = None, results: str | Path = "results") -> int:
    """``geninv reproduce phase``: run (or resume) the diagram of ``spec`` and print where everything went."""
    kw: dict[str, Any] = {"seed": seed, "quick": quick}
    if trials is not None:
        if trials < 1:
            raise InputError(f"--trials: expected a positive integer, received {trials}")
        kw["trials"] = trials
    if methods:
        kw["methods"] = tuple(methods)
    cfg = parse_phase(spec, **kw)
    root = Path(results)
    out_dir = Path(out) if out is not None else (root / "quick" / "phase" if quick else root / "phase")
    parts = ["geninv reproduce phase"] + ([f"--phase '{spec}'"] if spec else []) + (["--quick"] if quick else []) + (
        [f"--trials {trials}"] if trials is not None else []) + ([f"--seed {seed}"] if seed else []) + (
        ["--methods " + ",".join(methods)] if methods else []) + (
        [f"--executor {executor}"] if executor not in (None, "serial") else []) + [f"--out {out_dir}"]
    command = " ".join(parts)
    res = run_phase(cfg, out_dir, executor=executor, progress=progress, plots=False)
    atomic_write_text(out_dir / "command.txt", command + "\n")
    figures = plot_phase(out_dir)
    summary = write_phase_summary(out_dir, command)
    n_units = len(cfg.x_values) * len(cfg.y_values) * cfg.trials
    print(f"records, figures and summary in {out_dir} ({res['ran']} of {n_units} trial units run, "
          f"{res['seconds']:.1f} s on {executor or 'serial'})")
    for s in res["skipped"]:
        print(f"  skipped: {s}")
    for f in figures:
        print(f"  figure: {f}")
    print(f"  summary: {summary}")
    return 0


register(Experiment("phase", "Phase diagrams of random generators", "phase", PhaseConfig, phase_units, phase_trial,
                    section, LABELS, COLORS, claims_of="ours", rank=6))

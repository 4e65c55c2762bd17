"""Noisy and quantized signals: SNR of ``z`` and of every layer against the input SNR, for every
method, beside the Oracle's expected error (Theorem 3) and the Theorem 2 bound.

Two parts, both in one reproduction directory:

``kind = "solve"`` / ``"theory"`` (the MNIST generator; a random stand-in of the same shape when
the shipped weights are unavailable): ``y = G(z) + e`` with ``e`` white at input SNR
``snr_db`` (per image, ``geninv.add_noise``), every method inverts ``y``; SNRs are against the
clean layers. ``kind = "solve8"`` (``NoiseConfig.quantized``): the same images 8-bit quantized,
``(y + 1) / 2`` rounded to multiples of 1/255 (the MNIST generator's [-1, 1] range), placed at
their measured input SNR in the figure. ``theory`` records hold the Oracle's expected squared error per layer
(:func:`geninv.solvers.noise.oracle_expected_error`, layerwise and end to end).

``kind = "bound"`` (a small random generator, by default ``[4, 12, 200]`` with identity output,
where Theorem 2's conditions can hold): for each trial the bound
(:func:`geninv.theorem2_bound` at the realized ``||e||_2``) and the measured errors of Layered
BP and Latent-Pursuit run with the bound's ``lam`` (without debiasing: the estimator the theorem
is about), and of the noise-aware pursuits with their own ``lam`` (the bound then evaluated at
that ``lam``).

Methods of the ``solve`` part (record names):

* ``auto``: the default of ``geninv.invert`` (:func:`geninv.solvers.auto.auto`);
* ``oracle``: the paper's Oracle (Algorithm 1, layer-wise pseudo-inverses, true supports);
* ``oracle_e2e``: least squares of ``z`` through the network with the true supports;
* ``latent_pursuit``, ``layered_bp``: the paper's methods with their noiseless defaults;
* ``latent_pursuit_auto``, ``layered_bp_auto``: :func:`geninv.solvers.noise.noisy_pursuit`
  with ``noise_level="auto"`` (every parameter from the estimated ``sigma``);
* ``latent_pursuit_sigma``: the same with the true ``sigma``;
* ``hybrid_auto``: :func:`geninv.solvers.hybrid.hybrid` with ``noise_level="auto"``;
* ``gd``, ``adam``: the gradient baselines.

The figures, the claims and the report section of these records are in
:mod:`geninv.experiments.noise_report`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import geninv
from geninv.exceptions import InputError
from geninv.experiments.common import (
    Job,
    attempt,
    check_signal_config,
    execute,
    generator_fingerprint,
    latents,
    layer_snrs,
    noisy_images,
    quantize_8bit,
    resolve_generator,
    signal_identity,
)
from geninv.experiments.noise_report import (
    BOUND_METHODS,
    noise_claims,
    noise_summary,
    plot_bound,
    plot_noise,
    plot_worst,
    section,
)
from geninv.experiments.records import Unit, UnitResult, derive_seed, iter_chunks
from geninv.experiments.registry import Experiment, register

__all__ = ["NoiseConfig", "noise_trial", "noise_units", "run_noise", "NOISE_METHODS", "noise_summary", "noise_claims",
           "plot_noise", "plot_bound", "plot_worst", "LABELS", "COLORS", "MARKERS"]

NOISE_METHODS = ("auto", "oracle", "oracle_e2e", "layered_bp", "latent_pursuit", "layered_bp_auto", "latent_pursuit_auto",
                 "latent_pursuit_sigma", "hybrid_auto", "gd", "adam")
QUICK_METHODS = ("auto", "oracle", "oracle_e2e", "latent_pursuit", "latent_pursuit_auto", "gd")
LABELS = {"auto": "Default (auto)", "oracle": "Oracle (layer-wise, Alg. 1)", "oracle_e2e": "Oracle (end to end)", "layered_bp": "Layered BP",
          "latent_pursuit": "Latent-Pursuit", "layered_bp_auto": "Layered BP, auto noise",
          "latent_pursuit_auto": "Latent-Pursuit, auto noise", "latent_pursuit_sigma": "Latent-Pursuit, known sigma",
          "hybrid_auto": "Hybrid, auto noise", "gd": "Gradient descent", "adam": "Adam (restarts)",
          "layered_bp_thm": "Layered BP, Thm 2 lam", "latent_pursuit_thm": "Latent-Pursuit, Thm 2 lam"}
COLORS = {"auto": "#1a1a8c", "oracle": "#555555", "oracle_e2e": "#000000", "layered_bp": "#1f77b4", "latent_pursuit": "#d62728",
          "layered_bp_auto": "#17becf", "latent_pursuit_auto": "#e377c2", "latent_pursuit_sigma": "#8c564b",
          "hybrid_auto": "#ff7f0e", "gd": "#2ca02c", "adam": "#9467bd", "layered_bp_thm": "#1f77b4",
          "latent_pursuit_thm": "#d62728"}
MARKERS = {"auto": "o", "oracle": "s", "oracle_e2e": "D", "layered_bp": "v", "latent_pursuit": "^", "layered_bp_auto": "<",
           "latent_pursuit_auto": ">", "latent_pursuit_sigma": "P", "hybrid_auto": "X", "gd": "*", "adam": "h",
           "layered_bp_thm": "o", "latent_pursuit_thm": "x"}

@dataclass
class NoiseConfig:
    """Settings of the noise reproduction.

    ``images``, ``methods``, ``snr_db`` and ``bound_trials`` choose which trials run; the rest
    decides each trial's result and goes into ``settings.json``.
    """

    snr_db: Sequence[float] = (10, 15, 20, 25, 30, 40, 50)
    images: int = 64
    batch: int = 16
    methods: Sequence[str] = NOISE_METHODS
    seed: int = 0
    dtype: str = "float64"
    generator: str = "mnist"
    bound: bool = True
    bound_dims: Sequence[int] = (4, 12, 200)
    bound_output: str = "identity"
    bound_snr_db: Sequence[float] = (30, 35, 40, 45, 50, 60)
    bound_trials: int = 16
    quantized: bool = True
    options: dict[str, dict[str, Any]] = field(default_factory=lambda: {"gd": {}, "adam": {}, "hybrid_auto": {}})

    @classmethod
    def quick(cls, **kw: Any) -> NoiseConfig:
        """A minute or two on 2 CPU cores: input SNR 20 and 30 dB and 8-bit, 16 images, 6 methods, a small
        bound part."""
        kw.setdefault("snr_db", (20, 30))
        kw.setdefault("images", 16)
        kw.setdefault("methods", QUICK_METHODS)
        kw.setdefault("bound_snr_db", (40, 60))
        kw.setdefault("bound_trials", 4)
        cfg = cls(**kw)
        cfg.options["gd"] = {"max_iter": 1000}
        cfg.options["hybrid_auto"] = {"fallback_iter": 1000}
        return cfg

    def identity(self, generator_id: str, description: str = "") -> dict[str, Any]:
        return {**signal_identity(self, generator_id, description), "bound_dims": list(self.bound_dims),
                "bound_output": self.bound_output}

    def validate(self) -> None:
        check_signal_config(self, NOISE_METHODS)
        if not self.snr_db:
            raise InputError("snr_db: expected at least one input SNR")


def _solve(method: str, G: geninv.Generator, y: Tensor, sigma: Tensor, supports: list[Tensor], seed: int,
           options: dict[str, Any]) -> Any:
    from geninv.solvers.noise import noisy_pursuit

    opts = dict(options)
    if method == "auto":
        return geninv.invert(G, y, seed=seed, **opts)
    if method == "oracle":
        return geninv.invert(G, y, method="oracle", supports=supports)
    if method == "oracle_e2e":
        return geninv.invert(G, y, method="oracle", supports=supports, mode="end_to_end")
    if method in ("latent_pursuit", "layered_bp"):  # the exact form, with its noiseless defaults
        return geninv.invert(G, y, method=method, **dict(opts, noise_level=opts.get("noise_level", 0)))
    if method in ("latent_pursuit_auto", "layered_bp_auto"):
        return noisy_pursuit(G, y, noise_level="auto", method=method.rsplit("_", 1)[0], **opts)
    if method == "latent_pursuit_sigma":
        return noisy_pursuit(G, y, noise_level=sigma, method="latent_pursuit", **opts)
    if method == "hybrid_auto":
        return geninv.invert(G, y, method="hybrid", noise_level="auto", seed=seed, **opts)
    if method in ("gd", "adam"):
        return geninv.invert(G, y, method=method, seed=seed, **opts)
    raise InputError(f"method: unknown noise-experiment method {method!r}")  # pragma: no cover


def _expected_snr(err2: Tensor, x: Tensor) -> list[float]:
    return [float(10 * math.log10(float(a) / float(e))) if float(e) > 0 else math.inf
            for a, e in zip(x.square().sum(dim=1), err2)]


def noise_units(config: NoiseConfig, methods: Sequence[str]) -> list[Unit]:
    """Chunks of images per input SNR (each also writes the Theorem 3 records), then the Theorem 2 trials."""
    methods = list(methods)
    units: list[Unit] = []
    for s in map(float, config.snr_db):
        for a, b in iter_chunks(config.images, config.batch):
            keys = tuple(f"snr={s:g}/image={i}/{m}" for i in range(a, b) for m in methods + ["theory"])
            units.append(Unit(f"snr={s:g} images {a}-{b - 1}", keys, ("solve", s, a, b)))
    if config.quantized:
        for a, b in iter_chunks(config.images, config.batch):
            keys = tuple(f"8bit/image={i}/{m}" for i in range(a, b) for m in methods)
            units.append(Unit(f"8-bit images {a}-{b - 1}", keys, ("solve", "8bit", a, b)))
    if config.bound:
        for s in map(float, config.bound_snr_db):
            for t in range(config.bound_trials):
                keys = tuple(f"bound/snr={s:g}/trial={t}/{m}" for m in BOUND_METHODS)
                units.append(Unit(f"bound snr={s:g} trial {t}", keys, ("bound", s, t, t + 1)))
    return units


def noise_trial(job: Job, unit: Unit, keys: list[str]) -> UnitResult:
    """One unit of the noise reproduction: a chunk of images at one input SNR, or one Theorem 2 trial."""
    from geninv.solvers.expected_error import oracle_expected_error

    config, methods = job.config, list(job.methods)
    errors: list[tuple[str, str]] = []
    if unit.payload[0] == "bound":
        return UnitResult(_bound_work(config, unit, keys, errors), errors)
    dtype = getattr(torch, config.dtype)
    G = job.source.get().to(dtype=dtype)
    _, s, a, b = unit.payload
    idx = list(range(a, b))
    z = latents(config.seed, idx, G.latent_dim, dtype)
    tr = G.trace(z)
    y0 = tr.y
    if s == "8bit":
        y = quantize_8bit(y0)
        sigma = (y - y0).to(torch.float64).norm(dim=1) / math.sqrt(y0.shape[1])
        in_snr = 20 * torch.log10(y0.to(torch.float64).norm(dim=1) / (y - y0).to(torch.float64).norm(dim=1))
        prefix = "8bit"
        base: dict[str, Any] = {"kind": "solve8", "dims": G.dims}
    else:
        y, sigma = noisy_images(y0, s, config.seed, idx)
        prefix = f"snr={s:g}"
        base = {"kind": "solve", "snr_db": s, "dims": G.dims}
    todo = {k.rsplit("/", 1)[1] for k in keys}
    recs: list[dict[str, Any]] = []
    if "theory" in todo:
        th = {mode: oracle_expected_error(G, z, sigma, mode=mode) for mode in ("layerwise", "end_to_end")}
        truth = {"z": z, **{f"x{i + 1}": x for i, x in enumerate(tr.hidden)}, "y": y0}
        for j, i in enumerate(idx):
            exp = {mode: {k: _expected_snr(v[j:j + 1], truth[k][j:j + 1])[0] for k, v in d.items()}
                   for mode, d in th.items()}
            recs.append({**base, "kind": "theory", "key": f"snr={s:g}/image={i}/theory", "image": i,
                         "sigma": float(sigma[j]), "expected_snr": exp,
                         "s": [int(c[j]) for c in tr.cardinalities]})
    for m in [m for m in methods if m in todo]:
        seed_m = derive_seed(config.seed, m, a)
        got = attempt(f"{unit.name}/{m}", errors,
                      partial(_solve, m, G, y, sigma, tr.supports, seed_m, config.options.get(m, {})))
        if got is None:
            continue
        res, secs = got
        snrs = layer_snrs(G, z, tr.hidden, y0, res)
        sig_hat = res.info.get("sigma", res.info.get("noise_level")) if isinstance(res.info, dict) else None
        for j, i in enumerate(idx):
            rec = {**base, "key": f"{prefix}/image={i}/{m}", "method": m, "image": i, "snr": snrs[j],
                   "sigma": float(sigma[j]), "seconds": secs / len(idx),
                   "converged": bool(res.converged[j])}
            if s == "8bit":
                rec["snr_db"] = float(in_snr[j])
            if isinstance(sig_hat, Tensor):
                rec["sigma_hat"] = float(sig_hat[j])
            if m == "auto":
                rec["z_hat"] = [float(v) for v in res.z[j]]
                rec["fits"] = bool(res.fits[j]) if res.fits is not None else bool(res.info["fits"][j])
            recs.append(rec)
    return UnitResult(recs, errors)


def run_noise(config: NoiseConfig, out_dir: str | Path, *, generator: geninv.Generator | None = None,
              plots: bool = True, **run: Any) -> dict[str, Any]:
    """Run (or resume) the noise reproduction, then write CSV, figures and ``summary.md``.

    ``generator`` replaces the configured one (tests pass a small random one); ``**run``: where
    and how the units run (see :func:`geninv.experiments.common.execute`). Returns ``{"out",
    "ran", "skipped", "figures", "summary", "generator"}`` like the other reproductions.
    """
    config.validate()
    G, gdesc, source = resolve_generator(generator, config)
    methods = tuple(config.methods)
    ran = execute(out_dir, "noise", config.identity(generator_fingerprint(G), gdesc), noise_units(config, methods),
                  partial(noise_trial, Job(config, methods, source)), desc="noise", **run)
    out: dict[str, Any] = {"out": Path(out_dir), "ran": ran, "skipped": [], "figures": [], "summary": None,
                           "generator": gdesc}
    if plots:
        out["figures"] = plot_noise(out_dir) + plot_bound(out_dir) + plot_worst(out_dir, G)
        out["summary"] = noise_summary(out_dir, generator=gdesc)
    return out


def _one_bound(G: geninv.Generator, z: Tensor, noise: float, lam: list[float] | None) -> Any:
    """Theorem 2 for one latent (``z`` 1-D gives one Theorem2Bound)."""
    b = geninv.theorem2_bound(G, z, noise=noise, lam=lam)
    return b[0] if isinstance(b, list) else b


def _bound_work(config: NoiseConfig, unit: Unit, keys: list[str], errors: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """One trial of the Theorem 2 part: bound at the realized noise, and the measured errors."""
    from geninv.solvers.noise import noisy_pursuit

    _, s, t, _ = unit.payload
    seed_t = derive_seed(config.seed, "bound", t)
    G = geninv.random_generator(list(config.bound_dims), config.bound_output, seed=seed_t, dtype=torch.float64)
    z, y0 = G.sample(1, seed=derive_seed(seed_t, "z"))
    y, sigma = geninv.add_noise(y0, float(s), seed=derive_seed(seed_t, "noise", str(s)))
    enorm = float((y - y0).norm())
    tr = G.trace(z)
    thm = _one_bound(G, z[0], enorm, None)
    recs: list[dict[str, Any]] = []
    todo = {k.rsplit("/", 1)[1] for k in keys}
    L = G.n_hidden

    def solve_and_bound(m: str) -> tuple[Any, Any]:
        if m.endswith("_thm"):
            # The theorem's estimator: one lam per layer, no debiasing. The solvers take one
            # lam for all layers, so this is exact for L = 1 (the default [4, 12, 200]).
            lam = float(max(thm.lam)) if thm.verdict == "holds" else 0.0
            return geninv.invert(G, y, method=m[: -len("_thm")], lam=lam, debias=False, noise_level=0), thm
        res = noisy_pursuit(G, y, noise_level="auto", method=m[: -len("_auto")], refine="none")
        return res, _one_bound(G, z[0], enorm, [float(res.info["lam"][f"x{i + 1}"][0]) for i in range(L)])

    for m in [m for m in BOUND_METHODS if m in todo]:
        got = attempt(f"{unit.name}/{m}", errors, partial(solve_and_bound, m))
        if got is None:
            continue
        (res, bnd), _ = got
        errs = [float((res.z - z).norm())] + [float((xh - x).norm()) for xh, x in zip(res.layers, tr.hidden)]
        recs.append({"kind": "bound", "key": f"bound/snr={s:g}/trial={t}/{m}", "method": m, "snr_db": s, "trial": t,
                     "dims": G.dims, "noise_norm": enorm, "sigma": float(sigma[0]), "verdict": bnd.verdict,
                     "reason": bnd.reason, "bound_z": bnd.z_error, "bound_layers": list(bnd.layer_errors),
                     "lam": list(bnd.lam), "error_z": errs[0], "error_layers": errs[1:],
                     "s": [int(c[0]) for c in tr.cardinalities]})
    return recs


register(Experiment("noise", "Noisy signals y = G(z) + e", "noise", NoiseConfig, noise_units, noise_trial, section,
                    LABELS, COLORS, MARKERS, claims_of="ours", rank=4))

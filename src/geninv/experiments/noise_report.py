"""What the noise reproduction's records show: the SNR figure, the worst recoveries, the Theorem 2
figure, the claims and the report section (see :mod:`geninv.experiments.noise_exp` for the trials).

The method names, labels, colours and markers come from the experiment's registry entry
(:func:`geninv.experiments.registry.for_directory`), so this module imports no experiment.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import geninv
from geninv.experiments.common import generator_phrase, latents, noisy_images, quantize_8bit, save_figure
from geninv.experiments.records import load_records, read_settings, snr_value
from geninv.experiments.registry import for_directory
from geninv.experiments.report import DIFFERS, Section, Table, median_snr, write_section_summary

__all__ = ["plot_noise", "plot_worst", "plot_bound", "noise_claims", "section", "noise_summary", "BOUND_METHODS",
           "RIBBON_METHODS"]

#: The methods of the Theorem 2 part, in the order of the figure and the claims.
BOUND_METHODS = ("layered_bp_thm", "latent_pursuit_thm", "layered_bp_auto", "latent_pursuit_auto")
#: The methods whose 10-90 % ribbon the noise figure draws.
RIBBON_METHODS = ("auto", "oracle")



def _layer_order(rec: dict[str, Any]) -> list[str]:
    """``z, x1, ..., xL, y`` (records store the SNR dict with sorted keys)."""
    names = list(rec["snr"].keys())
    xs = sorted((k for k in names if k.startswith("x")), key=lambda k: int(k[1:]))
    return [k for k in ["z", *xs, "y"] if k in names]


def _by_method(recs: list[dict[str, Any]]) -> dict[str, dict[float, list[dict[str, Any]]]]:
    by: dict[str, dict[float, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in recs:
        if r.get("kind") == "solve":
            by[r["method"]][float(r["snr_db"])].append(r)
    return by


def _by_method8(recs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in recs:
        if r.get("kind") == "solve8":
            by[r["method"]].append(r)
    return by


def _layer_title(layer: str) -> str:
    if layer == "z":
        return "$z$"
    if layer == "y":
        return "image $G(\\hat z)$"
    return f"${layer[0]}_{{{layer[1:]}}}$"


def plot_noise(out_dir: str | Path) -> list[Path]:
    """SNR of ``z``, every hidden layer and the image against the input SNR (median; 10-90 % ribbon for
    the methods of ``RIBBON_METHODS`` only, so the others' do not merge into one band; one marker per
    method), with the Oracle's expected SNR (Theorem 3, dashed: layer-wise; dotted: end to end), and
    the 8-bit quantized images side by side around their median input SNR (bars: 10-90 %)."""
    from geninv._optional import pyplot

    plt = pyplot()

    out_dir = Path(out_dir)
    recs = load_records(out_dir)
    by = _by_method(recs)
    by8 = _by_method8(recs)
    theory = [r for r in recs if r.get("kind") == "theory"]
    if not by:
        return []
    layers = _layer_order(next(iter(next(iter(by.values())).values()))[0])
    exp = for_directory(out_dir)
    fig, axes = plt.subplots(1, len(layers), figsize=(4.3 * len(layers), 5.6), sharey=True)
    axes = np.atleast_1d(axes)
    # The default method last, on top of the Oracle it is compared with.
    order = [m for m in exp.order(by) if m != "auto"] + (["auto"] if "auto" in by else [])
    # Overlapping curves stay apart: one marker per method, the 8-bit points side by side, and the
    # 10-90 % ribbon only for the default and the paper's Oracle (the others' would merge into one band).
    xs_all = sorted({x for d in by.values() for x in d})
    width = max(4.0, 0.25 * (xs_all[-1] - xs_all[0]))  # dB of input SNR over which the 8-bit points spread
    for ax, layer in zip(axes, layers):
        for k, m in enumerate(order):
            xs = sorted(by[m])
            q = np.array([np.percentile([snr_value(r["snr"][layer]) for r in by[m][x]], (10, 50, 90)) for x in xs])
            c = exp.colors.get(m)
            if m in RIBBON_METHODS:
                ax.fill_between(xs, q[:, 0], q[:, 2], color=c, alpha=0.18, lw=0)
            ax.plot(xs, q[:, 1], marker=exp.markers.get(m, "o"), ms=5, mfc="none" if m != "auto" else c, color=c,
                    lw=2.2 if m == "auto" else 1.4, label=exp.label(m) + (" (ribbon 10-90 %)" if m in RIBBON_METHODS else ""),
                    ls="--" if m.startswith("oracle") else "-", zorder=3 if m == "auto" else 2)
            if by8.get(m):
                v = np.percentile([snr_value(r["snr"][layer]) for r in by8[m]], (10, 50, 90))
                x8 = float(np.median([r["snr_db"] for r in by8[m]])) + width * (k / max(1, len(order) - 1) - 0.5)
                ax.errorbar([x8], [v[1]], yerr=[[v[1] - v[0]], [v[2] - v[1]]], color=c, marker=exp.markers.get(m, "s"),
                            ms=5, mfc="none" if m != "auto" else c, lw=1, capsize=2)
        for mode, style in (("layerwise", (0, (5, 2))), ("end_to_end", (0, (1, 1)))):
            tb: dict[float, list[float]] = defaultdict(list)
            for r in theory:
                tb[float(r["snr_db"])].append(r["expected_snr"][mode][layer])
            if tb:
                xs = sorted(tb)
                ax.plot(xs, [float(np.median(tb[x])) for x in xs], color="k", ls=style, lw=1.0, alpha=0.7,
                        label=f"Theorem 3, Oracle {'layer-wise' if mode == 'layerwise' else 'end to end'} (expected)")
        ax.plot(xs_all, xs_all, color="#999999", lw=0.8, ls="-.", label="output SNR = input SNR")
        ax.set_title("SNR of " + _layer_title(layer))
        ax.set_xlabel("input SNR [dB]")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("median SNR [dB]; right: 8-bit images (bars 10-90 %)")
    h, lab = axes[0].get_legend_handles_labels()
    fig.legend(h, lab, loc="lower center", ncol=4, fontsize=10, frameon=False)
    st = read_settings(out_dir)["settings"]
    fig.suptitle(f"Noisy signals y = G(z) + e and 8-bit images: "
                 f"{generator_phrase(st.get('generator_description') or st['generator'])}, {st['dtype']}")
    fig.tight_layout(rect=(0, 0.2, 1, 1))
    return [save_figure(fig, out_dir / "noise_snr.png")]


def plot_worst(out_dir: str | Path, G: geninv.Generator, *, method: str = "auto", count: int = 8) -> list[Path]:
    """The ``count`` images the default method recovers worst (lowest z SNR) at the lowest input SNR
    and on 8-bit data: rows clean ``G(z)``, input ``y``, result ``G(z_hat)`` (28 x 28 outputs only)."""
    from geninv._optional import pyplot

    plt = pyplot()

    out_dir = Path(out_dir)
    if G.output_dim != 784:
        return []
    recs = [r for r in load_records(out_dir) if r.get("method") == method and "z_hat" in r]
    solve = [r for r in recs if r["kind"] == "solve"]
    groups: list[tuple[str, list[dict[str, Any]]]] = []
    if solve:
        lo = min(float(r["snr_db"]) for r in solve)
        groups.append((f"input SNR {lo:g} dB", [r for r in solve if float(r["snr_db"]) == lo]))
    q8 = [r for r in recs if r["kind"] == "solve8"]
    if q8:
        groups.append(("8-bit", q8))
    paths = []
    st = read_settings(out_dir)["settings"]
    dtype = getattr(torch, st["dtype"])
    Gd = G.to(dtype=dtype)
    for name, rs in groups:
        rs = sorted(rs, key=lambda r: snr_value(r["snr"]["z"]))[:count]
        idx = [int(r["image"]) for r in rs]
        z = latents(st["seed"], idx, G.latent_dim, dtype)
        y0 = Gd.forward_unchecked(z)
        y = quantize_8bit(y0) if name == "8-bit" else noisy_images(y0, float(rs[0]["snr_db"]), st["seed"], idx)[0]
        zh = torch.tensor([r["z_hat"] for r in rs], dtype=dtype)
        yh = Gd.forward_unchecked(zh)
        fig, axes = plt.subplots(3, len(rs), figsize=(1.3 * len(rs), 4.4), squeeze=False)
        for j, r in enumerate(rs):
            for i, (img, lab) in enumerate(((y0, "G(z)"), (y, "input y"), (yh, "G(z_hat)"))):
                ax = axes[i, j]
                ax.imshow(img[j].detach().reshape(28, 28).cpu().numpy(), cmap="gray", vmin=-1, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
                if j == 0:
                    ax.set_ylabel(lab, fontsize=8)
            axes[0, j].set_title(f"z {snr_value(r['snr']['z']):.1f} dB" + ("" if r.get("fits", True) else "\nno fit"),
                                 fontsize=7)
        fig.suptitle(f"{for_directory(out_dir).label(method)}: the {len(rs)} worst recoveries, {name}", fontsize=9)
        fig.tight_layout()
        paths.append(save_figure(fig, out_dir / f"noise_worst_{'8bit' if name == '8-bit' else 'lowest_snr'}.png"))
    return paths


def plot_bound(out_dir: str | Path) -> list[Path]:
    """Theorem 2 bound part. Left: measured ``||z_hat - z||_2`` against the bound, on the trials where the
    bound's conditions hold (the others have no bound and are left out; the legend counts them);
    one marker per method, so coinciding estimates stay visible. Right: how many trials are certified,
    per method and input SNR (bars side by side, "not certified" written where none is)."""
    from geninv._optional import pyplot

    plt = pyplot()

    out_dir = Path(out_dir)
    recs = [r for r in load_records(out_dir) if r.get("kind") == "bound"]
    if not recs:
        return []
    exp = for_directory(out_dir)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    ax = axes[0]
    style = {"layered_bp_thm": dict(marker="o", s=70, facecolors="none", linewidths=1.4),
             "latent_pursuit_thm": dict(marker="x", s=30, linewidths=1.2),
             "layered_bp_auto": dict(marker="s", s=70, facecolors="none", linewidths=1.4),
             "latent_pursuit_auto": dict(marker="+", s=45, linewidths=1.2)}
    pts: list[float] = []
    for m in BOUND_METHODS:
        allm = [r for r in recs if r["method"] == m]
        rr = [r for r in allm if r["verdict"] == "holds"]
        if not allm:
            continue
        lab = f"{exp.label(m)}: {len(rr)} of {len(allm)} certified"
        if len(rr) < len(allm):
            lab += f" ({len(allm) - len(rr)} not certified, not drawn)"
        xs, ys = [r["bound_z"] for r in rr], [max(r["error_z"], 1e-17) for r in rr]
        pts += xs + ys
        ax.scatter(xs, ys, color=exp.colors.get(m), label=lab, zorder=3, **style.get(m, {}))
    lo = min([p for p in pts if p > 0], default=1e-3)
    hi = max(pts, default=1.0)
    lim = [10 ** math.floor(math.log10(lo) - 1), 10 ** math.ceil(math.log10(hi) + 1)]
    ax.plot(lim, lim, "k--", lw=0.8, label="error = bound")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lim)
    ax.set_ylim(lim)
    ax.set_xlabel("Theorem 2 bound on $||\\hat z - z||_2$")
    ax.set_ylabel("measured $||\\hat z - z||_2$")
    ax.set_title("trials where the bound's conditions hold")
    ax.legend(fontsize=8.5, loc="upper left")
    ax.grid(True, which="both", alpha=0.2)
    ax = axes[1]
    snrs = sorted({float(r["snr_db"]) for r in recs})
    ms = [m for m in BOUND_METHODS if any(r["method"] == m for r in recs)]
    w = 0.8 / max(1, len(ms))
    top = 1
    for k, m in enumerate(ms):
        for j, x in enumerate(snrs):
            rr = [r for r in recs if r["method"] == m and float(r["snr_db"]) == x]
            if not rr:
                continue
            c = sum(r["verdict"] == "holds" for r in rr)
            top = max(top, len(rr))
            pos = j - 0.4 + w * (k + 0.5)
            ax.bar([pos], [c], width=w * 0.9, color=exp.colors.get(m), alpha=1.0 if m.endswith("_thm") else 0.55,
                   hatch=None if m.endswith("_thm") else "//", label=exp.label(m) if j == 0 else None)
            ax.text(pos, c, f"{c}/{len(rr)}" if c else "not certified", ha="center", va="bottom",
                    rotation=0 if c else 90, fontsize=8)
    ax.set_xticks(range(len(snrs)))
    ax.set_xticklabels([f"{x:g}" for x in snrs])
    ax.set_xlabel("input SNR [dB]")
    ax.set_ylabel("trials where Theorem 2's conditions hold")
    ax.set_ylim(0, top * 1.45)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8.5, loc="upper left", ncol=2)
    st = read_settings(out_dir)["settings"]
    fig.suptitle(f"Theorem 2 on random {st['bound_dims']} generators ({st['bound_output']} output)")
    fig.tight_layout()
    return [save_figure(fig, out_dir / "noise_theorem2.png")]


#: The default method may lose this much z SNR (dB) to the end-to-end Oracle per image (median over images),
#: and this much in its 10 % quantile.
DEFAULT_MEDIAN_SLACK, DEFAULT_TAIL_SLACK = 0.5, 1.5
#: Latent-Pursuit (auto noise) matches the end-to-end Oracle within this many dB (median z SNR), and
#: beats the paper's layer-wise Oracle by at least as much.
LP_MARGIN = 2.0
#: ``noise_level="auto"``: ``sigma_hat / sigma`` within ``[1 / SIGMA_FACTOR, SIGMA_FACTOR]`` on at least
#: ``SIGMA_SHARE`` of the signals.
SIGMA_FACTOR, SIGMA_SHARE = 1.25, 0.9
#: Relative slack of "measured error <= Theorem 2 bound" (floating-point rounding of the bound).
BOUND_SLACK = 1e-9


def _fmt(v: float) -> str:
    """A dB value for people: ``"exact (inf)"``, ``"-"`` when there is none."""
    if math.isnan(v):
        return "-"
    return "exact (inf)" if v == math.inf else ("fail (-inf)" if v == -math.inf else f"{v:.2f}")


def _z(rs: Sequence[dict[str, Any]]) -> np.ndarray:
    return np.array([snr_value(r["snr"]["z"]) for r in rs], dtype=float)


def _default_vs_oracle(ra: Sequence[dict[str, Any]], ro: Sequence[dict[str, Any]], where: str) -> tuple[str, str, str]:
    """The default against the end-to-end Oracle on the same images: the median over images of the
    per-image difference of z SNR (on a few images the difference of the two medians turns on
    single images whose fits are different, equally good minima), and the 10 % quantiles."""
    oz = {r["image"]: snr_value(r["snr"]["z"]) for r in ro}
    pairs = [(snr_value(r["snr"]["z"]), oz[r["image"]]) for r in ra if r["image"] in oz]
    za, zo = np.array([a for a, _ in pairs], dtype=float), np.array([o for _, o in pairs], dtype=float)
    with np.errstate(invalid="ignore"):
        paired = float(np.median(za - zo))
    dm = float(np.median(za) - np.median(zo))
    dq = float(np.percentile(za, 10) - np.percentile(zo, 10))
    ok = paired >= -DEFAULT_MEDIAN_SLACK and dq >= -DEFAULT_TAIL_SLACK
    return (f"Default (auto): per image at most {DEFAULT_MEDIAN_SLACK:g} dB below the end-to-end Oracle's z SNR "
            f"(median over images of the difference), and its 10 % quantile at most {DEFAULT_TAIL_SLACK:g} dB "
            f"below the Oracle's, {where}", "holds" if ok else "does not hold",
            f"median difference {paired:+.2f} dB; medians {_fmt(float(np.median(za)))} vs {_fmt(float(np.median(zo)))} "
            f"(difference {dm:+.2f}), 10 % {_fmt(float(np.percentile(za, 10)))} vs {_fmt(float(np.percentile(zo, 10)))} "
            f"dB ({len(za)} images)")


def noise_claims(out_dir: str | Path) -> list[tuple[str, str, str]]:
    """The claims of a noise directory, each with its threshold in its text: ``(claim, verdict, evidence)``
    with verdict ``"holds"``, ``"does not hold"`` or ``"not certified"`` (Theorem 2 claims with no
    trial inside the theorem's conditions)."""
    recs = load_records(out_dir)
    exp = for_directory(out_dir)
    by, by8 = _by_method(recs), _by_method8(recs)
    bound = [r for r in recs if r.get("kind") == "bound"]
    claims: list[tuple[str, str, str]] = []
    if "auto" in by and "oracle_e2e" in by:
        for x in sorted(set(by["auto"]) & set(by["oracle_e2e"])):
            claims.append(_default_vs_oracle(by["auto"][x], by["oracle_e2e"][x], f"at input SNR {x:g} dB"))
    if by8.get("auto") and by8.get("oracle_e2e"):
        claims.append(_default_vs_oracle(by8["auto"], by8["oracle_e2e"], "on 8-bit images"))
    lp = by.get("latent_pursuit_auto", {})
    for x in sorted(lp):
        a = float(np.median(_z(lp[x])))
        if x in by.get("oracle_e2e", {}):
            o = float(np.median(_z(by["oracle_e2e"][x])))
            claims.append((f"Latent-Pursuit (auto noise): median z SNR within {LP_MARGIN:g} dB (either side) of the "
                           f"end-to-end Oracle's at input SNR {x:g} dB", "holds" if abs(a - o) <= LP_MARGIN else "does not hold",
                           f"median z SNR {_fmt(a)} vs {_fmt(o)} dB ({len(lp[x])} images)"))
        if x in by.get("oracle", {}):
            o = float(np.median(_z(by["oracle"][x])))
            claims.append((f"Latent-Pursuit (auto noise): median z SNR at least {LP_MARGIN:g} dB above the paper's "
                           f"layer-wise Oracle (Algorithm 1) at input SNR {x:g} dB; {DIFFERS}: its Oracle is the reference "
                           "for noisy inversion (Theorem 3), our pursuit's end-to-end refit does better than it",
                           "holds" if a >= o + LP_MARGIN else "does not hold",
                           f"median z SNR {_fmt(a)} vs {_fmt(o)} dB ({len(lp[x])} images)"))
    est = np.array([r["sigma_hat"] / r["sigma"] for d in by.values() for v in d.values() for r in v if "sigma_hat" in r
                    and r["method"] in ("auto", "latent_pursuit_auto", "layered_bp_auto", "hybrid_auto")], dtype=float)
    if est.size:
        inside = float(np.mean((est >= 1 / SIGMA_FACTOR) & (est <= SIGMA_FACTOR)))
        claims.append((f"noise_level='auto' estimates sigma from the fit residual within a factor {SIGMA_FACTOR:g} "
                       f"(sigma_hat / sigma in [{1 / SIGMA_FACTOR:.2f}, {SIGMA_FACTOR:.2f}]) on at least "
                       f"{100 * SIGMA_SHARE:.0f} % of the signals", "holds" if inside >= SIGMA_SHARE else "does not hold",
                       f"{100 * inside:.1f} % inside; sigma_hat / sigma median {np.median(est):.3f}, 5-95 % "
                       f"[{np.percentile(est, 5):.3f}, {np.percentile(est, 95):.3f}] over {est.size} signals"))
    for m in BOUND_METHODS:
        allm = [r for r in bound if r["method"] == m]
        rr = [r for r in allm if r["verdict"] == "holds"]
        if not allm:
            continue
        text = (f"{exp.label(m)}: measured ||z_hat - z||_2 at most the Theorem 2 bound (relative slack {BOUND_SLACK:g}) "
                "on every trial where the theorem's conditions hold")
        if not rr:
            claims.append((text, "not certified", f"none of the {len(allm)} trials is inside the theorem's conditions "
                                                  f"(first reason: {allm[0].get('reason') or 'not given'})"))
            continue
        viol = [r for r in rr if r["error_z"] > r["bound_z"] * (1 + BOUND_SLACK)]
        ratio = max(r["error_z"] / r["bound_z"] for r in rr)
        claims.append((text, "holds" if not viol else "does not hold",
                       f"{len(rr)} of {len(allm)} trials certified, {len(viol)} above the bound, largest error / bound "
                       f"{ratio:.3g}"))
    return claims


def section(out_dir: str | Path, command: str | None = None, generator: str | None = None) -> Any:
    """The tables, claims and figures of a noise directory as a :class:`geninv.experiments.report.Section`."""
    out_dir = Path(out_dir)
    if command is None and (out_dir / "command.txt").exists():
        command = (out_dir / "command.txt").read_text().strip()
    recs = load_records(out_dir)
    by = _by_method(recs)
    theory = [r for r in recs if r.get("kind") == "theory"]
    st = read_settings(out_dir)["settings"]
    exp = for_directory(out_dir)
    sec = Section("Noisy signals y = G(z) + e and 8-bit images", out_dir, command or "geninv reproduce noise")
    sec.notes.append(f"Generator: {generator or st.get('generator_description') or st['generator']}; white Gaussian noise at the input SNR of each column "
                     "(per image); SNRs against the clean layers. Oracle (layer-wise) is the paper's Algorithm 1; "
                     "Oracle (end to end) fits z through the network with the true supports. Theorem 3 rows: the "
                     "expected SNR from the linearized error formulas (geninv.solvers.noise.oracle_expected_error).")
    sec.figures = [f for f in (out_dir / "noise_snr.png", out_dir / "noise_theorem2.png",
                               out_dir / "noise_worst_lowest_snr.png", out_dir / "noise_worst_8bit.png") if f.exists()]
    by8 = _by_method8(recs)
    snrs = sorted({x for d in by.values() for x in d})
    layers = _layer_order(next(iter(next(iter(by.values())).values()))[0]) if by else []
    for layer in layers:
        rows = []
        for m in exp.order(by):
            rows.append([exp.label(m)] + [_fmt(median_snr([r['snr'][layer] for r in by[m][x]])) if by[m].get(x)
                                          else "-" for x in snrs])
        for mode in ("layerwise", "end_to_end"):
            vals = [median_snr([r["expected_snr"][mode][layer] for r in theory if float(r["snr_db"]) == x]) for x in snrs]
            rows.append([f"Theorem 3 expectation, Oracle {mode.replace('_', ' ')}"] + [_fmt(v) for v in vals])
        sec.tables.append(Table(["method"] + [f"{x:g} dB" for x in snrs], rows, caption=f"Median SNR of {layer} [dB]"))
    if by8:
        rows = []
        for m in exp.order(by8):
            v = [snr_value(r["snr"]["z"]) for r in by8[m]]
            rows.append([exp.label(m), _fmt(float(np.median(v))), _fmt(float(np.percentile(v, 10))),
                         _fmt(float(np.median([r['snr_db'] for r in by8[m]])))])
        sec.tables.append(Table(["method", "median z SNR", "10 % quantile", "input SNR (median)"], rows,
                                caption="8-bit quantized images [dB]"))
    sec.claims.extend(noise_claims(out_dir))
    return sec


def noise_summary(out_dir: str | Path, command: str | None = None, generator: str | None = None) -> Path:
    """``summary.md`` and ``summary.json``: median SNR per method, layer and input SNR; the claims on noisy and 8-bit signals."""
    return write_section_summary(section(out_dir, command, generator), "Noisy signals and 8-bit images")

"""Figures of the reproductions, drawn from the records on disk only (never from a live run).

Every function takes a reproduction directory (``records.jsonl`` + ``settings.json``) and
writes PNGs into it, so a figure can be redrawn at any time, also from a half-finished run.
SNRs of ``+inf`` (bit-exact recovery) are drawn at the top of the axis, ``SNR_CAP`` dB, and
failures (``-inf``/NaN) at the bottom, ``SNR_FLOOR`` dB.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geninv._optional import MissingPyplot

try:
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt
except ImportError:  # without geninv[plots] the record readers work and drawing raises, saying how to install it
    plt = MissingPyplot()  # type: ignore[assignment]

from geninv.experiments.common import save_figure  # noqa: E402
from geninv.experiments.records import decode_array, load_records, read_settings, snr_value  # noqa: E402
from geninv.experiments.registry import for_directory  # noqa: E402

__all__ = ["plot_random_sweep", "plot_snr_distributions", "plot_image_grids", "uniqueness_boundaries", "SNR_CAP",
           "SNR_FLOOR", "QUANTILES"]

SNR_CAP = 330.0
SNR_FLOOR = -30.0
QUANTILES = (10, 25, 50, 75, 90)


def _clip(v: Any) -> np.ndarray:
    a = np.array([snr_value(x) for x in v], dtype=float)
    return np.clip(a, SNR_FLOOR, SNR_CAP)


def _interp_crossing(xs: Sequence[float], ys: Sequence[float], level: float, rising: bool) -> float | None:
    """First ``x`` (log-interpolated) where ``ys`` crosses ``level`` upward (or downward)."""
    for i in range(1, len(xs)):
        a, b = ys[i - 1], ys[i]
        hit = (a < level <= b) if rising else (a >= level > b)
        if hit:
            la, lb = math.log(xs[i - 1]), math.log(xs[i])
            f = (level - a) / (b - a)
            return float(math.exp(la + f * (lb - la)))
    return None


def uniqueness_boundaries(out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Where uniqueness changes along ``n_1``, computed from the records.

    Returns
    -------
    dict
        ``cert_fraction``: ``{n1: fraction of trials certified unique}``;
        ``cert_rise`` / ``cert_fall``: ``n_1`` where that fraction crosses 1/2 upward / downward;
        ``median_s1``: ``{n1: median s_1}``; ``s1_eq_n0``, ``s1_eq_half_n``: ``n_1`` where the
        median ``s_1`` crosses ``n_0`` and ``n / 2`` (Corollary 1 for one hidden layer:
        ``n_0 <= s_1 < n / 2``). Crossings are log-linearly interpolated between grid points;
        ``None`` when not crossed inside the grid.
    """
    recs = load_records(out_dir)
    st = read_settings(out_dir)["settings"]
    n0, n = int(st["n0"]), int(st["n"])
    s1: dict[int, list[int]] = defaultdict(list)
    seen: set[tuple[int, int]] = set()
    cert: dict[int, list[float]] = defaultdict(list)
    for r in recs:
        k = (int(r["n1"]), int(r["trial"]))
        if k not in seen:
            seen.add(k)
            s1[k[0]].append(int(r["s"][0]))
        if r.get("kind") == "certify":
            cert[k[0]].append(1.0 if r["unique"] is True else 0.0)
    xs = sorted(s1)
    med = {x: float(np.median(s1[x])) for x in xs}
    frac = {x: float(np.mean(cert[x])) for x in sorted(cert)}
    fx = sorted(frac)
    out = {
        "n0": n0, "n": n, "median_s1": med, "cert_fraction": frac,
        "s1_eq_n0": _interp_crossing(xs, [med[x] for x in xs], n0, rising=True),
        "s1_eq_half_n": _interp_crossing(xs, [med[x] for x in xs], n / 2, rising=True),
        "cert_rise": _interp_crossing(fx, [frac[x] for x in fx], 0.5, rising=True),
        "cert_fall": _interp_crossing(fx, [frac[x] for x in fx], 0.5, rising=False),
    }
    if fx and frac[fx[0]] >= 0.5 and out["cert_rise"] is None:
        out["cert_rise"] = float(fx[0])
    return out


def plot_random_sweep(out_dir: str | os.PathLike[str]) -> list[Path]:
    """Fig. 4: quantile ribbons of the SNR of ``z``, ``x_1``, ``y`` per method versus ``n_1``.

    Ribbons span the 25-75 % quantiles over trials, the line is the median. Methods whose
    medians coincide (several are exact at the same width) are drawn side by side: each
    method's points are shifted by a fixed factor of ``n_1`` (at most 6 %) and later methods
    get smaller, hollow markers, so that no series hides under another. Vertical lines: where the median ``s_1`` crosses ``n_0`` and ``n / 2``
    (Corollary 1) and where the certified-unique fraction crosses 1/2; that fraction is the
    black dotted curve on the right axis.
    """
    out_dir = Path(out_dir)
    recs = [r for r in load_records(out_dir) if r.get("kind") == "solve"]
    b = uniqueness_boundaries(out_dir)
    layers = ["z", "x1", "y"]
    titles = {"z": "latent $z$", "x1": "hidden $x_1$", "y": "image $y = G(\\hat z)$"}
    fig, axes = plt.subplots(1, 3, figsize=(16, 6.2), sharey=True)
    by: dict[str, dict[int, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in recs:
        by[r["method"]][int(r["n1"])].append(r)
    exp = for_directory(out_dir)
    methods = exp.order(by)
    handles: list[Any] = []
    dodge = {m: 1.0 + 0.12 * (k / max(1, len(methods) - 1) - 0.5) for k, m in enumerate(methods)}
    for ax, layer in zip(axes, layers):
        for k, m in enumerate(methods):
            xs = sorted(by[m])
            q = np.array([np.percentile(_clip([r["snr"][layer] for r in by[m][x]]), QUANTILES) for x in xs])
            if not len(xs):
                continue
            c = exp.colors.get(m, None)
            xd = [x * dodge[m] for x in xs]
            ax.fill_between(xd, q[:, 1], q[:, 3], color=c, alpha=0.15, linewidth=0)
            ax.plot(xd, q[:, 2], marker=exp.markers.get(m, "o"), color=c, ms=9 - 4 * k / max(1, len(methods) - 1),
                    mfc=c if k < 3 else "none", mew=1.5, lw=1.6, label=exp.label(m),
                    ls="--" if m in ("oracle", "lp_layerwise") else (":" if m.endswith(":nodebias") else "-"))
        ax.set_xscale("log")
        ax.set_title(f"SNR of {titles[layer]}", fontsize=14)
        ax.set_xlabel("$n_1$ (hidden width)", fontsize=12)
        ax.tick_params(labelsize=11)
        ax.set_ylim(SNR_FLOOR - 5, SNR_CAP + 10)
        ax.grid(True, which="both", alpha=0.25)
        for key, style, lab in (("s1_eq_n0", (0, (4, 2)), "median $s_1 = n_0$"),
                                ("s1_eq_half_n", (0, (1, 1.5)), "median $s_1 = n/2$"),
                                ("cert_rise", "-", "certified unique: 50 %"),
                                ("cert_fall", "-", None)):
            if b.get(key):
                ax.axvline(b[key], color="purple" if key.startswith("cert") else "k", ls=style, lw=1.1,
                           alpha=0.8, label=lab if layer == "z" else None)
        if b["cert_fraction"]:
            tw = ax.twinx()
            fx = sorted(b["cert_fraction"])
            tw.plot(fx, [b["cert_fraction"][x] for x in fx], ":s", color="black", ms=3, lw=1.2,
                    label="fraction certified unique" if layer == "z" else None)
            tw.set_ylim(-0.03, 1.03)
            if layer == "y":
                tw.set_ylabel("fraction certified unique (dotted)")
            else:
                tw.set_yticklabels([])
            if layer == "z":
                handles += tw.get_legend_handles_labels()[0]
        if layer == "z":
            handles = ax.get_legend_handles_labels()[0] + handles
    axes[0].set_ylabel(f"SNR [dB] (exact = top, {SNR_CAP:.0f}; failure = bottom)", fontsize=12)
    st = read_settings(out_dir)["settings"]
    n_trials = max((len(v) for d in by.values() for v in d.values()), default=0)
    fig.suptitle(f"Random two-layer generators: $n_0$ = {st['n0']}, $n$ = {st['n']}, {st['output']} output, "
                 f"{st['dtype']}, up to {n_trials} trials per $n_1$ (ribbons: 25-75 %, line: median; methods side by "
                 "side)", fontsize=13)
    fig.legend(handles, [h.get_label() for h in handles], loc="lower center", ncol=5, fontsize=12, frameon=False,
               markerscale=1.2)
    fig.tight_layout(rect=(0, 0.2, 1, 1))
    return [save_figure(fig, out_dir / "fig4_random_sweep.png")]


def _layer_names(recs: list[dict[str, Any]]) -> list[str]:
    names = list(recs[0]["snr"].keys()) if recs else []
    order = ["z"] + sorted([k for k in names if k.startswith("x")], key=lambda k: int(k[1:])) + ["y"]
    return [k for k in order if k in names]


def plot_snr_distributions(out_dir: str | os.PathLike[str], title: str = "") -> list[Path]:
    """Fig. 5/8/11: box plots of the per-layer SNR, one box per method, one panel per layer."""
    out_dir = Path(out_dir)
    recs = [r for r in load_records(out_dir) if r.get("kind") == "solve"]
    if not recs:
        return []
    layers = _layer_names(recs)
    by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in recs:
        by[r["method"]].append(r)
    exp = for_directory(out_dir)
    methods = exp.order(by)
    fig, axes = plt.subplots(1, len(layers), figsize=(4.0 * len(layers), 4.4), sharey=True)
    axes = np.atleast_1d(axes)
    for ax, layer in zip(axes, layers):
        data = [_clip([r["snr"][layer] for r in by[m]]) for m in methods]
        bp = ax.boxplot(data, whis=(5, 95), showfliers=True, patch_artist=True, widths=0.6,
                        flierprops={"markersize": 2.5, "alpha": 0.5})
        for patch, m in zip(bp["boxes"], methods):
            patch.set_facecolor(exp.colors.get(m, "#cccccc"))
            patch.set_alpha(0.55)
        ax.set_xticks(range(1, len(methods) + 1), [exp.label(m) for m in methods], rotation=25, fontsize=11,
                      ha="right")
        name = "z" if layer == "z" else ("y = G(\\hat z)" if layer == "y" else f"x_{layer[1:]}")
        ax.set_title(f"SNR of ${name}$", fontsize=13)
        ax.tick_params(axis="y", labelsize=11)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].set_ylabel(f"SNR [dB] (exact shown at {SNR_CAP:.0f})")
    n_img = max(len(v) for v in by.values())
    fig.suptitle(f"{title} per-layer SNR over {n_img} images (boxes: 25-75 %, whiskers: 5-95 %)", fontsize=13)
    fig.tight_layout()
    return [save_figure(fig, out_dir / "snr_boxplot.png")]


def _to_rgb(img: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """A [-1, 1] image as grey RGB; hidden pixels (``mask`` False) in red."""
    g = np.clip((img + 1.0) / 2.0, 0.0, 1.0)
    rgb = np.stack([g, g, g], axis=-1)
    if mask is not None:
        rgb[~mask] = (0.85, 0.1, 0.1)
    return rgb


def plot_image_grids(out_dir: str | os.PathLike[str], k: int = 8, title: str = "") -> list[Path]:
    """Fig. 6-7 / 9-10 / 12-13: image grids of typical successes and of gradient descent's failures.

    Rows: ground truth, the masked input (hidden pixels in red, when a mask was used),
    gradient descent, Latent-Pursuit (and any other method with images in the records).
    "Typical" = the ``k`` images whose Latent-Pursuit image SNR is closest to its median;
    "failures" = the ``k`` images with the lowest gradient-descent image SNR.
    """
    out_dir = Path(out_dir)
    recs = [r for r in load_records(out_dir) if r.get("kind") == "solve" and "y_hat" in r]
    if not recs:
        return []
    img: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    for r in recs:
        img[r["method"]][int(r["image"])] = r
    exp = for_directory(out_dir)
    rows = [m for m in ("gd", "latent_pursuit") if m in img] or exp.order(img)[:2]
    common = sorted(set.intersection(*(set(img[m]) for m in rows)))
    if not common:
        return []
    side = math.isqrt(int(np.prod(recs[0]["y_hat"]["shape"])))
    paths = []
    anchor = "latent_pursuit" if "latent_pursuit" in img else rows[-1]
    med = float(np.median([snr_value(img[anchor][i]["snr"]["y"]) for i in common]))
    typical = sorted(common, key=lambda i: (abs(_finite(img[anchor][i]["snr"]["y"]) - med), i))[:k]
    worst_by = "gd" if "gd" in img else rows[0]
    failures = sorted(common, key=lambda i: (snr_value(img[worst_by][i]["snr"]["y"]), i))[:k]
    groups = [("typical", sorted(typical), f"typical results (Latent-Pursuit image SNR nearest its median, {med:.1f} dB)"),
              ("gd_failures", failures, f"{exp.label(worst_by)}'s worst images (lowest image SNR)")]
    masked = any("mask" in img[rows[0]][i] for i in common)
    for name, idx, sub in groups:
        row_names = ["ground truth"] + (["input (red = missing)"] if masked else []) + [exp.label(m) for m in rows]
        fig, axes = plt.subplots(len(row_names), len(idx), figsize=(1.35 * len(idx) + 1.4, 1.5 * len(row_names)),
                                 squeeze=False)
        for j, i in enumerate(idx):
            r0 = img[rows[0]][i]
            y = decode_array(r0["y_true"]).reshape(side, side)
            cells: list[tuple[np.ndarray, str]] = [(_to_rgb(y), f"#{i}")]
            if masked:
                mk = decode_array(r0["mask"]).reshape(side, side)
                cells.append((_to_rgb(y, mk), f"{100 * (1 - mk.mean()):.0f}% hidden"))
            for m in rows:
                r = img[m][i]
                cells.append((_to_rgb(decode_array(r["y_hat"]).reshape(side, side)),
                              f"{_fmt(r['snr']['y'])} dB"))
            for rr, (im, cap) in enumerate(cells):
                ax = axes[rr, j]
                ax.imshow(im, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_xlabel(cap, fontsize=9, labelpad=1)
                if j == 0:
                    ax.set_ylabel(row_names[rr], fontsize=10)
        fig.suptitle(f"{title}{sub}", fontsize=11)
        fig.tight_layout()
        paths.append(save_figure(fig, out_dir / f"grid_{name}.png"))
    return paths


def _finite(v: Any) -> float:
    f = snr_value(v)
    return float(np.clip(f, SNR_FLOOR, SNR_CAP))


def _fmt(v: Any) -> str:
    f = snr_value(v)
    if f == math.inf:
        return "exact"
    if f == -math.inf:
        return "fail"
    return f"{f:.1f}"

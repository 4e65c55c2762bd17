"""Dense against matrix-free convolutional layers, side by side in one run.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/conv_matrix_free.py [--out benchmarks/results] [--images 16]
        [--dcgan-images 8] [--large-images 4]

(a) The two shipped convolutional generators, read twice: with every layer's ``W`` materialized
    (the default import) and with every layer kept matrix-free (``memory_budget=1``: the layers'
    operators only). Each method on the same clean signals (``G.sample(B, seed=1)``, float64):
    wall seconds per image of each, their ratio, the median image SNR of each and the largest
    relative difference between the two ``z``.
(b) A 3 x 64 x 64 generator (z 16 -> 16x8x8 -> 12x16x16 -> 8x32x32 -> 3x64x64, ReLU, tanh output,
    seeded default initialization) whose last layer's dense ``W`` (12288 x 8192, 805 MB in
    float64) is above the default memory budget: the methods run on its operators alone, against
    the planted latents.

One torch thread; the first call of each method is a warm-up on 2 signals. Writes
``conv_matrix_free.json``, ``README_conv_matrix_free.md`` and ``conv_matrix_free.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

import torch

METHODS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("oracle", {}),
    ("latent_pursuit", {"noise_level": 0}),
    ("layered_bp", {"noise_level": 0}),
    ("hybrid", {"noise_level": 0}),
    ("auto", {"noise_level": 0}),
    ("gd", {"max_iter": 300}),
)


def _run(G: Any, y: torch.Tensor, z: torch.Tensor, method: str, kw: dict[str, Any]) -> tuple[Any, float]:
    import geninv

    opts = dict(kw)
    if method == "oracle":
        opts["supports"] = G.trace(z).supports
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # gd's ConvergenceWarning on its capped iterations
        t0 = time.perf_counter()
        res = geninv.invert(G, y, method=method, **opts)
        return res, time.perf_counter() - t0


def _median_image_snr(G: Any, y: torch.Tensor, zhat: torch.Tensor) -> float:
    import geninv

    with torch.no_grad():
        return float(geninv.snr(G.flatten_output(y), G.flatten_output(G(zhat))).median())


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).norm(dim=1) / b.norm(dim=1).clamp_min(1e-300)).max())


def shipped(name: str, images: int) -> dict[str, Any]:
    from geninv.weights import load_conv_generator

    dense = load_conv_generator(name, dtype=torch.float64)
    free = load_conv_generator(name, dtype=torch.float64, memory_budget=1)
    z, y = dense.sample(images, seed=1)
    zw, yw = dense.sample(2, seed=7)
    rows = []
    for method, kw in METHODS:
        row: dict[str, Any] = {"method": method}
        out = {}
        for tag, G in (("dense", dense), ("matrix_free", free)):
            _run(G, yw, zw, method, kw)  # warm-up (caches, first calls)
            res, sec = _run(G, y, z, method, kw)
            out[tag] = res
            row[f"{tag}_seconds_per_image"] = sec / images
            row[f"{tag}_median_image_snr_db"] = _median_image_snr(dense, y, res.z)
            row[f"{tag}_solver"] = res.info.get("solver")
            print(f"{name} {method} {tag}: {sec / images:.3f} s/image, "
                  f"{row[f'{tag}_median_image_snr_db']:.1f} dB", flush=True)
        row["ratio_dense_over_matrix_free"] = row["dense_seconds_per_image"] / row["matrix_free_seconds_per_image"]
        row["max_relative_z_difference"] = _rel(out["matrix_free"].z, out["dense"].z)
        rows.append(row)
    return {"generator": name, "dims": dense.dims, "images": images,
            "dense_weight_bytes": [layer.n_out * layer.n_in * 8 for layer in dense.layers], "rows": rows}


def large(images: int) -> dict[str, Any]:
    from torch import nn

    import geninv

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(16, 16 * 8 * 8), nn.Unflatten(1, (16, 8, 8)), nn.ReLU(),
        nn.ConvTranspose2d(16, 12, 4, stride=2, padding=1), nn.ReLU(),
        nn.ConvTranspose2d(12, 8, 4, stride=2, padding=1), nn.ReLU(),
        nn.ConvTranspose2d(8, 3, 4, stride=2, padding=1), nn.Tanh(),
    ).double().eval()
    t0 = time.perf_counter()
    G = geninv.Generator.from_torch(net)
    import_s = time.perf_counter() - t0
    z, y = G.sample(images, seed=1)
    rows = []
    for method, kw in METHODS:
        res, sec = _run(G, y, z, method, kw)
        rows.append({"method": method, "seconds_per_image": sec / images,
                     "median_latent_snr_db": float(geninv.snr(z, res.z).median()),
                     "median_image_snr_db": _median_image_snr(G, y, res.z),
                     "fits": int(res.fits.sum()) if res.fits is not None else None, "solver": res.info.get("solver")})
        print(f"3x64x64 {method}: {sec / images:.3f} s/image, z SNR {rows[-1]['median_latent_snr_db']:.1f} dB", flush=True)
    return {"dims": G.dims, "output_shape": list(G.output_shape), "images": images, "import_seconds": import_s,
            "matrix_free_layers": [i + 1 for i, layer in enumerate(G.layers) if layer.matrix_free],
            "dense_weight_bytes": [layer.n_out * layer.n_in * 8 for layer in G.layers], "rows": rows}


def _plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(res["shipped"]), figsize=(6 * len(res["shipped"]), 4), squeeze=False)
    for ax, gen in zip(axes[0], res["shipped"]):
        names = [r["method"] for r in gen["rows"]]
        x = torch.arange(len(names)).tolist()
        ax.bar([i - 0.2 for i in x], [r["dense_seconds_per_image"] for r in gen["rows"]], 0.4, label="dense W")
        ax.bar([i + 0.2 for i in x], [r["matrix_free_seconds_per_image"] for r in gen["rows"]], 0.4,
               label="matrix-free (operators)")
        ax.set_xticks(x, names, rotation=30)
        ax.set_yscale("log")
        ax.set_ylabel("seconds per image")
        ax.set_title(f"{gen['generator']} ({' -> '.join(map(str, gen['dims']))}), {gen['images']} clean images")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _markdown(res: dict[str, Any], cmd: str) -> str:
    lines = ["# Dense against matrix-free convolutional layers", "", f"Command: `{cmd}`", "",
             f"torch {res['torch']}, {res['threads']} thread(s), load average {res['load_before']} before, "
             f"{res['load_after']} after.", ""]
    for gen in res["shipped"]:
        lines += [f"## {gen['generator']}: {' -> '.join(map(str, gen['dims']))}, {gen['images']} clean images, float64",
                  "", "| method | dense s/image | matrix-free s/image | dense / matrix-free | median image SNR dense / "
                  "matrix-free [dB] | max relative z difference |", "|---|---|---|---|---|---|"]
        for r in gen["rows"]:
            lines.append(f"| {r['method']} | {r['dense_seconds_per_image']:.4f} | {r['matrix_free_seconds_per_image']:.4f} "
                         f"| {r['ratio_dense_over_matrix_free']:.2f}x | {r['dense_median_image_snr_db']:.1f} / "
                         f"{r['matrix_free_median_image_snr_db']:.1f} | {r['max_relative_z_difference']:.1e} |")
        lines.append("")
    big = res["large"]
    lines += [f"## {' x '.join(map(str, big['output_shape']))} generator: {' -> '.join(map(str, big['dims']))}, "
              f"{big['images']} planted latents, float64", "",
              f"Matrix-free layers (default memory budget): {big['matrix_free_layers']} (dense W would take "
              f"{', '.join(f'{b / 2**20:.0f} MiB' for b in big['dense_weight_bytes'])}); import {big['import_seconds']:.1f} s.",
              "", "| method | s/image | median latent SNR [dB] | median image SNR [dB] | fit |", "|---|---|---|---|---|"]
    for r in big["rows"]:
        lines.append(f"| {r['method']} | {r['seconds_per_image']:.3f} | {r['median_latent_snr_db']:.1f} | "
                     f"{r['median_image_snr_db']:.1f} | {r['fits']}/{big['images']} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--images", type=int, default=16, help="clean images on conv_expansive")
    ap.add_argument("--dcgan-images", type=int, default=8, help="clean images on conv_dcgan (its dense pursuits are slow)")
    ap.add_argument("--large-images", type=int, default=4, help="planted latents on the 3x64x64 generator")
    a = ap.parse_args()
    torch.set_num_threads(1)
    load0 = os.getloadavg()
    res: dict[str, Any] = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    res["shipped"] = [shipped("conv_expansive", a.images), shipped("conv_dcgan", a.dcgan_images)]
    res["large"] = large(a.large_images)
    res["load_before"] = [round(x, 2) for x in load0]
    res["load_after"] = [round(x, 2) for x in os.getloadavg()]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "conv_matrix_free.json").write_text(json.dumps(res, indent=2) + "\n")
    cmd = "OMP_NUM_THREADS=1 python benchmarks/conv_matrix_free.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(a).items())
    (out / "README_conv_matrix_free.md").write_text(_markdown(res, cmd))
    _plot(res, out / "conv_matrix_free.png")
    print(f"wrote {out / 'README_conv_matrix_free.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

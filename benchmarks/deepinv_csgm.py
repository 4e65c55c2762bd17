"""geninv's default pursuit against deepinv's generative-prior baseline, on the same images, in one run.

    .venv/bin/python benchmarks/deepinv_csgm.py [--images 64] [--threads 1] [--out benchmarks/results/deepinv_csgm.json]

Both reconstruct the same ``--images`` images ``x = G(z)`` of the shipped MNIST generator
(``z ~ N(0, I)``, seed 0, float32) from the same measurements, through ``deepinv.test`` with the
same physics and deepinv's PSNR (``max_pixel=2``: the images lie in [-1, 1]):

- ``geninv``: :class:`geninv.integrations.deepinv.GenInvReconstructor` (Latent-Pursuit, the
  default method), the whole batch in one call; ``geninv_hybrid``: the same with ``method="hybrid"``;
- ``csgm_shared``: ``deepinv.models.CSGMGenerator`` as deepinv runs it on a batch: one Adam run
  from one random start, one latent vector shared by the batch;
- ``csgm_per_image``: the same, one image per batch (a latent vector of its own per image).

CSGM keeps deepinv's defaults (``inf_max_iter=2500``, ``inf_lr=1e-2``, ``inf_tol=1e-4``) on a
backbone holding the same weights. Written: the JSON file (machine, settings, per physics and
method the wall time, seconds per image and PSNR statistics), printed as a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

import geninv
from geninv.integrations import deepinv as gdi

dinv = gdi.dinv
IMG = (1, 28, 28)


class Backbone(nn.Module):
    """The geninv generator as the ``backbone_generator`` CSGMGenerator expects: z (B, nz, 1, 1) -> (B, 1, 28, 28)."""

    def __init__(self, G: geninv.Generator) -> None:
        super().__init__()
        self.net = G.to_torch()
        self.nz = G.latent_dim

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.reshape(z.shape[0], -1)).reshape(z.shape[0], *IMG)


def physics_settings(seed: int) -> dict[str, Any]:
    def rng(k: int) -> torch.Generator:
        return torch.Generator().manual_seed(seed + k)

    # m = 500: Latent-Pursuit's image layer needs m > 2 s_L (about 420 for this generator).
    return {
        "compressed sensing, m = 500": dinv.physics.CompressedSensing(m=500, img_size=IMG, rng=rng(1)),
        "inpainting, 45 % pixels missing": dinv.physics.Inpainting(img_size=IMG, mask=0.55, rng=rng(2)),
        "compressed sensing, m = 500, noise sigma = 0.05": dinv.physics.CompressedSensing(
            m=500, img_size=IMG, rng=rng(3), noise_model=dinv.physics.GaussianNoise(sigma=0.05, rng=rng(4))),
    }


def run_one(model: nn.Module, x: torch.Tensor, y: torch.Tensor, physics: Any, batch: int) -> dict[str, Any]:
    """One ``deepinv.test`` run (timed); the reconstructions are caught by a forward hook for per-image PSNRs."""
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch)
    metric = dinv.metric.PSNR(max_pixel=2.0)
    outs: list[torch.Tensor] = []
    # CSGMGenerator returns one image for a whole batch (its shared latent vector): broadcast it, as deepinv's metric does.
    hook = model.register_forward_hook(lambda m, inp, out: outs.append(out.detach().expand(inp[0].shape[0], *out.shape[1:])))
    t0 = time.perf_counter()
    summary = dinv.test(model, loader, physics, metrics=metric, online_measurements=False, compare_no_learning=False,
                        show_progress_bar=False, verbose=False, non_blocking_transfers=False)
    seconds = time.perf_counter() - t0
    hook.remove()
    x_hat = torch.cat(outs)
    if x_hat.shape != x.shape:
        raise RuntimeError(f"expected one reconstruction per image, {tuple(x.shape)}, caught {tuple(x_hat.shape)}")
    psnrs = [float(v) for v in metric(x_hat, x)]
    return {
        "seconds": seconds, "seconds_per_image": seconds / x.shape[0], "batch": batch,
        "psnr_mean": statistics.fmean(psnrs), "psnr_median": statistics.median(psnrs),
        "psnr_min": min(psnrs), "fraction_above_40db": sum(p > 40 for p in psnrs) / len(psnrs),
        "dinv_test_psnr_mean": float(summary["PSNR"]), "psnr": psnrs,
        **({"converged_fraction": float(model.result.converged.double().mean())}
           if isinstance(model, gdi.GenInvReconstructor) else {}),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--csgm-iters", type=int, default=2500, help="CSGMGenerator's inf_max_iter (deepinv's default 2500)")
    ap.add_argument("--out", default="benchmarks/results/deepinv_csgm.json")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    G = geninv.load_mnist_generator()
    _, x_flat = G.sample(a.images, seed=a.seed)
    x = x_flat.reshape(a.images, *IMG)
    runs = []
    settings = physics_settings(a.seed)
    methods = ("geninv", "geninv_hybrid", "csgm_shared", "csgm_per_image")
    jobs = [(name, method) for name in settings for method in methods]
    for name, method in tqdm(jobs, desc="deepinv_csgm", unit="run"):
        physics = settings[name]
        with torch.no_grad():
            y = physics(x)  # the measurements, noise drawn once; every method gets the same y
        torch.manual_seed(a.seed)  # CSGM's random start
        if method.startswith("geninv"):
            model: nn.Module = gdi.GenInvReconstructor(G, "hybrid" if method == "geninv_hybrid" else "latent_pursuit")
            res = run_one(model, x, y, physics, a.images)
        else:
            model = dinv.models.CSGMGenerator(Backbone(G), inf_max_iter=a.csgm_iters).eval()
            res = run_one(model, x, y, physics, a.images if method == "csgm_shared" else 1)
        runs.append({"physics": name, "method": method, **res})
    by = {(r["physics"], r["method"]): r for r in runs}
    for name in settings:
        for method in ("csgm_shared", "csgm_per_image"):
            r = by[(name, method)]
            for mine in ("geninv", "geninv_hybrid"):
                g = by[(name, mine)]
                r[f"{mine}_speedup"] = r["seconds"] / g["seconds"]
                r[f"{mine}_psnr_gain_db"] = g["psnr_median"] - r["psnr_median"]
    out = {
        "command": "python benchmarks/deepinv_csgm.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "deepinv": dinv.__version__,
                    "torchvision_stand_in": gdi.TORCHVISION_STAND_IN, "threads": torch.get_num_threads(),
                    "cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
        "images": a.images, "generator": repr(G), "seed": a.seed, "csgm_inf_max_iter": a.csgm_iters,
        "runs": runs,
    }
    path = Path(a.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(f"{'physics':<48} {'method':<15} {'s total':>8} {'s/image':>9} {'PSNR med':>9} {'PSNR min':>9} {'>40dB':>6}")
    for r in runs:
        print(f"{r['physics']:<48} {r['method']:<15} {r['seconds']:8.2f} {r['seconds_per_image']:9.4f} "
              f"{r['psnr_median']:9.1f} {r['psnr_min']:9.1f} {r['fraction_above_40db']:6.2f}")
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

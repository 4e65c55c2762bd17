"""Inpainting with a deepinv physics and geninv's Latent-Pursuit, scored by deepinv.

    python examples/deepinv_inpainting.py [--images 16] [--missing 0.45] [--out results/deepinv_inpainting]

Needs the extras ``geninv[deepinv,plots]``. Digits ``x = G(z)`` of the shipped MNIST generator
are measured by ``deepinv.physics.Inpainting`` (a random fraction ``--missing`` of the pixels
hidden, Gaussian noise ``--sigma``), then reconstructed three ways that agree:

1. ``geninv.invert(G, y, measure=physics)``: the physics is recognized and wrapped (its
   noiseless ``A`` as a geninv pixel mask, its noise level read from ``noise_model.sigma``);
2. ``GenInvReconstructor(G)(y, physics)``: geninv as a deepinv reconstruction model;
3. ``deepinv.test(GenInvReconstructor(G), ...)``: deepinv's test loop and PSNR.

Writes ``grid.png`` (rows: images, measurements with hidden pixels in grey, reconstructions)
and prints the PSNRs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import geninv
from geninv.data import save_image_grid
from geninv.integrations.deepinv import GenInvReconstructor, as_operator, dinv


def main() -> None:
    ap = argparse.ArgumentParser(description="Inpainting with a deepinv physics and geninv")
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--missing", type=float, default=0.45, help="fraction of hidden pixels")
    ap.add_argument("--sigma", type=float, default=0.02, help="noise standard deviation (images in [-1, 1])")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="results/deepinv_inpainting")
    a = ap.parse_args()

    G = geninv.load_mnist_generator()                        # 20 -> 128 -> 392 -> 784, PLU output
    _, x_flat = G.sample(a.images, seed=a.seed)
    x = x_flat.reshape(-1, 1, 28, 28)                        # deepinv's image layout (B, C, H, W)
    physics = dinv.physics.Inpainting(
        img_size=(1, 28, 28), mask=1.0 - a.missing, rng=torch.Generator().manual_seed(a.seed),
        noise_model=dinv.physics.GaussianNoise(sigma=a.sigma, rng=torch.Generator().manual_seed(a.seed + 1)),
    )
    y = physics(x)                                           # noisy measurements, drawn once

    res = geninv.invert(G, y, measure=physics)               # 1. wrapped by invert
    model = GenInvReconstructor(G)                           # 2. a deepinv Reconstructor
    x_hat = model(y, physics)
    psnr = dinv.metric.PSNR(max_pixel=2.0)                   # the images lie in [-1, 1]
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=a.images)
    scores = dinv.test(model, loader, physics, metrics=psnr, online_measurements=False,  # 3. deepinv's test loop
                       compare_no_learning=False, show_progress_bar=False, verbose=False, non_blocking_transfers=False)

    print(f"invert(..., measure=physics): median PSNR {psnr(G(res.z).reshape(x.shape), x).median():.1f} dB, "
          f"noise level read from the physics {as_operator(physics).noise_level:.3g}")
    print(f"GenInvReconstructor:          median PSNR {psnr(x_hat, x).median():.1f} dB, "
          f"solved in {model.result.seconds:.2f} s (z_hat {tuple(model.z_hat.shape)} kept on the model)")
    print(f"deepinv.test:                 mean PSNR {scores['PSNR']:.1f} dB")
    shown = torch.where(physics.mask.bool(), y, torch.zeros_like(y))  # hidden pixels grey (0 = mid-range)
    out = Path(a.out)
    grid = torch.cat([x, shown, x_hat]).reshape(-1, 784)
    path = save_image_grid(grid, out / "grid.png", nrow=a.images,
                           title=f"rows: G(z); Inpainting ({a.missing:.0%} hidden, sigma {a.sigma}); geninv")
    print(f"written {path}")


if __name__ == "__main__":
    main()

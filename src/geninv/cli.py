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
    p.add_argument("experiment", choices=["random", "mnist", "inpaint", "report"])
    p.add_argument("--mask", choices=["random", "block"], default="random", help="inpaint: which mask")
    p.add_argument("--missing", type=float, default=0.45, help="inpaint --mask random: fraction of hidden pixels")
    p.add_argument("--quick", action="store_true", help="small grid, about a minute on 2 CPU cores")
    p.add_argument("--out", default=None, help="output directory (default results/[quick/]NAME)")
    p.add_argument("--trials", type=int, default=None, help="trials per n_1 (random) or images (mnist, inpaint)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--methods", default=None, help="comma-separated methods (default: the paper's)")
    p.add_argument("--n1", default=None, help="random: comma-separated hidden widths (default: the mode's grid)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    def run(a: argparse.Namespace) -> int:
        from geninv.experiments.demo import reproduce_cli

        methods = [m.strip() for m in a.methods.split(",") if m.strip()] if a.methods else None
        if a.experiment == "report":
            return reproduce_cli("report", out=a.out)
        return reproduce_cli(a.experiment, mask=a.mask, quick=a.quick, out=a.out, trials=a.trials, seed=a.seed,
                             methods=methods, missing=a.missing, progress=not a.no_progress, n1=a.n1)

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
    from pathlib import Path

    import numpy as np
    import torch

    from geninv.exceptions import InputError, ModelFileError

    p = Path(path)
    if not p.is_file():
        raise ModelFileError(f"--z: expected an existing .npy or .safetensors file, received {path!r}")
    if p.suffix == ".npy":
        try:
            arr = np.load(p, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise ModelFileError(f"--z: expected a .npy array, could not read {path!r}: {e}") from None
        z = torch.from_numpy(np.asarray(arr, dtype=np.float64))
    elif p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(p))
        except Exception as e:  # safetensors raises its own error types
            raise ModelFileError(f"--z: expected a safetensors file, could not read {path!r}: {e}") from None
        if "z" in tensors:
            z = tensors["z"]
        elif len(tensors) == 1:
            z = next(iter(tensors.values()))
        else:
            raise InputError(f"--z: expected a tensor named 'z' or a single tensor, received {sorted(tensors)}")
        z = z.to(torch.float64)
    else:
        raise InputError(f"--z: expected a .npy or .safetensors file, received {path!r}")
    return z if z.ndim == 2 else z.reshape(1, -1)


# Registration order is the order in `geninv --help`.
_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_cmd_demo, _cmd_reproduce]  # type: ignore[type-arg]
_COMMANDS += [_cmd_certify]


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
        p.error = make(p)  # type: ignore[method-assign]
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

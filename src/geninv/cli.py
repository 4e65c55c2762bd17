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


# Registration order is the order in `geninv --help`.
_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_cmd_demo, _cmd_reproduce]  # type: ignore[type-arg]


def build_parser() -> argparse.ArgumentParser:
    from geninv import __version__

    parser = argparse.ArgumentParser(prog="geninv", description="Invert deep generative models.")
    parser.add_argument("--version", action="version", version=f"geninv {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in _COMMANDS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except GenInvError as e:
        print(f"geninv {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"geninv {args.command}: interrupted; finished work is kept on disk", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

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
    p = sub.add_parser("demo", help="invert a batch from a random generator and print an SNR table")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=16)

    def run(a: argparse.Namespace) -> int:
        from geninv.experiments.demo import run_demo

        return run_demo(seed=a.seed, batch=a.batch)

    p.set_defaults(func=run)


# Registration order is the order in `geninv --help`.
_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_cmd_demo]  # type: ignore[type-arg]


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

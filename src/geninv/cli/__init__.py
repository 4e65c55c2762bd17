"""Command-line interface: ``geninv <command>``. Parses arguments and calls the library.

Every command is registered by a ``register`` function of one module of this package (listed in
``_COMMANDS`` below); errors raised on purpose (:class:`geninv.GenInvError`) end the program with
one line and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from geninv.cli import bench, generators, invert, reproduce
from geninv.cli.common import cli_names, one_line, one_line_parser_errors, one_line_warning
from geninv.exceptions import GenInvError, InputError

# Registration order is the order in `geninv --help`.
_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [  # type: ignore[type-arg]
    reproduce.register_demo, reproduce.register_reproduce,
    generators.register_train, generators.register_sample, generators.register_check_mnist_generator,
    invert.register_certify, invert.register_invert,
    bench.register_bench,
]


def build_parser() -> argparse.ArgumentParser:
    """The ``geninv`` parser with the commands of ``_COMMANDS``, in that order."""
    from geninv.version import __version__

    parser = argparse.ArgumentParser(prog="geninv", description="Invert deep generative models.")
    parser.add_argument("--version", action="version", version=f"geninv {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in _COMMANDS:
        register(sub)
    return parser


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
    one_line_parser_errors(parser)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    name = f"geninv {args.command}"
    saved_format = warnings.formatwarning
    warnings.formatwarning = one_line_warning  # type: ignore[assignment]
    try:
        if getattr(args, "threads", None) is not None and args.threads < 1:
            raise InputError(f"--threads: expected a positive integer, received {args.threads}")
        if hasattr(args, "threads"):
            from geninv._threads import set_threads

            set_threads(args.threads)
        return int(args.func(args) or 0)
    except GenInvError as e:
        print(f"{name}: error: {cli_names(one_line(e), getattr(args, 'flag_names', {}))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        note = getattr(args, "interrupted", None)
        print(f"{name}: interrupted" + (f"; {note}" if note else ""), file=sys.stderr)
        return 130
    except OSError as e:
        print(f"{name}: error: {one_line(e)}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - the CLI promises one line, never a traceback
        if os.environ.get("GENINV_DEBUG"):
            raise
        print(f"{name}: internal error: {type(e).__name__}: {one_line(e)} (a bug in geninv, please report it; "
              "GENINV_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 70
    finally:
        warnings.formatwarning = saved_format


if __name__ == "__main__":
    sys.exit(main())

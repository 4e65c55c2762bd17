"""What every command shares: the runtime and MODEL flag groups, one-line messages, and library
parameter names mapped to the flags that set them."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from pathlib import Path

ACTIVATIONS = ("tanh", "sigmoid", "relu", "leaky_relu", "identity", "plu")


def add_runtime(p: argparse.ArgumentParser, *, cpu_only: bool = False) -> None:
    """``--threads`` and ``--device``, on every command."""
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch CPU threads (default 1, or OMP_NUM_THREADS if set: one thread is as fast on these "
                        "matrix sizes and does not slow down on a busy machine; OpenMP waits passively)")
    if cpu_only:
        p.add_argument("--device", default="cpu", choices=["cpu"],
                       help="where to compute: this command runs on the CPU only")
    else:
        p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (cuda when available); default cpu")


def add_model(p: argparse.ArgumentParser, *, optional: bool, group: argparse._MutuallyExclusiveGroup | None = None,
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
    p.add_argument("--output", default=None, choices=ACTIVATIONS,
                   help="output activation of " + ("--random or " if random_output else "") + "--arch (default tanh)")


# -- one-line messages ----------------------------------------------------------


def one_line(text: object) -> str:
    """``text`` on one line: every run of whitespace, newlines included, as one space."""
    return " ".join(str(text).split())


def one_line_parser_errors(parser: argparse.ArgumentParser) -> None:
    # argparse prints a usage block before a usage error; print one line (and the --help hint) instead.
    def make(p: argparse.ArgumentParser) -> Callable[[str], None]:
        def error(message: str) -> None:
            p.exit(2, f"{p.prog}: error: {one_line(message)} (see {p.prog} --help)\n")

        return error

    stack = [parser]
    while stack:
        p = stack.pop()
        p.error = make(p)  # type: ignore[method-assign,assignment]
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                stack.extend(action.choices.values())


def one_line_warning(message: Warning | str, category: type[Warning], *args: object, **kwargs: object) -> str:
    return f"geninv: {category.__name__}: {one_line(message)}\n"


def cli_names(message: str, names: dict[str, str]) -> str:
    """A library message with its leading parameter name given as the CLI flag that sets it.

    The name is the first word before the message's first colon, as in ``y: ...``,
    ``y[3]: ...`` or ``path '/data': ...``; other messages are returned unchanged.
    """
    head, sep, _ = message.partition(":")
    match = re.match(r"[A-Za-z_][A-Za-z0-9_]*", head)
    if sep and match and match.group() in names and (len(head) == match.end() or head[match.end()] in " [("):
        return names[match.group()] + message[match.end():]
    return message



def check_bound(value: float | None, flag: str, low: float, *, strict: bool = False) -> None:
    """Refuse ``value < low`` (``value <= low`` when ``strict``) and NaN for ``flag``; None (flag absent) passes."""
    from geninv.exceptions import InputError

    if value is not None and not (value > low if strict else value >= low):
        raise InputError(f"{flag}: expected a number {'>' if strict else '>='} {low:g}, received {value}")


def write_json(path: str | Path, record: object) -> Path:
    """``record`` as indented JSON at ``path`` (parent directories made); prints ``wrote PATH``."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")
    return out

"""Every default a docstring states equals the default in the signature.

The docstrings are numpydoc; a parameter's entry states its default as ``(default X)``,
``(default: X)``, ``default X;``, ``Default X.`` or ``X (default)``, and an entry for several
parameters (``max_iter, tol : int, float``) as ``(default A, B)``. This test reads each public
function, method and class of every ``geninv`` module (and the help text of every CLI flag),
takes each stated default that is a Python literal, and compares it with the signature's (or
argparse's) default. Not compared: a stated default that is not a literal (``default the
largest allowed``, ``default 1e-7 in float64``), and a stated value where the signature's
default is None (None means "computed when not given"; the docstring then states the computed
value, e.g. ``tol`` from the dtype).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import math
import pkgutil
import re
from typing import Any

import pytest

import geninv

# "default" then an optional ":" / "=" / "is", then a value: ``literal``, a quoted string, a
# number, True / False / None, or a parenthesized tuple; the value must end its phrase.
_VALUE = r"(``[^`]+``|\"[^\"]*\"|'[^']*'|\([^()]*\)|[-+]?(?:\d[\d_]*\.?\d*(?:e[-+]?\d+)?|\.\d+(?:e[-+]?\d+)?)|True|False|None)"
_END = r"(?=\s*(?:[);:(]|[.,](?:\s|$)|$))"
_DEFAULT = re.compile(r"\bdefault(?:s to|\s*[:=]|\s+is)?\s+" + _VALUE + _END, re.IGNORECASE)
_DEFAULT_AFTER = re.compile(_VALUE + r"\s+\(default\)")
_HEADER = re.compile(r"^(\*{0,2}[A-Za-z_]\w*(?:\s*,\s*\*{0,2}[A-Za-z_]\w*)*)\s*(?::\s*(.*))?$")


def _literal(text: str) -> tuple[bool, Any]:
    """``(True, value)`` when ``text`` is a Python literal, else ``(False, None)``."""
    t = text.strip()
    if t.startswith("``") and t.endswith("``"):
        t = t[2:-2].strip()
    try:
        return True, ast.literal_eval(t)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False, None


def _equal(doc: Any, sig: Any) -> bool:
    if isinstance(doc, bool) or isinstance(sig, bool) or doc is None or sig is None:
        return doc is sig or doc == sig and type(doc) is type(sig)
    if isinstance(doc, (int, float)) and isinstance(sig, (int, float)):
        return math.isclose(doc, sig, rel_tol=0.0, abs_tol=0.0) or doc == sig
    if isinstance(doc, (tuple, list)) and isinstance(sig, (tuple, list)):
        return len(doc) == len(sig) and all(_equal(a, b) for a, b in zip(doc, sig))
    return doc == sig


def parameter_entries(doc: str) -> dict[str, tuple[str, int, int]]:
    """``{name: (header and description, position, group size)}`` of the Parameters sections
    (and Attributes: a dataclass's fields are its constructor's parameters).

    ``position`` and ``group size`` place ``name`` in a header naming several parameters.
    """
    lines = inspect.cleandoc(doc).splitlines()
    out: dict[str, list[Any]] = {}
    i = 0
    while i < len(lines):
        if (lines[i].strip() in ("Parameters", "Other Parameters", "Attributes") and i + 1 < len(lines)
                and set(lines[i + 1].strip()) == {"-"}):
            base = len(lines[i]) - len(lines[i].lstrip())
            i += 2
            names: list[str] = []
            while i < len(lines):
                line = lines[i]
                if i + 1 < len(lines) and line.strip() and set(lines[i + 1].strip()) == {"-"}:
                    break  # the next section
                indent = len(line) - len(line.lstrip())
                m = _HEADER.match(line.strip()) if line.strip() and indent == base else None
                if m:
                    names = [n.strip().lstrip("*") for n in m.group(1).split(",")]
                    for k, n in enumerate(names):
                        out[n] = [(m.group(2) or "") + "\n", k, len(names)]
                elif names:
                    for n in names:
                        out[n][0] += line.strip() + "\n"
                i += 1
            continue
        i += 1
    return {n: (e[0], e[1], e[2]) for n, e in out.items()}


def stated_defaults(entry: str, position: int = 0, group: int = 1) -> list[str]:
    """The defaults ``entry`` states, for the parameter at ``position`` of a ``group``."""
    text = " ".join(entry.split())  # parenthesized remarks may span lines
    if group > 1:
        several = re.compile(r"\bdefault\s*:?\s+" + r"(?:,\s*|\s+and\s+)".join([_VALUE] * group) + _END,
                             re.IGNORECASE)
        return [m.group(position + 1) for m in several.finditer(text)]
    return [m.group(1) for m in _DEFAULT.finditer(text)] + [m.group(1) for m in _DEFAULT_AFTER.finditer(text)]


def _public_objects():
    seen: set[int] = set()
    for info in pkgutil.walk_packages(geninv.__path__, "geninv."):
        try:
            mod = importlib.import_module(info.name)
        except ModuleNotFoundError as e:
            if (e.name or "").split(".")[0] == "geninv":
                raise
            continue  # a module of an optional extra whose dependency is not installed
        for name, obj in vars(mod).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != mod.__name__ or id(obj) in seen:
                continue
            if inspect.isfunction(obj):
                seen.add(id(obj))
                yield f"{mod.__name__}.{name}", obj, obj
            elif inspect.isclass(obj):
                seen.add(id(obj))
                yield f"{mod.__name__}.{name}", obj, obj
                for mname, meth in vars(obj).items():
                    f = meth.__func__ if isinstance(meth, (classmethod, staticmethod)) else meth
                    if (mname.startswith("_") and mname != "__init__") or not inspect.isfunction(f):
                        continue
                    yield f"{mod.__name__}.{name}.{mname}", f, obj if mname == "__init__" else f


def _checks() -> tuple[list[tuple[str, str, str, Any]], list[str]]:
    """``(compared, mismatches)``: each compared default as (object, parameter, stated, signature)."""
    compared, bad = [], []
    for qual, target, docholder in _public_objects():
        doc = inspect.getdoc(docholder) or ""
        if not doc:
            continue
        try:
            params = inspect.signature(target).parameters
        except (TypeError, ValueError):
            continue
        for pname, (entry, position, group) in parameter_entries(doc).items():
            if pname not in params:
                continue
            for text in stated_defaults(entry, position, group):
                ok, value = _literal(text)
                if not ok:
                    continue
                default = params[pname].default
                if default is inspect.Parameter.empty:
                    bad.append(f"{qual}({pname}): documented default {text}, but the parameter is required")
                    continue
                if default is None and value is not None:
                    continue  # a computed default (see the module docstring)
                compared.append((qual, pname, text, default))
                if not _equal(value, default):
                    bad.append(f"{qual}({pname}): documented default {text}, signature default {default!r}")
    return compared, bad


def test_parser_reads_numpydoc_defaults():
    doc = """Summary.

    Parameters
    ----------
    a : float
        Weight (default 1e-4: the noiseless setting).
    b, c : int
        Caps (default 3, 4; 0 = none).
    d : str, optional
        Form. ``"x"`` (default) or ``"y"``. Default ``"x"``.
    e : float, optional
        Step; default the largest allowed.
    f : float, optional
        Tolerance; default 1e-7 in float64.
    g : float
        Default 1e-6 (noiseless).
    h : str
        Batches (default 1,64,512; quick 1,64).

    Returns
    -------
    int
        Not a parameter (default 5).
    """
    entries = parameter_entries(doc)
    assert set(entries) == {"a", "b", "c", "d", "e", "f", "g", "h"}
    assert stated_defaults(*entries["a"]) == ["1e-4"]
    assert stated_defaults(*entries["b"]) == ["3"] and stated_defaults(*entries["c"]) == ["4"]
    assert stated_defaults(*entries["d"]) == ['``"x"``', '``"x"``']
    assert stated_defaults(*entries["e"]) == [] and stated_defaults(*entries["f"]) == []
    assert stated_defaults(*entries["g"]) == ["1e-6"] and stated_defaults(*entries["h"]) == []
    assert _literal('``"x"``') == (True, "x") and _literal("the largest")[0] is False
    assert _equal(1, 1.0) and not _equal(1e-4, 1e-6) and not _equal(True, 1) and _equal(None, None)


def test_documented_defaults_equal_the_signatures():
    compared, bad = _checks()
    # The walk must find the package's documented defaults, or this test would pass vacuously.
    assert len(compared) >= 30, compared
    assert not bad, "docstrings that disagree with the code:\n" + "\n".join(bad)


def _cli_actions():
    from geninv.cli import build_parser

    def walk(parser, prefix):
        for action in parser._actions:
            if action.choices and isinstance(action.choices, dict):  # subcommands
                for name, sub in action.choices.items():
                    yield from walk(sub, f"{prefix} {name}")
            elif action.help and action.option_strings:
                yield f"{prefix} {action.option_strings[-1]}", action

    yield from walk(build_parser(), "geninv")


def test_cli_help_defaults_equal_the_parsers():
    pytest.importorskip("geninv.cli")
    compared, bad = 0, []
    for flag, action in _cli_actions():
        for text in stated_defaults(action.help):
            ok, value = _literal(text)
            if not ok:
                continue
            default = action.default
            if default is None:
                continue  # computed when the flag is absent
            compared += 1
            if isinstance(default, str) and not isinstance(value, str):
                ok_s, default = _literal(default)
                if not ok_s:
                    bad.append(f"{flag}: help says default {text}, the parser's default is {action.default!r}")
                    continue
            if not _equal(value, default):
                bad.append(f"{flag}: help says default {text}, the parser's default is {action.default!r}")
    assert compared >= 3
    assert not bad, "CLI help that disagrees with the parser:\n" + "\n".join(bad)

"""Exceptions and warnings raised by geninv.

Every error a user can trigger through the public API is a :class:`GenInvError`;
its message names the argument, what was expected and what was received.
"""

from __future__ import annotations


class GenInvError(Exception):
    """Base class of every error geninv raises on purpose.

    The message is kept on one line (whitespace runs, newlines included, become one space), so a
    command-line error is always a single line.
    """

    def __init__(self, *args: object) -> None:
        if len(args) == 1 and isinstance(args[0], str):
            args = (" ".join(args[0].split()),)
        super().__init__(*args)


class ShapeError(GenInvError, ValueError):
    """A tensor argument has the wrong shape, batch dimension or width."""


class InputError(GenInvError, ValueError):
    """An argument has a wrong value, type or dtype (NaN/Inf, out of range, ...)."""


class DomainError(InputError):
    """A signal lies outside the range of an activation, so its inverse is undefined."""


class UnsupportedLayerError(GenInvError, TypeError):
    """A torch module cannot be read as a fully connected ReLU generator."""


class ModelFileError(GenInvError, OSError):
    """A generator file is missing, corrupt, truncated, of the wrong format or unsafe."""


class NumericalError(GenInvError, FloatingPointError):
    """A computation produced NaN or Inf that could not be contained."""


class ConvergenceWarning(UserWarning):
    """A solver stopped at ``max_iter`` (or diverged) for some samples; see ``converged``."""


def describe(x: object) -> str:
    """Short description of a received value for error messages."""
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", None)
    if shape is not None:
        return f"{type(x).__name__} of shape {tuple(shape)} and dtype {dtype}"
    text = repr(x)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(x).__name__} {text}"


class MissingDependencyError(GenInvError, ImportError):
    """An optional package (an extra such as ``geninv[plots]``) is needed and not installed."""

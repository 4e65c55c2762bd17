"""Optional packages: imported on first use, with an error saying which extra installs them."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from geninv.exceptions import MissingDependencyError

__all__ = ["pyplot", "MissingPyplot", "require"]


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module``, or raise MissingDependencyError naming ``pip install geninv[extra]``."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(
            f"{purpose}: expected the optional package {module.split('.')[0]!r}, received an installation without it "
            f"({e}); install it with: pip install 'geninv[{extra}]'"
        ) from None


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the file-only Agg backend (extra ``geninv[plots]``)."""
    matplotlib = require("matplotlib", "plots", "drawing a figure")
    matplotlib.use("Agg")  # files only; never needs a display
    return require("matplotlib.pyplot", "plots", "drawing a figure")


class MissingPyplot:
    """Stands for ``matplotlib.pyplot`` where it is not installed: any use raises MissingDependencyError."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return pyplot()  # raises, saying how to install it

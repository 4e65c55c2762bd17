"""A stand-in for ``torchvision`` so that ``import deepinv`` works where torchvision cannot load.

deepinv imports torchvision at import time (``deepinv/__init__.py`` and a few submodules),
but its physics operators (``LinearPhysics``, ``Inpainting``, ``CompressedSensing``,
``Denoising``), ``models.Reconstructor``, ``models.CSGMGenerator`` and ``test`` with
``plot_images=False`` and no ``save_folder`` use none of it: torchvision serves deepinv's
datasets, image transforms (rotations, crops), image grids and PNG saving. On a CPU-only
machine with ``torch==2.13.0+cpu``, PyPI's torchvision wheel is built for another torch and
fails to load (or would replace torch), so geninv installs deepinv with ``--no-deps`` and,
only when the real torchvision cannot be imported, puts this stand-in in ``sys.modules``.

Every ``torchvision.*`` module then imports, and every name in it is a placeholder that raises
``ImportError`` (saying that torchvision is missing) when called or instantiated. A placeholder
can be subclassed and used as a default argument, which is all deepinv does at import time.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types
from typing import Any

__all__ = ["install", "installed"]

_MARK = "__geninv_stub__"


def _missing(name: str) -> ImportError:
    return ImportError(
        f"{name} needs the real torchvision, which is not importable here (geninv put a stand-in in its place "
        "so that deepinv's physics and models load); install a torchvision built for this torch to use it"
    )


class _PlaceholderMeta(type):
    def __getattr__(cls, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _placeholder(f"{cls.__qualname__}.{attr}")

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        raise _missing(cls.__qualname__)


class _Placeholder(metaclass=_PlaceholderMeta):
    pass


def _placeholder(qualname: str) -> type:
    # A class (not an instance), so that deepinv may subclass it; calling it raises.
    return _PlaceholderMeta(qualname.rsplit(".", 1)[-1], (_Placeholder,), {"__qualname__": qualname})


class _StubModule(types.ModuleType):
    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        sub = f"{self.__name__}.{attr}"
        if sub in sys.modules:
            return sys.modules[sub]
        if attr == "IMG_EXTENSIONS":  # a tuple in torchvision.datasets.folder, concatenated at import
            return (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
        return _placeholder(sub)


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != "torchvision" and not fullname.startswith("torchvision."):
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        mod = _StubModule(spec.name)
        mod.__path__ = []
        setattr(mod, _MARK, True)
        return mod

    def exec_module(self, module: types.ModuleType) -> None:
        if module.__name__ == "torchvision":
            module.__version__ = "0.0+geninv.stub"  # type: ignore[attr-defined]


def installed() -> bool:
    """Whether ``torchvision`` in ``sys.modules`` is this stand-in."""
    return bool(getattr(sys.modules.get("torchvision"), _MARK, False))


def install() -> bool:
    """Make ``import torchvision`` succeed: the real one if it loads, else the stand-in.

    Returns
    -------
    bool
        True if the stand-in is in place, False if the real torchvision was imported.
    """
    if "torchvision" in sys.modules:
        return installed()
    try:
        import torchvision  # noqa: F401
    except Exception:  # a missing package, or a wheel built for another torch (OSError, RuntimeError, ...)
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        sys.meta_path.insert(0, _Finder())
        import torchvision  # noqa: F401,F811
        return True
    return False

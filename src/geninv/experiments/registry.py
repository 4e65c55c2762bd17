"""The registry of reproductions: each experiment module registers what the report and the CLI need.

An experiment module calls :func:`register` at import with an :class:`Experiment`: its name (the
``"experiment"`` stored in ``settings.json``), its config class, how its units are built, its trial
function, the function that turns a directory of records into a report section, and the labels,
colours and markers of its methods (their order is the order of the tables and legends). The
report, the figures and the results page look experiments up here by the name in a directory's
``settings.json`` (:func:`for_directory`); they import no experiment module, so no import circle
can form between the report and the experiments.

The experiment modules of the package are imported on the first lookup (:data:`BUILTIN`), the way
a plugin system loads its entry points.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geninv.exceptions import InputError
from geninv.experiments.records import read_settings

__all__ = ["Experiment", "register", "lookup", "for_directory", "experiments", "BUILTIN"]

#: The experiment modules shipped with geninv (imported by the first lookup).
BUILTIN = ("geninv.experiments.random_sweep", "geninv.experiments.mnist_exp", "geninv.experiments.inpaint",
           "geninv.experiments.noise_exp", "geninv.experiments.cs_exp", "geninv.experiments.phase")


@dataclass(frozen=True)
class Experiment:
    """What one reproduction registers.

    Attributes
    ----------
    name : str
        The ``"experiment"`` of its ``settings.json``.
    title : str
        Its heading on the results page; ``{field}`` placeholders are filled from the settings of
        the directory shown (:meth:`heading`).
    command : str
        The ``geninv reproduce`` arguments that run it (``"inpaint --mask block"``).
    config : type
        Its settings dataclass.
    units : callable ``(config, methods) -> list[Unit]``
        The resumable units of a run.
    trial : callable ``(job, unit, keys) -> UnitResult``
        The module-level trial function the executor runs.
    section : callable ``(out_dir, command) -> Section``
        The tables, claims and figures of a directory of its records.
    labels, colors, markers : mapping
        Display name, colour and matplotlib marker of each method; the order of ``labels`` is the
        order of the methods in tables and legends.
    claims_of : "paper" or "ours"
        Whose claims its section checks: the paper's (a reproduced figure), or ours (an
        experiment beyond the paper's figures); a claim that says where we differ from the paper
        is marked as such either way.
    rank : int
        Position on the results page (smaller first).
    default : bool
        Used for directories whose name is not registered (image experiments run under a
        custom name from the API).
    """

    name: str
    title: str
    command: str
    config: type
    units: Callable[..., Any]
    trial: Callable[..., Any]
    section: Callable[[Path, str], Any]
    labels: Mapping[str, str] = field(default_factory=dict)
    colors: Mapping[str, str] = field(default_factory=dict)
    markers: Mapping[str, str] = field(default_factory=dict)
    claims_of: str = "paper"
    rank: int = 50
    default: bool = False

    def heading(self, settings: Mapping[str, Any]) -> str:
        """:attr:`title` with its ``{field}`` placeholders filled from ``settings``."""
        return self.title.format_map(dict(settings))

    def label(self, method: str) -> str:
        """The display name of ``method`` (the name itself when none is registered)."""
        return self.labels.get(method, method)

    def order(self, methods: Any) -> list[str]:
        """``methods`` in the registered order, unregistered ones after them, sorted."""
        ms = set(methods)
        return [m for m in self.labels if m in ms] + sorted(ms - set(self.labels))


_REGISTRY: dict[str, Experiment] = {}
_LOADED = False


def register(exp: Experiment) -> Experiment:
    """Add (or replace) an experiment; returns it."""
    _REGISTRY[exp.name] = exp
    return exp


def _load() -> None:
    global _LOADED
    if not _LOADED:
        _LOADED = True
        for mod in BUILTIN:
            importlib.import_module(mod)


def experiments() -> list[Experiment]:
    """Every registered experiment, in results-page order."""
    _load()
    return sorted(_REGISTRY.values(), key=lambda e: (e.rank, e.name))


def lookup(name: str) -> Experiment:
    """The experiment registered as ``name`` (or the default image experiment for an unregistered name).

    Raises
    ------
    InputError
        When nothing is registered under ``name`` and there is no default.
    """
    _load()
    if name in _REGISTRY:
        return _REGISTRY[name]
    for e in _REGISTRY.values():
        if e.default:
            return e
    raise InputError(f"experiment: expected one of {sorted(_REGISTRY)}, received {name!r}")


def for_directory(out_dir: str | Path) -> Experiment:
    """The experiment whose records are in ``out_dir`` (by the name in its ``settings.json``)."""
    return lookup(read_settings(out_dir)["experiment"])

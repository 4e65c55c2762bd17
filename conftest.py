"""Namespace of the docstring examples in ``src/geninv`` (run by ``make test``, ``--doctest-modules``):
they assume ``import torch, geninv`` and ``from geninv import *``, as the README's API lines do."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import geninv


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace: dict[str, Any]) -> None:
    doctest_namespace["torch"] = torch
    doctest_namespace["geninv"] = geninv
    for name in getattr(geninv, "__all__", []):
        doctest_namespace[name] = getattr(geninv, name)


def pytest_ignore_collect(collection_path: Any, config: Any) -> bool | None:
    # The deepinv bridge's docstring examples need the optional deepinv (geninv[deepinv]);
    # tests/test_deepinv.py skips with the reason where it cannot be imported.
    if str(collection_path).endswith(("integrations/deepinv.py",)):
        try:
            import geninv.integrations.deepinv  # noqa: F401
        except ImportError:
            return True
    return None

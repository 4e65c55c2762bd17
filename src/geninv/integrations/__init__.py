"""Bridges to other libraries, each an optional extra imported on first use.

- :mod:`geninv.integrations.deepinv` (``pip install 'geninv[deepinv]'``): deepinv physics as
  geninv operators, and geninv as a ``deepinv.models.Reconstructor``.

This package itself imports none of them: :func:`is_deepinv_physics` recognizes a deepinv
object from its class alone.
"""

from __future__ import annotations

__all__ = ["is_deepinv_physics"]


def is_deepinv_physics(obj: object) -> bool:
    """Whether ``obj`` is a deepinv physics object (a class of the ``deepinv`` package, or a subclass of one).

    Decided from the class hierarchy, without importing deepinv: an object of a deepinv class
    can only exist once deepinv is imported.
    """
    if obj is None:
        return False
    for cls in type(obj).__mro__:
        module = getattr(cls, "__module__", "") or ""
        if module.startswith("deepinv.physics"):
            return True
    return False

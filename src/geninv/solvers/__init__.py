"""Inversion methods. Each is a function ``method(G, y, *, measure=None, ...) -> SolveResult``."""

from geninv.solvers.result import SolveResult

__all__ = ["SolveResult"]

"""How invertible a generator is in practice: the distribution of the cardinalities ``s_i`` over
sampled latents, the fraction meeting Corollary 1, and the per-signal Theorem 1 verdicts
(:func:`certify_architecture`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from geninv.certificates.bounds import json_number
from geninv.certificates.coherence import single_thread_blas
from geninv.certificates.report import certify, check_generator
from geninv.exceptions import InputError
from geninv.model.generator import Generator

__all__ = ["ArchitectureReport", "certify_architecture"]


@dataclass(frozen=True)
class ArchitectureReport:
    """How invertible a generator is in practice: cardinalities of sampled signals.

    Attributes
    ----------
    dims : list of int
    trials : int
    quantile_levels : list of float
    cardinality : list of dict
        Per hidden layer: ``min``, ``max``, ``mean``, ``median`` and ``q`` (quantiles at ``quantile_levels``).
    expansion : list of dict
        The same statistics for ``s_1/n_0, s_2/s_1, ..., n/s_L``.
    corollary1 : dict
        Fraction of samples meeting each inequality of Corollary 1 and ``"all"``. The output
        inequality is ``s_L < n/2``, or ``s_L < m/2`` with ``m`` the output rows that carry
        equations (the support of ``y`` for a ReLU output, the unsaturated entries for a
        saturated tanh / sigmoid one) when some sample has fewer than ``n``.
    theorem1 : dict or None
        Fractions of per-signal verdicts ``"true"``, ``"false"``, ``"none"`` (Theorem 1 certificates).
    """

    dims: list[int]
    trials: int
    quantile_levels: list[float]
    cardinality: list[dict[str, Any]]
    expansion: list[dict[str, Any]]
    corollary1: dict[str, float]
    theorem1: dict[str, float] | None

    def __str__(self) -> str:
        arch = " -> ".join(str(d) for d in self.dims)
        qs = [f"q{int(round(100 * q))}" for q in self.quantile_levels]
        header = ["layer", "n", "min", *qs, "max", "mean", "ratio median"]
        rows = []
        for i, (c, e) in enumerate(zip(self.cardinality, self.expansion)):
            rows.append([f"x_{i + 1}", str(self.dims[i + 1]), str(c["min"]), *[f"{v:g}" for v in c["q"]],
                         str(c["max"]), f"{c['mean']:.1f}", f"{float(e['median']):.2f}"])
        widths = [max(len(r[j]) for r in [header, *rows]) for j in range(len(header))]
        fmt = "  ".join(f"{{:>{w}}}" for w in widths)
        lines = [f"geninv architecture report: {arch}, {self.trials} latents z ~ N(0, I)", "",
                 "cardinalities s_i = ||x_i||_0:", fmt.format(*header)] + [fmt.format(*r) for r in rows]
        lines.append("")
        lines.append("Corollary 1 (expansion by 2 per layer), fraction of samples meeting it:")
        for k, v in self.corollary1.items():
            lines.append(f"  {k:<16} {v:.3f}")
        if self.theorem1 is not None:
            t = self.theorem1
            lines.append(f"Theorem 1 per signal: unique {t['true']:.3f}, not unique {t['false']:.3f}, "
                         f"undecided {t['none']:.3f}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"dims": self.dims, "trials": self.trials, "quantile_levels": self.quantile_levels,
                "cardinality": self.cardinality, "expansion": self.expansion, "corollary1": self.corollary1,
                "theorem1": self.theorem1}


def _stats(v: np.ndarray, qs: Sequence[float]) -> dict[str, Any]:
    v = np.asarray(v, dtype=np.float64)
    return {"min": _num(v.min()), "max": _num(v.max()), "mean": float(v.mean()), "median": _num(np.median(v)),
            "q": [_num(x) for x in np.quantile(v, qs)]}


def _num(x: float) -> float | int:
    x = float(x)
    return int(x) if x.is_integer() else (x if math.isfinite(x) else json_number(x))


@single_thread_blas
def certify_architecture(
    G: Generator,
    trials: int = 200,
    *,
    seed: int = 0,
    quantiles: Sequence[float] = (0.1, 0.25, 0.5, 0.75, 0.9),
    theorem1: bool = True,
) -> ArchitectureReport:
    """Sample ``trials`` latents ``z ~ N(0, I)`` and report the cardinalities per layer.

    The practical side of Corollary 1: how often signals of this network meet its expansion
    conditions, and how often each is certified unique.

    Parameters
    ----------
    G : Generator
    trials : int
    seed : int
    quantiles : sequence of float
    theorem1 : bool
        Also certify each sample (Theorem 1 per-signal form, no s-forms, no Theorem 2).

    Returns
    -------
    ArchitectureReport
        Distribution (min / quantiles / max / mean) of ``s_i`` and of the expansion ratios,
        the fraction of samples meeting each inequality of Corollary 1 (and all of them), and
        the fractions certified unique / not unique / undecided.
    """
    check_generator(G)
    if not (isinstance(trials, int) and trials > 0):
        raise InputError(f"trials: expected a positive integer, received {trials!r}")
    qs = [float(q) for q in quantiles]
    if any(not 0 <= q <= 1 for q in qs):
        raise InputError(f"quantiles: expected values in [0, 1], received {qs}")
    z, _ = G.sample(trials, seed=seed)
    tr = G.trace(z)
    card = torch.stack(tr.cardinalities, dim=1).cpu().numpy()  # (T, L)
    dims = G.dims
    L = G.n_hidden
    n0, n = dims[0], dims[-1]
    s_ext = np.concatenate([np.full((trials, 1), n0), card, np.full((trials, 1), n)], axis=1).astype(np.float64)
    with np.errstate(divide="ignore"):
        ratios = s_ext[:, 1:] / s_ext[:, :-1]
    # the output rows that carry equations: the unsaturated ones, and supp(y) for a ReLU output
    from geninv.solvers.measurement import saturated

    rows = ~saturated(G.output_activation, tr.y)
    if not G.output_activation.invertible:
        rows &= tr.y > 0
    m = rows.sum(dim=1).cpu().numpy()
    cor: dict[str, np.ndarray] = {f"s_{L} < n/2" if bool((m == n).all()) else f"s_{L} < m/2": card[:, -1] < m / 2}
    for i in range(L, 1, -1):
        cor[f"s_{i - 1} < s_{i}/2"] = card[:, i - 2] < card[:, i - 1] / 2
    cor["n_0 <= s_1"] = n0 <= card[:, 0]
    allc = np.logical_and.reduce(list(cor.values()))
    corollary = {k: float(v.mean()) for k, v in cor.items()}
    corollary["all"] = float(allc.mean())
    t1 = None
    if theorem1:
        certs = certify(G, z, s_forms=False, theorem2=False)
        assert isinstance(certs, list)
        u = [c.unique for c in certs]
        t1 = {"true": sum(v is True for v in u) / trials, "false": sum(v is False for v in u) / trials,
              "none": sum(v is None for v in u) / trials}
    return ArchitectureReport(
        list(dims), trials, qs, [_stats(card[:, i], qs) for i in range(L)],
        [_stats(ratios[:, i], qs) for i in range(L + 1)], corollary, t1)

"""What a certificate says: one checked condition (:class:`Condition`) and the per-signal report
(:class:`Certificate`) that :func:`geninv.certify` returns.

A condition's verdict is ``"holds"``, ``"fails"`` or ``"undecided"`` (a spark or rank interval
that does not decide it); the meaning of ``Certificate.unique`` is given in
:mod:`geninv.certificates.report`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from geninv.certificates.bounds import Theorem2Bound, json_number

__all__ = ["Condition", "Certificate", "verdict_of", "HOLDS", "FAILS", "UNDECIDED"]

HOLDS, FAILS, UNDECIDED = "holds", "fails", "undecided"


def verdict_of(b: bool | None) -> str:
    """``"holds"`` for True, ``"fails"`` for False, ``"undecided"`` for None."""
    return HOLDS if b is True else FAILS if b is False else UNDECIDED


@dataclass(frozen=True)
class Condition:
    """One checked condition.

    Attributes
    ----------
    key : str
        Column of the table it belongs to: ``"thm1"``, ``"thm1_s"``, ``"cor1"``, ``"thm2_coh"``, ``"thm2_err"``.
    theorem : str
        "Theorem 1 (i)", "Corollary 1", ...
    layer : int
        Table row: 0 for ``z``, ``i`` for ``x_i``.
    statement : str
        The inequality, e.g. ``"spark(W_2) > 2 s_1"``.
    values : str
        The numbers it was decided with.
    verdict : str
        ``"holds"``, ``"fails"`` or ``"undecided"``.
    """

    key: str
    theorem: str
    layer: int
    statement: str
    values: str
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Certificate:
    """The uniqueness / stability report of one signal; ``print`` it for a table.

    Attributes
    ----------
    dims : list of int
        ``[n_0, n_1, ..., n_L, n]``.
    cardinalities : list of int
        ``[s_1, ..., s_L]``.
    output_rows : int
        Rows of ``W_{L+1}`` that carry equations: the measured, unsaturated entries of the
        image (``n`` for an invertible output activation without mask or saturation), and of
        those the support of ``y`` for a ReLU output (rows of ``A W_{L+1}`` for an identity
        output measured by an operator ``A``).
    conditions : list of Condition
    theorem2 : Theorem2Bound or None
        Layered Basis-Pursuit's certified error at the given noise level.
    unique : bool or None
        See the module docstring.
    reason : str
    witness : dict or None
        For ``unique=False``: ``z_alt`` (list), ``distance`` ``||z' - z||``, ``image_gap`` ``||G(z') - G(z)||``.
    noise : float
    activation : str
    """

    dims: list[int]
    cardinalities: list[int]
    output_rows: int
    conditions: list[Condition]
    theorem2: Theorem2Bound | None
    unique: bool | None
    reason: str
    witness: dict[str, Any] | None = None
    noise: float = 0.0
    activation: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def expansion(self) -> list[float]:
        """``[s_1 / n_0, s_2 / s_1, ..., s_L / s_{L-1}, n / s_L]`` (inf where dividing by 0)."""
        s = [self.dims[0], *self.cardinalities, self.output_rows]
        return [s[i + 1] / s[i] if s[i] else math.inf for i in range(len(s) - 1)]

    def condition(self, theorem: str) -> Condition:
        """The condition whose ``theorem`` label starts with ``theorem`` (e.g. ``"Theorem 1 (i)"``)."""
        for c in self.conditions:
            if c.theorem.startswith(theorem):
                return c
        raise KeyError(theorem)

    @property
    def corollary1(self) -> bool:
        """Whether every inequality of Corollary 1 (the expansion by 2 per layer) holds."""
        return all(c.verdict == HOLDS for c in self.conditions if c.key == "cor1")

    def summary(self) -> str:
        s = ", ".join(str(v) for v in self.cardinalities)
        err = ""
        if self.theorem2 is not None and self.theorem2.verdict == HOLDS:
            err = f", ||z_hat - z|| <= {self.theorem2.z_error:.3g}"
        return f"unique={self.unique}  s=[{s}]  Corollary 1 {'holds' if self.corollary1 else 'fails'}{err}"

    def table(self) -> str:
        L = len(self.cardinalities)
        names = ["z"] + [f"x_{i}" for i in range(1, L + 1)] + ["y"]
        svals = [self.dims[0], *self.cardinalities, self.output_rows]
        ratio = ["-"] + [f"{r:.2f}" if math.isfinite(r) else "inf" for r in self.expansion]
        cols = [("thm1", "Thm1 signal"), ("thm1_s", "Thm1 s-form"), ("cor1", "Cor1"),
                ("thm2_coh", "Thm2 coherence"), ("thm2_err", "Thm2 err <=")]
        cell: dict[tuple[int, str], str] = {}
        for c in self.conditions:
            cell[(c.layer, c.key)] = c.verdict
        if self.theorem2 is not None:
            errs = self.theorem2.layer_errors
            for i, e in enumerate(errs):
                cell[(i, "thm2_err")] = f"{e:.3g}" if math.isfinite(e) else "inf"
        header = ["layer", "n", "s", "s/s_prev"] + [h for _, h in cols]
        rows = []
        for i, nm in enumerate(names):
            rows.append([nm, str(self.dims[i]), str(svals[i]), ratio[i]] + [cell.get((i, k), "") for k, _ in cols])
        widths = [max(len(r[j]) for r in [header, *rows]) for j in range(len(header))]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        return "\n".join([fmt.format(*header), fmt.format(*["-" * w for w in widths])] + [fmt.format(*r) for r in rows])

    def __str__(self) -> str:
        arch = " -> ".join(str(d) for d in self.dims)
        lines = [f"geninv certificate: generator {arch} ({self.activation} output), noise ||e|| <= {self.noise:g}",
                 "", self.table(), "", f"unique: {self.unique}  ({self.reason})"]
        if self.witness is not None:
            lines.append(f"  witness: z' with ||z' - z|| = {self.witness['distance']:.3g}, "
                         f"||G(z') - G(z)|| = {self.witness['image_gap']:.3g}, same supports")
        if self.theorem2 is not None:
            t2 = self.theorem2
            lam = ", ".join(f"{v:.3g}" for v in t2.lam)
            lines.append(f"Theorem 2 (Layered Basis-Pursuit, lam = [{lam}] for x_1..x_L): {t2.verdict}"
                         + (f", ||z_hat - z|| <= {t2.z_error:.3g}" if t2.verdict == HOLDS else f" ({t2.reason})"))
        lines.append("")
        lines.append("conditions:")
        w1 = max((len(c.theorem) for c in self.conditions), default=0)
        w2 = max((len(c.statement) for c in self.conditions), default=0)
        for c in self.conditions:
            lines.append(f"  {c.verdict:<9}  {c.theorem:<{w1}}  {c.statement:<{w2}}  {c.values}")
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (infinities as the strings ``"inf"``)."""
        return {
            "dims": list(self.dims), "cardinalities": list(self.cardinalities), "output_rows": self.output_rows,
            "expansion": [json_number(v) for v in self.expansion], "unique": self.unique, "reason": self.reason,
            "corollary1": self.corollary1, "noise": self.noise, "activation": self.activation,
            "conditions": [c.to_dict() for c in self.conditions],
            "theorem2": None if self.theorem2 is None else self.theorem2.to_dict(),
            "witness": self.witness, "notes": list(self.notes),
        }

"""Spark: exact for small matrices, certified intervals otherwise.

Definitions (docs/method.md sec. 2), for ``A`` of shape (m, n) and ``W`` of shape (n_out, n_in):

- ``spark(A)``: the smallest number of linearly dependent columns of ``A``.
- ``rank_s(W) = min_{|S| = s} rank(W^S)``, ``spark_s(W) = min_{|S| = s} spark(W^S)``,
  ``mu_s(W) = max_{|S| = s} mu(W^S)``, over row subsets ``S``.

Computing the spark is NP-hard. :func:`spark` enumerates column subsets by increasing size
with rank tests while a work budget lasts, and otherwise returns an interval that always
contains the true value (the test-suite checks this against exact rational arithmetic).

Conventions
-----------
- **Full column rank**: no dependent set exists, so the spark is "infinite"; we return
  ``n + 1`` (finite, so arithmetic and comparisons keep working) and set ``full_rank=True``.
  A condition "spark > k" then holds for every ``k``: every vector with any number of
  nonzeros is determined by ``A x``. Use :meth:`Bound.exceeds`, which knows this.
- **Numerical rank**: a set of columns is dependent when, after normalizing its columns,
  ``sigma_min <= rtol * sigma_max`` with ``rtol = max(m, n) * eps`` by default (NumPy's
  ``matrix_rank`` rule). Exact answers are exact *for this rank rule*; a matrix built in
  floating point with a planted dependency is found dependent, a generic one is not.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from geninv.certificates.coherence import ZERO_COL_RTOL, as_matrix, babel, single_thread_blas
from geninv.exceptions import InputError

__all__ = ["Bound", "spark", "numerical_rank", "matrix_rank", "spark_of_array", "check_options"]

_EPS = float(np.finfo(np.float64).eps)
# Babel/Gershgorin independence is exact maths; keep a margin so it never contradicts the
# numerical rank rule (lambda_min >= 1e-12 means sigma_min >= 1e-6, far above rtol).
BABEL_MARGIN = 1e-12
# Pairs with |cos| below this are independent for any rtol below ~5e-4 (sigma_2/sigma_1 >= ~7e-4).
_PAIR_COS = 1.0 - 1e-6
CHUNK = 4096


@dataclass(frozen=True)
class Bound:
    """A certified interval ``lower <= value <= upper`` for an integer or real quantity.

    Unpacks as ``(lower, upper, exact)``: ``lo, hi, exact = spark(A)``.

    Attributes
    ----------
    lower, upper : int or float
        The interval; ``lower == upper`` when ``exact``.
    exact : bool
        True when the value is known (``lower == upper``).
    method : str
        How each end was obtained ("exact enumeration", "Babel lower bound", "sampled", ...).
    full_rank : bool
        Spark only: the matrix has full column rank, so no dependent set exists and the spark
        is infinite; ``lower = upper = n + 1`` by convention.
    n_cols : int or None
        Spark-type bounds only: the number of columns ``n``. A spark is in ``{1..n}`` or
        infinite, so ``upper = n + 1`` means "no finite upper bound" (see :attr:`open_above`).
    """

    lower: float
    upper: float
    exact: bool
    method: str
    full_rank: bool = False
    n_cols: int | None = None

    @property
    def open_above(self) -> bool:
        """True when the upper end is the ``n + 1`` convention without full rank being proven."""
        return self.n_cols is not None and not self.full_rank and self.upper >= self.n_cols + 1

    def __iter__(self):  # type: ignore[no-untyped-def]
        yield self.lower
        yield self.upper
        yield self.exact

    @property
    def value(self) -> float | None:
        """The value when exact, else None."""
        return self.lower if self.exact else None

    def exceeds(self, k: float) -> bool | None:
        """Decide ``value > k``: True / False when the interval decides it, None otherwise.

        For a full-column-rank spark (infinite) this is True for every ``k``.
        """
        if self.full_rank or self.lower > k:
            return True
        if self.upper <= k and not self.open_above:
            return False
        return None

    def below(self, k: float) -> bool | None:
        """Decide ``value < k``: True / False when the interval decides it, None otherwise."""
        if self.full_rank:
            return False
        if self.upper < k and not self.open_above:
            return True
        if self.lower >= k:
            return False
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"lower": _num(self.lower), "upper": _num(self.upper), "exact": self.exact,
                "method": self.method, "full_rank": self.full_rank, "open_above": self.open_above}

    def __str__(self) -> str:
        if self.full_rank:
            return f"inf (full column rank; {int(self.lower)} by convention)"
        if self.exact:
            return f"{_fmt(self.lower)}"
        hi = f"inf ({_fmt(self.upper)} or infinite)" if self.open_above else _fmt(self.upper)
        return f"[{_fmt(self.lower)}, {hi}]"


def _num(v: float) -> float | int:
    return int(v) if float(v).is_integer() else float(v)


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.4g}"


# -- rank helpers ----------------------------------------------------------------------
def rank_rtol(m: int, n: int, rtol: float | None) -> float:
    """The relative rank tolerance for an (m, n) matrix: ``rtol``, or ``max(m, n) eps`` when None."""
    return max(m, n) * _EPS if rtol is None else float(rtol)


def check_options(
    *, rtol: Any = None, max_work: Any = 0, samples: Any = 1, lp_tries: Any = None, seed: Any = 0
) -> dict[str, Any]:
    """The public budgets / tolerances, validated: InputError naming the argument otherwise."""
    from geninv._validate import as_float, as_int

    out: dict[str, Any] = {"rtol": None, "lp_tries": None}
    if rtol is not None:
        r = as_float(rtol, "rtol")
        if not 0.0 <= r < 1.0:
            raise InputError(f"rtol: expected a relative tolerance in [0, 1) or None, received {r!r}")
        out["rtol"] = r
    out["max_work"] = as_int(max_work, "max_work", minimum=0)
    out["samples"] = as_int(samples, "samples", minimum=1)
    if lp_tries is not None:
        out["lp_tries"] = as_int(lp_tries, "lp_tries", minimum=0)
    out["seed"] = as_int(seed, "seed", minimum=0)
    return out


def numerical_rank(A: Any, rtol: float | None = None) -> int:
    """Rank of ``A`` (m, n): singular values above ``rtol * sigma_max`` (default ``max(m, n) eps``)."""
    M = as_matrix(A)
    rtol = check_options(rtol=rtol)["rtol"]
    return matrix_rank(M, rtol)


def matrix_rank(M: np.ndarray, rtol: float | None) -> int:
    """:func:`numerical_rank` of a float64 array ``M`` (m, n), with ``rtol`` already validated."""
    if M.size == 0:
        return 0
    s = np.linalg.svd(M, compute_uv=False)
    if s.size == 0 or s[0] == 0:
        return 0
    return int((s > rank_rtol(M.shape[0], M.shape[1], rtol) * s[0]).sum())


def _dependent_batch(Mn: np.ndarray, idx: np.ndarray, rtol: float) -> np.ndarray:
    """For column subsets ``idx`` (c, k) of the normalized ``Mn`` (m, n): which are dependent (c,) bool."""
    c, k = idx.shape
    if k > Mn.shape[0]:
        return np.ones(c, dtype=bool)
    sub = np.transpose(Mn[:, idx], (1, 0, 2))  # (c, m, k)
    s = np.linalg.svd(sub, compute_uv=False)  # (c, k)
    return s[:, -1] <= rtol * s[:, 0]


def _is_dependent(Mn: np.ndarray, cols: list[int] | np.ndarray, rtol: float) -> bool:
    return bool(_dependent_batch(Mn, np.asarray(cols, dtype=np.int64)[None, :], rtol)[0])


def combinations_chunks(n: int, k: int, chunk: int = CHUNK):
    """The ``k``-subsets of ``range(n)`` in lexicographic order, as int arrays of at most ``chunk`` rows."""
    it = itertools.combinations(range(n), k)
    while True:
        block = list(itertools.islice(it, chunk))
        if not block:
            return
        yield np.asarray(block, dtype=np.int64).reshape(len(block), k)


# -- spark ------------------------------------------------------------------------------
def _circuit(Mn: np.ndarray, support: np.ndarray, weights: np.ndarray, rtol: float) -> list[int] | None:
    """Shrink a dependent column set to a circuit (a minimal dependent set), or None if not dependent."""
    T = [int(t) for t in support[np.argsort(weights)]]  # try to drop the smallest coefficients first
    if len(T) == 0 or not _is_dependent(Mn, T, rtol):
        return None
    for t in list(T):
        trial = [u for u in T if u != t]
        if trial and _is_dependent(Mn, trial, rtol):
            T = trial
    # Every single removal now gives an independent set, and T is dependent: a circuit.
    return sorted(T)


def _l1_null_vector(Vr: np.ndarray, j: int) -> np.ndarray | None:
    """``argmin ||x||_1 s.t. Vr x = 0, x_j = 1`` with HiGHS (``Vr`` (r, n) spans the row space)."""
    from scipy.optimize import linprog

    r, n = Vr.shape
    # x = p - q with p, q >= 0; the objective 1^T (p + q) is ||x||_1 at an optimum.
    A_eq = np.zeros((r + 1, 2 * n))
    A_eq[:r, :n] = Vr
    A_eq[:r, n:] = -Vr
    A_eq[r, j] = 1.0
    A_eq[r, n + j] = -1.0
    b_eq = np.zeros(r + 1)
    b_eq[r] = 1.0
    res = linprog(np.ones(2 * n), A_eq=A_eq, b_eq=b_eq, bounds=(0, None), method="highs")
    if res.status != 0 or res.x is None:
        return None
    return np.asarray(res.x[:n] - res.x[n:])


@single_thread_blas
def spark(
    A: Any,
    *,
    max_work: int = 100_000,
    lp_tries: int | None = None,
    rtol: float | None = None,
    seed: int = 0,
) -> Bound:
    """The spark of ``A``: exact when affordable, else a certified interval.

    The spark is the smallest number of linearly dependent columns (``n + 1`` when there are
    none); Theorem 1 asks ``spark > 2 s`` of the supported matrices.

    Parameters
    ----------
    A : Tensor or ndarray of shape (m, n)
    max_work : int
        Budget of column subsets rank-tested by the exact enumeration.
    lp_tries : int, optional
        Number of l1 null-space searches (one HiGHS LP each) used to tighten the upper
        bound; default ``min(n, 20)``; 0 disables them.
    rtol : float, optional
        Relative rank tolerance (see module Notes); default ``max(m, n) * eps``.
    seed : int
        Order in which columns are tried by the LP search.

    Returns
    -------
    Bound
        ``(lower, upper, exact)`` plus ``method``; ``full_rank=True`` and ``n + 1`` when no
        dependent set exists.

    Notes
    -----
    In order, each step stopping as soon as ``lower == upper``:

    1. a zero column gives spark 1; full column rank gives ``n + 1`` (convention);
    2. a dependent pair (parallel columns) gives 2 (pairs with ``|cos| < 1 - 1e-6`` are
       independent, so only near-parallel pairs are rank-tested);
    3. lower bound from the cumulative coherence: if ``mu_1(k - 1) < 1`` every ``k`` columns
       are independent (Gershgorin), so ``spark >= k + 1``; this implies ``1 + 1/mu``;
    4. upper bound ``rank + 1`` (any ``rank + 1`` columns are dependent);
    5. upper bound from sparse null vectors: ``min ||x||_1 s.t. A x = 0, x_j = 1`` (HiGHS) for
       several ``j``; each solution's support is dependent and is shrunk greedily to a circuit,
       whose size bounds the spark from above;
    6. exact enumeration of column subsets of sizes ``lower, lower + 1, ...`` with batched
       rank tests while ``max_work`` lasts: a dependent subset of size ``k`` (all smaller sizes
       being independent) gives spark ``k``; a size fully enumerated without one raises the
       lower bound to ``k + 1``.

    Examples
    --------
    >>> spark(np.hstack([np.eye(3), np.eye(3)])).value
    2
    >>> b = spark(np.eye(3))  # full column rank: "infinite", n + 1 by convention
    >>> (b.lower, b.full_rank)
    (4, True)
    """
    M = as_matrix(A)
    o = check_options(rtol=rtol, max_work=max_work, lp_tries=lp_tries, seed=seed)
    return spark_of_array(M, max_work=o["max_work"], lp_tries=o["lp_tries"], rtol=o["rtol"], seed=o["seed"])


def spark_of_array(
    M: np.ndarray,
    *,
    max_work: int = 100_000,
    lp_tries: int | None = None,
    rtol: float | None = None,
    seed: int = 0,
    gt: float | None = None,
) -> Bound:
    """:func:`spark` on a float64 array; with ``gt`` it may stop once ``spark > gt`` is decided."""
    b = _spark_impl(M, max_work=max_work, lp_tries=lp_tries, rtol=rtol, seed=seed, gt=gt)
    return replace(b, n_cols=int(M.shape[1]))


def _spark_impl(
    M: np.ndarray,
    *,
    max_work: int,
    lp_tries: int | None,
    rtol: float | None,
    seed: int,
    gt: float | None,
) -> Bound:
    m, n = M.shape
    tol = rank_rtol(m, n, rtol)
    norms = np.linalg.norm(M, axis=0)
    scale = float(norms.max())
    zero = norms <= ZERO_COL_RTOL * scale if scale > 0 else np.ones(n, dtype=bool)
    if zero.any():
        j = int(np.flatnonzero(zero)[0])
        return Bound(1, 1, True, f"exact: column {j} is zero")
    Mn = M / norms
    _, sv, Vt = np.linalg.svd(Mn, full_matrices=False)
    r = int((sv > tol * sv[0]).sum())
    if r == n:
        return Bound(n + 1, n + 1, True, "full column rank: no dependent set (spark = n + 1 by convention)",
                     full_rank=True)

    def decided(lo: int, hi: int) -> bool:
        return lo == hi or (gt is not None and (lo > gt or hi <= gt))

    # Step 2: dependent pairs. Only near-parallel pairs can be numerically dependent.
    G = np.abs(Mn.T @ Mn)
    np.fill_diagonal(G, 0.0)
    # sigma_2 / sigma_1 of a normalized pair is sqrt((1 - c) / (1 + c)), c = |cos|: only pairs with
    # 1 - c <= ~2 tol^2 can be dependent under the rank rule; test those (and a margin) directly.
    cand = np.argwhere(np.triu(G >= min(_PAIR_COS, 1.0 - 4.0 * tol**2), 1))
    if len(cand):
        dep = _dependent_batch(Mn, cand.astype(np.int64), tol)
        if dep.any():
            i, j = (int(v) for v in cand[int(np.flatnonzero(dep)[0])])
            return Bound(2, 2, True, f"exact: columns {i} and {j} are parallel")
    upper, up_how = r + 1, f"rank + 1 = {r + 1}"
    # Step 3: cumulative-coherence (Babel) lower bound, at least 3 (no zero column, no pair).
    cum = babel(Mn)
    # p with mu_1(p) < 1 -> every p+1 columns independent. Gershgorin also gives
    # sigma_min^2 / sigma_max^2 >= (1 - mu_1) / (1 + mu_1), so below this threshold those sets are
    # independent under the numerical rank rule too.
    ok = np.flatnonzero(cum < (1.0 - tol**2) / (1.0 + tol**2) - BABEL_MARGIN)
    k_babel = int(ok.max()) + 1 if ok.size else 1
    lower, lo_how = 3, "no zero column or dependent pair"
    if k_babel + 1 > lower:
        lower, lo_how = k_babel + 1, f"cumulative coherence mu_1({k_babel - 1}) < 1"
    lower = min(lower, upper)
    mu = float(G.max()) if n > 1 else 0.0
    if decided(lower, upper):
        return _finish(lower, upper, lo_how, up_how, mu)

    # Step 5: sparse null vectors by l1 minimization (HiGHS), shrunk to circuits.
    tries = min(n, 20) if lp_tries is None else max(0, int(lp_tries))
    if tries:
        Vr = Vt[:r]
        order = np.random.default_rng(seed).permutation(n)[:tries]
        for j in order:
            x = _l1_null_vector(Vr, int(j))
            if x is None:
                continue
            ax = np.abs(x)
            supp = np.flatnonzero(ax > 1e-9 * ax.max())
            C = _circuit(Mn, supp, ax[supp], tol)
            if C is not None and len(C) < upper:
                upper, up_how = len(C), f"l1 null-space search found the dependent set {C}"
                if decided(lower, upper):
                    break
        lower = min(lower, upper)
        if decided(lower, upper):
            return _finish(lower, upper, lo_how, up_how, mu)

    # Step 6: exact enumeration by increasing size, within the budget.
    work = 0
    k = lower
    stop_at = upper if gt is None else min(upper, int(math.floor(gt)) + 1)
    while k < stop_at:
        total = math.comb(n, k)
        found = None
        complete = True
        for idx in combinations_chunks(n, k):
            if work + len(idx) > max_work:
                idx = idx[: max(0, max_work - work)]
                complete = False
            if len(idx):
                work += len(idx)
                dep = _dependent_batch(Mn, idx, tol)
                if dep.any():
                    found = idx[int(np.flatnonzero(dep)[0])].tolist()
                    break
            if not complete:
                break
        if found is not None:
            # All sizes below k were shown independent (enumeration or bounds): spark = k.
            return Bound(k, k, True, f"exact enumeration: columns {found} are dependent, all smaller sets independent")
        if not complete:
            return _finish(lower, upper, lo_how + f"; enumeration budget spent at size {k} ({work} of "
                           f"{total} subsets tested)", up_how, mu)
        lower, lo_how = k + 1, f"exact enumeration: every set of {k} columns is independent"
        k += 1
    return _finish(lower, upper, lo_how, up_how, mu)


def _finish(lower: int, upper: int, lo_how: str, up_how: str, mu: float) -> Bound:
    if lower >= upper:
        return Bound(upper, upper, True, f"exact: lower ({lo_how}) meets upper ({up_how})")
    coh = f"; 1 + 1/mu = {1 + 1 / mu:.3g}" if mu > 0 else ""
    return Bound(lower, upper, False, f"lower: {lo_how}{coh}; upper: {up_how}")

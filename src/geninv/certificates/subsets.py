"""s-rank, s-spark and s-coherence: the worst case over the row subsets of size ``s``.

Definitions (docs/method.md sec. 2), for ``W`` of shape (n_out, n_in):
``rank_s(W) = min_{|S| = s} rank(W^S)``, ``spark_s(W) = min_{|S| = s} spark(W^S)``,
``mu_s(W) = max_{|S| = s} mu(W^S)``, over row subsets ``S``. Each is exact by enumeration when
the subsets are few, and otherwise a certified interval (docs/method.md sec. 9.7); the rank
rule and the conventions are those of :mod:`geninv.certificates.spark`.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from typing import Any

import numpy as np

from geninv.certificates.coherence import ZERO_COL_RTOL, as_matrix, babel, mutual_coherence, single_thread_blas
from geninv.certificates.spark import (
    BABEL_MARGIN,
    CHUNK,
    Bound,
    check_options,
    combinations_chunks,
    matrix_rank,
    rank_rtol,
    spark_of_array,
)
from geninv.exceptions import InputError

__all__ = ["s_rank", "s_spark", "s_coherence"]


def _check_s(s: Any, n_rows: int) -> int:
    if not (isinstance(s, (int, np.integer)) and 0 <= s <= n_rows):
        raise InputError(f"s: expected an integer in [0, {n_rows}] (a number of rows), received {s!r}")
    return int(s)


def _row_subsets(W: Any, s: Any, **options: Any) -> tuple[np.ndarray, int, dict[str, Any]]:
    """The arguments of an s-quantity, validated: ``W`` as a float64 array (n_out, n_in), ``s`` as an
    int in ``[0, n_out]``, and the budgets of ``options`` (see :func:`geninv.certificates.spark.check_options`)."""
    M = as_matrix(W, "W")
    return M, _check_s(s, M.shape[0]), check_options(**options)


def _sample_subsets(n_rows: int, s: int, samples: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(np.stack([rng.choice(n_rows, size=s, replace=False) for _ in range(samples)]), axis=1)


@single_thread_blas
def s_rank(W: Any, s: int, *, max_work: int = 20_000, samples: int = 200, rtol: float | None = None,
           seed: int = 0) -> Bound:
    """``rank_s(W) = min over row subsets |S| = s of rank(W^S)``.

    Theorem 1 (iii) in its s-form: ``rank_{s_1}(W_1) = n_0`` makes ``z`` unique whatever the
    support of ``x_1`` of size ``s_1``.

    Parameters
    ----------
    W : Tensor or ndarray of shape (n_out, n_in)
    s : int
        Number of rows, ``0 <= s <= n_out``.
    max_work : int
        Enumerate all ``C(n_out, s)`` subsets when at most this many.
    samples : int
        Otherwise, random subsets whose minimum rank is an upper bound.

    Returns
    -------
    Bound
        Exact by enumeration, or: upper = min over sampled subsets (and ``min(s, rank W)``);
        lower = ``max(rank W - (n_out - s), min(s, k))`` where every ``k`` rows of ``W`` are
        independent by the cumulative coherence of the rows (removing a row lowers the rank
        by at most one; a set of ``s`` rows contains ``min(s, k)`` independent ones).
    """
    M, s, o = _row_subsets(W, s, rtol=rtol, max_work=max_work, samples=samples, seed=seed)
    n_out, n_in = M.shape
    max_work, samples, rtol, seed = o["max_work"], o["samples"], o["rtol"], o["seed"]
    if s == 0:
        return Bound(0, 0, True, "exact: no rows")
    tol = rank_rtol(s, n_in, rtol)
    r = matrix_rank(M, rtol)
    norms = np.linalg.norm(M, axis=1)
    if (norms <= ZERO_COL_RTOL * max(norms.max(), 1e-300)).any() or r == 0:
        k_rows = 0
    else:
        cum = babel(M.T)
        ok = np.flatnonzero(cum < 1.0 - BABEL_MARGIN)
        k_rows = int(ok.max()) + 1 if ok.size else 1
    lower = max(r - (n_out - s), min(s, k_rows), 0)
    trivial_upper = min(s, r)
    total = math.comb(n_out, s)
    if lower >= trivial_upper:
        return Bound(trivial_upper, trivial_upper, True, "exact: lower bound meets min(s, rank W)")
    if total <= max_work:
        best = trivial_upper
        for idx in combinations_chunks(n_out, s, max(1, CHUNK // max(1, s))):
            sub = M[idx]  # (c, s, n_in)
            sv = np.linalg.svd(sub, compute_uv=False)
            ranks = (sv > tol * np.maximum(sv[:, :1], 1e-300)).sum(axis=1) * (sv[:, 0] > 0)
            best = min(best, int(ranks.min()))
            if best <= lower:
                break
        return Bound(best, best, True, f"exact enumeration over C({n_out}, {s}) = {total} row subsets")
    idx = _sample_subsets(n_out, s, samples, seed)
    sv = np.linalg.svd(M[idx], compute_uv=False)
    ranks = (sv > tol * np.maximum(sv[:, :1], 1e-300)).sum(axis=1) * (sv[:, 0] > 0)
    upper = min(trivial_upper, int(ranks.min()))
    if lower >= upper:
        return Bound(upper, upper, True, f"exact: lower bound meets the sampled minimum ({samples} subsets)")
    return Bound(lower, upper, False,
                 f"lower: rank W - (n_out - s) and row independence (k = {k_rows}); "
                 f"upper: minimum over {samples} sampled row subsets (C({n_out}, {s}) too many to enumerate)")


def _mu_s_upper(M: np.ndarray, s: int) -> float:
    """An upper bound on ``mu(W^S)`` valid for every row subset with ``|S| = s``.

    ``|<w_j^S, w_k^S>| <= sum of the s largest |w_rj w_rk|`` and
    ``||w_j^S||^2 >= sum of the s smallest w_rj^2``.
    """
    n_out, n_in = M.shape
    if n_in < 2:
        return 0.0
    sq = M**2
    bot = np.partition(sq, s - 1, axis=0)[:s].sum(axis=0) if s < n_out else sq.sum(axis=0)
    if (bot <= 0).any():
        return 1.0
    A = np.abs(M)
    best = 0.0
    for j in range(n_in - 1):
        P = A[:, j : j + 1] * A[:, j + 1 :]
        top = np.partition(P, n_out - s, axis=0)[n_out - s :].sum(axis=0) if s < n_out else P.sum(axis=0)
        best = max(best, float((top / np.sqrt(bot[j] * bot[j + 1 :])).max()))
        if best >= 1.0:
            return 1.0
    return min(best, 1.0)


@single_thread_blas
def s_coherence(W: Any, s: int, *, max_work: int = 20_000, samples: int = 200, seed: int = 0) -> Bound:
    """``mu_s(W) = max over row subsets |S| = s of mu(W^S)`` (the coherence in Theorem 2).

    Exact by enumeration when ``C(n_out, s) <= max_work``; otherwise lower = max over
    ``samples`` random subsets, upper = the subset-free bound
    ``max_{j<k} (top-s sum of |w_rj w_rk|) / sqrt(bottom-s sum of w_rj^2 * bottom-s sum of w_rk^2)``.
    """
    M, s, o = _row_subsets(W, s, max_work=max_work, samples=samples, seed=seed)
    n_out, n_in = M.shape
    max_work, samples, seed = o["max_work"], o["samples"], o["seed"]
    if n_in < 2:
        return Bound(0.0, 0.0, True, "exact: a single column")
    if s == 0:
        return Bound(1.0, 1.0, True, "exact: no rows (every column zero, mu = 1 by convention)")
    total = math.comb(n_out, s)
    if total <= max_work:
        best = max(mutual_coherence(M[list(S)]) for S in itertools.combinations(range(n_out), s))
        return Bound(best, best, True, f"exact enumeration over C({n_out}, {s}) = {total} row subsets")
    lo = max(mutual_coherence(M[idx]) for idx in _sample_subsets(n_out, s, samples, seed))
    hi = max(lo, _mu_s_upper(M, s))
    return Bound(lo, hi, hi == lo, f"lower: max over {samples} sampled row subsets; "
                 "upper: top-s / bottom-s entry bound over all subsets")


@single_thread_blas
def s_spark(W: Any, s: int, *, max_work: int = 20_000, samples: int = 50, rtol: float | None = None,
            seed: int = 0) -> Bound:
    """``spark_s(W) = min over row subsets |S| = s of spark(W^S)``.

    Theorem 1 (ii) in its s-form: ``spark_{s_i}(W_i) > 2 s_{i-1}`` holds for every support of
    ``x_i`` of size ``s_i``.

    Parameters
    ----------
    W : Tensor or ndarray of shape (n_out, n_in)
    s : int
        Number of rows.
    max_work : int
        Total budget of rank tests; when ``C(n_out, s)`` subsets fit, each subset's spark is
        computed (exactly if its own share of the budget allows).
    samples : int
        Otherwise, random row subsets: the minimum of their spark upper bounds is an upper bound.

    Returns
    -------
    Bound
        Lower bound without enumeration: 1 if some column has ``>= s`` zeros (then exact),
        else ``1 + 1/mu_bar`` with ``mu_bar`` the subset-free coherence bound of
        :func:`s_coherence`. Upper bound also ``min(s, rank W) + 1`` (``spark(B) <= rank(B) + 1``
        with the full-rank convention). ``full_rank=True`` when every subset has full column rank;
        ``open_above`` when the upper end ``n_in + 1`` only says "possibly infinite".
    """
    M, s, o = _row_subsets(W, s, rtol=rtol, max_work=max_work, samples=samples, seed=seed)
    b = _s_spark(M, s, max_work=o["max_work"], samples=o["samples"], rtol=o["rtol"], seed=o["seed"])
    return replace(b, n_cols=int(M.shape[1]))


def _s_spark(
    W: np.ndarray,
    s: int,
    *,
    max_work: int,
    samples: int,
    rtol: float | None,
    seed: int,
) -> Bound:
    """:func:`s_spark` on a float64 array (without the ``n_cols`` field)."""
    M = as_matrix(W, "W")
    n_out, n_in = M.shape
    s = _check_s(s, n_out)
    if s == 0:
        return Bound(1, 1, True, "exact: no rows (every column is zero)")
    col_zeros = (np.abs(M) <= ZERO_COL_RTOL * max(float(np.abs(M).max()), 1e-300)).sum(axis=0)
    if (col_zeros >= s).any():
        j = int(np.flatnonzero(col_zeros >= s)[0])
        return Bound(1, 1, True, f"exact: column {j} has {int(col_zeros[j])} >= s zeros, so some W^S has a zero column")
    total = math.comb(n_out, s)
    r = matrix_rank(M, rtol)
    if total <= max(1, max_work // max(1, n_in)):
        share = max(1, max_work // total)
        bounds = [spark_of_array(M[list(S)], max_work=share, lp_tries=0, rtol=rtol)
                  for S in itertools.combinations(range(n_out), s)]
        lo = min(b.lower for b in bounds)
        hi = min(b.upper for b in bounds)
        full = all(b.full_rank for b in bounds)
        exact = lo == hi
        how = f"{'exact ' if exact else ''}enumeration over C({n_out}, {s}) = {total} row subsets"
        return Bound(lo, hi, exact, how, full_rank=full)
    mu_bar = _mu_s_upper(M, s)
    # mu_bar = 0: the columns of every W^S are orthogonal (and nonzero): full column rank.
    lower = n_in + 1 if mu_bar <= 0 else 2 if mu_bar >= 1.0 else max(2, math.ceil(1 + 1 / mu_bar - 1e-12))
    upper, how = min(s, r) + 1, "min(s, rank W) + 1"
    for idx in _sample_subsets(n_out, s, samples, seed):
        b = spark_of_array(M[idx], max_work=0, lp_tries=0, rtol=rtol)
        if b.upper < upper:
            upper, how = int(b.upper), f"minimum over {samples} sampled row subsets"
    if lower >= n_in + 1:
        # Every n_in columns of every W^S are independent: each W^S has full column rank.
        return Bound(n_in + 1, n_in + 1, True, f"every W^S has full column rank (1 + 1/mu >= n_in + 1, "
                     f"mu <= {mu_bar:.3g})", full_rank=True)
    lower = min(lower, upper)
    if lower == upper:
        return Bound(lower, upper, True, "exact: coherence lower bound meets the sampled upper bound")
    return Bound(lower, upper, False, f"lower: 1 + 1/mu over all subsets (mu <= {mu_bar:.3g}); upper: {how}")


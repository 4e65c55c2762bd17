"""Certificates, part 1: coherence, Welch bound, spark, s-rank, s-spark, s-coherence.

Known values (identity, [I, I], Gaussian, planted dependencies, Dirac-Hadamard and Dirac-DCT
pairs) and brute force in exact rational arithmetic on small integer matrices: an exact
answer must equal the truth and every interval must contain it.
"""

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.fft import dct
from scipy.linalg import hadamard

import geninv
from geninv.certificates import (
    Bound,
    babel,
    coherence_of_rows,
    mutual_coherence,
    s_coherence,
    s_rank,
    s_spark,
    spark,
    welch_bound,
)
from geninv.exceptions import InputError, ShapeError

# float64 coherences of exactly orthogonal / exactly known designs carry ~1e-16 rounding per
# inner product; 1e-12 leaves a wide margin while still catching any real error.
TOL64 = 1e-12


# -- exact references ------------------------------------------------------------------------
def rank_exact(M: np.ndarray) -> int:
    """Rank by Gaussian elimination over the rationals (M has integer entries)."""
    R = [[Fraction(int(v)) for v in row] for row in np.asarray(M)]
    rows = len(R)
    cols = len(R[0]) if rows else 0
    r = 0
    for c in range(cols):
        p = next((i for i in range(r, rows) if R[i][c] != 0), None)
        if p is None:
            continue
        R[r], R[p] = R[p], R[r]
        for i in range(rows):
            if i != r and R[i][c] != 0:
                f = R[i][c] / R[r][c]
                R[i] = [a - f * b for a, b in zip(R[i], R[r])]
        r += 1
    return r


def spark_exact(A: np.ndarray) -> int:
    m, n = A.shape
    for k in range(1, n + 1):
        for T in itertools.combinations(range(n), k):
            if rank_exact(A[:, T]) < k:
                return k
    return n + 1  # the full-column-rank convention


def s_rank_exact(W: np.ndarray, s: int) -> int:
    return min(rank_exact(W[list(S)]) if s else 0 for S in itertools.combinations(range(W.shape[0]), s))


def s_spark_exact(W: np.ndarray, s: int) -> int:
    return min(spark_exact(W[list(S)]) for S in itertools.combinations(range(W.shape[0]), s))


int_matrices = st.integers(1, 4).flatmap(
    lambda m: st.integers(1, 6).flatmap(
        lambda n: st.lists(st.lists(st.integers(-2, 2), min_size=n, max_size=n), min_size=m, max_size=m)
    )
).map(lambda rows: np.asarray(rows, dtype=np.float64))


def _contains(b: Bound, truth: float) -> bool:
    return b.lower <= truth <= b.upper and (not b.exact or b.lower == truth)


# -- coherence ------------------------------------------------------------------------------
def test_orthonormal_basis_has_zero_coherence():
    Q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((12, 12)))
    assert mutual_coherence(Q) < TOL64
    assert mutual_coherence(np.eye(5)) == 0.0
    assert mutual_coherence(np.ones((3, 1))) == 0.0  # a single column has no pair


def test_coherence_of_parallel_and_zero_columns():
    A = np.array([[1.0, 2.0, 0.0], [1.0, 2.0, 1.0]])
    assert mutual_coherence(A) == pytest.approx(1.0, abs=TOL64)
    assert mutual_coherence(np.array([[1.0, 0.0], [0.0, 0.0]])) == 1.0  # zero column: convention mu = 1


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 8), st.integers(1, 30), st.integers(0, 10_000))
def test_coherence_at_least_welch_bound(m, extra, seed):
    n = m + extra
    A = np.random.default_rng(seed).standard_normal((m, n))
    mu = mutual_coherence(A)
    assert 0 <= mu <= 1
    assert mu >= welch_bound(m, n) - TOL64
    # The Welch bound is tight for equiangular frames; here just sanity: it is 0 iff n <= m.
    assert welch_bound(m, m) == 0.0 and welch_bound(m, n) > 0


def test_welch_bound_attained_by_simplex():
    # n = m + 1 unit vectors of a regular simplex in R^m reach mu = 1/m = Welch.
    m = 4
    E = np.eye(m + 1) - 1.0 / (m + 1)
    U, s, Vt = np.linalg.svd(E)
    F = (U[:, :m] * s[:m]).T  # (m, m+1): the simplex frame
    assert mutual_coherence(F) == pytest.approx(1 / m, abs=TOL64)
    assert welch_bound(m, m + 1) == pytest.approx(1 / m, abs=TOL64)


@pytest.mark.parametrize("n", [4, 16, 64])
def test_dirac_hadamard_pair(n):
    H = hadamard(n) / math.sqrt(n)
    D = np.hstack([np.eye(n), H])
    assert mutual_coherence(D) == pytest.approx(1 / math.sqrt(n), abs=TOL64)
    b = spark(D, max_work=20_000)
    # Two orthonormal bases: spark >= 2/mu = 2 sqrt(n), attained by Sylvester-Hadamard's picket fences.
    truth = 2 * int(math.isqrt(n)) if math.isqrt(n) ** 2 == n else None
    assert b.lower >= 1 + math.sqrt(n) - TOL64
    if truth is not None:
        assert _contains(b, truth)
    if n == 4:
        assert b.exact and b.value == 4


def test_dirac_dct_pair():
    n = 8
    C = dct(np.eye(n), norm="ortho", axis=0)  # orthonormal DCT-II basis
    D = np.hstack([np.eye(n), C])
    # For [I, Phi] with orthonormal Phi, mu = max |Phi_ij|.
    assert mutual_coherence(D) == pytest.approx(np.abs(C).max(), abs=TOL64)
    b = spark(D)
    assert b.lower >= 1 + 1 / mutual_coherence(D) - TOL64
    assert b.upper <= n + 1


def test_coherence_of_rows_is_coherence_of_submatrix():
    W = np.random.default_rng(1).standard_normal((30, 6))
    S = np.zeros(30, dtype=bool)
    S[[0, 3, 5, 7, 11, 20, 29]] = True
    assert coherence_of_rows(W, S) == mutual_coherence(W[S])
    assert coherence_of_rows(torch.from_numpy(W), np.flatnonzero(S)) == mutual_coherence(W[S])
    with pytest.raises(ShapeError):
        coherence_of_rows(W, np.ones(5, dtype=bool))
    with pytest.raises(InputError):
        coherence_of_rows(W, [0, 40])


def test_babel_dominates_coherence():
    A = np.random.default_rng(2).standard_normal((10, 25))
    cum = babel(A)
    mu = mutual_coherence(A)
    assert cum[0] == 0 and cum[1] == pytest.approx(mu, abs=TOL64)
    assert np.all(np.diff(cum) >= -TOL64)
    assert np.all(cum[1:] <= np.arange(1, 25) * mu + TOL64)


# -- spark ----------------------------------------------------------------------------------
def test_spark_identity_is_full_rank_convention():
    b = spark(np.eye(5))
    assert b.full_rank and b.exact and (b.lower, b.upper) == (6, 6)
    assert b.exceeds(100) is True  # "infinite": every sparsity is identifiable
    lo, hi, exact = b
    assert (lo, hi, exact) == (6, 6, True)


def test_spark_of_two_identities_is_two():
    b = spark(np.hstack([np.eye(4), np.eye(4)]))
    assert b.exact and b.value == 2
    assert spark(np.array([[1.0, 0.0, 2.0], [0.0, 0.0, 0.0]])).value == 1  # a zero column


@pytest.mark.parametrize("m,n", [(3, 5), (4, 7), (6, 9)])
def test_gaussian_spark_is_m_plus_one(m, n):
    A = np.random.default_rng(m * n).standard_normal((m, n))
    b = spark(A)
    assert b.exact and b.value == m + 1


@pytest.mark.parametrize("k", [2, 3, 4, 5])
def test_planted_dependent_set(k):
    rng = np.random.default_rng(k)
    A = rng.standard_normal((8, 14))
    T = rng.choice(14, size=k, replace=False)
    coef = rng.uniform(0.5, 2.0, size=k - 1) * rng.choice([-1, 1], size=k - 1)
    A[:, T[-1]] = A[:, T[:-1]] @ coef
    b = spark(A)
    assert b.exact and b.value == k


def test_planted_dependency_found_by_l1_search_in_a_larger_matrix():
    rng = np.random.default_rng(5)
    A = rng.standard_normal((30, 60))
    A[:, 5] = A[:, 0] + 2 * A[:, 3] - A[:, 7] + A[:, 9]
    b = spark(A, max_work=0, lp_tries=60)  # no enumeration: the upper bound comes from HiGHS
    assert b.upper == 5 and b.lower <= 5
    assert "l1 null-space" in b.method


@settings(max_examples=60, deadline=None)
@given(int_matrices)
def test_spark_exact_and_bounds_bracket_brute_force(A):
    truth = spark_exact(A)
    b = spark(A)
    assert _contains(b, truth), (A, b, truth)
    assert b.exact  # small matrices fit the default budget
    # Without enumeration (and with or without the LP search) the interval must still contain it.
    for lp in (0, 2):
        bb = spark(A, max_work=0, lp_tries=lp)
        assert _contains(bb, truth), (A, bb, truth)
        assert bb.lower >= min(truth, 1 + (1 / mutual_coherence(A) if mutual_coherence(A) > 0 else np.inf)) - TOL64 \
            or truth == 1


@settings(max_examples=25, deadline=None)
@given(int_matrices, st.integers(1, 4))
def test_s_rank_and_s_spark_bracket_brute_force(W, s):
    s = min(s, W.shape[0])
    r_truth = s_rank_exact(W, s)
    sp_truth = s_spark_exact(W, s)
    r = s_rank(W, s)
    assert r.exact and r.value == r_truth
    sp = s_spark(W, s)
    assert _contains(sp, sp_truth), (W, s, sp, sp_truth)
    # Forced onto the sampled path: bounds, never wrong.
    rb = s_rank(W, s, max_work=0, samples=3, seed=1)
    assert _contains(rb, r_truth), (W, s, rb, r_truth)
    sb = s_spark(W, s, max_work=0, samples=3, seed=1)
    assert _contains(sb, sp_truth), (W, s, sb, sp_truth)


def test_s_quantities_on_gaussian_matrices():
    W = np.random.default_rng(3).standard_normal((7, 3))
    # Generic: any s rows of a Gaussian 7x3 have rank min(s, 3) and spark min(s, 3) + 1.
    for s in range(1, 8):
        assert s_rank(W, s).value == min(s, 3)
        sp = s_spark(W, s)
        assert sp.exact and sp.value == min(s, 3) + 1
        assert sp.full_rank == (s >= 3)
    mu = s_coherence(W, 4)
    assert mu.exact
    brute = max(mutual_coherence(W[list(S)]) for S in itertools.combinations(range(7), 4))
    assert mu.value == pytest.approx(brute, abs=TOL64)
    sampled = s_coherence(W, 4, max_work=0, samples=5)
    assert sampled.lower <= brute + TOL64 <= sampled.upper + 2 * TOL64


def test_spark_input_validation():
    with pytest.raises(ShapeError):
        spark(np.ones(3))
    with pytest.raises(InputError):
        spark(np.array([[1.0, np.nan]]))
    with pytest.raises(InputError):
        s_rank(np.eye(3), 4)
    with pytest.raises(InputError):
        welch_bound(0, 3)


def test_public_exports():
    for name in ("certify", "certify_architecture", "spark", "mutual_coherence", "s_rank", "s_spark", "theorem2_bound",
                 "welch_bound", "coherence_of_rows", "Bound"):
        assert hasattr(geninv, name), name


def test_spark_follows_the_rank_tolerance():
    A = np.random.default_rng(0).standard_normal((5, 9))
    A[:, 3] = A[:, 1] * (1 + 1e-5) + 1e-4 * A[:, 2]  # nearly parallel to column 1
    assert spark(A).value == 3  # default rule: the pair is independent; {1, 2, 3} is dependent by construction
    assert spark(A, rtol=1e-3).value == 2  # a loose tolerance calls the pair dependent


def test_spark_upper_n_plus_one_is_open_unless_full_rank_is_proven():
    W = np.random.default_rng(4).standard_normal((40, 6))
    b = s_spark(W, 20, max_work=0, samples=5)  # every sampled 20 x 6 block has full column rank
    assert b.upper == 7 and b.open_above and not b.full_rank
    assert b.exceeds(12) is None  # infinite (true here) or <= 6: not decided by sampling
    g = spark(np.random.default_rng(5).standard_normal((4, 7)))
    assert not g.open_above and g.exceeds(5) is False and g.exceeds(4) is True
    f = spark(np.eye(3))
    assert f.full_rank and not f.open_above and f.exceeds(10) is True

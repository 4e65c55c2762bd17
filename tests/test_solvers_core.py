"""Building blocks of the solvers: spectral norms, supported least squares, prox, the driver."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geninv import random_generator
from geninv.solvers.linalg import batched_lstsq, supported_lstsq
from geninv.solvers.loop import run_loop, threshold_support
from geninv.solvers.network import support_affine
from geninv.solvers.spectral import clear_cache, masked_gram_norm, spectral_norm, top_singular
from geninv.solvers.steps import FistaState, fista_init, prox_nonneg_l1

F64 = torch.float64


class D(NamedTuple):
    r: torch.Tensor


def _pinv_reference(W, rhs, rows, cols):
    B, n_out = rhs.shape
    n_in = W.shape[1]
    out = np.zeros((B, n_in))
    for b in range(B):
        R = rows[b].numpy() if rows is not None else np.ones(n_out, bool)
        C = cols[b].numpy() if cols is not None else np.ones(n_in, bool)
        if R.any() and C.any():
            out[b, C] = np.linalg.pinv(W.numpy()[np.ix_(R, C)]) @ rhs[b].numpy()[R]
    return out


def test_supported_lstsq_matches_numpy_pinv_including_rank_deficient():
    g = torch.Generator().manual_seed(0)
    B, n_out, n_in = 8, 30, 12
    W = torch.randn(n_out, n_in, generator=g, dtype=F64)
    rhs = torch.randn(B, n_out, generator=g, dtype=F64)
    rows = torch.rand(B, n_out, generator=g) < 0.5
    cols = torch.rand(B, n_in, generator=g) < 0.6
    rows[1] = False
    rows[1, :4] = True  # 4 rows for ~7 unknowns: underdetermined, pinv = minimum norm
    cols[0] = False
    cols[0, :3] = True
    shared = rows[:1].expand(B, -1)
    for r, c in [(rows, cols), (None, cols), (rows, None), (None, None), (shared, cols)]:
        ref = _pinv_reference(W, rhs, r, c)
        # budget=50 forces chunks of one to three samples on every path that chunks.
        for budget in (2**25, 50):
            x = supported_lstsq(W, rhs, r, c, budget=budget)
            # float64 pseudo-inverses of O(1) matrices with condition numbers < 1e3: 1e-10 is ample.
            np.testing.assert_allclose(x.numpy(), ref, atol=1e-10)


def test_batched_lstsq_singular_gram_gives_minimum_norm():
    A = torch.tensor([[[1.0, 1.0], [2.0, 2.0]], [[1.0, 0.0], [0.0, 2.0]]], dtype=F64)
    rhs = torch.tensor([[2.0, 4.0], [1.0, 2.0]], dtype=F64)
    x = batched_lstsq(A, rhs)
    np.testing.assert_allclose(x.numpy(), [[1.0, 1.0], [1.0, 1.0]], atol=1e-12)


def test_masked_gram_norm_is_close_and_never_below_the_exact_norm():
    g = torch.Generator().manual_seed(1)
    W = torch.randn(300, 120, generator=g, dtype=F64) / 120**0.5
    d = (torch.rand(6, 300, generator=g) < 0.55).to(F64)
    d[0] = 1.0
    d[1] = d[1] * 3.0 + 1.0  # the ADMM form s + rho (1 - s) with rho = 4
    est = masked_gram_norm(W, d, iters=30)
    exact = torch.linalg.eigvalsh(W.T[None] * d[:, None, :] @ W)[:, -1]
    # the estimate carries a 5 % margin over the power iteration (a lower bound) and is capped
    # by the exact full-matrix bound max(d) ||W||^2: so exact <= est <= 1.05 exact (+ rounding)
    assert (est >= exact * (1 - 1e-12)).all()
    assert (est <= exact * 1.05 + 1e-12).all()
    assert abs(float(est[0]) - spectral_norm(W) ** 2) <= 1e-12 * spectral_norm(W) ** 2


def test_spectral_norm_cache_recomputes_after_in_place_change():
    clear_cache()
    W = torch.eye(3, dtype=F64)
    assert abs(spectral_norm(W) - 1.0) < 1e-15
    assert top_singular(W) is top_singular(W)  # cached
    W.mul_(2.0)
    assert abs(spectral_norm(W) - 2.0) < 1e-15


@settings(max_examples=50, deadline=None)
@given(v=st.lists(st.floats(-10, 10), min_size=1, max_size=8), step=st.floats(1e-3, 2), lam=st.floats(0, 5))
def test_prox_nonneg_l1_is_the_prox(v, step, lam):
    """``max(v - step lam, 0)`` minimizes ``lam sum x + 1/(2 step) ||x - v||^2`` over ``x >= 0``:
    optimality ``x - v + step lam >= 0`` with equality where ``x > 0``."""
    vt = torch.tensor(v, dtype=F64)
    x = prox_nonneg_l1(vt, step, lam)
    g = x - vt + step * lam
    assert (x >= 0).all()
    assert (g[x > 0].abs() <= 1e-12 * (1 + vt.abs().max())).all()
    assert (g[x == 0] >= -1e-12 * (1 + vt.abs().max())).all()


def test_threshold_support_is_relative():
    x = torch.tensor([[10.0, 1e-4, 2e-3, 0.0], [1e-6, 0.0, 5e-11, 0.0], [0.0, 0.0, 0.0, 0.0]], dtype=F64)
    s = threshold_support(x, 1e-4)
    assert s.tolist() == [[True, False, True, False], [True, False, False, False], [False, False, False, False]]


def test_support_affine_reproduces_the_network_on_its_own_supports():
    G = random_generator([5, 30, 40, 60], "tanh", seed=3, bias=True, dtype=F64)
    z, _ = G.sample(4, seed=1)
    tr = G.trace(z)
    J, c = support_affine(G, tr.supports, 4)
    a = torch.einsum("bnk,bk->bn", J, z) + c
    torch.testing.assert_close(a, tr.pre[-1], rtol=1e-12, atol=1e-12)


def test_run_loop_stops_per_sample_and_compacts():
    """``x <- r x + (1 - r) a`` converges geometrically at a per-sample rate ``r``: the fast
    samples stop first and leave the working batch, the others go on."""
    a = torch.ones(3, 2, dtype=F64)
    rates = torch.tensor([[0.5], [0.9], [0.99]], dtype=F64)

    seen_batch: list[int] = []

    def step(state: FistaState, d: D) -> FistaState:
        seen_batch.append(state.x.shape[0])
        x = d.r * state.x + (1 - d.r) * a[: state.x.shape[0]]
        return FistaState(x, x, state.t)

    def change(state, prev, d):
        return (state.x - prev).norm(dim=1) / state.x.norm(dim=1)

    out = run_loop(step, fista_init(torch.zeros(3, 2, dtype=F64)), D(rates), primary="x", change=change,
                   objective=None, max_iter=5000, tol=1e-6, check_every=10)
    assert out.converged.all()
    assert out.n_iter[0] < out.n_iter[1] < out.n_iter[2]
    assert min(seen_batch) == 1  # finished samples left the working batch
    assert out.history["change"].shape[1] == 3


def test_reduced_debias_least_squares_equals_the_full_jacobian_one():
    # fit_supports' linear start through the thin QR of the output layer (R M_b instead of
    # J_b = W_{L+1} M_b) has the same minimizer as the least squares on the full J_b, with no
    # mask and with one mask shared by the batch, on data that the model does not fit exactly.
    from geninv.operators import Mask
    from geninv.solvers.debias import _reduced_linear_fit
    from geninv.solvers.linalg import batched_lstsq
    from geninv.solvers.measurement import preactivation_target, resolve_measurement

    G = random_generator([5, 30, 60, 150], "plu", seed=4, bias=True, dtype=F64)
    z, y0 = G.sample(6, seed=1)
    sup = G.trace(z).supports
    y = y0 + 0.01 * torch.randn(y0.shape, generator=torch.Generator().manual_seed(2), dtype=F64)
    mask = torch.rand(150, generator=torch.Generator().manual_seed(3)) < 0.7
    J, c = support_affine(G, sup, 6, dtype=F64)
    for m in (None, Mask(mask)):
        yy, meas = resolve_measurement(m, None, G, y)
        w = None if meas.w is None else meas.w.to(F64)
        t = preactivation_target(G, yy, meas)
        ref = batched_lstsq(J if w is None else J * w[:, :, None], (t - c) if w is None else (t - c) * w)
        zr = _reduced_linear_fit(G, yy, sup, meas, None if w is None else w[0], F64)
        np.testing.assert_allclose(zr.numpy(), ref.numpy(), rtol=1e-9, atol=1e-11)

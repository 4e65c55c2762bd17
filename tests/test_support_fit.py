"""The whole-network refinement ``support_refine``: planted recovery on exact data, a stationary
point of the true objective on noisy data (gradient by autograd), agreement with the float64
per-step refinement, and the objective never above the start's."""

from __future__ import annotations

import torch

import geninv
from geninv.solvers.measurement import resolve_measurement
from geninv.solvers.refine import gauss_newton_refine, network_fit
from geninv.solvers.support_fit import support_refine

F64 = torch.float64


def _gen(dims: list[int], output: str = "plu", seed: int = 3) -> geninv.Generator:
    return geninv.random_generator(dims, output, seed=seed, bias=True, dtype=F64)


def _objective_grad(G: geninv.Generator, y: torch.Tensor, meas, z: torch.Tensor, gam: torch.Tensor) -> torch.Tensor:
    zz = z.clone().requires_grad_(True)
    F = network_fit(G, y, zz, meas, gam).sum()
    (g,) = torch.autograd.grad(F, zz)
    return g


def test_exact_data_from_a_nearby_start_recover_the_planted_latent() -> None:
    G = _gen([8, 60, 200, 500], output="tanh")
    z, y = G.sample(16, seed=1)
    yy, meas = resolve_measurement(None, None, G, y)
    z0 = z + 0.05 * torch.randn(z.shape, generator=torch.Generator().manual_seed(2), dtype=F64)
    zr, obj, n_iter, conv = support_refine(G, yy, meas, z0, max_iter=50)
    rel = (zr - z).norm(dim=1) / z.norm(dim=1)
    assert float(rel.max()) < 1e-9
    assert bool(conv.all()) and int(n_iter.max()) < 50
    assert bool((obj <= 0.5 * (64 * torch.finfo(F64).eps * y.norm(dim=1)) ** 2 * 1e4).all())


def test_noisy_data_end_at_a_stationary_point_no_worse_than_the_start() -> None:
    # A smooth output (tanh): a minimum of the true objective off every ReLU kink is stationary.
    G = _gen([8, 60, 200, 500], output="tanh")
    z, y0 = G.sample(32, seed=3)
    y, sigma = geninv.add_noise(y0, 30.0, seed=4)
    yy, meas = resolve_measurement(None, None, G, y)
    z0 = z + 0.05 * torch.randn(z.shape, generator=torch.Generator().manual_seed(5), dtype=F64)
    gam = sigma.square()  # the Gaussian MAP weight for sigma_z = 1
    f0 = network_fit(G, yy, z0, meas, gam)
    zr, obj, _, conv = support_refine(G, yy, meas, z0, gamma=gam, max_iter=100)
    assert bool((obj <= f0).all())
    assert torch.allclose(obj, network_fit(G, yy, zr, meas, gam), rtol=1e-12, atol=0)
    g = _objective_grad(G, yy, meas, zr, gam)
    # First-order optimality relative to the scale of the data term's gradient at the start,
    # where no hidden unit sits on its kink (there F is smooth); a minimum on a kink is not
    # stationary, but then no step lowers F (the damping ran out).
    g0 = _objective_grad(G, yy, meas, z0, gam)
    assert bool(conv.all())
    x, margin = zr, torch.full((zr.shape[0],), torch.inf, dtype=F64)
    for W, b in zip(G.weights[:-1], G.biases[:-1]):
        pre = x @ W.T + b
        margin = torch.minimum(margin, pre.abs().min(dim=1).values)
        x = torch.relu(pre)
    smooth = margin > 1e-6
    assert int(smooth.sum()) >= 24
    assert float((g.norm(dim=1) / g0.norm(dim=1))[smooth].max()) < 1e-6


def test_float32_products_reach_the_float64_refinements_minimum() -> None:
    G = _gen([8, 60, 200, 500])
    z, y0 = G.sample(16, seed=6)
    y, _ = geninv.add_noise(y0, 40.0, seed=7)
    yy, meas = resolve_measurement(None, None, G, y)
    z0 = z + 0.02 * torch.randn(z.shape, generator=torch.Generator().manual_seed(8), dtype=F64)
    za, oa, _, _ = support_refine(G, yy, meas, z0, max_iter=100, jac_dtype=torch.float32)
    zb, ob, _, _ = gauss_newton_refine(G, yy, meas, z0, max_iter=100)
    # float32 rounding of the step's products moves the minimizer by a few float32 ulps of z.
    assert float(((za - zb).norm(dim=1) / zb.norm(dim=1)).max()) < 1e-5
    assert bool((oa <= ob * (1 + 1e-8)).all())


def test_masked_and_operator_measurements() -> None:
    G = _gen([6, 40, 160])
    z, y = G.sample(8, seed=9)
    mask = torch.rand(8, 160, generator=torch.Generator().manual_seed(10)) > 0.4
    A = geninv.GaussianMatrix(90, 160, seed=11, dtype=F64)
    for measure, data in ((geninv.Mask(mask), y * mask), (A, A.forward(y))):
        yy, meas = resolve_measurement(measure, None, G, data)
        z0 = z + 0.02 * torch.randn(z.shape, generator=torch.Generator().manual_seed(12), dtype=F64)
        zr, _, _, conv = support_refine(G, yy, meas, z0, max_iter=60)
        assert float(((zr - z).norm(dim=1) / z.norm(dim=1)).max()) < 1e-8, type(measure).__name__


def test_gauss_newton_product_is_k_transpose_k_times_v() -> None:
    # K = A diag(phi'(a)) J with J the frozen-support map of support_affine, formed explicitly.
    from geninv.solvers.network import FrozenNetwork, hidden_layers, output_preactivation, support_affine
    from geninv.solvers.support_fit import _gauss_newton_product

    G = _gen([6, 40, 160])
    z, y = G.sample(8, seed=13)
    mask = torch.rand(8, 160, generator=torch.Generator().manual_seed(14)) > 0.4
    A = geninv.GaussianMatrix(90, 160, seed=15, dtype=F64)
    v = torch.randn(8, 6, generator=torch.Generator().manual_seed(16), dtype=F64)
    for measure, data in ((None, y), (geninv.Mask(mask), y * mask), (A, A.forward(y))):
        _, meas = resolve_measurement(measure, None, G, data)
        sups = [x > 0 for x in hidden_layers(G, z)]
        q = G.output_activation.derivative(output_preactivation(G, sups, z))
        J = support_affine(G, sups, 8, dtype=F64)[0]
        K = meas.apply_cols(q[:, :, None] * J)
        ref = (K.transpose(1, 2) @ (K @ v.unsqueeze(-1))).squeeze(-1)
        got = _gauss_newton_product(FrozenNetwork(G, sups, F64), meas, q, v)
        # float64 products in two orders: a few ulps of the largest term.
        assert torch.allclose(got, ref, rtol=1e-12, atol=1e-12 * float(ref.abs().max())), type(measure).__name__


def test_preconditioned_conjugate_gradients_solve_the_exact_system() -> None:
    # A preconditioner off by 20 % in random directions: n iterations solve an n x n s.p.d. system
    # exactly in exact arithmetic; in float64 to rounding times its condition (about 1e3 here).
    from geninv.solvers.support_fit import _pcg, _spd_factor

    gen = torch.Generator().manual_seed(17)
    B, n = 16, 12
    Q = torch.linalg.qr(torch.randn(B, n, n, generator=gen, dtype=F64)).Q
    H = Q @ torch.diag_embed(torch.logspace(0, 3, n, dtype=F64).expand(B, n)) @ Q.transpose(1, 2)
    E = 0.2 * torch.randn(B, n, n, generator=gen, dtype=F64)
    P = H + (E + E.transpose(1, 2)) * H.diagonal(dim1=1, dim2=2).mean(1)[:, None, None] * 1e-3
    L = _spd_factor(P, P.diagonal(dim1=1, dim2=2).mean(1))
    b = torch.randn(B, n, generator=gen, dtype=F64)
    x = _pcg(lambda u: (H @ u.unsqueeze(-1)).squeeze(-1), lambda u: torch.cholesky_solve(u.unsqueeze(-1), L).squeeze(-1),
             b, n)
    ref = torch.linalg.solve(H, b.unsqueeze(-1)).squeeze(-1)
    assert float(((x - ref).norm(dim=1) / ref.norm(dim=1)).max()) < 1e-9
    # An indefinite matrix gets the factor of a shifted, positive definite one.
    S = -torch.eye(n, dtype=F64).expand(2, n, n).clone()
    Ls = _spd_factor(S, torch.ones(2, dtype=F64))
    assert bool(torch.isfinite(Ls).all()) and bool((Ls.diagonal(dim1=1, dim2=2) > 0).all())


def test_bfloat16_preconditioned_steps_reach_the_float32_steps_minimum() -> None:
    # The bfloat16 Gauss-Newton matrix only preconditions the exact one, so the refinement is the
    # float32 refinement's: the same minimizer to float32 products' rounding (a few ulps of z).
    G = geninv.random_generator([8, 60, 200, 500], "plu", seed=3, bias=True, dtype=torch.float32)
    z, y0 = G.sample(32, seed=18)
    y, _ = geninv.add_noise(y0, 40.0, seed=19)
    yy, meas = resolve_measurement(None, None, G, y)
    z0 = (z + 0.05 * torch.randn(z.shape, generator=torch.Generator().manual_seed(20))).to(F64)
    za, oa, ia, _ = support_refine(G, yy, meas, z0, max_iter=100, jac_dtype=torch.float32, hess_dtype=torch.bfloat16)
    zb, ob, ib, _ = support_refine(G, yy, meas, z0, max_iter=100, jac_dtype=torch.float32, hess_dtype=torch.float32)
    assert float(((za - zb).norm(dim=1) / zb.norm(dim=1)).max()) < 1e-7
    assert torch.allclose(oa, ob, rtol=1e-8, atol=0)
    # Without the conjugate-gradient iterations the bfloat16 step is a different one.
    zc, _, _, _ = support_refine(G, yy, meas, z0, max_iter=1, jac_dtype=torch.float32, hess_dtype=torch.bfloat16,
                                 cg_iter=0)
    zd, _, _, _ = support_refine(G, yy, meas, z0, max_iter=1, jac_dtype=torch.float32, hess_dtype=torch.float32)
    assert float(((zc - zd).norm(dim=1) / zd.norm(dim=1)).max()) > 1e-4


def test_bank_refine_probing_rounds_halve_down_to_the_finalists() -> None:
    from geninv.solvers.support_fit import _schedule

    assert _schedule(6, 7, 1) == [(6, 1)]
    assert _schedule((3, 3), 7, 1) == [(3, 4), (3, 1)]
    assert _schedule((2, 2, 2), 7, 2) == [(2, 4), (2, 2), (2, 2)]

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

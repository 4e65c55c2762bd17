"""Layers as linear operators: dense and matrix-free (convolutions) forward / adjoint, the power
iteration's spectral norm, batched CGLS supported least squares, and the Oracle on them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import geninv
from geninv.exceptions import InputError, ShapeError
from geninv.model.layer_ops import ChainOperator, DenseOperator
from geninv.solvers.krylov import cg_supported_lstsq, dense_fits
from geninv.solvers.linalg import supported_lstsq

EPS = torch.finfo(torch.float64).eps


def _conv_generator(seed: int = 0) -> geninv.Generator:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Linear(6, 4 * 4 * 4), nn.Unflatten(1, (4, 4, 4)), nn.ReLU(),
        nn.ConvTranspose2d(4, 3, 4, stride=2, padding=1), nn.BatchNorm2d(3), nn.ReLU(),
        nn.ConvTranspose2d(3, 1, 4, stride=2, padding=1), nn.Tanh(),
    ).double()
    with torch.no_grad():  # eval statistics that are not the identity
        net[4].running_mean.uniform_(-0.1, 0.1)
        net[4].running_var.uniform_(0.5, 2.0)
    return geninv.Generator.from_torch(net.eval())


def test_conv_layers_are_matrix_free_and_adjoint() -> None:
    G = _conv_generator()
    assert G.dims == [6, 64, 192, 256]
    ops = G.operators
    assert all(isinstance(op, ChainOperator) and op.matrix_free for op in ops[1:])
    gen = torch.Generator().manual_seed(1)
    for op, W in zip(ops, G.weights):
        x = torch.randn(5, op.shape[1], generator=gen, dtype=torch.float64)
        u = torch.randn(5, op.shape[0], generator=gen, dtype=torch.float64)
        Wx, Wtu = op.forward(x), op.adjoint(u)
        # <W x, u> = <x, W^T u>: both sides are sums of n_out n_in products, each rounded at eps.
        lhs, rhs = (Wx * u).sum(dim=1), (x * Wtu).sum(dim=1)
        scale = Wx.norm(dim=1) * u.norm(dim=1)
        assert bool(((lhs - rhs).abs() <= 1e3 * EPS * scale).all())
        # The operator is the materialized weight (formed independently, from unit vectors).
        assert torch.allclose(Wx, x @ W.T, rtol=0, atol=1e3 * EPS * float(W.abs().max()))
        assert torch.allclose(op.dense(), W, rtol=0, atol=1e3 * EPS * float(W.abs().max()))
    # float32 in, float32 out.
    assert ops[1].forward(torch.ones(2, 64, dtype=torch.float32)).dtype == torch.float32
    with pytest.raises(ShapeError, match="x: expected shape"):
        ops[1].forward(torch.ones(2, 63, dtype=torch.float64))


def test_spectral_norm_by_power_iteration_is_cached() -> None:
    G = _conv_generator()
    for op, W in zip(G.operators, G.weights):
        exact = float(torch.linalg.matrix_norm(W, ord=2))
        est = op.norm()
        # From below, to the power iteration's stopping tolerance.
        assert est <= exact * (1 + 1e-12)
        assert abs(est - exact) <= 1e-8 * exact
        assert op.norm() == est and getattr(op, "_norm", None) == est
    D = DenseOperator(torch.diag(torch.tensor([3.0, 1.0, 0.5], dtype=torch.float64)))
    assert abs(D.norm() - 3.0) <= 1e-12


def test_cg_supported_lstsq_matches_the_dense_solve_on_a_conv_layer() -> None:
    G = _conv_generator()
    op, W = G.operators[2], G.weights[2]  # ConvTranspose2d (3, 8, 8) -> (1, 16, 16): 256 x 192
    gen = torch.Generator().manual_seed(3)
    B = 6
    cols = torch.rand(B, 192, generator=gen) < 0.4
    rows = torch.rand(B, 256, generator=gen) < 0.9
    x_true = torch.randn(B, 192, generator=gen, dtype=torch.float64) * cols
    t = x_true @ W.T
    x, n_iter, ok = cg_supported_lstsq(op, t, rows, cols)
    assert bool(ok.all()) and bool((n_iter > 0).all())
    assert bool((x[~cols] == 0).all())
    # Planted solution: the supported system is consistent with full column rank (checked), so
    # x_true is its unique least-squares solution; CG stops at 100 eps of the normal residual.
    for b in range(B):
        A = W[rows[b]][:, cols[b]]
        assert int(torch.linalg.matrix_rank(A)) == int(cols[b].sum())
    err = (x - x_true).norm(dim=1) / x_true.norm(dim=1)
    assert float(err.max()) < 1e-9
    # Noisy right-hand side: the least-squares solution, as the dense solver's.
    tn = t + 0.1 * torch.randn(B, 256, generator=gen, dtype=torch.float64)
    xn, _, okn = cg_supported_lstsq(op, tn, rows, cols)
    xd = supported_lstsq(W, tn, rows, cols)
    assert bool(okn.all())
    assert float(((xn - xd).norm(dim=1) / xd.norm(dim=1)).max()) < 1e-9


def test_oracle_on_a_conv_generator_equal_dense_and_matrix_free() -> None:
    G = _conv_generator(seed=2)
    z, y = G.sample(4, seed=5)
    sup = G.trace(z).supports
    dense = geninv.invert(G, y, method="oracle", supports=sup, solver="dense")
    free = geninv.invert(G, y, method="oracle", supports=sup, solver="krylov")
    assert dense.info["solver"] == "dense" and free.info["solver"] == "krylov"
    assert bool(free.converged.all())
    assert bool((free.info["cg_iterations"] > 0).all())
    assert float(geninv.relative_error(z, dense.z).max()) < 1e-10
    assert float(geninv.relative_error(z, free.z).max()) < 1e-9
    assert float(geninv.relative_error(dense.z, free.z).max()) < 1e-9
    for a, b in zip(dense.layers, free.layers):
        assert float(((a - b).norm(dim=1) / a.norm(dim=1).clamp_min(1e-300)).max()) < 1e-9
    # With pixels hidden.
    mask = torch.rand(256, generator=torch.Generator().manual_seed(0)) < 0.8
    fm = geninv.invert(G, y, method="oracle", supports=sup, solver="krylov", mask=mask)
    assert float(geninv.relative_error(z, fm.z).max()) < 1e-9
    # The default keeps the dense solves where they fit.
    assert geninv.invert(G, y, method="oracle", supports=sup).info["solver"] == "dense"
    assert dense_fits(G, 4, sup, 2**28) and not dense_fits(G, 4, sup, 1000)
    with pytest.raises(InputError, match="solver"):
        geninv.invert(G, y, method="oracle", supports=sup, solver="lsqr")

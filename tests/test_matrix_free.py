"""Convolutional layers kept matrix-free (``W`` never formed): the pursuits, the Oracle, the
debiasing and the gradient methods on the layers' operators, against planted latents and against
the same generator with its weights materialized."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import geninv
from geninv.exceptions import UnsupportedLayerError
from geninv.model.layer_ops import ChainOperator
from geninv.solvers.gradient_setup import setup_fit
from geninv.weights import load_conv_generator

EPS = torch.finfo(torch.float64).eps


def _net_3x64x64() -> nn.Module:
    """z (16) -> 16 x 8 x 8 -> 12 x 16 x 16 -> 8 x 32 x 32 -> 3 x 64 x 64 (tanh): the last layer's
    dense W is 12288 x 8192, 805 MB in float64, above the default memory budget (512 MiB)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(16, 16 * 8 * 8), nn.Unflatten(1, (16, 8, 8)), nn.ReLU(),
        nn.ConvTranspose2d(16, 12, 4, stride=2, padding=1), nn.ReLU(),
        nn.ConvTranspose2d(12, 8, 4, stride=2, padding=1), nn.ReLU(),
        nn.ConvTranspose2d(8, 3, 4, stride=2, padding=1), nn.Tanh(),
    ).double().eval()


@pytest.fixture(scope="module")
def big() -> tuple[nn.Module, geninv.Generator]:
    net = _net_3x64x64()
    # 4 MiB: every convolution above it (the smallest is 3072 x 1024, 24 MiB), the Linear below.
    return net, geninv.Generator.from_torch(net, memory_budget=2**22)


def test_layers_above_the_budget_are_not_materialized(big) -> None:
    net, G = big
    assert G.dims == [16, 1024, 3072, 8192, 12288] and G.output_shape == (3, 64, 64)
    assert [layer.matrix_free for layer in G.layers] == [False, True, True, True]
    assert G.matrix_free
    for layer in G.layers[1:]:
        assert layer.W is None and isinstance(layer.op, ChainOperator)
        assert layer.map is layer.operator
    z = torch.randn(3, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        ref = net(z)
    out = G(z)
    assert out.shape == (3, 3, 64, 64)
    assert float((out - ref).abs().max()) <= 1e3 * EPS * float(ref.abs().max())
    # What needs the dense weight names the layer.
    with pytest.raises(UnsupportedLayerError, match=r"layer 4 \(.*ConvTranspose2d.*\): expected a dense weight, "
                                                     r"received a matrix-free one \(12288 x 8192, 768 MiB"):
        G.weight(-1)
    with pytest.raises(UnsupportedLayerError, match="layer 2 "):
        _ = G.weights
    assert torch.equal(G.weight(0), G.layers[0].W)
    with pytest.raises(UnsupportedLayerError, match="layer 2 "):
        geninv.certify(G, z)


def test_latent_pursuit_and_oracle_recover_a_planted_latent_matrix_free(big) -> None:
    _, G = big
    z, y = G.sample(2, seed=1)
    lp = geninv.invert(G, y, method="latent_pursuit")
    assert bool(lp.converged.all()) and bool(lp.fits.all())
    assert float(geninv.relative_error(z, lp.z).max()) < 1e-10
    tr = G.trace(z)
    for x, e in zip(tr.hidden, lp.layers):
        assert _rel(e, x) < 1e-10
    sup = tr.supports
    orc = geninv.invert(G, y, method="oracle", supports=sup)
    assert orc.info["solver"] == "krylov"  # chosen for the matrix-free layers
    assert float(geninv.relative_error(z, orc.z).max()) < 1e-9
    with pytest.raises(UnsupportedLayerError, match="layer 2 "):
        geninv.invert(G, y, method="oracle", supports=sup, solver="dense")


def test_the_operator_is_differentiable_forward_and_reverse(big) -> None:
    """Autograd and torch.func through a matrix-free layer: the gradient is ``W^T g``, the tangent
    ``W t``, checked by the adjoint identity against the operator itself."""
    _, G = big
    op = G.layers[1].operator
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, op.shape[1], generator=gen, dtype=torch.float64, requires_grad=True)
    u = torch.randn(2, op.shape[0], generator=gen, dtype=torch.float64)
    t = torch.randn(2, op.shape[1], generator=gen, dtype=torch.float64)
    (g,) = torch.autograd.grad((op.forward(x) * u).sum(), x)
    assert torch.equal(g, op.adjoint(u))
    _, tangent = torch.func.jvp(op.forward, (x.detach(),), (t,))
    assert torch.equal(tangent, op.forward(t))
    _, vjp = torch.func.vjp(op.forward, x.detach())
    assert torch.equal(vjp(u)[0], op.adjoint(u))


# The DCGAN-shaped generator's dense pursuits take about 30 s each (its matrix-free ones 1-4 s).
@pytest.fixture(scope="module", params=["conv_expansive", pytest.param("conv_dcgan", marks=pytest.mark.slow)])
def shipped(request) -> tuple[str, geninv.Generator, geninv.Generator]:
    name = request.param
    dense = load_conv_generator(name, dtype=torch.float64)
    free = load_conv_generator(name, dtype=torch.float64, memory_budget=1)  # every layer an operator
    assert not dense.matrix_free and all(layer.matrix_free for layer in free.layers)
    return name, dense, free


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).norm(dim=1) / b.norm(dim=1).clamp_min(1e-300)).max())


@pytest.mark.parametrize("method", ["latent_pursuit", "layered_bp", "hybrid", "auto"])
def test_shipped_conv_generators_dense_and_matrix_free_agree(shipped, method) -> None:
    """The same method on the shipped generators with W materialized and matrix-free: the same
    ``z`` to float64 rounding (measured largest difference 1.1e-14), and the planted ``z`` on the
    expansive one (both below 1e-14)."""
    name, dense, free = shipped
    z, y = dense.sample(3, seed=2)
    a = geninv.invert(dense, y, method=method, noise_level=0)
    b = geninv.invert(free, y, method=method, noise_level=0)
    assert _rel(b.z, a.z) < 1e-10
    assert torch.equal(a.fits, b.fits)
    if name == "conv_expansive":
        assert _rel(b.z, z) < 1e-10 and bool(b.fits.all())


def test_shipped_conv_generators_oracle_and_gradients_agree(shipped) -> None:
    name, dense, free = shipped
    z, y = dense.sample(3, seed=2)
    sup = dense.trace(z).supports
    a = geninv.invert(dense, y, method="oracle", supports=sup)
    b = geninv.invert(free, y, method="oracle", supports=sup)
    assert b.info["solver"] == "krylov"
    assert _rel(b.z, a.z) < 1e-9
    # gd: the hand-written dense pass and autograd through the operators give the same data fit,
    # gradient and Lipschitz estimate, so the same iterates.
    fd, ff = setup_fit(dense, y, None, "gd")[2], setup_fit(free, y, None, "gd")[2]
    z0 = torch.randn(3, 20, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    va, ga = fd.value_grad(z0)
    vb, gb = ff.value_grad(z0)
    assert _rel(vb[:, None], va[:, None]) < 1e-12 and _rel(gb, ga) < 1e-10
    assert _rel(ff.lipschitz(z0)[:, None], fd.lipschitz(z0)[:, None]) < 1e-10
    with pytest.warns(geninv.ConvergenceWarning):  # 40 steps do not reach the preimage
        ra = geninv.invert(dense, y, method="gd", max_iter=40)
    with pytest.warns(geninv.ConvergenceWarning):
        rb = geninv.invert(free, y, method="gd", max_iter=40)
    assert _rel(rb.z, ra.z) < 1e-8


def test_a_matrix_free_generator_is_not_saved_as_dense(tmp_path, big) -> None:
    _, G = big
    with pytest.raises(UnsupportedLayerError, match="layer 2 .*matrix-free"):
        G.save(str(tmp_path / "g.safetensors"))


def test_debiasing_without_the_jacobian_by_cgls(big) -> None:
    """The frozen-support fit on a matrix-free generator: ``J`` formed by operator passes, in batch
    chunks, or (budget below one sample's ``J``) not at all, by CGLS on the frozen network; the same
    planted ``z`` each way, with and without a pixel mask. Without ``J`` no Levenberg-Marquardt
    runs, so a noisy sample (residual above rounding) is reported not converged."""
    from geninv.operators import Mask
    from geninv.solvers.debias import fit_supports
    from geninv.solvers.measurement import Measurement
    from geninv.solvers.network import FrozenNetwork

    _, G = big
    z, y = G.sample(3, seed=1)
    y = G.flatten_output(y)
    sup = G.trace(z).supports
    seen = torch.rand(3, G.output_dim, generator=torch.Generator().manual_seed(0)) < 0.7
    per = G.output_dim * G.latent_dim * 8
    for measure in (None, Mask(seen)):
        yy, meas = Measurement.for_width(measure, G.output_dim, y)
        fits = {bud: fit_supports(G, yy, sup, meas, memory_budget=bud) for bud in (3 * per, per, 1)}
        for zz, conv, obj in fits.values():
            assert bool(conv.all())
            assert float(geninv.relative_error(z, zz).max()) < 1e-12
            assert float(obj.max()) <= 0.5 * (100 * EPS * float(yy.norm(dim=1).max())) ** 2
    # The operator is the frozen network's Jacobian: adjoint identity and J z + c = the pre-activation.
    op = FrozenNetwork(G, sup)
    u = torch.randn(3, G.output_dim, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    lhs, rhs = (op.forward(z) * u).sum(dim=1), (z * op.adjoint(u)).sum(dim=1)
    assert float(((lhs - rhs).abs() / (op.forward(z).norm(dim=1) * u.norm(dim=1))).max()) < 1e3 * EPS
    noisy = y + 0.01 * torch.randn(y.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    yn, mn = Measurement.for_width(None, G.output_dim, noisy)
    _, conv_j, _ = fit_supports(G, yn, sup, mn)
    _, conv_cg, obj_cg = fit_supports(G, yn, sup, mn, memory_budget=1)
    assert bool(conv_j.all()) and not bool(conv_cg.any()) and bool((obj_cg > 0).all())


@pytest.mark.slow
def test_masked_float32_pursuit_on_the_shipped_expansive_generator_matrix_free() -> None:
    """float32, 20 % of the pixels hidden: the masked output layer (627 x 588, condition number
    about 1.1e3) needs about 4400 CGLS iterations for its warm start; both reads recover the
    latents to float32 accuracy."""
    dense = load_conv_generator("conv_expansive")
    free = load_conv_generator("conv_expansive", memory_budget=1)
    z, y = dense.sample(4, seed=2)
    seen = torch.rand(784, generator=torch.Generator().manual_seed(0)) < 0.8
    a = geninv.invert(dense, y, method="latent_pursuit", mask=seen)
    b = geninv.invert(free, y, method="latent_pursuit", mask=seen)
    assert bool(a.fits.all()) and bool(b.fits.all())
    assert float(geninv.snr(z, b.z).min()) > 100 and float(geninv.snr(z, a.z).min()) > 100

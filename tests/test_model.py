"""Generator model: from_torch agreement, batch-norm folding, activations, unsupported layers."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import geninv
from geninv import PLU, Activation, Generator, UnsupportedLayerError
from geninv.exceptions import DomainError, InputError, ShapeError


def _mnist_like(dtype=torch.float32, seed=0) -> nn.Sequential:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Linear(20, 128), nn.BatchNorm1d(128), nn.ReLU(),
        nn.Linear(128, 392), nn.BatchNorm1d(392), nn.ReLU(),
        nn.Linear(392, 784), PLU(),
    ).to(dtype)
    # Non-trivial running statistics and affine parameters, so folding is actually exercised.
    for m in net:
        if isinstance(m, nn.BatchNorm1d):
            with torch.no_grad():
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.2, 3)
                m.weight.uniform_(0.5, 2)
                m.bias.uniform_(-0.5, 0.5)
    return net.eval()


def test_from_torch_matches_bn_relu_plu_network_float32():
    net = _mnist_like()
    G = Generator.from_torch(net)
    assert G.dims == [20, 128, 392, 784]
    assert G.output_activation.name == "plu"
    z = torch.randn(64, 20)
    with torch.no_grad():
        ref = net(z)
    # float32: the folded affine map differs from BN-after-Linear by rounding only.
    assert torch.allclose(G(z), ref, atol=1e-5, rtol=1e-5)


def test_batchnorm_folding_exact_float64():
    net = _mnist_like(torch.float64)
    G = Generator.from_torch(net)
    z = torch.randn(32, 20, dtype=torch.float64)
    with torch.no_grad():
        ref = net(z)
        # pre-activation of the first layer, where folding alone acts
        pre_ref = net[1](net[0](z))
    assert torch.allclose(G.trace(z).pre[0], pre_ref, atol=1e-12, rtol=0)
    assert torch.allclose(G(z), ref, atol=1e-12, rtol=0)


@settings(max_examples=15, deadline=None)
@given(
    depth=st.integers(1, 4),
    width=st.integers(2, 40),
    out=st.sampled_from(["tanh", "sigmoid", "identity", "leaky_relu", "plu", "relu"]),
    bn=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_from_torch_matches_random_deeper_networks(depth, width, out, bn, seed):
    torch.manual_seed(seed)
    mods: list[nn.Module] = []
    n_in = 5
    for _ in range(depth):
        mods.append(nn.Linear(n_in, width))
        if bn:
            b = nn.BatchNorm1d(width)
            with torch.no_grad():
                b.running_mean.normal_()
                b.running_var.uniform_(0.5, 2)
            mods.append(b)
        mods.append(nn.ReLU())
        n_in = width
    mods.append(nn.Sequential(nn.Linear(n_in, 30)))  # nested Sequential
    mods.append({"tanh": nn.Tanh(), "sigmoid": nn.Sigmoid(), "identity": nn.Identity(),
                 "leaky_relu": nn.LeakyReLU(0.2), "plu": PLU(), "relu": nn.ReLU()}[out])
    net = nn.Sequential(*mods).eval()
    G = Generator.from_torch(net)
    z = torch.randn(16, 5)
    with torch.no_grad():
        assert torch.allclose(G(z), net(z), atol=1e-5, rtol=1e-5)
    # and back to torch
    with torch.no_grad():
        assert torch.allclose(G.to_torch()(z), net(z), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "net, match",
    [
        (nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Conv2d(1, 1, 3)), r"node 2 \(Conv2d\): expected an input it accepts"),
        (nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.ReLU()).train(), r"node 1 \(Dropout\).*eval mode"),
        (nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8).train(), nn.ReLU()), r"node 1 \(BatchNorm1d\).*training mode"),
        (nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Tanh()), r"node 2 \(Tanh\).*two activations"),
        (nn.Sequential(nn.Linear(4, 8), nn.Softmax(dim=1), nn.Linear(8, 3)), r"node 1 \(Softmax\).*cannot read"),
        (nn.Sequential(nn.ReLU(), nn.Linear(4, 8)), r"node 0 \(ReLU\)"),
        (nn.Sequential(), r"first nn.Linear.*example_input"),
    ],
)
def test_unsupported_layers_raise_named_error(net, match):
    with pytest.raises(UnsupportedLayerError, match=match):
        Generator.from_torch(net)


def test_random_generator_reproducible_and_scaled():
    a = geninv.random_generator([20, 200, 600], seed=3)
    b = geninv.random_generator([20, 200, 600], seed=3)
    c = geninv.random_generator([20, 200, 600], seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a.weights, b.weights))
    assert not torch.equal(a.weights[0], c.weights[0])
    assert not a.has_bias()
    # variance 1/fan_in: 200*20 = 4000 entries, so the sample variance is within ~10% of 1/20
    v = float(geninv.random_generator([20, 200, 600], seed=0, dtype=torch.float64).weights[0].var())
    assert abs(v * 20 - 1) < 0.1


def test_trace_layers_and_supports():
    G = geninv.random_generator([10, 60, 250, 800], output="tanh", seed=1, dtype=torch.float64)
    z = torch.randn(8, 10, dtype=torch.float64)
    t = G.trace(z)
    assert [x.shape[1] for x in t.post] == [60, 250, 800]
    assert torch.equal(t.y, G(z))
    for x, a, s in zip(t.hidden, t.pre, t.supports):
        assert torch.equal(x, torch.relu(a))
        assert torch.equal(s, a > 0)
    assert torch.equal(t.cardinalities[0], (t.hidden[0] > 0).sum(1))


def test_z_validation():
    G = geninv.random_generator([20, 50, 100], seed=0)
    with pytest.raises(ShapeError, match=r"z: expected shape \(B, 20\)"):
        G(torch.randn(3, 21))
    with pytest.raises(InputError, match="z: expected finite"):
        G(torch.full((2, 20), float("nan")))
    assert G(torch.randn(20)).shape == (1, 100)


@pytest.mark.parametrize("name", ["leaky_relu", "tanh", "sigmoid", "plu", "identity"])
def test_activation_inverse_derivative_lipschitz(name):
    act = Activation(name)
    x = torch.linspace(-4, 4, 2001, dtype=torch.float64)
    y = act(x)
    assert torch.allclose(act.inverse(y), x, atol=1e-8)
    # derivative vs central differences away from kinks
    h = 1e-6
    fd = (act(x + h) - act(x - h)) / (2 * h)
    kinks = torch.zeros_like(x, dtype=torch.bool)
    for k in (0.0, -1.0, 1.0):
        kinks |= (x - k).abs() < 1e-3
    assert torch.allclose(act.derivative(x)[~kinks], fd[~kinks], atol=1e-6)
    # Lipschitz constant bounds every difference quotient
    q = (y[1:] - y[:-1]).abs() / (x[1:] - x[:-1])
    assert float(q.max()) <= act.lipschitz + 1e-9


def test_activation_inverse_out_of_range():
    with pytest.raises(DomainError, match=r"y: expected values in the open range \(-1.0, 1.0\)"):
        Activation("tanh").inverse(torch.tensor([0.5, 1.0]))
    with pytest.raises(DomainError, match="sigmoid"):
        Activation("sigmoid").inverse(torch.tensor([-0.1]))
    with pytest.raises(DomainError, match="relu is not invertible"):
        Activation("relu").inverse(torch.tensor([0.1]))
    # clamping is the explicit opt-in for noisy signals
    assert torch.isfinite(Activation("tanh").inverse(torch.tensor([1.2]), clamp=1e-6)).all()
    with pytest.raises(InputError, match="activation: expected one of"):
        Activation("swish")


def test_to_accepts_a_dtype_alone_like_torch() -> None:
    # G.to(torch.float64) changes only the dtype (as Tensor.to does); the values are the same.
    G = geninv.random_generator([3, 8, 16], output="tanh", seed=0)
    G64 = G.to(torch.float64)
    assert G64.dtype == torch.float64 and G64.device == G.device and G.dtype == torch.float32
    z = torch.randn(4, 3)
    assert torch.allclose(G64(z.double()).float(), G(z), atol=1e-6)

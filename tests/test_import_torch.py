"""Generator.from_torch on user-style modules: forward reproduced, shapes kept, refusals named;
gradient methods on any generator and any callable; the layer-wise inverse of invertible layers."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import geninv
from geninv import PLU, ConvergenceWarning, Generator, InputError, UnsupportedLayerError

TOL = {torch.float32: 1e-6, torch.float64: 1e-12}


def _randomize_bn(module: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial running statistics and affine parameters, so that folding is actually tested."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            with torch.no_grad():
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
                m.weight.copy_(0.5 + torch.rand(m.num_features, generator=g))
                m.bias.copy_(0.3 * torch.randn(m.num_features, generator=g))
    return module


def _assert_reproduces(module: nn.Module, latent_shape: tuple[int, ...], dtype: torch.dtype, **kw) -> Generator:
    module = copy.deepcopy(module).to(dtype).eval()
    G = Generator.from_torch(module, **kw)
    z = torch.randn(7, *latent_shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    with torch.no_grad():
        ref = module(z)
        out = G(z.reshape(7, -1))
    assert out.shape == ref.shape
    assert out.dtype == dtype
    assert float((out - ref).abs().max()) <= TOL[dtype]
    with torch.no_grad():  # and back to torch: a Sequential of the dense layers, in the module's output shape
        assert float((G.to_torch()(z.reshape(7, -1)) - ref).abs().max()) <= TOL[dtype]
    return G


class PaperMNIST(nn.Module):
    """The paper's MNIST generator 20-128-392-784 (BatchNorm, ReLU, PLU), as a user would write it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.bn1 = nn.Linear(20, 128), nn.BatchNorm1d(128)
        self.fc2, self.bn2 = nn.Linear(128, 392), nn.BatchNorm1d(392)
        self.fc3 = nn.Linear(392, 784)
        self.out = PLU(0.1, 1.0)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.fc1(z)))
        x = torch.relu(self.bn2(self.fc2(x)))
        return self.out(self.fc3(x))


class DCGAN(nn.Module):
    """z (B, 16) -> Linear -> (32, 7, 7) -> ConvT 14x14 -> ConvT 28x28, BatchNorm2d, ReLU, Tanh."""

    def __init__(self, nz: int = 16) -> None:
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(nz, 32 * 7 * 7), nn.BatchNorm1d(32 * 7 * 7), nn.ReLU(True))
        self.net = nn.Sequential(
            nn.ConvTranspose2d(32, 16, 4, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(True),
            nn.ConvTranspose2d(16, 1, 4, 2, 1), nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.fc(z).view(-1, 32, 7, 7))


class VAEDecoder(nn.Module):
    """Softplus hidden layers, the sigmoid applied in forward (as in the common PyTorch VAE example)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(20, 60), nn.Softplus(), nn.Linear(60, 200), nn.Softplus(), nn.Linear(200, 784))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(z))


def leaky_decoder() -> nn.Module:
    """Lei et al.'s MNIST decoder shape: LeakyReLU hidden layers and no biases."""
    return nn.Sequential(nn.Linear(20, 60, bias=False), nn.LeakyReLU(0.2), nn.Linear(60, 784, bias=False), nn.Sigmoid())


class DropoutView(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(10, 100), nn.ReLU(), nn.Dropout(0.3), nn.Linear(100, 784), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, 1, 28, 28)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_paper_mnist_generator_as_module_subclass(dtype):
    G = _assert_reproduces(_randomize_bn(PaperMNIST()), (20,), dtype)
    assert G.dims == [20, 128, 392, 784] and G.relu_hidden and G.output_activation.name == "plu"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dcgan_generator_conv_transpose_batchnorm2d(dtype):
    G = _assert_reproduces(_randomize_bn(DCGAN()), (16,), dtype)
    assert G.dims == [16, 1568, 3136, 784] and G.output_shape == (1, 28, 28)
    assert G.output_activation.name == "tanh" and G.relu_hidden


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_vae_decoder_softplus_hidden_sigmoid_in_forward(dtype):
    G = _assert_reproduces(VAEDecoder(), (20,), dtype)
    assert [a.name for a in G.hidden_activations] == ["softplus", "softplus"]
    assert G.output_activation.name == "sigmoid"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_leaky_relu_hidden_no_biases(dtype):
    G = _assert_reproduces(leaky_decoder(), (20,), dtype)
    assert G.hidden_activations[0].params["slope"] == pytest.approx(0.2)
    assert not G.has_bias()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dropout_eval_and_view_at_the_end(dtype):
    G = _assert_reproduces(DropoutView(), (10,), dtype)
    assert G.output_shape == (1, 28, 28) and G.dims == [10, 100, 784]


class DCGANLatent4d(nn.Module):
    """The classic DCGAN interface: z of shape (B, nz, 1, 1); grouped convolutions, output padding,
    nearest upsampling and a bias-free conv."""

    def __init__(self) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(6, 8, 3, 1, 0), nn.BatchNorm2d(8), nn.LeakyReLU(0.1),   # 3x3
            nn.ConvTranspose2d(8, 4, 3, 2, 1, output_padding=1, groups=2), nn.ELU(),  # 6x6
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(4, 2, 3, padding=1, bias=False),  # 12x12
            nn.Sigmoid(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_latent_4d_groups_output_padding_upsample(dtype):
    ex = torch.zeros(2, 6, 1, 1, dtype=dtype)
    G = _assert_reproduces(_randomize_bn(DCGANLatent4d()), (6, 1, 1), dtype, example_input=ex)
    assert G.latent_shape == (6, 1, 1) and G.output_shape == (2, 12, 12)
    assert G.dims == [6, 72, 144, 288]  # the upsampling is composed into the last convolution
    z = torch.randn(3, 6, 1, 1, dtype=dtype)
    assert torch.equal(G(z), G(z.reshape(3, 6)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_conv1d_stride_padding_groups(dtype):
    net = nn.Sequential(
        nn.Linear(5, 24), nn.Tanh(), nn.Unflatten(1, (4, 6)),
        nn.ConvTranspose1d(4, 6, 4, stride=3, padding=1, output_padding=2, groups=2), nn.ReLU(),
        nn.Conv1d(6, 3, 3, stride=2, padding=2, dilation=2, bias=False), nn.Flatten(), nn.Linear(3 * 10, 40),
    )
    G = _assert_reproduces(net, (5,), dtype)
    assert G.output_shape == (40,)


class Functional(nn.Module):
    """Activations as functions with their parameters, interpolation and an affine rescaling in forward."""

    def __init__(self, act) -> None:
        super().__init__()
        self.a, self.b, self.act = nn.Linear(5, 20), nn.Linear(20, 30), act

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.act(self.b(self.act(self.a(z)))).view(-1, 1, 30), scale_factor=2) * 0.5 + 0.5


@pytest.mark.parametrize("act, name, params", [
    (lambda x: F.gelu(x, approximate="tanh"), "gelu", {"tanh": 1.0}),
    (lambda x: F.softplus(x, 2.0, 5.0), "softplus", {"beta": 2.0, "threshold": 5.0}),
    (lambda x: F.elu(x, alpha=0.5), "elu", {"alpha": 0.5}),
    (lambda x: F.leaky_relu(x, negative_slope=0.3), "leaky_relu", {"slope": 0.3}),
    (F.silu, "silu", {}),
    (torch.relu, "relu", {}),
])
def test_functional_activations_and_their_parameters(act, name, params):
    G = _assert_reproduces(Functional(act), (5,), torch.float64)
    assert [a.name for a in G.hidden_activations] == [name, name] and G.hidden_activations[0].params == params
    assert G.output_shape == (1, 60) and G.output_activation.name == "identity"


def test_fx_failure_falls_back_to_recording_the_forward():
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(6, 30), nn.Linear(30, 50)

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            if z.sum() > 1e9:  # data-dependent control flow: symbolic tracing fails here
                z = z * 0
            return torch.tanh(self.b(F.leaky_relu(self.a(z), 0.3)))

    G = _assert_reproduces(Branchy(), (6,), torch.float64)
    assert [a.name for a in G.hidden_activations] == ["leaky_relu"] and G.output_activation.name == "tanh"


class Skip(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(z)) + z)


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 32)
        self.att = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.fc(z).view(-1, 4, 8)
        return self.att(x, x, x)[0]


@pytest.mark.parametrize("module, match", [
    (Skip(), r"node z: expected its output to feed one operation, received 2 \(a, add\).*skip connection"),
    (Attention(), r"node att \(MultiheadAttention\): expected an operation returning one tensor.*attention"),
    (nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6).train(), nn.ReLU()), r"node 1 \(BatchNorm1d\).*statistics"),
    (nn.Sequential(nn.Linear(4, 18), nn.ReLU(), nn.Unflatten(1, (2, 3, 3)), nn.Upsample(scale_factor=2, mode="bicubic")),
     r"node 3 \(Upsample\): expected a linear upsampling.*'bicubic'"),
])
def test_unsupported_modules_refused_by_name(module, match):
    with pytest.raises(UnsupportedLayerError, match=match):
        Generator.from_torch(module)


def test_check_catches_an_activation_the_trace_missed():
    net = nn.Sequential(nn.Linear(6, 20), nn.ReLU(), nn.Linear(20, 30)).double()
    net.register_forward_hook(lambda m, i, out: torch.sigmoid(out))  # applied by __call__, not by forward
    with pytest.raises(UnsupportedLayerError, match=r"largest difference of [0-9.e-]+ > .* at output entry"):
        Generator.from_torch(net)
    G = Generator.from_torch(net, check=False)  # the user's explicit choice: the traced chain itself
    assert G.output_activation.name == "identity"


def test_memory_budget_keeps_a_layer_matrix_free_and_names_it():
    net = nn.Sequential(nn.Linear(10, 4 * 8 * 8), nn.ReLU(), nn.Unflatten(1, (4, 8, 8)), nn.ConvTranspose2d(4, 2, 4, 2, 1))
    G = Generator.from_torch(net, memory_budget=100_000)  # 512 x 256 float32: 524288 bytes
    assert G.layers[0].W is not None and G.layers[1].W is None and G.layers[1].operator.matrix_free
    with pytest.raises(UnsupportedLayerError, match=r"layer 2 \(2 \(Unflatten\) \+ 3 \(ConvTranspose2d\)\): "
                                                     r"expected a dense weight, received a matrix-free one \(512 x 256"):
        _ = G.weights
    dense = Generator.from_torch(net)
    z = torch.randn(4, 10, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(G(z), dense(z), rtol=0, atol=1e-5)


def test_shaped_generator_saves_loads_and_inverts_in_its_shape(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 2 * 4 * 4), nn.ReLU(), nn.Unflatten(1, (2, 4, 4)),
                        nn.ConvTranspose2d(2, 1, 4, 2, 1), nn.Tanh()).double()
    G = Generator.from_torch(net)
    path = tmp_path / "conv.safetensors"
    G.save(str(path))
    G2 = geninv.load_generator(path)
    assert G2.output_shape == (1, 8, 8) and [layer.name for layer in G2.layers] == [layer.name for layer in G.layers]
    z, y = G2.sample(3, seed=0)
    assert y.shape == (3, 1, 8, 8)
    res_img = geninv.invert(G2, y, method="latent_pursuit")
    res_flat = geninv.invert(G2, y.reshape(3, 64), method="latent_pursuit")
    assert torch.equal(res_img.z, res_flat.z)
    mask = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(2)) < 0.8
    with pytest.warns(ConvergenceWarning):  # 50 iterations: only the shapes are checked here
        res_mask = geninv.invert(G2, y, method="gd", mask=mask, max_iter=50)
    assert res_mask.z.shape == (3, 8)


def test_conv_generator_runs_the_oracle_and_certificates():
    """ReLU hidden conv layers are dense matrices: the paper's methods run unchanged; with the true
    supports and an expansive net the Oracle recovers z exactly in float64."""
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(6, 3 * 6 * 6), nn.ReLU(), nn.Unflatten(1, (3, 6, 6)),
                        nn.ConvTranspose2d(3, 4, 4, 2, 1), nn.ReLU(), nn.Conv2d(4, 3, 3, padding=1), nn.Tanh()).double()
    G = Generator.from_torch(net)
    assert G.dims == [6, 108, 576, 432]
    z, y = G.sample(4, seed=1)
    tr = G.trace(z)
    res = geninv.oracle(G, y, supports=tr.supports)
    assert float(geninv.relative_error(z, res.z).max()) < 1e-9
    cert = geninv.certify(G, z[0])
    assert cert is not None


def test_pursuits_and_certificates_refuse_non_relu_hidden_layers_by_name():
    G = Generator.from_torch(VAEDecoder().double())
    z, y = G.sample(2, seed=0)
    for method in ("latent_pursuit", "layered_bp", "lp_layerwise"):
        with pytest.raises(UnsupportedLayerError, match=r"hidden layer 1 \(net.0 \(Linear\) -> net.1 \(Softplus\)\) "
                                                         r"with activation softplus"):
            geninv.invert(G, y, method=method)
    # The Oracle and the certificate read an invertible hidden layer through its rank conditions
    # (supports carry no information there): tests/test_invertible_layers.py.
    res = geninv.oracle(G, y, supports=[x > 0 for x in G.trace(z).hidden])
    assert bool(res.info["full_rank"].all()) and float(geninv.relative_error(z, res.z).max()) < 1e-9
    cert = geninv.certify(G, z[0])
    assert cert.unique is True and all(c.theorem == "Rank condition" for c in cert.conditions)


def test_gradient_methods_on_gelu_generator_and_on_a_callable():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 60), nn.GELU(), nn.Linear(60, 200), nn.SiLU(), nn.Linear(200, 300)).double()
    G = Generator.from_torch(net)
    z, y = G.sample(3, seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = geninv.invert(G, y, method="gd", max_iter=1500)
    fit = (G(res.z) - y).norm(dim=1) / y.norm(dim=1)
    assert float(fit.max()) < 1e-6  # a fitted latent (the certificate: not available, no uniqueness claim)
    assert "not available" in res.info["certificate"]
    with pytest.raises(UnsupportedLayerError, match="layerwise_inverse.*hidden layer 1.*gelu"):
        geninv.layerwise_inverse(G, y)

    class NotAChain(nn.Module):  # a residual block: not importable, still differentiable
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(8, 40), nn.Linear(40, 100)

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            h = torch.tanh(self.a(z))
            return self.b(h + 0.5 * h**2).view(-1, 1, 10, 10)

    m = NotAChain().double()
    with torch.no_grad():
        yc = m(z)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        rc = geninv.invert(m, yc, method="adam", latent_dim=8, max_iter=800, restarts=2)
    with torch.no_grad():
        rel = (m(rc.z) - yc).flatten(1).norm(dim=1) / yc.flatten(1).norm(dim=1)
    assert float(rel.max()) < 1e-5
    assert rc.layers == [] and "arbitrary callable" in rc.info["certificate"]
    with pytest.raises(InputError, match="latent_dim"):
        geninv.invert(m, yc, method="gd")
    with pytest.raises(InputError, match=r"Generator.from_torch"):
        geninv.invert(m, yc, method="latent_pursuit")


def _leaky_expansive(dims, slope=0.2, out=nn.Tanh, seed=0):
    torch.manual_seed(seed)
    mods: list[nn.Module] = []
    for i in range(len(dims) - 1):
        mods.append(nn.Linear(dims[i], dims[i + 1]))
        mods.append(nn.LeakyReLU(slope) if i < len(dims) - 2 else out())
    return nn.Sequential(*mods).double()


def test_layerwise_inverse_recovers_z_exactly_float64():
    G = Generator.from_torch(_leaky_expansive([10, 40, 120, 300]))
    z, y = G.sample(16, seed=5)
    res = geninv.layerwise_inverse(G, y)
    assert bool(res.converged.all()) and bool(res.info["full_rank"].all())
    assert [int(r[0]) for r in res.info["rank"]] == [10, 40, 120]
    assert float(geninv.relative_error(z, res.z).max()) < 1e-11
    for x_hat, x in zip(res.layers, G.trace(z).hidden):
        assert float((x_hat - x).abs().max()) < 1e-10
    # on a per-sample random mask keeping 60 % of the pixels
    mask = torch.rand(16, 300, generator=torch.Generator().manual_seed(1)) < 0.6
    rm = geninv.layerwise_inverse(G, y, mask=mask)
    assert float(geninv.relative_error(z, rm.z).max()) < 1e-10


def test_layerwise_inverse_other_invertible_activations():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(6, 30), nn.ELU(), nn.Linear(30, 80), nn.Softplus(), nn.Linear(80, 150), nn.Sigmoid()).double()
    G = Generator.from_torch(net)
    z, y = G.sample(5, seed=2)
    res = geninv.layerwise_inverse(G, y)
    assert float(geninv.relative_error(z, res.z).max()) < 1e-10 and bool(res.converged.all())


def test_layerwise_inverse_flags_a_contracting_layer():
    G = Generator.from_torch(_leaky_expansive([10, 40, 8, 300]))  # W_3 is 8 x 40: x_2 -> x_3 loses rank
    z, y = G.sample(3, seed=0)
    with pytest.warns(ConvergenceWarning, match="rank-deficient"):
        res = geninv.layerwise_inverse(G, y)
    assert not bool(res.info["full_rank"].any()) and not bool(res.converged.any())
    assert [int(r[0]) for r in res.info["rank"]] == [10, 8, 8]


def test_layerwise_inverse_refuses_relu():
    G = geninv.random_generator([5, 20, 40], dtype=torch.float64)
    with pytest.raises(UnsupportedLayerError, match=r"hidden layer 1 with relu; use the pursuits"):
        geninv.layerwise_inverse(G, G.sample(1)[1])


@pytest.mark.parametrize("name, params", [("softplus", {"beta": 2.0}), ("elu", {"alpha": 0.7}), ("leaky_relu", {}),
                                          ("gelu", {}), ("gelu", {"tanh": 1.0}), ("silu", {})])
def test_new_activations_value_derivative_inverse(name, params):
    a = geninv.Activation(name, params)
    x = torch.linspace(-6, 6, 241, dtype=torch.float64).requires_grad_(True)
    (g,) = torch.autograd.grad(a(x).sum(), x)
    xd = x.detach()
    assert torch.allclose(a.derivative(xd), g, atol=1e-12)
    assert float(a.derivative(xd).abs().max()) <= a.lipschitz
    if a.invertible:
        assert torch.allclose(a.inverse(a(xd)), xd, atol=1e-9)
    else:
        with pytest.raises(geninv.DomainError, match="not monotone"):
            a.inverse(a(xd))


def test_conv_study_on_a_small_convolutional_generator(tmp_path):
    """The `geninv reproduce conv` pipeline end to end on a tiny generator: architecture verdict,
    the three runs with records and summaries."""
    from geninv.experiments.conv_exp import run_conv

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 2 * 7 * 7), nn.ReLU(), nn.Unflatten(1, (2, 7, 7)), nn.ConvTranspose2d(2, 2, 4, 2, 1),
                        nn.ReLU(), nn.ConvTranspose2d(2, 1, 4, 2, 1), nn.Flatten(), nn.Tanh()).double()
    G = Generator.from_torch(net)
    res = run_conv(tmp_path, quick=True, images=4, methods=("oracle", "gd"), generators=[("tiny", G)],
                   architecture_trials=20, progress=False)
    arch = res["architecture"]["tiny"]
    assert arch["dims"] == [4, 98, 392, 784] and set(arch["corollary1"]) >= {"all", "n_0 <= s_1"}
    assert (tmp_path / "summary.md").read_text().startswith("# Convolutional MNIST generators")
    for tag in ("clean", "inpaint_random", "inpaint_block"):
        assert (tmp_path / "tiny" / tag / "summary.md").is_file()


@pytest.mark.parametrize("name, dims", [("conv_expansive", [20, 196, 588, 784]), ("conv_dcgan", [20, 1568, 3136, 784])])
def test_shipped_conv_generators(name, dims):
    """The shipped convolutional generators: the module's forward reproduced, and Corollary 1's verdict per
    layer (the expansive one meets it; the DCGAN-shaped one fails at its contracting output layer)."""
    from geninv.weights import CONV_GENERATORS, conv_generator_record, load_conv_generator, load_conv_module

    module = load_conv_module(name).double()
    G = load_conv_generator(name, dtype=torch.float64)
    assert G.dims == dims and G.relu_hidden and G.output_activation.name == "plu"
    z = torch.randn(5, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        assert float((G(z) - module(z)).abs().max()) <= 1e-12
    assert conv_generator_record(name)["config"]["conv"] == list(CONV_GENERATORS[name])
    rep = geninv.certify_architecture(G, trials=50, theorem1=False)
    if name == "conv_expansive":
        assert rep.corollary1["all"] >= 0.9
    else:
        assert rep.corollary1["s_2 < n/2"] == 0.0 and rep.corollary1["n_0 <= s_1"] == 1.0


def test_module_state_file_is_checked(tmp_path):
    from geninv.model.io import load_module_state, save_module_state

    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    path = tmp_path / "m.safetensors"
    save_module_state(net.state_dict(), {"what": "test"}, path)
    state, config = load_module_state(path)
    assert config == {"what": "test"} and all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x40  # a flipped bit in the last tensor
    path.write_bytes(bytes(data))
    with pytest.raises(geninv.ModelFileError, match="sha256"):
        load_module_state(path)

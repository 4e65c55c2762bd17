"""Baselines of docs/method.md sec. 7: gradient descent, Adam with restarts, Lei et al.'s layer-wise LP."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from geninv.exceptions import ConvergenceWarning, DomainError, InputError, ShapeError
from geninv.metrics import relative_error, snr
from geninv.model import Activation, Generator, Layer, random_generator
from geninv.operators import GaussianMatrix, Identity, Mask, add_noise, random_mask
from geninv.solvers.gradient import adam, gd
from geninv.solvers.gradient_setup import setup_fit
from geninv.solvers.lp_layerwise import lp_layerwise

F64 = torch.float64


@pytest.fixture(scope="module")
def two_layer() -> Generator:
    # n_0 = 20, n_1 = 200, n = 600: s_1 ~ 100 in (2 n_0, n / 2), the paper's unique regime (docs/method.md sec. 8.1).
    return random_generator([20, 200, 600], "tanh", seed=0, dtype=F64)


@pytest.fixture(scope="module")
def three_layer() -> Generator:
    # cardinalities 10 -> ~30 -> ~125 -> 800: expanding by > 2x per layer (Corollary 1).
    return random_generator([10, 60, 250, 800], "tanh", seed=0, dtype=F64)


class SelectRows:
    """``A x = x[idx]``: a minimal operator (protocol only) that selects entries."""

    def __init__(self, idx: torch.Tensor) -> None:
        self.idx = idx

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.idx), 600)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, self.idx]

    def adjoint(self, r: torch.Tensor) -> torch.Tensor:
        out = r.new_zeros(r.shape[0], 600)
        out[:, self.idx] = r
        return out

    def norm(self) -> float:
        return 1.0


def _assert_lp_feasible(G: Generator, y: torch.Tensor, res, atol: float) -> None:
    """Check every stage's constraints directly on the returned LP solutions (float64)."""
    u = torch.atanh(y)
    xs = [res.z, *res.layers]
    top = xs[-1] @ G.weights[-1].T + G.biases[-1]
    assert (top - u).abs().max() < atol  # image layer: W_{L+1} x_L + b = phi^{-1}(y)
    for i in range(G.n_hidden, 0, -1):  # layer i: x_i = relu(W_i x_{i-1} + b_i) as equalities + inequalities
        x_in, x_out, S = xs[i - 1], xs[i], res.supports[i - 1]
        a = x_in @ G.weights[i - 1].T + G.biases[i - 1]
        assert ((a - x_out).abs() * S).max() < atol  # W^S x + b^S = x_i^S
        assert (a * ~S).max() < atol  # W^{S^c} x + b^{S^c} <= 0
        assert (x_out * ~S).abs().max() < atol  # the LP solution is (numerically) zero off its support
        if i > 1:
            assert x_in.min() > -atol  # hidden layers are nonnegative; z is free


# -- layer-wise LP ----------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["two_layer", "three_layer"])
def test_lp_recovers_planted_latent_exactly(which: str, request: pytest.FixtureRequest) -> None:
    G = request.getfixturevalue(which)
    z, y = G.sample(8, seed=1)
    res = lp_layerwise(G, y)
    assert res.converged.all() and res.method == "lp_layerwise"
    # float64 data, vertex solutions of well-conditioned LPs: errors ~1e-12, far below 1e-6.
    assert relative_error(z, res.z).max() < 1e-6
    tr = G.trace(z)
    for x_true, x_hat, s_true, s_hat in zip(tr.hidden, res.layers, tr.supports, res.supports):
        assert relative_error(x_true, x_hat).max() < 1e-6
        assert torch.equal(s_true, s_hat)
    _assert_lp_feasible(G, y, res, atol=1e-8)  # HiGHS feasibility tolerance is 1e-7; observed ~1e-11
    assert res.history["objective"].shape == (G.n_hidden + 1, 8)
    assert res.history["residual"].max() < 1e-8
    assert (res.info["status"] == 0).all()


def test_lp_float32_exact_up_to_rounding() -> None:
    G = random_generator([20, 200, 600], "tanh", seed=0, dtype=torch.float32)
    z, y = G.sample(4, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        res = lp_layerwise(G, y)
    assert res.z.dtype == torch.float32 and res.converged.all()
    # float32 data: eps ~1.2e-7, amplified by atanh' = 1 / (1 - y^2) (up to ~100 here) -> ~1e-5
    assert relative_error(z, res.z).max() < 1e-4


def test_lp_noise_modes_are_optimal(two_layer: Generator) -> None:
    G = two_layer
    z, y = G.sample(2, seed=2)
    y_noisy, _ = add_noise(y, 60.0, seed=3)
    x1_true = G.trace(z).hidden[0]
    gap_true = torch.atanh(y_noisy.clamp(-1 + 1e-6, 1 - 1e-6)) - x1_true @ G.weights[1].T
    for noise, best_possible in (("linf", gap_true.abs().amax(dim=1)), ("l1", gap_true.abs().sum(dim=1))):
        res = lp_layerwise(G, y_noisy, noise=noise)
        assert res.converged.all() and torch.isfinite(res.z).all()
        # the true x_1 (with x_1 >= 0) is feasible for the image-layer LP, so the LP optimum cannot exceed its value
        assert (res.history["objective"][0] <= best_possible * (1 + 1e-9) + 1e-9).all()
        # and the optimum is what the returned x_1 achieves (the history is computed from x_1 itself)
        r = torch.atanh(y_noisy.clamp(-1 + 1e-6, 1 - 1e-6)) - res.layers[0] @ G.weights[1].T
        achieved = r.abs().amax(dim=1) if noise == "linf" else r.abs().sum(dim=1)
        torch.testing.assert_close(res.history["objective"][0], achieved, rtol=1e-9, atol=1e-9)
        # 60 dB input noise through two LPs (measured: linf 43-56 dB, l1 66-69 dB)
        assert snr(z, res.z).min() > (30 if noise == "linf" else 50)
    # noiseless data: the residual-minimizing LPs recover z exactly as well
    res = lp_layerwise(G, y, noise="linf", support_tol=1e-6)
    assert relative_error(z, res.z).max() < 1e-6


def test_lp_with_masks_and_operators(two_layer: Generator) -> None:
    G = two_layer
    z, y = G.sample(3, seed=4)
    # 30 % hidden, per sample: 420 observed rows >> s_1 ~ 100, the top layer stays injective.
    mask = random_mask(600, 0.3, seed=5, batch=3)
    res = lp_layerwise(G, torch.where(mask, y, 5.0), measure=Mask(mask))  # hidden entries (even out of range) ignored
    assert res.converged.all() and relative_error(z, res.z).max() < 1e-6
    res = lp_layerwise(G, y, measure=Identity(600))  # an entry-selecting operator is read as a mask
    assert relative_error(z, res.z).max() < 1e-6
    with pytest.raises(InputError, match="measure"):
        lp_layerwise(G, y[:, :300], measure=GaussianMatrix(300, 600, dtype=F64))
    rows = SelectRows(torch.arange(0, 600, 2))  # an entry-selecting operator: y holds the 300 selected values
    res = lp_layerwise(G, y[:, ::2], measure=rows)
    assert relative_error(z, res.z).max() < 1e-6
    # identity output: a compressive Gaussian A gives linear equalities A W x = A (y - b)
    Glin = Generator([G.layers[0], Layer(G.weights[1], G.biases[1], Activation("identity"))])
    A = GaussianMatrix(300, 600, seed=1, dtype=F64)
    res = lp_layerwise(Glin, A.forward(Glin(z)), measure=A)  # y: the (B, m) measurements
    assert res.converged.all() and relative_error(z, res.z).max() < 1e-6


def test_lp_infeasible_falls_back_with_warning() -> None:
    # n_1 = 50 unknowns, 600 equalities: noisy data are inconsistent, so the exact LP is infeasible
    G = random_generator([20, 50, 600], "tanh", seed=0, dtype=F64)
    z, y = G.sample(2, seed=1)
    y_noisy, _ = add_noise(y, 40.0, seed=2)
    with pytest.warns(ConvergenceWarning, match="least squares"):
        res = lp_layerwise(G, y_noisy)
    assert not res.converged.any()
    assert torch.isfinite(res.z).all() and all(torch.isfinite(x).all() for x in res.layers)
    assert (res.info["status"][0] == 2).all()  # HiGHS: infeasible, at the image layer
    assert torch.isfinite(res.history["objective"]).all()
    with pytest.raises(DomainError):
        lp_layerwise(G, y * 2)  # exact mode: phi^{-1} undefined outside (-1, 1)


# -- gradient descent -------------------------------------------------------------------------
def test_hand_written_gradient_matches_autograd() -> None:
    G = random_generator([6, 30, 50, 40], "plu", seed=3, bias=True, dtype=F64)
    z = torch.randn(5, 6, dtype=F64, generator=torch.Generator().manual_seed(0))
    _, y = G.sample(5, seed=9)
    mask = random_mask(40, 0.4, seed=1, batch=5)
    for measure in (None, Mask(mask), GaussianMatrix(25, 40, seed=2, dtype=F64)):
        general = isinstance(measure, GaussianMatrix)
        data = measure.forward(y) if general else y  # a general operator takes the (B, m) measurements
        _, _, fit, _ = setup_fit(G, data, measure, "gd")
        f, g = fit.value_grad(z)
        zz = z.clone().requires_grad_(True)
        yhat = G.forward_unchecked(zz)
        r = (yhat - y) if measure is None else measure.forward(yhat) - measure.forward(y)
        f_ref = 0.5 * (r * r).sum(dim=1)
        (g_ref,) = torch.autograd.grad(f_ref.sum(), zz)
        torch.testing.assert_close(f, f_ref.detach(), rtol=1e-12, atol=1e-12)  # float64 round-off
        torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-10)
        # power iteration: a lower estimate of ||A J||_2^2, close after 20 iterations here
        J = torch.func.vmap(torch.func.jacrev(lambda t: G.forward_unchecked(t[None])[0]))(z)
        AJ = J if measure is None else torch.stack([measure.forward(J[b].T).T if not isinstance(measure, Mask)
                                                    else J[b] * mask[b, :, None] for b in range(5)])
        lam_true = torch.linalg.matrix_norm(AJ, ord=2) ** 2
        lam = fit.lipschitz(z)
        assert (lam <= lam_true * (1 + 1e-10)).all() and (lam >= 0.5 * lam_true).all()


@pytest.mark.filterwarnings("ignore::geninv.exceptions.ConvergenceWarning")
def test_gd_objective_never_increases(two_layer: Generator) -> None:
    z, y = two_layer.sample(6, seed=3)
    res = gd(two_layer, y, max_iter=150, check_every=1, tol=0.0)  # record every iteration
    obj = res.history["objective"]
    assert obj.shape == (int(res.n_iter.max()) + 1, 6)  # the start, then every iteration (stops at machine precision)
    assert (obj[1:] <= obj[:-1]).all()  # monotone from the first step (function-value restart)
    assert (res.history["residual"][-1] < 1e-6 * res.history["residual"][0]).all()


def test_gd_easy_case_converges(two_layer: Generator) -> None:
    z, y = two_layer.sample(8, seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # every sample must stop by itself
        res = gd(two_layer, y, max_iter=2000)
    assert res.converged.all() and (res.n_iter < 2000).all()
    assert (res.history["residual"][-1] < 1e-10).all()  # from ~1 to machine precision
    assert (snr(z, res.z) > 150).all()
    tr = two_layer.trace(res.z)
    assert all(torch.equal(a, b) for a, b in zip(tr.hidden, res.layers))
    assert all(torch.equal(a, b) for a, b in zip(tr.supports, res.supports))


def test_gd_compressed_sensing(two_layer: Generator) -> None:
    z, y = two_layer.sample(4, seed=11)
    A = GaussianMatrix(300, 600, seed=2, dtype=F64)  # m = 300 > s_1 ~ 100: still well posed
    res = gd(two_layer, A.forward(y), measure=A, max_iter=2000)
    assert res.converged.all() and (snr(z, res.z) > 100).all()
    assert (res.history["residual"][-1] < 1e-10).all()  # ||A G(z) - y|| / ||y||


def test_gd_undetermined_case_is_finite() -> None:
    G = random_generator([20, 15, 600], "tanh", seed=0, dtype=F64)  # s_1 < n_0: z not determined
    _, y = G.sample(4, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = gd(G, y, max_iter=300)
    assert torch.isfinite(res.z).all() and res.converged.dtype == torch.bool and res.converged.shape == (4,)
    assert torch.isfinite(res.history["objective"]).all() and res.n_iter.shape == (4,)


def test_gd_batch_equals_one_by_one_and_is_deterministic(two_layer: Generator) -> None:
    _, y = two_layer.sample(4, seed=6)
    mask = random_mask(600, 0.45, seed=1, batch=4)
    res = gd(two_layer, y, measure=Mask(mask), max_iter=300, seed=3)
    again = gd(two_layer, y, measure=Mask(mask), max_iter=300, seed=3)
    assert torch.equal(res.z, again.z)  # same seed, same machine: bit-identical
    assert not torch.equal(res.z, gd(two_layer, y, measure=Mask(mask), max_iter=300, seed=4).z)
    z0 = torch.randn(4, 20, dtype=F64, generator=torch.Generator().manual_seed(3))
    res = gd(two_layer, y, measure=Mask(mask), max_iter=300, z0=z0)
    for b in range(4):
        one = gd(two_layer, y[b : b + 1], measure=Mask(mask[b]), max_iter=300, z0=z0[b : b + 1])
        torch.testing.assert_close(one.z[0], res.z[b], rtol=1e-10, atol=1e-10)
        assert one.n_iter[0] == res.n_iter[b]


def test_gd_nonfinite_objective_stops_sample() -> None:
    # identity output and huge weights: G(z)^2 overflows float32, f = inf from the start
    W1 = torch.randn(30, 5, generator=torch.Generator().manual_seed(0)) * 1e20
    W2 = torch.randn(10, 30, generator=torch.Generator().manual_seed(1))
    G = Generator([Layer(W1, torch.zeros(30), Activation("relu")), Layer(W2, torch.zeros(10), Activation("identity"))])
    with pytest.warns(ConvergenceWarning, match="NaN/Inf"):
        res = gd(G, torch.zeros(2, 10), max_iter=50)
    assert not res.converged.any() and res.info["diverged"].all() and torch.isfinite(res.z).all()


def test_gd_callback_and_validation(two_layer: Generator) -> None:
    _, y = two_layer.sample(2, seed=1)
    seen: list[int] = []

    def stop_at_50(k: int, state: dict) -> bool:
        assert state["stage"] == "gd" and state["z"].shape == (2, 20) and state["objective"].shape == (2,)
        assert state["x"] is state["z"]
        seen.append(k)
        return k >= 50

    res = gd(two_layer, y, max_iter=1000, callback=stop_at_50)
    assert seen == [25, 50] and res.info["stopped_by_callback"] and (res.n_iter == 50).all()
    for kw, name in (({"lr": -1.0}, "lr"), ({"momentum": 1.0}, "momentum"), ({"max_iter": 0}, "max_iter")):
        with pytest.raises(InputError, match=name):
            gd(two_layer, y, **kw)
    with pytest.raises(ShapeError, match="z0"):
        gd(two_layer, y, z0=torch.zeros(3, 20, dtype=F64))
    with pytest.raises(ShapeError, match="y"):
        gd(two_layer, y[:, :10])


# -- Adam with restarts -------------------------------------------------------------------------
def test_adam_best_restart_and_batched_restarts() -> None:
    # n_1 = 50 has spurious local minima, so restarts end at different objectives
    G = random_generator([20, 50, 600], "tanh", seed=3, dtype=F64)
    _, y = G.sample(4, seed=7)
    kw = {"max_iter": 400, "check_every": 20}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = adam(G, y, restarts=3, seed=10, **kw)
        singles = [adam(G, y, restarts=1, seed=10 + r, **kw) for r in range(3)]
    f_r = res.info["objective_restarts"]
    assert f_r.shape == (3, 4)
    for r, one in enumerate(singles):
        # batching restarts equals running them one by one (float64; independent rows of one product)
        torch.testing.assert_close(one.info["objective_restarts"][0], f_r[r], rtol=1e-10, atol=1e-20)
        torch.testing.assert_close(one.info["n_iter_restarts"][0], res.info["n_iter_restarts"][r])
        # best-of-restarts residual <= each single restart's residual
        assert (res.history["residual"][-1] <= one.history["residual"][-1] * (1 + 1e-12)).all()
    best = torch.stack([s.z for s in singles])[res.info["best_restart"], torch.arange(4)]
    # the random starts are not G.sample's latents for the same seed (a planted answer)
    z_same_seed, _ = G.sample(4, seed=10)
    assert (relative_error(z_same_seed, singles[0].z) > 1e-3).all()
    torch.testing.assert_close(res.z, best, rtol=1e-10, atol=1e-10)
    assert torch.equal(res.n_iter, res.info["n_iter_restarts"].sum(dim=0))


def test_adam_deterministic_and_converges(two_layer: Generator) -> None:
    z, y = two_layer.sample(4, seed=8)
    a = adam(two_layer, y, restarts=2, max_iter=1500, seed=1)
    b = adam(two_layer, y, restarts=2, max_iter=1500, seed=1)
    assert torch.equal(a.z, b.z)
    assert a.converged.all() and (snr(z, a.z) > 100).all()
    with pytest.raises(InputError, match="restarts"):
        adam(two_layer, y, restarts=0)


def test_lp_rejects_bad_options(two_layer: Generator) -> None:
    _, y = two_layer.sample(1, seed=0)
    with pytest.raises(InputError, match="noise"):
        lp_layerwise(two_layer, y, noise="l2")
    with pytest.raises(InputError, match="tol"):
        lp_layerwise(two_layer, y, tol=0.0)
    assert np.isfinite(lp_layerwise(two_layer, y, noise="l1").z.numpy()).all()

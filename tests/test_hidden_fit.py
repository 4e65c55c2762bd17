"""The start of the default method's refinement: z fitted through the hidden layers to the image
layer's estimate of x_L (planted recovery, monotone objective, the bank's nearest latent against a
brute-force search), and the exact test's estimate of x_L."""

from __future__ import annotations

import pytest
import torch

import geninv
from geninv.metrics import snr
from geninv.solvers.auto import auto
from geninv.solvers.gradient_setup import initial_latent
from geninv.solvers.hidden_fit import hidden_target_fit, nearest_bank_latent
from geninv.solvers.measurement import resolve_measurement
from geninv.solvers.network import hidden_layers
from geninv.solvers.per_sample import exact_test, image_test

F64 = torch.float64


def _gen(dims: list[int], seed: int = 5, dtype: torch.dtype = F64) -> geninv.Generator:
    return geninv.random_generator(dims, "plu", seed=seed, bias=True, dtype=dtype)


def _objective(G: geninv.Generator, z: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    return 0.5 * (hidden_layers(G, z)[-1] - x_hat).square().sum(dim=1)


def test_planted_latent_is_recovered_from_a_nearby_start() -> None:
    # x_hat = x_L(z*) exactly: from a start whose supports are mostly right the Gauss-Newton steps on
    # the frozen-support (affine) hidden layers land on z* to rounding level.
    G = _gen([8, 60, 160, 400])
    z, _ = G.sample(16, seed=1)
    x_hat = hidden_layers(G, z)[-1]
    z0 = z + 0.05 * torch.randn(z.shape, generator=torch.Generator().manual_seed(2), dtype=F64)
    out, rel = hidden_target_fit(G, x_hat, z0, steps=8)
    assert float(snr(z, out).min()) > 150
    assert float(_objective(G, out, x_hat).max()) < 1e-20 * float(x_hat.square().sum(dim=1).min())
    assert float(rel.max()) < 1e-10


@pytest.mark.parametrize("steps", [1, 3, 5])
def test_objective_never_increases_and_the_steps_make_progress(steps: int) -> None:
    G = _gen([8, 60, 160, 400], seed=7)
    z, _ = G.sample(32, seed=3)
    x_hat = hidden_layers(G, z)[-1] + 0.05 * torch.randn(32, 160, generator=torch.Generator().manual_seed(4),
                                                          dtype=F64)
    z0 = torch.randn(z.shape, generator=torch.Generator().manual_seed(5), dtype=F64)
    f0 = _objective(G, z0, x_hat)
    out, rel = hidden_target_fit(G, x_hat, z0, steps=steps)
    f = _objective(G, out, x_hat)
    assert torch.allclose(rel, torch.sqrt(2 * f) / x_hat.norm(dim=1), rtol=1e-12)
    assert bool((f <= f0).all())
    assert float(f.median()) < 0.5 * float(f0.median())


def test_float32_jacobian_start_agrees_with_the_float64_one() -> None:
    # The Jacobian's precision only shapes the steps; both keep only steps that lower F in float64.
    G = _gen([8, 60, 160, 400], seed=9)
    z, _ = G.sample(16, seed=6)
    x_hat = hidden_layers(G, z)[-1]
    z0 = z + 0.05 * torch.randn(z.shape, generator=torch.Generator().manual_seed(7), dtype=F64)
    a, _ = hidden_target_fit(G, x_hat, z0, steps=6, jac_dtype=torch.float64)
    b, _ = hidden_target_fit(G, x_hat, z0, steps=6, jac_dtype=torch.float32)
    assert float(snr(z, a).min()) > 150
    assert float(snr(z, b).min()) > 100


def test_nearest_bank_latent_is_the_brute_force_nearest() -> None:
    G = _gen([6, 40, 90, 200], seed=11)
    z, _ = G.sample(10, seed=8)
    x_hat = hidden_layers(G, z)[-1]
    got = nearest_bank_latent(G, x_hat, bank=700, seed=3, sigma_z=1.5, dtype=F64, chunk=256)
    bank = 1.5 * initial_latent(700, 6, 4, x_hat)  # the bank draws of seed 3
    d = torch.cdist(x_hat, hidden_layers(G, bank)[-1])
    assert torch.equal(got, bank[d.argmin(dim=1)])


def test_image_test_estimate_is_the_exact_tests_start_where_determined() -> None:
    G = _gen([6, 40, 90, 200], seed=13)
    z, y = G.sample(12, seed=9)
    y = y + 0.01 * torch.randn(y.shape, generator=torch.Generator().manual_seed(10), dtype=F64)
    mask = torch.ones(12, 200, dtype=torch.bool)
    mask[:3, 80:] = False  # three samples observe 80 < n_L = 90 pixels: not determined
    yy, meas = resolve_measurement(None, mask, G, y)
    t = image_test(G, yy, meas)
    assert t is not None and t.start is not None and t.start.x0 is not None
    ex, start = exact_test(G, yy, meas)
    assert ex is not None and t.exact is not None and torch.equal(ex, t.exact)
    assert torch.equal(t.determined, torch.arange(12) >= 3)
    assert torch.equal(t.x_hat[t.rows][t.determined[t.rows]], start.x0[t.determined[t.rows]])
    assert bool((t.x_hat[~t.determined] == 0).all())
    # Noisy data: none is exact; the estimate is the nonnegative part of the least squares.
    assert not bool(t.exact.any()) and bool((t.x_hat >= 0).all())


def test_auto_starts_noisy_signals_from_the_hidden_fit_and_compressed_sensing_from_the_pursuit() -> None:
    G = _gen([8, 60, 160, 400], seed=15)
    z, y0 = G.sample(16, seed=11)
    y, _ = geninv.add_noise(y0, 40.0, seed=12)
    res = geninv.invert(G, y)
    assert "hidden_fit" in res.info["seconds"] and "pursuit" not in res.info["seconds"]
    orc = geninv.oracle(G, y, supports=G.trace(z).supports, mode="end_to_end")
    assert float(snr(z, res.z).median()) > float(snr(z, orc.z).median()) - 0.5
    A = geninv.GaussianMatrix(120, 400, seed=1, dtype=F64)  # 120 < n_L = 160 measurements
    res_cs = geninv.invert(G, A.forward(y0) + 1e-3 * torch.randn(16, 120, generator=torch.Generator().manual_seed(13),
                                                                  dtype=F64), measure=A)
    assert "pursuit" in res_cs.info["seconds"] and "hidden_fit" not in res_cs.info["seconds"]


def test_second_start_runs_below_its_snr_only_and_never_raises_the_objective() -> None:
    G = _gen([8, 60, 160, 400], seed=17)
    z, y0 = G.sample(16, seed=14)
    y, _ = geninv.add_noise(y0, 15.0, seed=15)
    off = auto(G, y, second_start_snr=0, starts=0)
    on = auto(G, y, second_start_snr=60.0, starts=0)  # every fit consistent with noise is below 60 dB
    assert "second_start" in on.info["seconds"] and "second_start" not in off.info["seconds"]
    assert bool((on.info["objective"] <= off.info["objective"] * (1 + 1e-12)).all())
    quiet = auto(G, geninv.add_noise(y0, 40.0, seed=16)[0], starts=0)  # default threshold 25 dB
    assert "second_start" not in quiet.info["seconds"]
    with pytest.raises(geninv.InputError, match="second_start_snr"):
        auto(G, y, second_start_snr=-1.0)


def test_a_target_the_hidden_fit_leaves_unexplained_takes_the_pursuits_start() -> None:
    # Signals outside the range of G: their image-layer estimate is no image of a latent, the
    # hidden-layer fit leaves much of it unexplained, and the start is the capped pursuit's.
    G = _gen([8, 60, 160, 400], seed=19)
    _, y0 = G.sample(12, seed=17)
    y_out = torch.roll(y0, 37, dims=1)  # the same pixel values, scrambled: not in the range
    res = auto(G, y_out, starts=0)
    assert "pursuit" in res.info["seconds"]
    res_h = auto(G, y_out, starts=0, target_residual=1e9)  # every fit taken, whatever it leaves
    assert "pursuit" not in res_h.info["seconds"] and "hidden_fit" in res_h.info["seconds"]
    with pytest.raises(geninv.InputError, match="target_residual"):
        auto(G, y_out, target_residual=-0.5)

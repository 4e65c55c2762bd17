"""The fast exact path of the default method: layer-wise solves with shared factorizations,
verified per sample at the rounding level of the data."""

from __future__ import annotations

import warnings

import torch

import geninv
from geninv.solvers.exact_path import fast_exact, pcg_rows
from geninv.solvers.linalg import supported_lstsq
from geninv.solvers.measurement import resolve_measurement

F64 = torch.float64


def _gen(dims: list[int], output: str = "plu", seed: int = 0, dtype: torch.dtype = F64) -> geninv.Generator:
    return geninv.random_generator(dims, output, seed=seed, bias=True, dtype=dtype)


def test_pcg_rows_is_the_supported_least_squares_solution() -> None:
    gen = torch.Generator().manual_seed(0)
    W = torch.randn(300, 80, generator=gen, dtype=F64) / 300**0.5
    rows = torch.rand(5, 300, generator=gen) < 0.5
    t = torch.randn(5, 300, generator=gen, dtype=F64)  # inconsistent: a true least-squares problem
    M = torch.linalg.inv(0.5 * W.T @ W)
    x, it = pcg_rows(W, t, rows, M, tol=10 * torch.finfo(F64).eps, max_iter=400)
    ref = supported_lstsq(W, t, rows, None)
    assert bool((it < 400).all())  # each sample stopped on its own residual
    assert float(((x - ref).norm(dim=1) / ref.norm(dim=1)).max()) < 1e-10


def test_fast_exact_recovers_z_and_the_supports() -> None:
    G = _gen([10, 60, 200, 400])
    z, y = G.sample(16, seed=1)
    _, meas = resolve_measurement(None, None, G, y)
    out = fast_exact(G, y, meas)
    assert out is not None
    zf, ok, info = out
    assert bool(ok.all())
    assert float(geninv.relative_error(z, zf).max()) < 1e-10
    assert torch.equal(G.trace(zf).supports[0], G.trace(z).supports[0])
    assert set(info["cg_iterations"]) == {"x1"} and bool((info["cg_iterations"]["x1"] > 0).all())
    # What it does not take: a mask, a contracting image layer.
    mask = torch.ones(400, dtype=torch.bool)
    mask[:10] = False
    assert fast_exact(G, y, resolve_measurement(None, mask, G, y)[1]) is None
    G2 = _gen([10, 60, 400, 200])
    z2, y2 = G2.sample(2, seed=1)
    assert fast_exact(G2, y2, resolve_measurement(None, None, G2, y2)[1]) is None


def test_fast_path_by_default_only_on_generators_read_from_convolutions() -> None:
    G = _gen([10, 60, 200, 400])
    _, y = G.sample(4, seed=2)
    assert geninv.invert(G, y).info["exact_path"] == "full"  # fully connected: Latent-Pursuit's exact path
    torch.manual_seed(0)  # expansive: 6 -> 98 -> 784 -> 1568
    net = torch.nn.Sequential(torch.nn.Linear(6, 2 * 7 * 7), torch.nn.ReLU(), torch.nn.Unflatten(1, (2, 7, 7)),
                              torch.nn.ConvTranspose2d(2, 4, 4, stride=2, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.Tanh()).double()
    Gc = geninv.Generator.from_torch(net)
    _, yc = Gc.sample(4, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        info = geninv.invert(Gc, yc).info
    assert "fast" in (info["exact_path"] if isinstance(info["exact_path"], list) else [info["exact_path"]])


def test_auto_takes_the_fast_path_per_sample() -> None:
    G = _gen([10, 60, 200, 400])
    z, y = G.sample(12, seed=2)
    y_mixed = y.clone()
    y_mixed[8:] = y[8:] + 1e-3 * torch.randn(4, 400, generator=torch.Generator().manual_seed(3), dtype=F64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = geninv.invert(G, y_mixed, fast_path=True)
        alone = geninv.invert(G, y[:8], fast_path=True)
    assert res.info["exact_path"] == ["fast"] * 8 + ["full"] * 4
    assert bool((res.info["stage"][:8] == 0).all()) and not bool((res.info["stage"][8:] == 0).any())
    assert alone.info["exact_path"] == "fast"
    # Each exact sample's answer does not depend on its batch mates (to rounding).
    assert float(geninv.relative_error(alone.z, res.z[:8]).max()) < 1e-12
    assert float(geninv.relative_error(z[:8], res.z[:8]).max()) < 1e-10
    assert bool(res.info["fits"].all())  # the noisy ones against their estimated noise level
    assert bool(res.fits[:8].all())  # the exact ones at float64's rounding level


def test_fast_path_on_the_shipped_expansive_conv_generator_float32() -> None:
    from geninv.weights import load_conv_generator

    G = load_conv_generator("conv_expansive")
    z, y = G.sample(32, seed=1)
    res = geninv.invert(G, y)
    assert res.info["exact_path"] == "fast"
    assert bool(res.fits.all())
    assert float(geninv.snr(y, G(res.z)).min()) > 60

"""Noisy signals and compressed sensing: the noise estimate, the Oracle's expected
error (Theorem 3) against Monte Carlo, the noise-aware pursuit against the Oracle, Theorem 2's
bound against the measured error, and the pursuits through a Gaussian measurement matrix."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

import geninv
from geninv.exceptions import InputError, ShapeError
from geninv.metrics import snr
from geninv.solvers.expected_error import oracle_expected_error
from geninv.solvers.noise import estimate_noise, noisy_pursuit, propagated_sigma


def _gen(dims: list[int], output: str = "plu", seed: int = 3, bias: bool = True) -> geninv.Generator:
    return geninv.random_generator(dims, output, seed=seed, bias=bias, dtype=torch.float64)


def test_estimate_noise_is_accurate_at_the_right_fit() -> None:
    G = _gen([8, 40, 120, 300])
    z, y0 = G.sample(16, seed=1)
    y, sigma = geninv.add_noise(y0, 30, seed=2)
    ratio = estimate_noise(G, y) / sigma
    # Relative standard deviation 1/sqrt(2 (m - n_0)) = 4.1 % for m = 300: a 6-sigma band.
    assert abs(float(ratio.median()) - 1) < 0.05
    assert bool(((ratio > 0.75) & (ratio < 1.25)).all())
    # Given the true z the estimate is ||e|| / sqrt(m - n_0) exactly.
    exact = estimate_noise(G, y, z=z)
    assert torch.allclose(exact, (y - y0).norm(dim=1) / math.sqrt(300 - 8), rtol=1e-12)


def test_estimate_noise_ignores_the_unobserved_pixels() -> None:
    # With a mask the residual is over the observed entries only: m_b - n_0 degrees of freedom.
    G = _gen([8, 40, 120, 300])
    z, y0 = G.sample(16, seed=1)
    y, sigma = geninv.add_noise(y0, 30, seed=2)
    mask = geninv.random_mask(300, 0.3, seed=3, batch=16)
    ratio = estimate_noise(G, y, mask=mask) / sigma
    assert abs(float(ratio.median()) - 1) < 0.06  # relative standard deviation 1/sqrt(2 * 202) = 5 %
    exact = estimate_noise(G, y, mask=mask, z=z)
    e = (y - y0) * mask
    assert torch.allclose(exact, e.norm(dim=1) / (mask.sum(dim=1).double() - 8).sqrt(), rtol=1e-12)


def test_estimate_noise_rejects_a_wrong_z_shape() -> None:
    G = _gen([4, 10, 30])
    _, y = G.sample(2, seed=0)
    with pytest.raises(ShapeError, match="z"):
        estimate_noise(G, y, z=torch.zeros(3, 4, dtype=torch.float64))


def test_noise_level_validation() -> None:
    G = _gen([4, 10, 30])
    _, y = G.sample(2, seed=0)
    for bad in ("loud", -1.0, float("nan"), True):
        with pytest.raises(InputError, match="noise_level"):
            noisy_pursuit(G, y, noise_level=bad)
    with pytest.raises(ShapeError, match="noise_level"):
        noisy_pursuit(G, y, noise_level=torch.ones(3, dtype=torch.float64))


def test_propagated_sigma_is_the_supported_pseudo_inverse_trace() -> None:
    g = torch.Generator().manual_seed(0)
    W = torch.randn(30, 12, generator=g, dtype=torch.float64)
    rows = (torch.rand(2, 30, generator=g) > 0.3).to(torch.float64)
    cols = torch.rand(2, 12, generator=g) > 0.4
    sig = torch.tensor([0.5, 2.0], dtype=torch.float64)
    got = propagated_sigma(sig, W, rows, cols)
    for b in range(2):
        M = W[rows[b].bool()][:, cols[b]]
        tr = torch.linalg.pinv(M).square().sum()  # ||pinv(M)||_F^2 = tr((M^T M)^{-1})
        assert torch.allclose(got[b], sig[b] * torch.sqrt(tr / cols[b].sum()), rtol=1e-10)


@pytest.mark.parametrize("mode", ["end_to_end", "layerwise"])
def test_oracle_expected_error_matches_monte_carlo_for_a_linear_output(mode: str) -> None:
    # Identity output: the Oracle is linear in the noise, so the formula is exact in expectation.
    G = _gen([5, 20, 60, 150], output="identity")
    z, y0 = G.sample(1, seed=4)
    sup = G.trace(z).supports
    sigma = 0.05
    T = 400
    yb = y0.expand(T, -1)
    e = torch.randn(T, 150, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * sigma
    res = geninv.invert(G, yb + e, method="oracle", supports=[s.expand(T, -1) for s in sup], mode=mode)
    mc = (res.z - z).square().sum(dim=1).mean()
    th = oracle_expected_error(G, z, sigma, mode=mode)["z"][0]
    # Monte Carlo of a sum of n_0 = 5 weighted chi^2_1: relative standard error <= sqrt(2/T) = 7 %.
    assert abs(float(mc / th) - 1) < 0.25
    # Theorem 3's ordering: the end-to-end fit (Gauss-Markov) never loses to the layer-wise chain.
    e2e = oracle_expected_error(G, z, sigma, mode="end_to_end")["z"]
    lw = oracle_expected_error(G, z, sigma, mode="layerwise")["z"]
    assert bool((e2e <= lw * (1 + 1e-9)).all())


def _auto_and_oracles(G: geninv.Generator, z: torch.Tensor, y: torch.Tensor) -> tuple[float, float, float, geninv.SolveResult]:
    """Median SNR of z for the auto-noise pursuit, the layer-wise and the end-to-end Oracle (and
    the pursuit's result)."""
    sup = G.trace(z).supports
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        auto = noisy_pursuit(G, y, noise_level="auto")
        lay = geninv.invert(G, y, method="oracle", supports=sup)
        e2e = geninv.invert(G, y, method="oracle", supports=sup, mode="end_to_end")
    a, o, oe = (float(snr(z, r.z).median()) for r in (auto, lay, e2e))
    return a, o, oe, auto


def test_noisy_pursuit_reaches_the_end_to_end_oracle() -> None:
    G = _gen([8, 40, 120, 300])
    z, y0 = G.sample(12, seed=6)
    for snr_db in (20, 30):
        y, sigma = geninv.add_noise(y0, snr_db, seed=7)
        a, o, oe, auto = _auto_and_oracles(G, z, y)
        assert a >= o - 2.0  # within 2 dB of the (paper's) Oracle ...
        assert a >= oe - 2.0  # ... and of the best Oracle, the end-to-end one
        # The parameters are those of the rules: gamma = sigma_1^2, gamma_end = sigma_hat^2.
        assert torch.allclose(auto.info["gamma_end"], auto.info["sigma"] ** 2)
        assert torch.allclose(auto.info["gamma"], auto.info["layer_sigma"]["x1"] ** 2)


def test_invert_with_noise_level_runs_the_noisy_pursuit() -> None:
    # invert(..., noise_level=) is the same computation as noisy_pursuit for both pursuits, and its
    # option check lists the noisy pursuit's options.
    G = _gen([6, 30, 90])
    z, y0 = G.sample(4, seed=2)
    y, sigma = geninv.add_noise(y0, 30, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for method in ("latent_pursuit", "layered_bp"):
            a = geninv.invert(G, y, method=method, noise_level=sigma)
            b = noisy_pursuit(G, y, noise_level=sigma, method=method)
            assert torch.equal(a.z, b.z)
            assert torch.allclose(a.info["sigma"], torch.as_tensor(sigma, dtype=torch.float64).expand(4))
    with pytest.raises(InputError, match="lam_scale"):
        geninv.invert(G, y, method="latent_pursuit", noise_level=sigma, lam_rel=0.1)


def test_theorem2_bound_holds_for_layered_bp_with_its_lam() -> None:
    # Small identity-output generators at 40 dB, where the theorem's conditions hold.
    G = _gen([4, 12, 200], output="identity", seed=1, bias=False)
    z, y0 = G.sample(8, seed=2)
    y, _ = geninv.add_noise(y0, 40, seed=3)
    enorm = (y - y0).norm(dim=1)
    bounds = geninv.theorem2_bound(G, z, noise=enorm)
    held = 0
    for b, bd in enumerate(bounds):
        if bd.verdict != "holds":
            continue
        held += 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = geninv.invert(G, y[b:b + 1], method="layered_bp", lam=float(bd.lam[0]), debias=False, tol=1e-12,
                                max_iter=20000)
        err = float((res.z[0] - z[b]).norm())
        # The theorem bounds the exact LASSO minimizer; FISTA at tol 1e-12 is that to ~1e-10.
        assert err <= bd.z_error * (1 + 1e-6) + 1e-9, (b, err, bd.z_error)
    assert held >= 4


def test_latent_pursuit_through_a_gaussian_matrix() -> None:
    # Compressed sensing: the image layer through A (signal domain, backtracking FISTA).
    G = _gen([6, 30, 100], output="tanh", seed=2, bias=False)
    z, y0 = G.sample(4, seed=3)
    A = geninv.GaussianMatrix(80, 100, seed=4, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lp = geninv.invert(G, A.forward(y0), method="latent_pursuit", measure=A)
        hy = geninv.invert(G, A.forward(y0), method="hybrid", measure=A)
    assert lp.info["image_domain"] == "signal"
    # m = 80 > 2 s_L (s_L ~ 15): the pursuit alone recovers the image; the hybrid z exactly.
    assert float(snr(y0, G(lp.z)).median()) > 60
    assert bool((snr(z, hy.z) > 200).all())


def test_noisy_pursuit_with_a_gaussian_matrix() -> None:
    G = _gen([6, 30, 100], output="tanh", seed=2, bias=False)
    z, y0 = G.sample(6, seed=3)
    A = geninv.GaussianMatrix(60, 100, seed=4, dtype=torch.float64)
    yA, sigma = geninv.add_noise(A.forward(y0), 30, seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = noisy_pursuit(G, yA, measure=A, noise_level=sigma)
        e2e = geninv.invert(G, yA, method="oracle", supports=G.trace(z).supports, measure=A)
    assert float(snr(z, res.z).median()) >= float(snr(z, e2e.z).median()) - 1.0


# -- the reproductions: files, resume -------------------------------------------------------------


def test_noise_reproduction_writes_records_figures_and_resumes(tmp_path) -> None:
    from geninv.experiments.noise_exp import NoiseConfig, run_noise
    from geninv.experiments.records import load_records

    G = _gen([5, 20, 60])
    cfg = NoiseConfig(snr_db=(20, 30), images=4, batch=2, methods=("oracle", "oracle_e2e", "latent_pursuit_auto"),
                      bound_snr_db=(50,), bound_trials=2, bound_dims=(3, 6, 60))
    seen: list[str] = []
    out = run_noise(cfg, tmp_path, generator=G, progress=False, max_units=3, plots=False,
                    callback=lambda u, k: seen.append(u.name))
    assert out["ran"] == 3
    first = {r["key"]: r for r in load_records(tmp_path)}
    out = run_noise(cfg, tmp_path, generator=G, progress=False)
    # 4 solve units (2 SNRs x 2 chunks) + 2 of 8-bit images + 2 bound units, 3 done before
    assert out["ran"] == 4 + 2 + 2 - 3
    recs = load_records(tmp_path)
    assert len({r["key"] for r in recs}) == len(recs)  # one record per trial, nothing redone
    for k, r in first.items():
        assert {kk: v for kk, v in r.items() if kk != "seconds"} == {
            kk: v for kk, v in next(x for x in recs if x["key"] == k).items() if kk != "seconds"}
    kinds = {r["kind"] for r in recs}
    assert kinds == {"solve", "solve8", "theory", "bound"}
    assert len([r for r in recs if r["kind"] == "solve"]) == 2 * 4 * 3
    assert len([r for r in recs if r["kind"] == "solve8"]) == 4 * 3
    for f in ("noise_snr.png", "noise_theorem2.png", "summary.md", "summary.json", "records.csv"):
        assert (tmp_path / f).exists(), f
    # The results page (geninv reproduce report) shows a noise directory with its own section.
    from geninv.experiments.report import section, write_index

    assert section(tmp_path).title.startswith("Noisy signals")
    page = write_index(tmp_path / "site", [tmp_path]).read_text()
    assert "Noisy signals" in page and "noise_snr.png" in page


def test_cs_reproduction_writes_records_figure_and_m_star(tmp_path) -> None:
    import json

    from geninv.experiments.cs_exp import CSConfig, run_cs, success_m

    G = _gen([4, 16, 60], output="tanh", bias=False)
    cfg = CSConfig(m_values=(8, 40), images=2, batch=2, methods=("latent_pursuit", "hybrid"))
    out = run_cs(cfg, tmp_path, generator=G, progress=False)
    assert out["ran"] == 2
    assert run_cs(cfg, tmp_path, generator=G, progress=False)["ran"] == 0  # resumed: nothing left
    for f in ("cs_snr.png", "summary.md", "summary.json", "records.csv"):
        assert (tmp_path / f).exists(), f
    summ = json.loads((tmp_path / "summary.json").read_text())
    assert summ["m_star"]["hybrid"] in (8, 40)
    from geninv.experiments.report import section

    assert section(tmp_path).title.startswith("Compressed sensing")
    assert success_m({10: 5.0, 20: 70.0, 40: 65.0}, 60.0) == 20
    assert success_m({10: 70.0, 20: 5.0, 40: 65.0}, 60.0) == 40
    assert success_m({10: 5.0}, 60.0) is None


# -- the claims on noisy signals, on the shipped MNIST generator --------------------------------------------


def _mnist() -> geninv.Generator:
    from geninv.experiments.common import mnist_status

    st = mnist_status()
    if not st.available:
        pytest.skip(f"MNIST generator unavailable: {st.reason}")
    return geninv.load_mnist_generator().to(dtype=torch.float64)


def test_latent_pursuit_auto_within_2db_of_the_oracle_on_mnist() -> None:
    G = _mnist()
    z, y0 = G.sample(8, seed=11)
    for snr_db in (20, 30):
        y, _ = geninv.add_noise(y0, snr_db, seed=12)
        a, o, oe, _ = _auto_and_oracles(G, z, y)
        # Measured (seed 11, 8 images): 20 dB: 23.4 vs 4.7 (layer-wise) and 24.5 (end to end);
        # 30 dB: 34.3 vs 13.7 and 34.1. The paper's (layer-wise) Oracle loses ~20 dB to the
        # PLU's 10x noise amplification on its outer pieces; the end-to-end Oracle does not.
        assert a >= o - 2.0 and a >= oe - 2.0, (snr_db, a, o, oe)


@pytest.mark.slow
def test_cs_hybrid_succeeds_no_later_than_gd_and_adam_on_mnist(tmp_path) -> None:
    import json

    from geninv.experiments.cs_exp import CSConfig, run_cs

    _mnist()
    run_cs(CSConfig.quick(), tmp_path, progress=False)
    summ = json.loads((tmp_path / "summary.json").read_text())
    stars = summ["m_star"]
    assert stars["hybrid"] is not None
    # Quick settings (m = 40, 80, 160): hybrid 40, Adam 80, gd 160. Full settings (32 images,
    # 3000 iterations, m down to 34): hybrid 34, Adam 40, gd 120. The quick grid cannot show a
    # difference below 40, hence "no later than" Adam here.
    assert stars["gd"] is None or stars["hybrid"] < stars["gd"], stars
    assert stars["adam"] is None or stars["hybrid"] <= stars["adam"], stars

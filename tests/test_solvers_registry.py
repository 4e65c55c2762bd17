"""The method registry of ``geninv.invert`` and the per-sample noise default of the pursuits.

- The registry's option lists are the methods' signatures (nothing is read by inspection at run
  time, so this test is what keeps them equal).
- Without ``noise_level``, exactly realizable data give bit for bit what ``noise_level=0`` gives;
  noisy data (30 dB input SNR) come out within 1 dB of ``noise_level="auto"``; a batch mixing both
  solves each sample by its form.
- gd / adam / lp_layerwise call ``callback(k, state)`` with the one convention of every method.
"""

from __future__ import annotations

import inspect
import warnings

import pytest
import torch

import geninv
from geninv.exceptions import ConvergenceWarning, InputError
from geninv.metrics import snr
from geninv.model.generator import random_generator
from geninv.solvers import METHODS, REGISTRY, accepted_options, method_spec, takes_noise_level
from geninv.solvers.gradient import adam, gd
from geninv.solvers.lp_layerwise import lp_layerwise
from geninv.solvers.noise import noisy_pursuit
from geninv.solvers.registry import NOISY_FORM_OPTIONS

F64 = torch.float64
PER_SAMPLE = ("latent_pursuit", "layered_bp", "hybrid")


def _keyword_options(fn) -> tuple[str, ...]:
    params = inspect.signature(fn).parameters.values()
    return tuple(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in ("measure", "mask"))


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_registry_options_are_the_signature(name):
    spec = REGISTRY[name]
    assert set(spec.options) == set(_keyword_options(spec.load())), name
    assert METHODS[name] == (spec.module, spec.function)
    assert accepted_options(name) == spec.options
    assert takes_noise_level(name) == (spec.noise != "none")
    assert spec.own_debias == ("debias" in spec.options)
    assert (spec.noise == "own") == ("noise_level" in spec.options)
    assert set(spec.noisy_shared) <= set(spec.options) & set(NOISY_FORM_OPTIONS)


def test_noisy_form_options_are_noisy_pursuits_signature():
    assert set(NOISY_FORM_OPTIONS) == set(_keyword_options(noisy_pursuit)) - {"method"}


def test_unknown_method_is_refused_with_the_names():
    with pytest.raises(InputError, match=r"method: expected one of \['adam', 'auto'"):
        method_spec("lbfgs")


@pytest.fixture(scope="module")
def tanh_net():
    return random_generator([10, 80, 250], "tanh", seed=0, dtype=F64)


@pytest.mark.parametrize("data", ["float64", "float32 data, float64 solve", "masked float32"])
@pytest.mark.parametrize("method", PER_SAMPLE)
def test_exact_data_by_default_are_bit_identical_to_noise_level_zero(tanh_net, method, data):
    """The exact test uses the rounding level of the data's dtype, so float32 data solved in
    float64 are exact too."""
    G = tanh_net
    opts: dict = {"fallback_iter": 200} if method == "hybrid" else {"max_iter": 500}
    if data == "float64":
        _, y = G.sample(5, seed=1)
    else:
        G32 = tanh_net.to(dtype=torch.float32)
        _, y = G32.sample(5, seed=1)
        if data == "masked float32":
            G, mask = G32, geninv.random_mask(250, 0.5, seed=0)
            y, opts["mask"] = y * mask, mask
    default = geninv.invert(G, y, method=method, **opts)
    exact = geninv.invert(G, y, method=method, noise_level=0, **opts)
    assert torch.equal(default.z, exact.z) and torch.equal(default.converged, exact.converged)
    assert torch.equal(default.n_iter, exact.n_iter)
    assert all(torch.equal(a, b) for a, b in zip(default.layers, exact.layers))
    assert not default.info["noise_form"].any() and default.fits.all()


@pytest.mark.parametrize("method, data", [("latent_pursuit", "30 dB"), ("layered_bp", "30 dB"),
                                          ("latent_pursuit", "8-bit")])
def test_noisy_data_by_default_match_noise_level_auto(tanh_net, method, data):
    """30 dB input SNR, or 8-bit quantization of tanh's range: the default solves every sample
    with the noise level estimated."""
    z, y0 = tanh_net.sample(8, seed=2)
    if data == "30 dB":
        y, _ = geninv.add_noise(y0, 30.0, seed=3)
    else:
        y = torch.round((y0 + 1) / 2 * 255) / 255 * 2 - 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        default = geninv.invert(tanh_net, y, method=method)
        auto = geninv.invert(tanh_net, y, method=method, noise_level="auto")
        exact = geninv.invert(tanh_net, y, method=method, noise_level=0)
    assert default.info["noise_form"].all()
    s_default, s_auto = snr(z, default.z).median(), snr(z, auto.z).median()
    assert abs(float(s_default - s_auto)) <= 1.0, (float(s_default), float(s_auto))
    assert default.fits.all()  # each judged against its estimated noise level
    assert not exact.fits.any()  # the exact form is judged at rounding level: noise does not fit


def test_a_mixed_batch_solves_each_sample_by_its_form(tanh_net):
    z, y = tanh_net.sample(6, seed=4)
    noisy = torch.tensor([False, True, False, True, False, False])
    yn, _ = geninv.add_noise(y[noisy], 30.0, seed=5)
    y = y.clone()
    y[noisy] = yn
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = geninv.invert(tanh_net, y, method="latent_pursuit")
        alone_exact = geninv.invert(tanh_net, y[~noisy], method="latent_pursuit", noise_level=0)
        alone_noisy = geninv.invert(tanh_net, y[noisy], method="latent_pursuit", noise_level="auto")
    assert torch.equal(res.info["noise_form"], noisy)
    # each group is the same problem as alone (a batch's samples are independent)
    torch.testing.assert_close(res.z[~noisy], alone_exact.z, rtol=0, atol=1e-12)
    torch.testing.assert_close(res.z[noisy], alone_noisy.z, rtol=1e-9, atol=1e-9)
    assert res.fits.all() and res.residual.shape == (6,)
    assert bool((snr(z[~noisy], res.z[~noisy]) > 150).all())  # exact recovery, float64
    ref = res.info["noise_reference"]  # the level each sample was judged against
    assert bool((ref[~noisy] == 0).all()) and bool((ref[noisy] > 0).all())
    # invert's debiasing of a method without its own keeps the per-sample verdict
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        hyb = geninv.invert(tanh_net, y, method="hybrid", debias=True, fallback_iter=100)
    assert torch.equal(hyb.info["noise_form"], noisy) and hyb.fits.all() and hyb.info["debiased"].shape == (6,)


def test_a_number_or_tensor_noise_level_is_the_noisy_form_on_every_sample(tanh_net):
    z, y0 = tanh_net.sample(3, seed=6)
    y, sigma = geninv.add_noise(y0, 40.0, seed=7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a = geninv.invert(tanh_net, y, method="latent_pursuit", noise_level=sigma)
        b = noisy_pursuit(tanh_net, y, noise_level=sigma, method="latent_pursuit")
    assert torch.equal(a.z, b.z) and "noise_form" not in a.info
    with pytest.raises(InputError, match="lam"):  # the noisy form sets lam from sigma
        geninv.invert(tanh_net, y, method="latent_pursuit", noise_level=sigma, lam=1e-3)


# -- the one callback convention ---------------------------------------------------------------
def _recorder(stop_at: int | None = None):
    seen: list[tuple[int, dict]] = []

    def cb(k: int, state: dict) -> bool:
        seen.append((k, state))
        return stop_at is not None and k >= stop_at

    return seen, cb


def test_gradient_and_lp_callbacks_follow_the_one_convention():
    G = random_generator([8, 60, 150], seed=0, dtype=F64)
    z, y = G.sample(3, seed=1)
    for name, run, stage in (("gd", lambda cb: gd(G, y, max_iter=200, callback=cb), "gd"),
                             ("adam", lambda cb: adam(G, y, restarts=2, max_iter=200, callback=cb), "adam"),
                             ("lp_layerwise", lambda cb: lp_layerwise(G, y, callback=cb), "lp_layerwise")):
        seen, cb = _recorder()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # adam in 200 steps: not converged, not the point
            res = run(cb)
        assert seen, name
        assert [k for k, _ in seen] == sorted({k for k, _ in seen}), name  # one call per check, in order
        for _, st in seen:
            assert st["stage"] == stage and st["x"] is st["z"], name
            assert st["z"].shape == (3, 8) and st["objective"].shape == (3,), name
        assert torch.equal(seen[-1][1]["z"], res.z) or name == "adam", name  # adam hands out its best so far
        # returning True stops, and says so
        seen, cb = _recorder(stop_at=1 if name == "lp_layerwise" else 50)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            res = run(cb)
        assert res.info["stopped_by_callback"], name
        assert len(seen) == (1 if name == "lp_layerwise" else 2), (name, [k for k, _ in seen])
    assert int(res.converged.sum()) == 1  # lp_layerwise stopped after its first sample

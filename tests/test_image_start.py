"""The image layer's start is computed once per call: the per-sample exact test of
:func:`geninv.invert` hands the warm start and exact fit it computed to the exact form of the
pursuit, and a start serves only the batch it was computed for (same data, observed pixels and
image layer), so handing it over changes no number."""

from __future__ import annotations

import pytest
import torch

import geninv
from geninv.exceptions import InputError
from geninv.model.generator import random_generator
from geninv.solvers import image_layer
from geninv.solvers.image_layer import image_start
from geninv.solvers.measurement import resolve_measurement
from geninv.solvers.per_sample import exact_test

F64 = torch.float64


@pytest.fixture(scope="module")
def net():
    G = random_generator([10, 60, 150], "tanh", seed=2, bias=True, dtype=F64)
    z, y = G.sample(4, seed=1)
    return G, z, y


@pytest.fixture
def warm_starts(monkeypatch):
    """Counts the calls of the image layer's warm start (a least-squares solve per call)."""
    calls = []
    real = image_layer.image_warm_start

    def counted(*args, **kwargs):
        calls.append(args[1].shape[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(image_layer, "image_warm_start", counted)
    return calls


@pytest.mark.parametrize("method", ["latent_pursuit", "layered_bp", "hybrid"])
@pytest.mark.parametrize("masked", [False, True])
def test_invert_solves_the_image_layer_start_once_and_gives_the_exact_forms_numbers(net, warm_starts, method, masked):
    G, z, y = net
    mask = geninv.random_mask(150, 0.3, seed=4, batch=4) if masked else None
    res = geninv.invert(G, y, method=method, mask=mask)
    assert warm_starts == [4]  # one solve for the whole batch: the exact test's, reused by the pursuit
    assert not bool(res.info["noise_form"].any())
    ref = geninv.invert(G, y, method=method, mask=mask, noise_level=0)  # the exact form, its own start
    assert torch.equal(res.z, ref.z)
    assert bool((geninv.relative_error(z, res.z) < 1e3 * torch.finfo(F64).eps).all())


def test_a_start_serves_only_the_batch_it_was_computed_for(net):
    G, _, y = net
    mask = geninv.random_mask(150, 0.3, seed=4, batch=4)
    yy, meas = resolve_measurement(None, mask, G, y)
    s = image_start(G, yy, meas)
    assert s.serves(G, yy.clone(), resolve_measurement(None, mask.clone(), G, y)[1])
    assert not s.serves(G, yy[:2], meas.subset(torch.arange(2)))
    y2 = yy.clone()
    y2[0, 0] += 1e-12
    assert not s.serves(G, y2, meas)
    assert not s.serves(G, yy, resolve_measurement(None, geninv.random_mask(150, 0.3, seed=5, batch=4), G, y)[1])
    G2 = random_generator([10, 60, 150], "tanh", seed=3, bias=True, dtype=F64)
    assert not s.serves(G2, yy, meas)


def test_a_given_start_is_used_where_it_serves_and_computed_again_elsewhere(net, warm_starts):
    G, _, y = net
    yy, meas = resolve_measurement(None, None, G, y)
    fresh = geninv.latent_pursuit(G, y)
    assert warm_starts == [4]
    s = image_start(G, yy, meas)
    got = geninv.latent_pursuit(G, y, image_start=s)
    assert warm_starts == [4, 4]  # only image_start's own solve
    assert torch.equal(got.z, fresh.z) and torch.equal(got.info["lam"]["x1"], fresh.info["lam"]["x1"])
    other = image_start(G, yy.flip(0), meas)
    again = geninv.latent_pursuit(G, y, image_start=other)
    assert warm_starts == [4, 4, 4, 4]  # the other batch's start is not used: computed again
    assert torch.equal(again.z, fresh.z)
    cold = geninv.latent_pursuit(G, y, warm_start=False, image_start=s)  # a warm start is not a cold one
    assert torch.equal(cold.z, geninv.latent_pursuit(G, y, warm_start=False).z)


def test_exact_test_returns_the_samples_and_the_start_of_the_pre_activation_samples(net):
    G, _, y = net
    noisy = y.clone()
    noisy[1] += 1e-3 * torch.randn(150, generator=torch.Generator().manual_seed(0), dtype=F64)
    yy, meas = resolve_measurement(None, None, G, noisy)
    ex, s = exact_test(G, yy, meas)
    assert ex is not None and s is not None
    assert ex.tolist() == [True, False, True, True]
    assert s.serves(G, yy, meas) and torch.equal(s.exact, ex)


def test_a_start_that_is_not_an_image_start_is_refused(net):
    G, _, y = net
    with pytest.raises(InputError, match="image_start: expected None or an ImageStart"):
        geninv.latent_pursuit(G, y, image_start=(None, None))

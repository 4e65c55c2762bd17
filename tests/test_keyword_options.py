"""The pursuits' keyword options are declared once, as the fields of their options dataclasses:
the public functions' signatures list those fields with their defaults, and a call binds its
arguments as Python binds any function's (TypeError for an unknown or positional option)."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch

import geninv
from geninv.model.generator import random_generator
from geninv.solvers.noise import noisy_pursuit
from geninv.solvers.options import NoiseOptions, PursuitOptions

PUBLIC_TOL = {geninv.latent_pursuit: None, geninv.layered_bp: None, noisy_pursuit: 1e-5}


@pytest.mark.parametrize("fn, options, without", [
    (geninv.latent_pursuit, PursuitOptions, set()),
    (geninv.layered_bp, PursuitOptions, {"rho", "gamma", "mu"}),
    (noisy_pursuit, NoiseOptions, set()),
])
def test_the_signature_lists_the_options_fields_with_their_defaults(fn, options, without):
    params = inspect.signature(fn).parameters
    fields = {f.name: f.default for f in dataclasses.fields(options) if f.name not in without}
    listed = {n: p.default for n, p in params.items() if n in fields}
    assert listed == dict(fields, tol=PUBLIC_TOL[fn])
    assert all(params[n].kind is inspect.Parameter.KEYWORD_ONLY for n in fields)
    assert not set(params) & without
    assert list(params)[:4] == ["G", "y", "measure", "mask"]


@pytest.fixture(scope="module")
def small():
    G = random_generator([6, 30, 60], "tanh", seed=1, dtype=torch.float64)
    return G, G.sample(2, seed=0)[1]


def test_an_option_the_pursuit_does_not_take_is_a_type_error(small):
    G, y = small
    with pytest.raises(TypeError, match="rho"):
        geninv.layered_bp(G, y, rho=2.0)
    with pytest.raises(TypeError, match="lamm"):
        geninv.latent_pursuit(G, y, lamm=0.1)
    with pytest.raises(TypeError):
        geninv.latent_pursuit(G, y, None, None, 0.1)  # options are keyword-only


def test_given_options_reach_the_pursuit_and_the_others_take_their_defaults(small):
    G, y = small
    res = geninv.latent_pursuit(G, y, max_iter=1, debias=False)
    assert int(res.info["n_iter"]["x1"].max()) <= 1  # max_iter given: every stage capped at one iteration
    assert torch.equal(res.z, geninv.latent_pursuit(G, y, max_iter=1, debias=False, lam_rel=1e-6).z)  # the default

"""The one callback convention: ``callback(k, state) -> bool | None``; returning True stops."""

from __future__ import annotations

import warnings

import pytest
import torch

import geninv
from geninv.exceptions import ConvergenceWarning
from geninv.solvers.hybrid import hybrid
from geninv.solvers.loop import run_loop
from geninv.solvers.noise import noisy_pursuit
from geninv.solvers.steps import LinearLS, fista_init, fista_step

F64 = torch.float64


@pytest.fixture(scope="module")
def problem():
    G = geninv.random_generator([6, 30, 70, 160], "tanh", seed=2, dtype=F64)
    z, y = G.sample(4, seed=3)
    return G, z, y


def _fista_problem():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(40, 20, generator=g, dtype=F64)
    x = torch.randn(3, 20, generator=g, dtype=F64).clamp_min(0)
    t = x @ W.T
    f = LinearLS(W, torch.zeros(40, dtype=F64))
    step = torch.full((3, 1), 1.0 / float(torch.linalg.matrix_norm(W, 2)) ** 2, dtype=F64)
    lam = torch.full((3, 1), 1e-3, dtype=F64)

    def step_fn(state, data):
        return fista_step(state, lambda v: f.grad(v, data[0], None), step, lam)

    def change(state, prev, data):
        return (state.x - prev).norm(dim=1) / state.x.norm(dim=1).clamp_min(1e-300)

    return step_fn, fista_init(torch.zeros(3, 20, dtype=F64)), (t,), change


def test_run_loop_stops_where_the_callback_says():
    step_fn, s0, data, change = _fista_problem()
    seen = []

    def cb(k, state):
        seen.append((k, state["stage"], state["active"]))
        return k >= 10

    out = run_loop(step_fn, s0, data, primary="x", change=change, objective=None, max_iter=1000, tol=0.0,
                   check_every=5, callback=cb, stage="x")
    assert out.stopped and seen == [(5, "x", 3), (10, "x", 3)]
    assert (out.n_iter == 10).all() and not out.converged.any()
    # What it returns is exactly the state after 10 steps.
    ref = run_loop(step_fn, s0, data, primary="x", change=change, objective=None, max_iter=10, tol=0.0, check_every=5)
    assert not ref.stopped and torch.equal(out.state.x, ref.state.x)


def test_callback_returning_none_changes_nothing(problem):
    G, _, y = problem
    calls = []
    a = geninv.latent_pursuit(G, y)
    b = geninv.latent_pursuit(G, y, callback=lambda k, st: calls.append((k, st["stage"])))
    assert calls and torch.equal(a.z, b.z) and "stopped_by_callback" not in b.info
    assert {s for _, s in calls} >= {"x2", "x1", "z"}


@pytest.mark.parametrize("method", ["latent_pursuit", "layered_bp"])
def test_pursuit_stops_at_the_first_check(problem, method):
    G, _, y = problem
    seen = []

    def stop(k, state):
        seen.append(state["stage"])
        assert state["x"].shape[0] == y.shape[0]
        return True

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = getattr(geninv, method)(G, y, callback=stop, check_every=3)
    assert seen == ["x2"]  # no later stage iterates, so no later check
    assert res.info["stopped_by_callback"] is True
    assert (res.info["n_iter"]["x2"] == 3).all()
    for stage, n in res.info["n_iter"].items():
        if stage != "x2":
            assert (n == 0).all(), stage
    assert "debias_objective" not in res.info and not res.converged.any()
    assert res.z.shape == (y.shape[0], G.latent_dim) and torch.isfinite(res.z).all()


def test_latent_stage_gives_z(problem):
    G, _, y = problem
    got = {}

    def cb(k, state):
        if state["stage"] == "z":
            got["z"] = state["z"]
            assert state["objective"] is None or state["objective"].shape == (y.shape[0],)

    geninv.latent_pursuit(G, y, callback=cb)
    assert got["z"].shape == (y.shape[0], G.latent_dim)


def test_noisy_pursuit_stops(problem):
    G, _, y = problem
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = noisy_pursuit(G, y, noise_level=1e-3, callback=lambda k, st: True, check_every=2)
    assert res.info["stopped_by_callback"] is True and "objective" not in res.info
    assert (res.info["n_iter"]["x2"] == 2).all() and (res.info["n_iter"]["z"] == 0).all()


def test_hybrid_stops_after_the_pursuit(problem):
    G, _, y = problem
    stages = []

    def cb(k, state):
        stages.append(state["stage"])
        assert state["z"].shape == (y.shape[0], G.latent_dim)
        return True

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = hybrid(G, y, callback=cb)
    assert stages == ["pursuit"] and res.info["stopped_by_callback"] is True
    # The refinement did not run: the answer is the pursuit's.
    assert torch.equal(res.info["objective_refined"], res.info["objective_pursuit"])

"""Each sub-solver is optimal: KKT conditions to 1e-6 in float64 and the objective of an
independent scipy solution of the same problem (small instances, batched over samples)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from geninv import random_generator, random_mask
from geninv.exceptions import InputError
from geninv.solvers.measurement import Measurement
from geninv.solvers.steps import LinearLS, SignalLS
from geninv.solvers.subproblems import fista_layer, image_lipschitz, ladmm_layer, ladmm_mu

F64 = torch.float64
# KKT residuals are compared with the scale of the data (entries O(1)); the solvers stop at a
# relative change of 1e-12..1e-13, so 1e-6 leaves six orders of margin for float64.
KKT_TOL = 1e-6


def _image_problem(seed: int = 0, B: int = 4):
    """A random two-layer tanh generator's image layer with noise, so the l1 weight and the
    nonnegativity are active; 30 % of the pixels masked (row weights w)."""
    G = random_generator([6, 40, 90], "tanh", seed=seed, bias=True, dtype=F64)
    z, y = G.sample(B, seed=seed)
    g = torch.Generator().manual_seed(seed)
    y = (y + 0.05 * torch.randn(y.shape, generator=g, dtype=F64)).clamp(-0.99, 0.99)
    m = random_mask(90, 0.3, seed=seed, batch=B)
    return G, y, m


def _meas(m):
    return Measurement("diag", m.to(F64), m, None)


def test_fista_preactivation_layer_kkt_and_scipy():
    G, y, m = _image_problem(0)
    W, b = G.weights[-1], G.biases[-1]
    t = torch.atanh(y) * m
    w = m.to(F64)
    lam = 0.05
    lip = image_lipschitz(W, _meas(m), None, power_iters=30)
    out, lam_t = fista_layer(LinearLS(W, b), t, w, lip=lip, lam=lam, lam_rel=0.0, x0=None, max_iter=20000,
                             tol=1e-13, check_every=10, restart=True, callback=None, stage="x")
    assert out.converged.all()
    x = out.state.x
    grad = (w * (x @ W.T + b - t)) @ W + lam
    # stationarity with nonnegativity: grad_j + lam = 0 where x_j > 0, >= 0 where x_j = 0
    assert (grad[x > 0].abs() <= KKT_TOL).all()
    assert (grad[x == 0] >= -KKT_TOL).all()
    assert (x >= 0).all() and (x == 0).any() and (x > 0).any()
    # scipy: the same problem is smooth on x >= 0 (l1 = sum), L-BFGS-B with bounds from zero.
    for k in range(x.shape[0]):
        Wn, bn, tn, wn = W.numpy(), b.numpy(), t[k].numpy(), w[k].numpy()

        def f(v, Wn=Wn, bn=bn, tn=tn, wn=wn):
            r = wn * (Wn @ v + bn - tn)
            return 0.5 * r @ r + lam * v.sum(), Wn.T @ (wn * r) + lam

        ref = minimize(f, np.zeros(W.shape[1]), jac=True, method="L-BFGS-B", bounds=[(0, None)] * W.shape[1],
                       options={"ftol": 1e-16, "gtol": 1e-12, "maxiter": 20000})
        ours = f(x[k].numpy())[0]
        assert ours <= ref.fun + 1e-9 * abs(ref.fun)
        assert abs(ours - ref.fun) <= 1e-8 * abs(ref.fun)


def test_fista_signal_domain_layer_kkt_and_scipy():
    """eq. (8) as stated (through tanh, backtracking FISTA): first-order conditions at the
    returned point, and scipy started from the same zero point reaches the same objective."""
    G, y, m = _image_problem(1)
    W, b = G.weights[-1], G.biases[-1]
    w = m.to(F64)
    lam = 0.02
    f = SignalLS(W, b, G.output_activation, None)
    lip = image_lipschitz(W, _meas(m), G.output_activation, power_iters=30)
    out, _ = fista_layer(f, y, w, lip=lip, lam=lam, lam_rel=0.0, x0=None, max_iter=50000, tol=1e-13,
                         check_every=10, restart=True, callback=None, stage="x")
    x = out.state.x
    grad = f.grad(x, y, w) + lam
    assert (grad[x > 0].abs() <= KKT_TOL).all()
    assert (grad[x == 0] >= -KKT_TOL).all()
    for k in range(x.shape[0]):
        Wn, bn, yn, wn = W.numpy(), b.numpy(), y[k].numpy(), w[k].numpy()

        def fun(v, Wn=Wn, bn=bn, yn=yn, wn=wn):
            a = Wn @ v + bn
            r = wn * (np.tanh(a) - yn)
            return 0.5 * r @ r + lam * v.sum(), Wn.T @ (r * (1 - np.tanh(a) ** 2)) + lam

        ref = minimize(fun, np.zeros(W.shape[1]), jac=True, method="L-BFGS-B", bounds=[(0, None)] * W.shape[1],
                       options={"ftol": 1e-16, "gtol": 1e-12, "maxiter": 20000})
        ours = fun(x[k].numpy())[0]
        assert abs(ours - ref.fun) <= 1e-7 * abs(ref.fun)


def _middle_problem(seed: int = 0, B: int = 5, n_in: int = 12, n_out: int = 40):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(n_out, n_in, generator=g, dtype=F64) / n_in**0.5
    b = 0.1 * torch.randn(n_out, generator=g, dtype=F64)
    xt = torch.relu(torch.randn(B, n_in, generator=g, dtype=F64))
    P = xt @ W.T + b
    # noise on the target makes some inequality constraints W^{S^c} x + b <= 0 active
    c = torch.relu(P) + 0.08 * torch.randn(B, n_out, generator=g, dtype=F64)
    s = (P > 0).to(F64)
    return W, b, c, s


@pytest.mark.parametrize("first", [False, True], ids=["middle_eq9", "first_eq16"])
def test_ladmm_layer_kkt_and_scipy(first):
    """Linearized ADMM on eq. 9 (x >= 0, l1) and eq. 16 (free z, gamma): primal feasibility,
    dual feasibility of the multipliers nu = rho v, complementary slackness, stationarity; and
    the objective of SLSQP on the same constrained problem."""
    W, b, c, s = _middle_problem(2 if first else 0)
    B, n_in = c.shape[0], W.shape[1]
    rho, lam, gamma = 1.0, (0.0 if first else 0.01), (0.1 if first else 0.0)
    lam_t = torch.full((B, 1), lam, dtype=F64)
    out, mu = ladmm_layer(W, b, c, s, lam=lam_t, rho=rho, gamma=gamma, nonneg=not first, mu=None,
                          x0=torch.zeros(B, n_in, dtype=F64), max_iter=200000, tol=1e-13, check_every=25,
                          power_iters=30, callback=None, stage="x")
    assert out.converged.all()
    x, nu = out.state.x, rho * out.state.v
    sc = 1 - s
    P = x @ W.T + b
    assert ((sc * P).clamp_min(0) <= KKT_TOL).all(), "primal feasibility"
    assert ((sc * nu) >= -KKT_TOL).all(), "dual feasibility"
    assert ((sc * nu * P).abs() <= KKT_TOL).all(), "complementary slackness"
    assert (sc * nu > 1e-3).any(), "the instance should have active constraints"
    grad = (s * (P - c)) @ W + (sc * nu) @ W + lam + gamma * x
    if first:
        assert (grad.abs() <= KKT_TOL).all()
    else:
        assert (x >= 0).all()
        assert (grad[x > 0].abs() <= KKT_TOL).all()
        assert (grad[x == 0] >= -KKT_TOL).all()
    for k in range(B):
        Wn, bn, cn, sn = W.numpy(), b.numpy(), c[k].numpy(), s[k].numpy().astype(bool)

        def f(v, Wn=Wn, bn=bn, cn=cn, sn=sn):
            r = (Wn @ v + bn - cn)[sn]
            return 0.5 * r @ r + lam * v.sum() + 0.5 * gamma * v @ v

        def jac(v, Wn=Wn, bn=bn, cn=cn, sn=sn):
            r = np.zeros(len(bn))
            r[sn] = (Wn @ v + bn - cn)[sn]
            return Wn.T @ r + lam + gamma * v

        cons = [{"type": "ineq", "fun": lambda v, Wn=Wn, bn=bn, sn=sn: -(Wn[~sn] @ v + bn[~sn]),
                 "jac": lambda v, Wn=Wn, sn=sn: -Wn[~sn]}]
        ref = minimize(f, np.zeros(n_in), jac=jac, method="SLSQP", constraints=cons,
                       bounds=None if first else [(0, None)] * n_in, options={"ftol": 1e-15, "maxiter": 2000})
        assert ref.success
        assert abs(f(x[k].numpy()) - ref.fun) <= 1e-8 * max(1.0, abs(ref.fun))


def test_ladmm_step_condition_is_checked():
    W, b, c, s = _middle_problem(3)
    B = c.shape[0]
    mu_max = ladmm_mu(W, s, rho=2.0, gamma=0.0, power_iters=30)
    exact = torch.linalg.eigvalsh(W.T[None] * (s + 2.0 * (1 - s))[:, None, :] @ W)[:, -1]
    # mu = 1 / (estimate), the estimate is within [exact, 1.05 exact]: the condition of eq. 12 holds
    assert (mu_max.squeeze(1) * exact <= 1 + 1e-12).all()
    assert (mu_max.squeeze(1) * exact >= 1 / 1.05 - 1e-12).all()
    kw = dict(lam=torch.zeros(B, 1, dtype=F64), rho=2.0, gamma=0.0, nonneg=True, x0=torch.zeros(B, 12, dtype=F64),
              max_iter=10, tol=1e-8, check_every=5, power_iters=30, callback=None, stage="x")
    with pytest.raises(InputError, match="mu"):
        ladmm_layer(W, b, c, s, mu=float(mu_max.max()) * 1.5, **kw)
    out, mu = ladmm_layer(W, b, c, s, mu=float(mu_max.min()) * 0.5, **kw)
    assert torch.isfinite(out.state.x).all()

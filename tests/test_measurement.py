"""The observed-signal object (geninv.solvers.measurement.Measurement) and the solver options."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import geninv
from geninv.exceptions import InputError
from geninv.operators import GaussianMatrix, Mask
from geninv.solvers.measurement import resolve_measurement
from geninv.solvers.options import NoiseOptions, PursuitOptions

F64 = torch.float64


@pytest.fixture(scope="module")
def G():
    return geninv.random_generator([4, 12, 30], "tanh", seed=1, dtype=F64)


def _all_kinds(G, B=3):
    g = torch.Generator().manual_seed(5)
    y = G(torch.randn(B, G.latent_dim, generator=g, dtype=F64))
    mask = torch.rand(B, G.output_dim, generator=g) < 0.5
    mask[:, 0] = True
    A = GaussianMatrix(17, G.output_dim, seed=2, dtype=F64)
    return {
        "identity": resolve_measurement(None, None, G, y),
        "diag": resolve_measurement(None, mask, G, y),
        "operator": resolve_measurement(A, None, G, A.forward(y)),
    }, A, mask


def _dense(kind, A, mask, b):
    """The measurement of sample ``b`` as a dense matrix (m, n)."""
    n = mask.shape[1]
    if kind == "identity":
        return torch.eye(n, dtype=F64)
    if kind == "diag":
        return torch.diag(mask[b].to(F64))
    return A.forward(torch.eye(n, dtype=F64)).T


@pytest.mark.parametrize("kind", ["identity", "diag", "operator"])
def test_methods_agree_with_the_dense_matrix(G, kind):
    cases, A, mask = _all_kinds(G)
    y, meas = cases[kind]
    assert meas.kind == kind and meas.diagonal == (kind != "operator") and meas.is_identity == (kind == "identity")
    g = torch.Generator().manual_seed(7)
    B, n = y.shape[0], G.output_dim
    p = torch.randn(B, n, generator=g, dtype=F64)
    M = torch.randn(B, n, 5, generator=g, dtype=F64)
    W = torch.randn(n, 6, generator=g, dtype=F64)
    tol = 1e-12
    col = meas.max_column_norm(W)
    for b in range(B):
        D = _dense(kind, A, mask, b)
        assert torch.allclose(meas.apply(p)[b], D @ p[b], atol=tol)
        assert torch.allclose(meas.apply_cols(M)[b], D @ M[b], atol=tol)
        # the residual is A p - y on the observed entries (a mask zeroes the others)
        r = meas.residual(p, y)[b]
        ref = D @ p[b] - (y[b] if kind != "diag" else D @ y[b])
        assert torch.allclose(r, ref, atol=tol)
        assert torch.allclose(meas.observed(y)[b], y[b] if kind != "diag" else D @ y[b], atol=0)
        expect = float(mask[b].sum()) if kind == "diag" else float(y.shape[1])
        assert float(meas.n_observed(y)[b]) == expect
        assert torch.allclose(col[b if col.numel() > 1 else 0], (D @ W).norm(dim=0).max(), atol=tol)


@pytest.mark.parametrize("kind", ["identity", "diag", "operator"])
def test_subset_and_public_measure(G, kind):
    cases, A, mask = _all_kinds(G)
    y, meas = cases[kind]
    idx = torch.tensor([2, 0])
    sub = meas.subset(idx)
    p = torch.randn(3, G.output_dim, dtype=F64, generator=torch.Generator().manual_seed(1))
    assert torch.equal(sub.apply(p[idx]), meas.apply(p)[idx])
    public = meas.as_measure(idx)
    if kind == "identity":
        assert public is None
    elif kind == "diag":
        assert isinstance(public, Mask) and torch.equal(public.mask, mask[idx])
    else:
        assert public is A
    # the public measure resolves back to the same measurement of the sub-batch
    y2, again = resolve_measurement(public, None, G, y[idx])
    assert again.kind == kind and torch.equal(again.apply(p[idx]), sub.apply(p[idx]))


def test_options_are_frozen_and_checked_once():
    o = PursuitOptions(lam_rel=0, max_iter=5, tol=1e-6)
    assert o.lam_rel == 0.0 and isinstance(o.lam_rel, float) and o.max_iter == 5
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.max_iter = 3  # type: ignore[misc]
    with pytest.raises(InputError, match="rho"):
        PursuitOptions(rho=0.0)
    with pytest.raises(InputError, match="max_iter"):
        o.replace(max_iter=0)
    with pytest.raises(InputError, match="callback"):
        PursuitOptions(callback=3)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="method"):
        NoiseOptions(method="gd")
    with pytest.raises(InputError, match="sigma_z"):
        NoiseOptions(sigma_z=0.0)
    assert NoiseOptions(gamma_end=1).gamma_end == 1.0


def test_for_width_builds_each_kind_and_refuses_a_wrong_width():
    from geninv.exceptions import ShapeError
    from geninv.solvers.measurement import Measurement

    y = torch.randn(3, 12, dtype=torch.float64)
    yy, m = Measurement.for_width(None, 12, y)
    assert m.is_identity and torch.equal(yy, y) and torch.equal(m.apply(y), y)
    keep = torch.rand(3, 12, generator=torch.Generator().manual_seed(0)) > 0.4
    keep[:, 0] = True
    _, m = Measurement.for_width(Mask(keep), 12, y)
    assert m.diagonal and not m.is_identity
    assert torch.equal(m.n_observed(y), keep.sum(dim=1).to(m.n_observed(y).dtype))
    A = GaussianMatrix(5, 12, seed=1, dtype=torch.float64)
    ya, m = Measurement.for_width(A, 12, torch.randn(3, 5, dtype=torch.float64))
    assert not m.diagonal and ya.shape == (3, 5)
    with pytest.raises(ShapeError, match="measure: expected a mask of width 12"):
        Measurement.for_width(Mask(keep[:, :11]), 12, y)
    with pytest.raises(ShapeError, match="measure"):
        Measurement.for_width(A, 11, y)

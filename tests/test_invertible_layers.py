"""The Oracle and the certificate on invertible hidden layers (LeakyReLU, ...): the rank conditions
replace the sparsity ones, and where they hold the recursion recovers z exactly in float64."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import geninv
from geninv.exceptions import ConvergenceWarning, UnsupportedLayerError
from geninv.solvers.oracle import oracle

# float64, three least-squares solves of condition number ~10: relative error a few 1e-15.
EXACT = 1e-11


def _leaky(dims: list[int], seed: int = 0, hidden: type[nn.Module] = nn.LeakyReLU) -> geninv.Generator:
    torch.manual_seed(seed)
    mods: list[nn.Module] = []
    for i in range(len(dims) - 1):
        mods.append(nn.Linear(dims[i], dims[i + 1], bias=False))
        mods.append(hidden() if i < len(dims) - 2 else nn.Tanh())
    return geninv.Generator.from_torch(nn.Sequential(*mods).double())


def test_oracle_recovers_z_exactly_on_an_expansive_leaky_relu_generator() -> None:
    G = _leaky([10, 40, 100, 200])
    z, y = G.sample(6, seed=1)
    res = geninv.invert(G, y, method="oracle", supports=None)
    assert all(bool((r == k).all()) for r, k in zip(res.info["rank"], (10, 40, 100)))
    assert bool(res.info["full_rank"].all()) and bool(res.converged.all())
    assert float(geninv.relative_error(z, res.z).max()) < EXACT
    for x, x_true in zip(res.layers, G.trace(z).hidden):
        assert float(((x - x_true).norm(dim=1) / x_true.norm(dim=1)).max()) < EXACT
    # The same answer as the layer-wise inverse, and with 40 % of the pixels hidden (120 >= 100 rows).
    lw = geninv.layerwise_inverse(G, y)
    assert float(geninv.relative_error(lw.z, res.z).max()) < EXACT
    mask = torch.rand(6, 200, generator=torch.Generator().manual_seed(2)) < 0.6
    assert bool((mask.sum(dim=1) >= 100).all())
    rm = geninv.invert(G, y, method="oracle", supports=None, mask=mask)
    assert bool(rm.info["full_rank"].all())
    assert float(geninv.relative_error(z, rm.z).max()) < EXACT
    # The certificate: the rank conditions, every one holding.
    certs = geninv.certify(G, z)
    assert all(c.unique is True for c in certs)
    assert [c.statement for c in certs[0].conditions] == ["rank(W_3^M) = n_2", "rank(W_2) = n_1", "rank(W_1) = n_0"]
    assert all(c.verdict == "holds" for c in certs[0].conditions)


def test_rank_deficient_layer_is_flagged_and_certified_not_unique() -> None:
    G = _leaky([10, 8, 100])  # W_1 is 8 x 10: rank 8 < n_0
    z, y = G.sample(3, seed=1)
    with pytest.warns(ConvergenceWarning, match="rank-deficient"):
        res = oracle(G, y, supports=None)
    assert bool((res.info["rank"][0] == 8).all()) and not bool(res.info["full_rank"].any())
    assert not bool(res.converged.any())
    # The answer explains y (any latent with the same x_1 does) but is not z.
    assert res.fits is not None and bool(res.fits.all())
    assert float(geninv.relative_error(z, res.z).min()) > 1e-6
    cert = geninv.certify(G, z[0])
    assert cert.unique is False
    assert cert.condition("Rank condition").verdict == "holds"  # the image layer's: rank 8 of 8
    assert [c.verdict for c in cert.conditions] == ["holds", "fails"]
    z_alt = torch.tensor(cert.witness["z_alt"], dtype=torch.float64)
    assert float((z_alt - z[0]).norm()) > 1e-3
    gap = float((G(z_alt[None]) - G(z[0][None])).norm())
    assert gap <= 1e3 * torch.finfo(torch.float64).eps * float(y[0].norm())


def test_mixed_relu_and_leaky_hidden_layers() -> None:
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(10, 60), nn.ReLU(), nn.Linear(60, 100), nn.LeakyReLU(0.1), nn.Linear(100, 200),
                        nn.Tanh()).double()
    G = geninv.Generator.from_torch(net)
    z, y = G.sample(4, seed=1)
    tr = G.trace(z)
    res = geninv.invert(G, y, method="oracle", supports=tr.supports)
    # Rows of the ReLU layer's solve are its support; the invertible layer solves for every unit.
    assert torch.equal(res.info["n_unknowns"][1], tr.supports[0].sum(dim=1))
    assert bool(res.info["full_rank"].all())
    assert float(geninv.relative_error(z, res.z).max()) < EXACT
    with pytest.raises(geninv.InputError, match="supports"):
        geninv.invert(G, y, method="oracle", supports=None)


def test_non_invertible_smooth_hidden_layers_are_refused_by_name() -> None:
    G = _leaky([6, 30, 60], hidden=nn.GELU)
    z, y = G.sample(2, seed=1)
    with pytest.raises(UnsupportedLayerError, match="hidden layer 1 .*gelu"):
        geninv.invert(G, y, method="oracle", supports=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(UnsupportedLayerError, match="gelu"):
            geninv.certify(G, z)

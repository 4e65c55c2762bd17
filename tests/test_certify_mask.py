"""Certificates of the inverse problem actually posed: masks, operators, ReLU and saturated outputs.

The rows of the output layer that carry equations are the measured, unsaturated entries of the
image (and, for a ReLU output, those in supp(y)); Theorem 1 (i) and Corollary 1 count them. The
reference for a mask is the certificate of the generator cut to the observed rows; the
solvers' check is that every masked signal certified unique is recovered by the Oracle and none
certified not unique is.
"""

from __future__ import annotations

import pytest
import torch

import geninv
from geninv import Activation, GaussianMatrix, Generator, Layer, Mask, certify, random_generator, relative_error
from geninv.exceptions import InputError, ShapeError
from geninv.solvers.measurement import saturated

F32, F64 = torch.float32, torch.float64


def cut(G: Generator, rows: torch.Tensor) -> Generator:
    """``G`` with its output layer restricted to ``rows`` (what a user would build by hand)."""
    last = G.layers[-1]
    return Generator([*G.layers[:-1], Layer(last.W[rows], last.b[rows], last.activation)])


def masks_with_counts(B: int, n: int, counts: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    m = torch.zeros(B, n, dtype=torch.bool)
    for k in range(B):
        m[k, torch.randperm(n, generator=g)[: int(counts[k])]] = True
    return m


def same(a, b) -> None:
    assert a.unique == b.unique
    assert a.output_rows == b.output_rows
    assert a.cardinalities == b.cardinalities
    def rows(c):  # the number of rows is named |R| (some rows), m (an operator's) or n (all)
        return (c.theorem, c.verdict, c.values.replace("|R|/2", "n/2").replace("m/2", "n/2"))

    assert [rows(c) for c in a.conditions] == [rows(c) for c in b.conditions]


def test_a_masked_certificate_is_the_certificate_of_the_generator_cut_to_the_observed_rows():
    G = random_generator([10, 40, 100], "tanh", seed=0, dtype=F64)
    z, _ = G.sample(6, seed=1)
    m = masks_with_counts(6, 100, torch.tensor([8, 30, 45, 60, 80, 100]), seed=2)
    batch = certify(G, z, mask=m, theorem2=False)
    for k in range(6):
        ref = certify(cut(G, m[k]), z[k], theorem2=False)
        same(batch[k], ref)
        assert batch[k].output_rows == int(m[k].sum())
        # one call for the batch is one call per signal
        same(batch[k], certify(G, z[k], mask=m[k], theorem2=False))
    one = certify(G, z[:2], mask=m[3], theorem2=False)  # one mask for every signal
    for k in range(2):
        same(one[k], certify(cut(G, m[3]), z[k], theorem2=False))
    assert all(c.output_rows == 60 for c in certify(G, z[:2], measure=Mask(m[3]), theorem2=False))


def test_theorem2_bound_with_a_mask_is_that_of_the_cut_generator():
    G = random_generator([10, 60, 200], "tanh", seed=3, dtype=F64)
    z, _ = G.sample(2, seed=4)
    m = masks_with_counts(2, 200, torch.tensor([150, 180]), seed=5)
    for k, c in enumerate(certify(G, z, mask=m, noise=1e-4)):
        ref = certify(cut(G, m[k]), z[k], noise=1e-4)
        assert c.theorem2 is not None and ref.theorem2 is not None
        assert c.theorem2.verdict == ref.theorem2.verdict
        assert c.theorem2.z_error == pytest.approx(ref.theorem2.z_error, rel=1e-12)


def test_masked_certificates_agree_with_the_oracle():
    """Every masked signal certified unique is recovered by the Oracle; none certified not unique is."""
    G = random_generator([10, 40, 100], "tanh", seed=0, dtype=F64)
    B = 48
    z, y = G.sample(B, seed=1)
    m = masks_with_counts(B, 100, torch.linspace(3, 100, B).round().long(), seed=2)
    certs = certify(G, z, mask=m, s_forms=False, theorem2=False)
    res = geninv.invert(G, y, method="oracle", supports=G.trace(z).supports, mask=m)
    err = relative_error(z, res.z)
    verdicts = [c.unique for c in certs]
    assert verdicts.count(True) >= 20 and verdicts.count(False) >= 3  # both answers are exercised
    for k, u in enumerate(verdicts):
        if u is True:
            assert float(err[k]) < 1e-10, (k, float(err[k]))
        elif u is False:
            assert float(err[k]) > 1e-6, (k, float(err[k]))
            w = certs[k].witness
            assert w is not None
            # the witness is another latent with the same observed image
            z2 = torch.tensor(w["z_alt"], dtype=F64)
            gap = (G(z2[None])[0] - y[k])[m[k]].norm()
            assert float(gap) <= 1e-9 * (1 + float(y[k].norm())) and w["distance"] > 1e-6


def test_relu_output_counts_the_support_of_the_image():
    """A ReLU output's zero pixels carry no equation: an image with a handful of positive pixels
    does not satisfy Corollary 1, and the certificate proves it not unique."""
    g = torch.Generator().manual_seed(0)
    W1 = torch.randn(60, 20, generator=g, dtype=F64) / 20**0.5
    W2 = (torch.randn(784, 60, generator=g, dtype=F64) - 0.6) / 60**0.5
    G = Generator([Layer(W1, torch.zeros(60, dtype=F64), Activation("relu")),
                   Layer(W2, torch.zeros(784, dtype=F64), Activation("relu"))])
    z = torch.randn(6, 20, generator=g, dtype=F64)
    y = G(z)
    pos = (y > 0).sum(dim=1)
    assert int(pos.max()) < 20
    for k, c in enumerate(certify(G, z, s_forms=False, theorem2=False)):
        assert c.output_rows == int(pos[k])
        assert c.condition("Corollary 1").verdict == "fails"
        assert not c.corollary1 and c.unique is False
    # the architecture report counts the same rows: no sampled image meets Corollary 1
    rep = geninv.certify_architecture(G, trials=20, theorem1=False)
    assert rep.corollary1["s_1 < m/2"] == 0.0 and rep.corollary1["all"] == 0.0
    # a mask: the rows are the observed pixels of the support
    G2 = random_generator([10, 60, 300], "relu", seed=0, dtype=F64)
    z2, y2 = G2.sample(3, seed=1)
    m = masks_with_counts(3, 300, torch.tensor([150, 200, 250]), seed=3)
    for k, c in enumerate(certify(G2, z2, mask=m, s_forms=False, theorem2=False)):
        assert c.output_rows == int(((y2[k] > 0) & m[k]).sum())
        same(c, certify(cut(G2, m[k]), z2[k], s_forms=False, theorem2=False))


def test_a_general_operator_is_certified_through_its_rows():
    # identity output: the equations are the rows of A W_{L+1}
    G = random_generator([10, 40, 100], "identity", seed=0, dtype=F64, bias=True)
    z, _ = G.sample(3, seed=1)
    A = GaussianMatrix(60, 100, seed=3, dtype=F64)
    last = G.layers[-1]
    ref_G = Generator([*G.layers[:-1], Layer(A.A @ last.W, A.A @ last.b, last.activation)])
    for c, r in zip(certify(G, z, measure=A, theorem2=False), certify(ref_G, z, theorem2=False)):
        same(c, r)
        assert c.output_rows == 60 and c.unique is True
    # a nonlinear output: an entry carries an equation only where A determines it
    Gt = random_generator([10, 40, 100], "tanh", seed=0, dtype=F64)
    wide = certify(Gt, z, measure=A, theorem2=False)
    assert all(c.output_rows == 0 and c.unique is not True for c in wide)
    tall = certify(Gt, z, measure=GaussianMatrix(150, 100, seed=4, dtype=F64), theorem2=False)
    for c, r in zip(tall, certify(Gt, z, theorem2=False)):
        same(c, r)
    # a matrix selecting entries determines exactly those
    sel = torch.zeros(30, 100, dtype=F64)
    rows = torch.randperm(100, generator=torch.Generator().manual_seed(5))[:30]
    sel[torch.arange(30), rows] = 2.0

    class Select:
        shape = (30, 100)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x @ sel.T.to(x.dtype)

    mk = torch.zeros(100, dtype=torch.bool)
    mk[rows] = True
    for c, r in zip(certify(Gt, z, measure=Select(), theorem2=False), certify(Gt, z, mask=mk, theorem2=False)):
        same(c, r)


def test_saturated_pixels_carry_no_equation_and_unique_means_recovered_in_float32():
    g = torch.Generator().manual_seed(0)
    W1 = torch.randn(60, 20, generator=g, dtype=F64) / 20**0.5
    W2 = 20.0 * (torch.randn(784, 60, generator=g, dtype=F64) - 0.8) / 60**0.5
    G = Generator([Layer(W1.float(), torch.zeros(60), Activation("relu")),
                   Layer(W2.float(), torch.zeros(784), Activation("sigmoid"))])
    z = torch.randn(8, 20, generator=g)
    y = G(z)
    sat = saturated(G.output_activation, y)
    assert bool(sat.any())
    # observe 70 pixels per image, most of them saturated where the image has enough
    obs = torch.zeros(8, 784, dtype=torch.bool)
    for k in range(8):
        order = torch.argsort((~sat[k]).to(torch.int8), stable=True)  # saturated first
        obs[k, order[:70]] = True
    certs = certify(G, z, mask=obs, s_forms=False, theorem2=False)
    res = geninv.invert(G, y, method="oracle", supports=G.trace(z).supports, mask=obs)
    err = relative_error(z, res.z)
    for k, c in enumerate(certs):
        assert c.output_rows == int((obs[k] & ~sat[k]).sum())
        if c.unique is True:
            assert float(err[k]) < 1e3 * torch.finfo(F32).eps
    assert any(c.unique is True for c in certs) and any(c.unique is not True for c in certs)
    for c, s in zip(certify(G, z, s_forms=False, theorem2=False), sat):
        assert c.output_rows == 784 - int(s.sum())


def test_bad_mask_or_measure_is_refused_naming_it():
    G = random_generator([10, 40, 100], "tanh", seed=0, dtype=F64)
    z, _ = G.sample(2, seed=1)
    m = torch.ones(100, dtype=torch.bool)
    with pytest.raises(InputError, match="mask, measure"):
        certify(G, z, mask=m, measure=Mask(m))
    with pytest.raises(ShapeError, match="mask"):
        certify(G, z, mask=torch.ones(99, dtype=torch.bool))
    with pytest.raises(ShapeError, match="mask"):
        certify(G, z, mask=torch.ones(3, 100, dtype=torch.bool))
    with pytest.raises(InputError, match="mask"):
        certify(G, z, mask=[True] * 100)
    with pytest.raises(ShapeError, match="measure"):
        certify(G, z, measure=GaussianMatrix(30, 99, dtype=F64))
    with pytest.raises(InputError, match="measure"):
        certify(G, z, measure="A")


def test_cli_certify_takes_a_mask(tmp_path):
    import json

    import numpy as np

    from geninv.cli import main

    m = np.zeros(100)
    m[:30] = 1
    np.save(tmp_path / "m.npy", m)
    out = tmp_path / "c.json"
    assert main(["certify", "--random", "10,40,100", "--n", "2", "--mask", str(tmp_path / "m.npy"), "--no-s-forms",
                 "--json", str(out)]) == 0
    certs = json.loads(out.read_text())["certificates"]
    assert [c["output_rows"] for c in certs] == [30, 30]
    np.save(tmp_path / "bad.npy", 2 * m)
    assert main(["certify", "--random", "10,40,100", "--mask", str(tmp_path / "bad.npy")]) == 2

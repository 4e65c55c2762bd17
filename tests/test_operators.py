"""Measurement operators: adjointness, mask counts, noise level, SNR metric."""

import math

import pytest
import torch

import geninv
from geninv.exceptions import InputError, ShapeError
from geninv.operators import GaussianMatrix, Identity, Mask, add_noise, adjointness_test, block_mask, random_mask


@pytest.mark.parametrize(
    "op",
    [Identity(50), Mask(random_mask(50, 0.45, seed=1)), Mask(random_mask(50, 0.3, seed=2, batch=4)),
     GaussianMatrix(20, 50, seed=0, dtype=torch.float64)],
    ids=["identity", "mask", "mask-per-sample", "gaussian"],
)
def test_adjointness(op):
    # float64: <Ax, r> and <x, A^T r> agree to rounding of a 50-term sum
    assert adjointness_test(op, dtype=torch.float64) < 1e-10


def test_random_mask_counts():
    m = random_mask(625, 0.45, seed=0)
    assert m.dtype == torch.bool and m.shape == (625,)
    assert int((~m).sum()) == round(0.45 * 625)
    mb = random_mask(784, 0.45, seed=0, batch=5)
    assert (mb.sum(1) == 784 - round(0.45 * 784)).all()
    assert not torch.equal(mb[0], mb[1])
    assert torch.equal(random_mask(625, 0.45, seed=0), m)
    with pytest.raises(InputError, match="fraction"):
        random_mask(10, 1.0)


def test_block_mask_rows():
    m = block_mask((28, 28), rows=13).reshape(28, 28)
    assert not m[:13].any() and m[13:].all()
    assert int(m.sum()) == 15 * 28


def test_gaussian_matrix_norm_and_shape():
    A = GaussianMatrix(100, 400, seed=0, dtype=torch.float64)
    assert A.shape == (100, 400)
    # Marchenko-Pastur edge: ||A|| ~ 1 + sqrt(n/m) = 3 for N(0, 1/m) entries
    assert 2.5 < A.norm() < 3.3
    x = torch.randn(3, 400, dtype=torch.float64)
    assert torch.allclose(A.forward(x), x @ A.A.T)


def test_noise_at_requested_snr():
    y = torch.randn(4000, 784, dtype=torch.float64)
    for target in (10.0, 20.0, 30.0):
        yn, sigma = add_noise(y, target, seed=1)
        got = geninv.snr(y, yn)
        assert abs(float(got.mean()) - target) < 0.5
        assert sigma.shape == (4000,)
    a, _ = add_noise(y[:3], 20, seed=5)
    b, _ = add_noise(y[:3], 20, seed=5)
    assert torch.equal(a, b)


def test_snr_definition_and_exact_match():
    x = torch.tensor([[3.0, 4.0], [1.0, 0.0]], dtype=torch.float64)
    xh = torch.tensor([[3.0, 4.0], [1.0, 0.1]], dtype=torch.float64)
    s = geninv.snr(x, xh)
    assert s[0] == math.inf
    assert abs(float(s[1]) - 20 * math.log10(1 / 0.1)) < 1e-9
    with pytest.raises(ShapeError):
        geninv.snr(x, xh[:, :1])


def test_mask_rejects_non_binary():
    with pytest.raises(InputError, match="mask"):
        Mask(torch.tensor([0.0, 0.5, 1.0]))

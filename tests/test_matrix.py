"""geninv.Matrix: a dense operator from a given matrix; GaussianMatrix as its seeded constructor."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import geninv
from geninv import GaussianMatrix, InputError, Matrix, ShapeError
from geninv.operators import adjointness_test

# Adjointness of a dense product: rounding of two length-n dot products, relative to the
# dtype's epsilon (1.2e-7 / 2.2e-16) times a small factor for the summation.
ADJ_TOL = {torch.float32: 1e-5, torch.float64: 1e-12}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matrix_forward_adjoint_norm(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(3)
    A = torch.randn(30, 50, generator=gen, dtype=torch.float64).to(dtype)
    op = Matrix(A)
    assert op.shape == (30, 50)
    x = torch.randn(4, 50, generator=gen, dtype=torch.float64).to(dtype)
    assert torch.equal(op.forward(x), x @ A.T)
    r = torch.randn(4, 30, generator=gen, dtype=torch.float64).to(dtype)
    assert torch.equal(op.adjoint(r), r @ A)
    assert adjointness_test(op, dtype=dtype) < ADJ_TOL[dtype]
    # The spectral norm is the largest singular value (computed in float64).
    assert op.norm() == pytest.approx(float(torch.linalg.svdvals(A.double())[0]), rel=1e-12)


def test_matrix_follows_the_data_dtype_and_keeps_the_given_matrix() -> None:
    A = torch.randn(20, 40, generator=torch.Generator().manual_seed(0))  # float32
    op = Matrix(A)
    x64 = torch.randn(3, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y64 = op.forward(x64)
    assert y64.dtype == torch.float64
    assert torch.equal(y64, x64 @ A.double().T)  # float32 entries are exact in float64
    assert op.A.dtype == torch.float32 and op.A is A  # the given matrix is not replaced
    assert op.forward(x64.float()).dtype == torch.float32
    # The float64 operator is exactly adjoint to float64 rounding, although the matrix is float32.
    assert adjointness_test(op, dtype=torch.float64) < ADJ_TOL[torch.float64]


def test_matrix_from_numpy_and_integers() -> None:
    arr = np.arange(6, dtype=np.int64).reshape(2, 3)
    op = Matrix(arr)
    assert op.A.dtype == torch.float64
    arr[0, 0] = 100  # the operator holds a copy
    assert float(op.A[0, 0]) == 0.0
    assert Matrix(np.ones((2, 2), dtype=np.float32)).A.dtype == torch.float32
    assert Matrix(torch.eye(3, dtype=torch.bool)).A.dtype == torch.float64


@pytest.mark.parametrize(
    "bad, err, words",
    [
        (torch.ones(5), ShapeError, ("A", "(m, n)", "(5,)")),
        (torch.ones(0, 3), ShapeError, ("A", "non-empty")),
        (torch.ones(2, 2, dtype=torch.complex64), InputError, ("A", "real", "complex64")),
        (torch.ones(2, 2, dtype=torch.float16), InputError, ("A", "float32 or float64", "float16")),
        (torch.tensor([[1.0, math.nan]]), InputError, ("A", "finite")),
        ([[1.0, 2.0]], InputError, ("A", "torch.Tensor or numpy array", "list")),
        (np.array([["a", "b"]], dtype=object), InputError, ("A", "numeric", "object")),
    ],
)
def test_matrix_bad_input(bad: object, err: type, words: tuple[str, ...]) -> None:
    with pytest.raises(err) as info:
        Matrix(bad)
    for w in words:
        assert w in str(info.value)


def test_gaussian_matrix_is_a_seeded_matrix_with_unchanged_entries() -> None:
    A = GaussianMatrix(30, 70, seed=5, dtype=torch.float64)
    assert isinstance(A, Matrix)
    gen = torch.Generator(device="cpu").manual_seed(5)
    expected = torch.randn(30, 70, generator=gen, dtype=torch.float64) / math.sqrt(30)
    assert torch.equal(A.A, expected)
    assert torch.equal(GaussianMatrix(30, 70, seed=5).A, expected.float())


def test_invert_with_matrix_equals_gaussian_matrix() -> None:
    G = geninv.random_generator([10, 80, 200], "tanh", dtype=torch.float64, seed=2)
    z, x = G.sample(3, seed=1)
    A = GaussianMatrix(120, 200, seed=3, dtype=torch.float64)
    y = A.forward(x)
    r1 = geninv.invert(G, y, measure=A)
    r2 = geninv.invert(G, y, measure=Matrix(A.A.clone()))
    assert torch.equal(r1.z, r2.z)  # the same arithmetic: GaussianMatrix is a Matrix
    # Planted recovery: m = 120 measurements of a 10-dimensional latent (float64).
    assert bool((geninv.snr(G(r1.z), x) > 100).all())

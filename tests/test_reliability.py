"""Reliability: bad input, numerical failure and repetition.

1. Every kind of bad input at a public Python boundary gets one geninv exception whose one-line
   message names the argument, what was expected and what was received (never a torch/scipy
   error from deep inside). ``CASES`` counts the distinct cases tried per kind; the table in
   ``docs/bad_inputs.md`` repeats those numbers and ``test_bad_inputs_table_matches_the_suite``
   keeps the two identical. The CLI kinds live in ``tests/test_cli_errors.py``.
2. Numerical safety: a sample that diverges stops with ``converged=False`` and a
   ConvergenceWarning, finite, and does not change the other samples of its batch.
3. Determinism: the same seed gives bit-identical results on CPU, also in a fresh process.
4. Random generators of varied shapes and activations are inverted by every method without a
   NaN (20 by default, 1,000 under ``-m slow``: ``make test-slow``).
"""

from __future__ import annotations

import hashlib
import json
import math
import pickle
import re
import struct
import subprocess
import sys
import traceback
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from torch import nn

import geninv
from geninv import (
    Activation,
    ConvergenceWarning,
    DomainError,
    Generator,
    GenInvError,
    InputError,
    Layer,
    ModelFileError,
    NumericalError,
    ShapeError,
    UnsupportedLayerError,
)
from geninv.operators import GaussianMatrix, Identity, Mask

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "docs" / "bad_inputs.md"

INVERT = getattr(geninv, "invert", None)
# every registered method (the paper's six, and any added later, are all held to these tests)
METHODS: tuple[str, ...] = tuple(geninv.solvers.METHODS) if INVERT is not None else (
    "oracle", "layered_bp", "latent_pursuit", "gd", "adam", "lp_layerwise")
needs_solvers = pytest.mark.skipif(INVERT is None, reason="geninv.invert is not available")

# kind -> distinct cases tried (at least; each test asserts it). docs/bad_inputs.md repeats these.
CASES: dict[str, int] = {
    "y_shape": 60,
    "y_type": 54,
    "y_nonfinite": 60,
    "y_range": 36,
    "mask_shape": 36,
    "mask_type": 48,
    "measure_shape": 30,
    "z_shape": 40,
    "weights_nonfinite": 30,
    "overflow": 16,
    "empty_support": 16,
    "unsupported_layer": 16,
    "file_corrupt": 80,
    "file_truncated": 40,
    "file_format": 14,
    "file_pickle": 9,
    "options": 60,
    "supports": 10,
    "certificates": 16,
    "foundation_args": 57,
}
# kind -> the exception class(es) it gets (the table's "Error" column names them all).
ERRORS: dict[str, tuple[type[GenInvError], ...]] = {
    "y_shape": (ShapeError,),
    "y_type": (InputError,),
    "y_nonfinite": (InputError,),
    "y_range": (DomainError,),
    "mask_shape": (ShapeError,),
    "mask_type": (InputError,),
    "measure_shape": (ShapeError,),
    "z_shape": (ShapeError,),
    "weights_nonfinite": (InputError, ModelFileError),
    "overflow": (NumericalError,),
    "empty_support": (InputError,),
    "unsupported_layer": (UnsupportedLayerError,),
    "file_corrupt": (ModelFileError,),
    "file_truncated": (ModelFileError,),
    "file_format": (ModelFileError,),
    "file_pickle": (ModelFileError,),
    "options": (InputError,),
    "supports": (InputError, ShapeError),
    "certificates": (InputError, ShapeError),
    "foundation_args": (InputError, ShapeError),
}

# Hypothesis: fixed example sequence (the counts above are reproducible), no example database.
FIXED = dict(derandomize=True, database=None, deadline=None, phases=[Phase.explicit, Phase.generate],
             suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


class Tally:
    """Distinct cases tried for one kind."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.seen: set[str] = set()

    def add(self, *case: object) -> None:
        self.seen.add(repr(case))

    def check(self) -> None:
        assert len(self.seen) >= CASES[self.kind], (
            f"{self.kind}: tried {len(self.seen)} distinct cases, docs/bad_inputs.md promises {CASES[self.kind]}"
        )


def expect(kind: str, fn, *names: str, cls: tuple[type[GenInvError], ...] | None = None) -> GenInvError:
    """``fn()`` raises one of the kind's geninv errors with a one-line message naming ``names``."""
    classes = cls or ERRORS[kind]
    try:
        fn()
    except GenInvError as e:
        msg = str(e)
        assert isinstance(e, classes), f"{kind}: expected {[c.__name__ for c in classes]}, got {type(e).__name__}: {msg}"
        assert msg and "\n" not in msg, f"{kind}: message must be one line, got {msg!r}"
        assert "expected" in msg and "received" in msg, f"{kind}: message must say expected and received: {msg!r}"
        for name in names:
            assert name in msg, f"{kind}: message must name {name!r}: {msg!r}"
        return e
    except Exception as e:  # noqa: BLE001
        where = traceback.extract_tb(e.__traceback__)[-1]
        pytest.fail(f"{kind}: {type(e).__name__} from {where.filename}:{where.lineno} instead of a geninv error: {e}")
    pytest.fail(f"{kind}: no error raised (expected {[c.__name__ for c in classes]} naming {names})")


# -- fixtures ------------------------------------------------------------------------------------

def small_generator(output: str = "tanh", dims=(3, 12, 20), seed: int = 0, bias: bool = False) -> Generator:
    return geninv.random_generator(list(dims), output=output, seed=seed, bias=bias, dtype=torch.float64)


G0 = small_generator()
N0, N = G0.latent_dim, G0.output_dim


def signal(G: Generator, B: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    z, y = G.sample(B, seed=seed)
    return z, y, G.trace(z).supports


def usable(method: str, **options) -> dict:
    """The subset of ``options`` that ``method`` takes (e.g. lp_layerwise has no ``max_iter``)."""
    from geninv.solvers import accepted_options

    accepted = accepted_options(method)
    return {k: v for k, v in options.items() if accepted is None or k in accepted}


def call(method: str, G: Generator, y, *, B: int | None = None, supports=None, **kw):
    """``geninv.invert`` with the oracle's supports filled in from a valid signal of batch B."""
    assert INVERT is not None
    if method == "oracle" and "supports" not in kw:
        kw["supports"] = supports if supports is not None else signal(G, B or 1)[2]
    return INVERT(G, y, method=method, **kw)


def batch_of(shape: tuple[int, ...]) -> int:
    return shape[0] if len(shape) >= 2 and shape[0] >= 1 else 1


# -- 1. bad inputs at the Python API -------------------------------------------------------------

def _bad_shapes(n: int, valid) -> st.SearchStrategy[tuple[int, ...]]:
    near = st.sampled_from([0, 1, n - 1, n + 1, 2 * n, N0, 12])
    shapes = st.one_of(
        st.lists(st.integers(0, 6), max_size=4).map(tuple),
        st.tuples(st.integers(1, 4), near),
        st.tuples(near),
        st.tuples(st.integers(1, 3), st.integers(1, 3), st.just(n)),
        st.tuples(st.just(0), st.just(n)),
    )
    return shapes.filter(lambda s: not valid(s))


def _valid_y(s: tuple[int, ...], n: int = N) -> bool:
    return s == (n,) or (len(s) == 2 and s[0] >= 1 and s[1] == n)


@needs_solvers
def test_y_of_wrong_shape_or_batch_dims():
    tally = Tally("y_shape")

    @settings(max_examples=2 * CASES["y_shape"], **FIXED)
    @given(method=st.sampled_from(METHODS), shape=_bad_shapes(N, _valid_y))
    def run(method, shape):
        tally.add(method, shape)
        y = torch.full(shape, 0.1, dtype=torch.float64)
        expect("y_shape", lambda: call(method, G0, y, B=batch_of(shape)), "y")

    run()
    tally.check()


@needs_solvers
@pytest.mark.parametrize("method", METHODS)
def test_y_of_wrong_type(method):
    tally = Tally("y_type")
    bad = [
        [0.1] * N, None, "0.1", 0.1, torch.zeros(2, N, dtype=torch.complex128), torch.zeros(2, N, dtype=torch.bool),
        np.array([["a"] * N]), np.array([[object()] * N]), (0.1,) * N,
    ]
    for y in bad:
        tally.add(method, type(y).__name__, getattr(y, "dtype", None))
        expect("y_type", lambda y=y: call(method, G0, y, B=2), "y")
    # counted over the parametrisation: 9 per method x 6 methods
    assert len(tally.seen) * len(METHODS) >= CASES["y_type"]


@needs_solvers
def test_nan_or_inf_in_y():
    tally = Tally("y_nonfinite")

    @settings(max_examples=2 * CASES["y_nonfinite"], **FIXED)
    @given(method=st.sampled_from(METHODS), B=st.integers(1, 3),
           bad=st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from([math.nan, math.inf, -math.inf])),
                        min_size=1, max_size=5))
    def run(method, B, bad):
        _, y, sup = signal(G0, B, seed=1)
        y = y.clone()
        flat = y.view(-1)
        for pos, v in bad:
            flat[pos % flat.numel()] = v
        tally.add(method, B, tuple(sorted((p % flat.numel(), str(v)) for p, v in bad)))
        expect("y_nonfinite", lambda: call(method, G0, y, supports=sup), "y")

    run()
    tally.check()


# Methods that read phi^{-1}(y) and so need y inside the output activation's open range. The
# others fit phi(.) to y and accept any finite y (a noisy tanh image may leave (-1, 1)):
# Layered BP's and Latent-Pursuit's image_domain="auto" then take the signal form (eq. (8));
# "signal" is also tried explicitly for Latent-Pursuit. A value at a bound is saturated: every
# method leaves it out of phi^{-1} and accepts it.
PHI_INVERSE_METHODS = ("oracle", "lp_layerwise")


@needs_solvers
def test_y_outside_the_range_of_the_output_activation():
    tally = Tally("y_range")
    gens = {"tanh": small_generator("tanh"), "sigmoid": small_generator("sigmoid")}

    @settings(max_examples=2 * CASES["y_range"], **FIXED)
    @given(method=st.sampled_from(METHODS), out=st.sampled_from(["tanh", "sigmoid"]),
           pos=st.integers(0, 2 * N - 1), excess=st.sampled_from([0.0, 1e-12, 1e-6, 0.5, 3.0, 1e6]),
           side=st.sampled_from(["low", "high"]))
    def run(method, out, pos, excess, side):
        G = gens[out]
        _, y, sup = signal(G, 2, seed=2)
        y = y.clone()
        lo, hi = G.output_activation.range
        y.view(-1)[pos] = hi + excess if side == "high" else lo - excess
        tally.add(method, out, pos, excess, side)
        v = float(y.view(-1)[pos])
        # a value at the bound (in y's precision) is a saturated pixel, left out of phi^{-1}
        if method in PHI_INVERSE_METHODS and not lo <= v <= hi:
            expect("y_range", lambda: call(method, G, y, supports=sup), "y", str(hi))
        else:
            if method == "latent_pursuit":
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    res = call(method, G, y, image_domain="signal", max_iter=20)  # finiteness, not convergence
                assert_finite_result(res, method)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                res = call(method, G, y, supports=sup, **usable(method, max_iter=20, restarts=1))
            assert_finite_result(res, method)

    run()
    tally.check()


def _valid_mask(s: tuple[int, ...], B: int = 2) -> bool:
    return s == (N,) or (len(s) == 2 and s[0] in (1, B) and s[1] == N)


@needs_solvers
def test_mask_of_wrong_size():
    tally = Tally("mask_shape")

    @settings(max_examples=2 * CASES["mask_shape"], **FIXED)
    @given(method=st.sampled_from(METHODS), shape=_bad_shapes(N, _valid_mask).filter(lambda s: math.prod(s) > 0))
    def run(method, shape):
        tally.add(method, shape)
        _, y, sup = signal(G0, 2, seed=3)
        mask = torch.ones(shape, dtype=torch.bool)
        expect("mask_shape", lambda: call(method, G0, y, supports=sup, mask=mask), "mask")

    run()
    tally.check()
    for shape in [(N + 1,), (3, N), (2, 2, N)]:  # the foundation's own checks
        expect("mask_shape", lambda shape=shape: geninv._validate.as_mask(torch.ones(shape, dtype=torch.bool), 2, N,
                                                                           torch.device("cpu")), "mask")


def _mask_bad_types() -> list[tuple[str, object]]:
    half = torch.ones(N, dtype=torch.float64)
    half[0] = 0.5
    two = torch.ones(N, dtype=torch.int64)
    two[3] = 2
    nan = torch.ones(N)
    nan[1] = math.nan
    hidden_row = torch.ones(2, N, dtype=torch.bool)
    hidden_row[1] = False
    return [("list", [True] * N), ("string", "all"), ("numpy", np.ones(N, dtype=bool)), ("complex", torch.ones(N, dtype=torch.complex64)),
            ("half", half), ("two", two), ("nan", nan), ("all hidden", hidden_row)]


@needs_solvers
@pytest.mark.parametrize("method", METHODS)
def test_mask_of_wrong_type_or_values(method):
    tally = Tally("mask_type")
    _, y, sup = signal(G0, 2, seed=3)
    for name, mask in _mask_bad_types():
        tally.add(method, name)
        expect("mask_type", lambda mask=mask: call(method, G0, y, supports=sup, mask=mask), "mask")
    assert len(tally.seen) * len(METHODS) >= CASES["mask_type"]


def test_mask_of_wrong_type_foundation():
    for name, mask in _mask_bad_types():
        if name in ("list", "string", "numpy", "complex", "half", "two", "nan"):
            expect("mask_type", lambda mask=mask: Mask(mask), "mask")
        expect("mask_type", lambda mask=mask: geninv._validate.as_mask(mask, 2, N, torch.device("cpu")), "mask")


def _bad_measures() -> list[tuple[str, object, int, str]]:
    # (name, operator, width of y given to it, the argument the message must name)
    return [("mask width", Mask(torch.ones(N + 3, dtype=torch.bool)), N, "mask"),
            ("identity width", Identity(N - 1), N, "measure"),
            ("gaussian n", GaussianMatrix(8, N + 1, seed=0, dtype=torch.float64), 8, "measure"),
            ("y width vs gaussian m", GaussianMatrix(8, N, seed=0, dtype=torch.float64), 9, "y"),
            ("y width vs mask", Mask(torch.ones(N, dtype=torch.bool)), N + 2, "y")]


@needs_solvers
@pytest.mark.parametrize("method", METHODS)
def test_measure_of_wrong_shape(method):
    tally = Tally("measure_shape")
    z, _, sup = signal(G0, 2, seed=4)
    for name, op, m, arg in _bad_measures():
        tally.add(method, name)
        y = torch.full((2, m), 0.1, dtype=torch.float64)
        expect("measure_shape", lambda op=op, y=y: call(method, G0, y, supports=sup, measure=op), arg)
    assert len(tally.seen) * len(METHODS) >= CASES["measure_shape"]


def test_operator_applied_to_wrong_width():
    for op, width in [(Mask(torch.ones(N, dtype=torch.bool)), N + 1), (GaussianMatrix(8, N, seed=0), N - 1)]:
        expect("measure_shape", lambda op=op, w=width: op.forward(torch.zeros(2, w)), "x")
        expect("measure_shape", lambda op=op, w=width: op.adjoint(torch.zeros(2, w + 7)), "r")


def _valid_z(s: tuple[int, ...]) -> bool:
    return s == (N0,) or (len(s) == 2 and s[0] >= 1 and s[1] == N0)


def test_latent_of_wrong_width():
    tally = Tally("z_shape")

    @settings(max_examples=2 * CASES["z_shape"], **FIXED)
    @given(shape=_bad_shapes(N0, _valid_z), fn=st.sampled_from(["call", "trace"]))
    def run(shape, fn):
        tally.add(shape, fn)
        z = torch.zeros(shape, dtype=torch.float64)
        expect("z_shape", lambda: (G0(z) if fn == "call" else G0.trace(z)), "z", str(N0))

    run()
    tally.check()


def _nan_net(where: str, pos: int, value: float) -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 10), nn.Tanh()).double().eval()
    t = {"W1": net[0].weight, "b1": net[0].bias, "bn": net[1].running_mean, "W2": net[3].weight}[where]
    with torch.no_grad():
        t.view(-1)[pos % t.numel()] = value
    return net


def test_nan_or_inf_in_weights(tmp_path):
    from safetensors.torch import save_file

    from geninv.model.io import FORMAT, _digest

    tally = Tally("weights_nonfinite")

    @settings(max_examples=2 * CASES["weights_nonfinite"], **FIXED)
    @given(route=st.sampled_from(["Layer", "from_torch", "file"]), where=st.sampled_from(["W1", "b1", "bn", "W2"]),
           pos=st.integers(0, 100), value=st.sampled_from([math.nan, math.inf, -math.inf]))
    def run(route, where, pos, value):
        tally.add(route, where, pos % 8, str(value))
        if route == "from_torch":
            expect("weights_nonfinite", lambda: Generator.from_torch(_nan_net(where, pos, value)), "W")
            return
        W = torch.randn(8, 3, dtype=torch.float64)
        b = torch.zeros(8, dtype=torch.float64)
        (W if where in ("W1", "W2") else b).view(-1)[pos % 8] = value
        if route == "Layer":
            expect("weights_nonfinite", lambda: Layer(W, b, Activation("relu")), "W")
            return
        # A file with a valid checksum over non-finite weights: refused when the layer is built.
        tensors = {"layers.0.W": W, "layers.0.b": b, "layers.1.W": torch.randn(10, 8, dtype=torch.float64),
                   "layers.1.b": torch.zeros(10, dtype=torch.float64)}
        arch = {"format": FORMAT, "dims": [3, 8, 10], "layers": [
            {"n_in": 3, "n_out": 8, "activation": {"name": "relu", "params": {}}},
            {"n_in": 8, "n_out": 10, "activation": {"name": "tanh", "params": {}}}]}
        arch["sha256"] = _digest(arch, tensors)
        p = tmp_path / "nan.safetensors"
        save_file(tensors, str(p), metadata={"geninv": json.dumps(arch)})
        expect("weights_nonfinite", lambda: geninv.load_generator(p), "path", "finite")

    run()
    tally.check()


def test_forward_pass_overflow():
    tally = Tally("overflow")
    G32 = geninv.random_generator([3, 12, 20], output="identity", seed=0)

    @settings(max_examples=2 * CASES["overflow"], **FIXED)
    @given(scale=st.floats(1e20, 3e38), fn=st.sampled_from(["call", "trace"]), sign=st.sampled_from([1.0, -1.0]))
    def run(scale, fn, sign):
        z = torch.full((2, 3), sign * scale)
        finite = bool(torch.isfinite(G32.forward_unchecked(z)).all()) and bool(
            all(torch.isfinite(a).all() for a in [layer.pre(z) for layer in G32.layers[:1]]))
        if finite:
            # not an overflow in float32 after all: then it must simply be finite
            assert torch.isfinite(G32(z) if fn == "call" else G32.trace(z).y).all()
            return
        tally.add(scale, fn, sign)
        expect("overflow", lambda: (G32(z) if fn == "call" else G32.trace(z)), "G(z)", "float32")

    run()
    tally.check()


def dead_generator(output: str = "tanh") -> Generator:
    """A generator whose first hidden layer is all zero for every z (bias -100): y = phi(b_2)."""
    G = small_generator(output, bias=True)
    L1, L2 = G.layers
    return Generator([Layer(L1.W, torch.full_like(L1.b, -100.0), L1.activation), L2])


@needs_solvers
def test_empty_support():
    tally = Tally("empty_support")
    # the oracle is told an empty support: z is not determined by it
    for layer in (0,):
        for sample in (0, 1):
            z, y, sup = signal(G0, 2, seed=5)
            sup = [s.clone() for s in sup]
            sup[layer][sample] = False
            tally.add("oracle", layer, sample)
            expect("empty_support", lambda sup=sup, y=y: INVERT(G0, y, method="oracle", supports=sup), "supports")
    G3 = small_generator("tanh", dims=(3, 12, 30, 40))
    for layer in (0, 1):
        for sample in (0, 1):
            z, y, sup = signal(G3, 2, seed=5)
            sup = [s.clone() for s in sup]
            sup[layer][sample] = False
            tally.add("oracle-3", layer, sample)
            expect("empty_support", lambda sup=sup, y=y: INVERT(G3, y, method="oracle", supports=sup), "supports")
    # y from a generator whose hidden layer is dead: every method refuses (the latent is not determined)
    for out in ("tanh", "identity"):
        D = dead_generator(out)
        z, y, sup = signal(D, 2, seed=6)
        assert not bool(sup[0].any())
        for method in METHODS[1:]:
            tally.add("dead", out, method)
            expect("empty_support", lambda D=D, y=y, m=method: INVERT(D, y, method=m), "y")
    tally.check()


def test_unsupported_layers():
    tally = Tally("unsupported_layer")
    lin = nn.Linear(4, 6)
    bn_train = nn.BatchNorm1d(6)
    bn_train.train()
    cases = {
        "conv": nn.Sequential(nn.Conv1d(1, 1, 1)),
        "lstm": nn.Sequential(nn.LSTM(4, 4)),
        "softmax": nn.Sequential(lin, nn.Softmax(dim=1)),
        "hardswish output": nn.Sequential(nn.Linear(4, 6), nn.ELU(), nn.Linear(6, 3), nn.Hardswish()),
        "softmin hidden": nn.Sequential(nn.Linear(4, 6), nn.Softmin(dim=1), nn.Linear(6, 3), nn.Tanh()),
        "bn training": nn.Sequential(nn.Linear(4, 6), bn_train, nn.ReLU()),
        "bn untracked": nn.Sequential(nn.BatchNorm1d(4, track_running_stats=False).eval(), nn.Linear(4, 6)),
        "layer norm": nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.LayerNorm(6)),
        "bn2d": nn.Sequential(nn.Linear(4, 6), nn.BatchNorm2d(6).eval()),
        "two activations": nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.ReLU()),
        "activation first": nn.Sequential(nn.ReLU(), nn.Linear(4, 6)),
        "dropout training": nn.Sequential(nn.Linear(4, 6), nn.Dropout(0.5).train()),
        "width mismatch": nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(5, 3)),
        "empty": nn.Sequential(),
        "flatten then conv": nn.Sequential(nn.Flatten(), nn.Conv1d(1, 1, 1)),
        "not a module": [nn.Linear(4, 6)],
        "embedding": nn.Sequential(nn.Embedding(4, 6)),
    }
    for name, module in cases.items():
        tally.add(name)
        expect("unsupported_layer", lambda m=module: Generator.from_torch(m))
    tally.check()


@pytest.fixture()
def saved(tmp_path) -> tuple[Path, bytes, Generator]:
    G = geninv.random_generator([3, 7, 9], output="plu", seed=1, bias=True, dtype=torch.float64)
    p = tmp_path / "g.safetensors"
    G.save(p)
    return p, p.read_bytes(), G


def _same(G: Generator, H: Generator) -> bool:
    return G.dims == H.dims and all(
        torch.equal(a.W, b.W) and torch.equal(a.b, b.b) and a.activation == b.activation for a, b in zip(G.layers, H.layers))


def test_corrupt_generator_file(saved, tmp_path):
    p, data, G = saved
    tally = Tally("file_corrupt")
    header_end = 8 + struct.unpack("<Q", data[:8])[0]

    @settings(max_examples=2 * CASES["file_corrupt"], **FIXED)
    @given(pos=st.one_of(st.integers(0, len(data) - 1), st.integers(0, min(header_end, len(data)) - 1)),
           delta=st.integers(1, 255), append=st.sampled_from([b"", b"", b"", b"\x00", b"junk" * 10]))
    def run(pos, delta, append):
        bad = bytearray(data)
        bad[pos] = (bad[pos] + delta) % 256
        bad += append
        q = tmp_path / "c.safetensors"
        q.write_bytes(bytes(bad))
        tally.add(pos, delta, append)
        try:
            H = geninv.load_generator(q)
        except ModelFileError as e:
            assert "\n" not in str(e) and "received" in str(e) and "c.safetensors" in str(e)
            return
        except Exception as e:  # noqa: BLE001
            pytest.fail(f"byte {pos} +{delta}: {type(e).__name__} instead of ModelFileError: {e}")
        # Only a change that keeps the content (JSON whitespace in the header padding) may load,
        # and then it must be the very same generator: never a silently different one.
        assert not append and pos < header_end and _same(G, H), f"byte {pos} +{delta} loaded a different generator"

    run()
    tally.check()


def test_truncated_generator_file(saved, tmp_path):
    p, data, _ = saved
    tally = Tally("file_truncated")

    @settings(max_examples=2 * CASES["file_truncated"], **FIXED)
    @given(cut=st.integers(0, len(data) - 1))
    def run(cut):
        q = tmp_path / "t.safetensors"
        q.write_bytes(data[:cut])
        tally.add(cut)
        expect("file_truncated", lambda: geninv.load_generator(q), "path")

    run()
    tally.check()


def _wrong_format_files(tmp_path: Path, data: bytes) -> dict[str, Path]:
    from safetensors.torch import save_file

    out: dict[str, Path] = {}

    def put(name: str, content: bytes) -> None:
        out[name] = tmp_path / f"{name.replace(' ', '_')}.bin"
        out[name].write_bytes(content)

    put("empty", b"")
    put("text", b"this is not a generator\n")
    put("json", json.dumps({"layers": [1, 2]}).encode())
    put("png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    put("gzip", b"\x1f\x8b\x08\x00" + b"\x00" * 64)
    import io as _io

    buf = _io.BytesIO()
    np.save(buf, np.zeros((3, 3)))
    put("npy", buf.getvalue())
    buf = _io.BytesIO()
    np.savez(buf, W=np.zeros((3, 3)))
    put("npz", buf.getvalue())
    q = tmp_path / "state_dict.pt"
    torch.save(nn.Linear(3, 4).state_dict(), q)
    out["torch state_dict"] = q
    q = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(3)}, str(q))
    out["safetensors without geninv metadata"] = q
    for name, meta in [("wrong format version", {"format": "geninv.generator/99", "layers": []}),
                       ("metadata not json", "{not json"), ("metadata a list", [1, 2, 3])]:
        q = tmp_path / f"{name.replace(' ', '_')}.safetensors"
        save_file({"layers.0.W": torch.zeros(2, 2), "layers.0.b": torch.zeros(2)}, str(q),
                  metadata={"geninv": meta if isinstance(meta, str) else json.dumps(meta)})
        out[name] = q
    out["directory"] = tmp_path
    out["missing"] = tmp_path / "does_not_exist.safetensors"
    return out


def test_generator_file_of_wrong_format(saved, tmp_path):
    _, data, _ = saved
    tally = Tally("file_format")
    for name, path in _wrong_format_files(tmp_path, data).items():
        tally.add(name)
        expect("file_format", lambda path=path: geninv.load_generator(path), "path")
    for bad_path in (5, None):
        expect("file_format", lambda bad_path=bad_path: geninv.load_generator(bad_path), "path")
    tally.check()


class _Evil:
    """Unpickling this creates the file ``path``: proof that code ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def evil_files(tmp_path: Path, marker: Path) -> dict[str, Path]:
    """Generator files that would create ``marker`` if anything unpickled them."""
    out = {}
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        out[f"pickle protocol {protocol}"] = tmp_path / f"evil{protocol}.safetensors"
        out[f"pickle protocol {protocol}"].write_bytes(pickle.dumps(_Evil(str(marker)), protocol=protocol))
    out["torch.save zip"] = tmp_path / "evil_zip.pt"
    torch.save({"G": _Evil(str(marker))}, out["torch.save zip"])
    out["torch.save legacy"] = tmp_path / "evil_legacy.pt"
    torch.save({"G": _Evil(str(marker))}, out["torch.save legacy"], _use_new_zipfile_serialization=False)
    out["pickle after a safetensors-like length"] = tmp_path / "evil_prefixed.safetensors"
    payload = pickle.dumps(_Evil(str(marker)))
    out["pickle after a safetensors-like length"].write_bytes(struct.pack("<Q", len(payload)) + payload)
    return out


def test_malicious_pickle_refused_without_executing(tmp_path):
    tally = Tally("file_pickle")
    marker = tmp_path / "pwned"
    # sanity: these files really execute code when unpickled (in a throwaway check)
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Evil(str(probe))))
    assert probe.exists()
    for name, path in evil_files(tmp_path, marker).items():
        tally.add(name)
        expect("file_pickle", lambda path=path: geninv.load_generator(path), "path")
        assert not marker.exists(), f"{name}: loading executed code"
    tally.check()


def _foundation_cases() -> list[tuple[str, object, tuple[str, ...]]]:
    G = G0
    return [
        ("sample n=-1", lambda: G.sample(-1), ("n",)), ("sample n=0", lambda: G.sample(0), ("n",)),
        ("sample n=2.5", lambda: G.sample(2.5), ("n",)), ("sample n='3'", lambda: G.sample("3"), ("n",)),
        ("sample seed='a'", lambda: G.sample(2, seed="a"), ("seed",)),
        ("sample seed=1.5", lambda: G.sample(2, seed=1.5), ("seed",)),
        ("random_generator dims='abc'", lambda: geninv.random_generator("abc"), ("dims",)),
        ("random_generator dims=[5]", lambda: geninv.random_generator([5]), ("dims",)),
        ("random_generator dims=[0,3]", lambda: geninv.random_generator([0, 3]), ("dims",)),
        ("random_generator dims=[True,3]", lambda: geninv.random_generator([True, 3]), ("dims",)),
        ("random_generator dims=[2.5,3]", lambda: geninv.random_generator([2.5, 3]), ("dims",)),
        ("random_generator dims=5", lambda: geninv.random_generator(5), ("dims",)),
        ("random_generator output='softmax'", lambda: geninv.random_generator([2, 3], output="softmax"), ("activation",)),
        ("random_generator output=3", lambda: geninv.random_generator([2, 3], output=3), ("activation",)),
        ("random_generator seed='x'", lambda: geninv.random_generator([2, 3], seed="x"), ("seed",)),
        ("random_generator dtype=int64", lambda: geninv.random_generator([2, 3], dtype=torch.int64), ("dtype",)),
        ("random_generator device='nodev'", lambda: geninv.random_generator([2, 3], device="nodev"), ("device",)),
        ("G.to dtype=int64", lambda: G.to(dtype=torch.int64), ("dtype",)),
        ("G.to device='nodev'", lambda: G.to(device="nodev"), ("device",)),
        ("Generator([])", lambda: Generator([]), ("layers",)), ("Generator(5)", lambda: Generator(5), ("layers",)),
        ("Generator([1])", lambda: Generator([1]), ("layers",)),
        ("Layer W list", lambda: Layer([[1.0, 2.0]], torch.zeros(1), Activation("relu")), ("W",)),
        ("Layer W int", lambda: Layer(torch.zeros(3, 2, dtype=torch.int64), torch.zeros(3), Activation("relu")), ("W",)),
        ("Layer W 3-D", lambda: Layer(torch.zeros(3, 2, 1), torch.zeros(3), Activation("relu")), ("W",)),
        ("Layer W empty", lambda: Layer(torch.zeros(0, 2), torch.zeros(0), Activation("relu")), ("W",)),
        ("Layer b wrong size", lambda: Layer(torch.zeros(3, 2), torch.zeros(4), Activation("relu")), ("b",)),
        ("Layer b other dtype", lambda: Layer(torch.zeros(3, 2), torch.zeros(3, dtype=torch.float64), Activation("relu")), ("b",)),
        ("Layer activation str", lambda: Layer(torch.zeros(3, 2), torch.zeros(3), "relu"), ("activation",)),
        ("Activation name", lambda: Activation("softmax"), ("activation",)),
        ("Activation params None", lambda: Activation("plu", None), ("params",)),
        ("Activation param str", lambda: Activation("plu", {"alpha": "x"}), ("alpha",)),
        ("Activation param nan", lambda: Activation("leaky_relu", {"slope": math.nan}), ("slope",)),
        ("Activation param unknown", lambda: Activation("tanh", {"beta": 1.0}), ("beta",)),
        ("Activation.inverse list", lambda: Activation("tanh").inverse([0.1]), ("y",)),
        ("relu inverse", lambda: Activation("relu").inverse(torch.ones(2)), ("y",)),
        ("random_mask fraction 1", lambda: geninv.random_mask(10, 1.0), ("fraction",)),
        ("random_mask fraction 'a'", lambda: geninv.random_mask(10, "a"), ("fraction",)),
        ("random_mask batch 0", lambda: geninv.random_mask(10, 0.5, batch=0), ("batch",)),
        ("random_mask n=0", lambda: geninv.random_mask(0, 0.5), ("n",)),
        ("block_mask rows 28", lambda: geninv.block_mask((28, 28), rows=28), ("rows",)),
        ("add_noise snr nan", lambda: geninv.add_noise(torch.ones(2, 3), math.nan), ("snr_db",)),
        ("add_noise snr 'x'", lambda: geninv.add_noise(torch.ones(2, 3), "x"), ("snr_db",)),
        ("snr shapes", lambda: geninv.snr(torch.ones(2, 3), torch.ones(2, 4)), ("x_hat",)),
        ("snr list", lambda: geninv.snr([1.0], [1.0]), ("x",)),
        ("snr nan", lambda: geninv.snr(torch.ones(1, 2), torch.tensor([[math.nan, 1.0]])), ("x_hat",)),
        ("relative_error shapes", lambda: geninv.relative_error(torch.ones(2, 3), torch.ones(2, 4)), ("x_hat",)),
        ("relative_error 3-D", lambda: geninv.relative_error(torch.ones(2, 3, 1), torch.ones(2, 3, 1)), ("x",)),
        ("Identity n=0", lambda: Identity(0), ("n",)),
        ("GaussianMatrix m=-1", lambda: GaussianMatrix(-1, 3), ("m",)),
        ("save to missing dir", lambda: G.save("/nonexistent_dir_geninv/g.safetensors"), ("path",)),
        ("load dtype int", lambda: geninv.load_generator("x.safetensors", dtype=torch.int64), ("dtype",)),
        ("G.to unavailable device", lambda: G.to(device=_UNAVAILABLE), ("device",)),
        ("random_generator unavailable device", lambda: geninv.random_generator([2, 3], device=_UNAVAILABLE), ("device",)),
        ("load_generator unavailable device", lambda: geninv.load_generator("x.safetensors", device=_UNAVAILABLE), ("device",)),
        ("Activation.inverse bool", lambda: Activation("plu").inverse(torch.zeros(3, dtype=torch.bool)), ("y",)),
        ("Activation.inverse complex", lambda: Activation("identity").inverse(torch.zeros(3, dtype=torch.complex64)), ("y",)),
    ]


def _unavailable_device() -> str:
    for name in ("cuda", "mps", "xpu"):
        try:
            torch.empty(0, device=name)
        except (AssertionError, RuntimeError):
            return name
    return "cuda:99"  # a GPU index no machine here has


_UNAVAILABLE = _unavailable_device()


def test_foundation_arguments():
    tally = Tally("foundation_args")
    for name, fn, names in _foundation_cases():
        tally.add(name)
        expect("foundation_args", fn, *names, cls=(InputError, ShapeError, ModelFileError))
    tally.check()


# -- options of the solvers ----------------------------------------------------------------------

OPTION_CASES: list[tuple[str, dict, str]] = [
    # (case, keyword arguments, name the message must contain)
    ("lam negative", {"lam": -1.0}, "lam"), ("lam nan", {"lam": math.nan}, "lam"), ("lam str", {"lam": "big"}, "lam"),
    ("max_iter 0", {"max_iter": 0}, "max_iter"), ("max_iter float", {"max_iter": 10.5}, "max_iter"),
    ("max_iter negative", {"max_iter": -3}, "max_iter"), ("tol negative", {"tol": -1e-3}, "tol"),
    ("tol inf", {"tol": math.inf}, "tol"), ("seed str", {"seed": "x"}, "seed"),
    ("callback not callable", {"callback": 3}, "callback"),
]


@needs_solvers
def test_bad_options():
    """Every bad option of every method is tried (all failures are listed together)."""
    tally = Tally("options")
    failures: list[str] = []

    def check(label: str, fn, name: str) -> None:
        try:
            expect("options", fn, name)
        except (AssertionError, pytest.fail.Exception) as e:
            failures.append(f"{label}: {str(e).splitlines()[0]}")

    _, y, sup = signal(G0, 2, seed=7)
    for method in METHODS:
        for case, kw, name in OPTION_CASES:
            tally.add(method, case)
            check(f"{method} {case}", lambda m=method, kw=kw: call(m, G0, y, supports=sup, **kw), name)
    for bad in ("latent-pursuit", "", "ORACLE ", "newton", 3, None):
        tally.add("method", bad)
        check(f"method={bad!r}", lambda bad=bad: INVERT(G0, y, method=bad), "method")
    for method in METHODS:
        tally.add(method, "unknown option")
        check(f"{method} unknown option", lambda m=method: call(m, G0, y, supports=sup, no_such_option=1), "no_such_option")
    tally.add("oracle", "no supports")
    check("oracle without supports", lambda: INVERT(G0, y, method="oracle"), "supports")
    tally.add("G", "not a generator")
    check("G a torch module", lambda: INVERT(nn.Linear(3, 20), y, method="gd"), "G")
    tally.check()
    assert not failures, f"{len(failures)} bad options not refused cleanly:\n" + "\n".join(failures)


@needs_solvers
def test_oracle_supports_of_wrong_form():
    tally = Tally("supports")
    G3 = small_generator("tanh", dims=(3, 12, 30, 40))
    z, y, sup = signal(G3, 2, seed=8)
    cases = {
        "none": None, "empty list": [], "one layer short": sup[:1], "one too many": [*sup, sup[0]],
        "a tensor, not a list": sup[0], "numpy arrays": [s.numpy() for s in sup],
        "0/2 integers": [s.long() * 2 for s in sup], "wrong width": [sup[0][:, :-1], sup[1]],
        "wrong batch": [torch.cat([sup[0], sup[0]]), sup[1]], "3-D": [sup[0][None], sup[1]],
    }
    for name, bad in cases.items():
        tally.add(name)
        expect("supports", lambda bad=bad: INVERT(G3, y, method="oracle", supports=bad), "supports")
    tally.check()


def test_certificate_arguments():
    """The certificates' public functions (``geninv.certify`` & co.): all failures listed together."""
    from geninv.certificates import certify, certify_architecture, mutual_coherence, s_rank, spark

    tally = Tally("certificates")
    G = small_generator()
    z, _, _ = signal(G, 2, seed=9)
    W = G.weights[0]
    cases = [
        ("certify G a torch module", lambda: certify(nn.Linear(3, 20), z), "G"),
        ("certify z of the wrong width", lambda: certify(G, torch.zeros(2, 4)), "z"),
        ("certify z NaN", lambda: certify(G, torch.full((2, 3), math.nan)), "z"),
        ("certify noise str", lambda: certify(G, z, noise="a"), "noise"),
        ("certify noise NaN", lambda: certify(G, z, noise=math.nan), "noise"),
        ("certify noise negative", lambda: certify(G, z, noise=-1.0), "noise"),
        ("certify max_work negative", lambda: certify(G, z, max_work=-1), "max_work"),
        ("certify support_tol NaN", lambda: certify(G, z, support_tol=math.nan), "support_tol"),
        ("certify lam negative", lambda: certify(G, z, lam=-1.0), "lam"),
        ("certify layers of the wrong width", lambda: certify(G, layers=[torch.zeros(2, 5)]), "layers"),
        ("certify_architecture trials 0", lambda: certify_architecture(G, 0), "trials"),
        ("spark NaN", lambda: spark(torch.full((3, 3), math.nan)), "A"),
        ("spark 1-D", lambda: spark(torch.zeros(3)), "A"),
        ("spark rtol NaN", lambda: spark(W, rtol=math.nan), "rtol"),
        ("s_rank s too large", lambda: s_rank(W, 100), "s"),
        ("mutual_coherence complex", lambda: mutual_coherence(torch.zeros(3, 3, dtype=torch.complex64)), "A"),
    ]
    failures = []
    for name, fn, arg in cases:
        tally.add(name)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", UserWarning)  # torch's "discarding the imaginary part" too
                expect("certificates", fn, arg)
        except (AssertionError, pytest.fail.Exception) as e:
            failures.append(f"{name}: {str(e).splitlines()[0]}")
    tally.check()
    assert not failures, f"{len(failures)} certificate arguments not refused cleanly:\n" + "\n".join(failures)


def test_certificate_of_an_empty_support_says_not_unique():
    """A hidden layer that is all zero: the certificate must say the latent is not unique."""
    from geninv.certificates import certify

    D = dead_generator()
    z, _ = D.sample(2, seed=10)
    for c in certify(D, z):
        assert c.unique is False and c.cardinalities[0] == 0


# -- the table ------------------------------------------------------------------------------------

def read_table(path: Path = TABLE) -> dict[str, tuple[int, str]]:
    """``docs/bad_inputs.md`` rows: kind -> (cases, error text)."""
    rows: dict[str, tuple[int, str]] = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^\|\s*`([a-z_]+)`\s*\|((?:[^|\\]|\\.)*)\|\s*([0-9,]+)\s*\|((?:[^|\\]|\\.)*)\|", line)
        if m:
            rows[m.group(1)] = (int(m.group(3).replace(",", "")), m.group(4))
    return rows


def test_bad_inputs_table_matches_the_suite():
    rows = {k: v for k, v in read_table().items() if not k.startswith("cli_")}
    assert set(rows) == set(CASES), f"kinds in the table but not the suite: {set(rows) - set(CASES)}; " \
                                    f"in the suite but not the table: {set(CASES) - set(rows)}"
    for kind, (cases, error) in rows.items():
        assert cases == CASES[kind], f"{kind}: table says {cases} cases, the suite tries {CASES[kind]}"
        for cls in ERRORS[kind]:
            assert cls.__name__ in error, f"{kind}: table's error column must name {cls.__name__}"


# -- 2. numerical safety --------------------------------------------------------------------------

def assert_finite_result(res, method: str) -> None:
    assert res.method == method or method in res.method
    assert torch.isfinite(res.z).all(), f"{method}: NaN/Inf in z"
    for i, x in enumerate(res.layers):
        assert torch.isfinite(x).all(), f"{method}: NaN/Inf in layers[{i}]"
    B = res.z.shape[0]
    assert res.converged.shape == (B,) and res.converged.dtype == torch.bool
    assert res.n_iter.shape == (B,)


def _overflow_batch(scale: float = 1e160):
    """Three signals of an identity-output generator; sample 0 is scaled by 1e160, finite but so
    large that its objective 1/2 ||y - G(z)||^2 overflows float64 (> 1.8e308) at any z near the
    start. Sample 0' is a benign replacement for the reference run."""
    G = geninv.random_generator([4, 40, 120], output="identity", seed=11, dtype=torch.float64)
    z, y = G.sample(4, seed=12)
    bad = y[:3].clone()
    bad[0] = bad[0] * scale
    good = y[:3].clone()
    good[0] = y[3]
    return G, z, bad, good


# float64: the other samples' iterations see different batch shapes once sample 0 stops early
# (rows are dropped from the working batch), so BLAS may round differently by an ulp; the
# solvers converge, which contracts such differences, so 1e-8 relative is generous.
OTHERS_RTOL = 1e-8


@needs_solvers
@pytest.mark.parametrize("method", METHODS)
def test_overflowing_sample_is_stopped_without_poisoning_the_batch(method):
    """One sample whose objective overflows: the batch still returns, every output is finite, the
    sample is flagged (converged=False, with a ConvergenceWarning) unless the method solved it
    outright, and the other samples are the same as in a batch without it."""
    G, z, bad, good = _overflow_batch()
    sup = G.trace(torch.cat([z[:3]])).supports
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = call(method, G, bad, supports=sup)
    assert_finite_result(res, method)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref = call(method, G, good, supports=G.trace(torch.cat([z[3:4], z[1:3]])).supports)
    rel = (res.z[1:] - ref.z[1:]).norm(dim=1) / ref.z[1:].norm(dim=1)
    assert (rel <= OTHERS_RTOL).all(), f"{method}: the overflowing sample changed the others (rel. diff {rel.tolist()})"
    assert torch.equal(res.converged[1:], ref.converged[1:])
    scale = bad[0].abs().max()  # compare in units of the signal: its squares overflow float64
    fit = float(geninv.relative_error(bad[:1] / scale, G.forward_unchecked(res.z[:1]) / scale))
    solved = bool(res.converged[0]) and fit < 1e-6  # e.g. the oracle: G is positively homogeneous here
    assert bool(res.fits[0]) == (fit < 1e-6), f"{method}: fits={bool(res.fits[0])} for a relative image error {fit:.3g}"
    if not solved:
        assert not bool(res.converged[0]), f"{method}: an unsolved overflowing sample must say converged=False"
    if fit >= 1e-6:  # a sample that does not fit is reported (one that fits needs no warning)
        assert any(issubclass(w.category, ConvergenceWarning) for w in caught), f"{method}: no ConvergenceWarning"


@needs_solvers
@pytest.mark.parametrize("method", ["gd", "adam"])
def test_absurd_step_never_claims_convergence_without_progress(method):
    """lr = 1e30: every trial step overflows at first. The method must stay finite, and a sample
    it calls converged must have made progress (its objective below the start); gd, which
    backtracks, must also never increase its objective and reach the solution anyway."""
    G = geninv.random_generator([4, 40, 120], output="tanh", seed=13, dtype=torch.float64)
    z, y = G.sample(3, seed=14)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        # max_iter: gd needs ~100 halvings of the step then ~300 iterations; a false claim shows at 25
        res = INVERT(G, y, method=method, lr=1e30, seed=0, max_iter=1000 if method == "gd" else 200)
    assert_finite_result(res, method)
    f = res.history["objective"]
    assert torch.isfinite(f).all()
    stuck = res.converged & ~(f[-1] < f[0])
    assert not bool(stuck.any()), (
        f"{method}: samples {stuck.nonzero().flatten().tolist()} report converged=True after {res.n_iter.tolist()} "
        f"iterations with the objective unchanged from the start ({f[0].tolist()} -> {f[-1].tolist()})")
    if method == "gd":
        assert (f[1:] <= f[:-1]).all(), "gd's objective increased"
        assert (f[-1] < 1e-6 * f[0]).all(), f"gd did not recover from the huge step: {f[-1].tolist()}"


@needs_solvers
@pytest.mark.parametrize("method", METHODS)
def test_defaults_do_not_diverge(method):
    """At default step sizes every method returns finite results on a well-posed problem, and
    its objective history (where recorded) does not end above where it started."""
    G = geninv.random_generator([4, 40, 100], output="tanh", seed=3, dtype=torch.float64)
    z, y = G.sample(3, seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        # default step sizes; max_iter capped (the step-size schedule does not depend on it)
        res = call(method, G, y, supports=G.trace(z).supports, **usable(method, max_iter=200))
    assert_finite_result(res, method)
    for name, h in res.history.items():
        assert h.ndim == 2 and h.shape[1] == 3, f"{method}: history[{name!r}] must be (T, B)"
        fin = h[torch.isfinite(h).all(dim=1)]
        assert len(fin) == len(h), f"{method}: NaN/Inf in history[{name!r}]"
        if name in ("objective", "residual") and len(h) > 1:
            assert (h[-1] <= h[0] * (1 + 1e-9) + 1e-12).all(), f"{method}: {name} grew at default steps"


# -- 3. determinism --------------------------------------------------------------------------------

def _fingerprint(res) -> str:
    h = hashlib.sha256()
    for t in [res.z, *res.layers, *res.supports, res.converged, res.n_iter, *[res.history[k] for k in sorted(res.history)]]:
        t = t.detach().cpu().contiguous()
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.dtype != torch.bool else t.numpy().tobytes())
    return h.hexdigest()


DETERMINISM_SCRIPT = r"""
import json, sys, warnings, torch
torch.set_num_threads(int(sys.argv[1]))
import geninv
from geninv.solvers import accepted_options
G = geninv.random_generator([3, 16, 40], output="tanh", seed=21, bias=True, dtype=torch.float64)
z, y = G.sample(2, seed=22)
y = y + 1e-3 * torch.randn(y.shape, generator=torch.Generator().manual_seed(23), dtype=torch.float64)
y = y.clamp(-0.999, 0.999)
sup = G.trace(z).supports
out = {}
for method in sys.argv[2].split(","):
    kw = {"supports": sup} if method == "oracle" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kw.update({k: v for k, v in {"seed": 5, "max_iter": 20, "restarts": 2}.items() if k in accepted_options(method)})
        res = geninv.invert(G, y, method=method, **kw)
    out[method] = FINGERPRINT(res)
print(json.dumps(out))
"""


def _determinism_run(threads: int) -> dict[str, str]:
    import inspect

    src = inspect.getsource(_fingerprint).replace("_fingerprint", "FINGERPRINT")
    script = "import hashlib\n" + src + DETERMINISM_SCRIPT
    proc = subprocess.run([sys.executable, "-c", script, str(threads), ",".join(METHODS)], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@needs_solvers
def test_same_seed_bit_identical_in_process_and_in_a_fresh_process():
    """Same seed -> bit-identical z, layers, supports, flags, counts and history: twice in this
    process and once in a fresh interpreter (same thread count)."""
    G = geninv.random_generator([3, 16, 40], output="tanh", seed=21, bias=True, dtype=torch.float64)
    z, y = G.sample(2, seed=22)
    y = y + 1e-3 * torch.randn(y.shape, generator=torch.Generator().manual_seed(23), dtype=torch.float64)
    y = y.clamp(-0.999, 0.999)
    sup = G.trace(z).supports
    here: dict[str, str] = {}
    for method in METHODS:
        kw = {"supports": sup} if method == "oracle" else {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            kw.update(usable(method, seed=5, max_iter=20, restarts=2))  # bits, not convergence, are tested: keep it short
            a = INVERT(G, y, method=method, **kw)
            b = INVERT(G, y, method=method, **kw)
        here[method] = _fingerprint(a)
        assert here[method] == _fingerprint(b), f"{method}: two runs with the same seed differ"
    fresh = _determinism_run(torch.get_num_threads())
    for method in METHODS:
        assert fresh[method] == here[method], f"{method}: a fresh process gives different bits"


# -- 4. random generators: no NaN, ever -------------------------------------------------------------

def _stress_module():
    """``scripts/stress_generators.py`` as a module (its directory goes on sys.path, which spawned
    worker processes inherit, so they can unpickle its functions)."""
    import importlib

    scripts = str(ROOT / "scripts")
    if scripts not in sys.path:
        sys.path.insert(0, scripts)
    return importlib.import_module("stress_generators")


@needs_solvers
def test_random_generators_never_nan_small():
    """20 random generators (widths 5-40, iterations capped at 50, 2 Adam restarts) x every method:
    every output finite, or a clear InputError/DomainError where the method cannot apply."""
    stress = _stress_module()
    summary = stress.stress(list(range(20)), max_width=40, options={"max_iter": 50, "restarts": 2})
    assert not summary["failures"], "\n".join(summary["failures"])
    for method, counts in summary["counts"].items():
        assert counts.get("ok", 0) > 0, f"{method} never produced a result: {counts}"


@pytest.mark.slow
@needs_solvers
def test_random_generators_never_nan_1000():
    """The full stress run: 1,000 random generators (depth 1-3, widths 5-300, with and
    without bias, outputs tanh/sigmoid/leaky_relu/plu/identity/relu, float32 and float64) inverted
    by every method at its defaults, on 2 worker processes. Also runnable as
    ``python scripts/stress_generators.py`` (prints the outcome counts; ``--only i`` replays one).
    Measured: 3,681 s on 2 workers of a busy 2-core machine, every method finite on all 1,000."""
    stress = _stress_module()
    summary = stress.stress(list(range(1000)), max_width=300, workers=2, progress=True)
    print(json.dumps({k: summary[k] for k in ("counts", "seconds")}, indent=1))
    assert not summary["failures"], "\n".join(summary["failures"][:50])
    for method, counts in summary["counts"].items():
        assert counts.get("ok", 0) > 0, f"{method} never produced a result: {counts}"

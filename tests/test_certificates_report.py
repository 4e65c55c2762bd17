"""Certificates, part 2: per-signal certify, certify_architecture, Theorem 2 bound, `geninv certify`.

- hand-made non-unique generators are reported non-unique (with a verified witness) or with
  the failing condition; random expansive ones are certified unique;
- on random [20, n_1, 600] generators the certified fraction rises with n_1 exactly as
  Corollary 1 predicts (n_0 <= s_1), and certified signals are recovered by Latent-Pursuit;
- the Theorem 2 bound is never exceeded by Layered Basis-Pursuit's measured error (a reference
  Lagrangian layered BP solved by coordinate descent to KKT precision, and geninv's own
  ``layered_bp`` once it exists).
"""

import json
import math

import numpy as np
import pytest
import torch

import geninv
from geninv import Activation, Generator, Layer, random_generator
from geninv.certificates import certify, certify_architecture, lasso_constants, mutual_coherence, theorem2_bound
from geninv.cli import main
from geninv.exceptions import InputError

F64 = torch.float64


def _gen(Ws, bs=None, output="identity"):
    Ws = [torch.as_tensor(W, dtype=F64) for W in Ws]
    bs = [torch.zeros(W.shape[0], dtype=F64) for W in Ws] if bs is None else [torch.as_tensor(b, dtype=F64) for b in bs]
    acts = [Activation("relu")] * (len(Ws) - 1) + [Activation(output)]
    return Generator([Layer(W, b, a) for W, b, a in zip(Ws, bs, acts)])


# -- reference Lagrangian Layered Basis-Pursuit ------------------------------------------------
def lasso_cd(A, v, lam, tol=1e-14, max_sweeps=100_000):
    """``argmin 1/2 ||v - A x||^2 + lam ||x||_1`` by cyclic coordinate descent (float64)."""
    n = A.shape[1]
    x = np.zeros(n)
    r = v.copy()
    cs = (A**2).sum(0)
    for _ in range(max_sweeps):
        dmax = 0.0
        for j in range(n):
            if cs[j] == 0:
                continue
            old = x[j]
            rho = A[:, j] @ r + cs[j] * old
            new = np.sign(rho) * max(abs(rho) - lam, 0.0) / cs[j]
            if new != old:
                r -= A[:, j] * (new - old)
                x[j] = new
                dmax = max(dmax, abs(new - old))
        if dmax < tol:
            break
    # KKT in float64: |A^T r| <= lam everywhere, = lam sign(x) on the support. The 1e-8 relative
    # slack covers the 1e-14 stopping rule times the conditioning of these small problems.
    g = A.T @ (v - A @ x)
    scale = max(lam, 1e-300) + 1e-10 * np.abs(A).sum() * (np.abs(v).max() + 1)
    assert np.all(np.abs(g) <= lam + 1e-8 * scale)
    on = x != 0
    assert np.allclose(g[on], lam * np.sign(x[on]), atol=1e-8 * scale)
    return x


def layered_bp_reference(G, y, lams):
    """Layered BP of docs/method.md sec. 5 (Lagrangian form), supports = nonzeros of each LASSO estimate."""
    Ws = [W.numpy() for W in G.weights]
    bs = [b.numpy() for b in G.biases]
    L = G.n_hidden
    u = G.output_activation.inverse(torch.from_numpy(y)).numpy() - bs[L]
    xs = [None] * L
    xs[L - 1] = lasso_cd(Ws[L], u, lams[L - 1])
    for i in range(L, 1, -1):
        S = np.flatnonzero(xs[i - 1] != 0)
        xs[i - 2] = lasso_cd(Ws[i - 1][S], xs[i - 1][S] - bs[i - 1][S], lams[i - 2])
    S = np.flatnonzero(xs[0] != 0)
    z = np.linalg.lstsq(Ws[0][S], xs[0][S] - bs[0][S], rcond=None)[0]
    return z, xs


# Measured errors come from a solver stopped at 1e-14 steps: allow 1e-9 relative on top of the bound.
SLACK = 1 + 1e-9


def _check_bound(G, z, bound, y_noisy, truth):
    zh, xs = layered_bp_reference(G, y_noisy, bound.lam)
    assert np.linalg.norm(zh - z) <= bound.z_error * SLACK + 1e-12
    for i, (xh, x) in enumerate(zip(xs, truth), start=1):
        assert np.all((xh != 0) <= (x > 0)), f"support of x_{i} not inside the true support"
        assert np.linalg.norm(xh - x) <= bound.layer_errors[i] * SLACK + 1e-12
        assert np.abs(xh - x).max() <= next(lb.linf for lb in bound.layers if lb.layer == i) * SLACK + 1e-12
    return np.linalg.norm(zh - z) / bound.z_error


# -- Theorem 1: uniqueness -----------------------------------------------------------------
def test_hand_made_locally_non_unique_generator_is_reported_false():
    # x_1 = relu(z_1, -z_1, -z_2): for z = (1, 1), any z' = (1, 1 + t), t > -1, gives the same x_1.
    G = _gen([[[1.0, 0.0], [-1.0, 0.0], [0.0, -1.0]], np.eye(3)])
    z = torch.tensor([1.0, 1.0], dtype=F64)
    z_alt = torch.tensor([1.0, 3.0], dtype=F64)
    assert torch.equal(G(z[None]), G(z_alt[None]))  # the example really is non-unique
    cert = certify(G, z)
    assert cert.unique is False
    assert cert.condition("Theorem 1 (iii)").verdict == "fails"
    zw = torch.tensor(cert.witness["z_alt"], dtype=F64)
    assert cert.witness["distance"] > 1e-3
    # The witness is verified independently here: different latent, same image.
    assert torch.linalg.norm(zw - z) > 1e-3
    assert torch.allclose(G(zw[None]), G(z[None]), rtol=0, atol=1e-12)
    assert "False" in str(cert) and "witness" in str(cert)


def test_hand_made_globally_non_unique_generator_fails_theorem1():
    # x_1 = relu(z, -z), y = x_1[:2] + x_1[2:] = |z|: z and -z give the same image, with different
    # supports, so no local witness exists; Theorem 1 (i) must fail (spark(W_2) = 2 <= 2 s_1).
    W1 = np.vstack([np.eye(2), -np.eye(2)])
    W2 = np.hstack([np.eye(2), np.eye(2)])
    G = _gen([W1, W2])
    z = torch.tensor([1.0, 2.0], dtype=F64)
    assert torch.equal(G(z[None]), G(torch.tensor([[-1.0, 2.0]], dtype=F64)))
    cert = certify(G, z)
    assert cert.unique is not True
    c = cert.condition("Theorem 1 (i)")
    assert c.verdict == "fails" and "spark = 2" in c.values


def test_random_expansive_generator_is_certified_unique():
    G = random_generator([20, 200, 600], seed=0)
    z, _ = G.sample(4, seed=1)
    certs = certify(G, z)
    assert isinstance(certs, list) and len(certs) == 4
    for c in certs:
        assert c.unique is True
        assert c.corollary1
        assert all(v.verdict == "holds" for v in c.conditions if v.key == "thm1")
        assert c.expansion[0] == c.cardinalities[0] / 20
    single = certify(G, z[0])
    assert not isinstance(single, list) and single.unique is True


def test_three_layer_generator_checks_the_middle_spark():
    G = random_generator([10, 60, 200, 500], output="identity", seed=2, dtype=F64)
    z, _ = G.sample(1, seed=0)
    c = certify(G, z[0])
    mid = c.condition("Theorem 1 (ii), i=2")
    assert mid.verdict == "holds"  # W_2^{S_2} (about 100 x 60) has full column rank
    assert c.unique is True
    d = c.to_dict()
    json.dumps(d, allow_nan=False)  # strict JSON: infinities are written as "inf"
    assert d["cardinalities"] == c.cardinalities and d["unique"] is True
    assert {r["theorem"] for r in d["conditions"]} >= {"Theorem 1 (i)", "Theorem 1 (iii)", "Corollary 1"}


def test_certify_from_estimated_layers_and_solve_result():
    G = random_generator([20, 200, 600], seed=0, dtype=F64)
    z, _ = G.sample(2, seed=3)
    tr = G.trace(z)
    from_layers = certify(G, layers=tr.hidden)
    from_z = certify(G, z)
    assert [c.cardinalities for c in from_layers] == [c.cardinalities for c in from_z]
    assert [c.unique for c in from_layers] == [True, True]
    res = geninv.SolveResult(method="test", z=z, layers=tr.hidden, supports=tr.supports,
                             converged=torch.ones(2, dtype=torch.bool), n_iter=torch.zeros(2, dtype=torch.int64),
                             history={}, seconds=0.0, info={})
    assert [c.unique for c in certify(G, res)] == [True, True]
    with pytest.raises(InputError):
        certify(G)
    with pytest.raises(InputError):
        certify(G, z, noise=-1.0)


def test_certified_fraction_rises_with_n1_as_corollary1_predicts():
    fractions = []
    for n1 in (25, 40, 60, 200):
        G = random_generator([20, n1, 600], seed=n1)
        rep = certify_architecture(G, trials=30, seed=1)
        t = rep.theorem1
        fractions.append(t["true"])
        # Two layers with W_2 of full column rank (n_1 <= n): Theorem 1 holds iff rank(W_1^{S_1}) = n_0,
        # which for Gaussian W_1 is exactly Corollary 1's n_0 <= s_1; every other signal has a witness.
        assert t["true"] == pytest.approx(rep.corollary1["n_0 <= s_1"])
        assert t["false"] == pytest.approx(1 - t["true"]) and t["none"] == 0
    assert fractions == sorted(fractions)
    assert fractions[0] == 0.0 and fractions[-1] == 1.0
    assert "Corollary 1" in str(rep) and json.dumps(rep.to_dict(), allow_nan=False)


def test_architecture_report_statistics():
    G = random_generator([20, 100, 300, 600], seed=4)
    rep = certify_architecture(G, trials=40, seed=0, theorem1=False)
    z, _ = G.sample(40, seed=0)
    card = [c.numpy() for c in G.trace(z).cardinalities]
    for i in range(2):
        assert rep.cardinality[i]["min"] == card[i].min() and rep.cardinality[i]["max"] == card[i].max()
        assert rep.cardinality[i]["median"] == pytest.approx(float(np.median(card[i])))
    assert rep.corollary1["all"] == pytest.approx(np.mean((card[1] < 300) & (card[0] < card[1] / 2) & (card[0] >= 20)))
    assert rep.theorem1 is None
    with pytest.raises(InputError):
        certify_architecture(G, trials=0)


def test_certified_signals_are_recovered_by_latent_pursuit():
    if not hasattr(geninv, "invert"):
        pytest.skip("geninv.invert (Latent-Pursuit) is not available")
    wrong = fit = certified = 0
    for n1 in (25, 40, 60, 200):
        G = random_generator([20, n1, 600], seed=n1, dtype=F64)
        z, y = G.sample(4, seed=2)
        certs = certify(G, z, s_forms=False, theorem2=False)
        idx = [k for k, c in enumerate(certs) if c.unique is True]
        if not idx:
            continue
        certified += len(idx)
        res = geninv.invert(G, y[idx], method="latent_pursuit")
        for j, k in enumerate(idx):
            resid = torch.linalg.norm(G(res.z[j : j + 1]) - y[k]) / torch.linalg.norm(y[k])
            zerr = torch.linalg.norm(res.z[j] - z[k]) / torch.linalg.norm(z[k])
            if resid < 1e-6:  # the solver found a latent with the same image: it must be z
                fit += 1
                wrong += int(zerr > 1e-4)
    assert certified > 0 and fit > 0
    assert wrong == 0


# -- Theorem 2: Layered Basis-Pursuit stability ----------------------------------------------
@pytest.mark.parametrize("output", ["identity", "tanh"])
def test_theorem2_bound_never_exceeded_two_layers(output):
    rng = np.random.default_rng(0)
    held = 0
    for seed in range(2, 14, 2):
        G = random_generator([3, 12, 200], output=output, seed=seed, dtype=F64, bias=True)
        z = torch.randn(3, dtype=F64, generator=torch.Generator().manual_seed(seed))
        tr = G.trace(z[None])
        y = tr.y[0].numpy()
        eps = 1e-3
        b = theorem2_bound(G, z, noise=eps)
        if b.verdict != "holds":
            continue
        held += 1
        truth = [x[0].numpy() for x in tr.hidden]
        for _ in range(3):
            e = rng.standard_normal(y.size)
            _check_bound(G, z.numpy(), b, y + eps * e / np.linalg.norm(e), truth)
    assert held >= 3  # the conditions must actually hold on these small, tall (incoherent) cases


def test_theorem2_bound_never_exceeded_three_layers():
    rng = np.random.default_rng(1)
    for seed in (5, 21, 22):  # [2, 6, 16, 300] cases whose middle-layer ERC is positive
        G = random_generator([2, 6, 16, 300], output="identity", seed=seed, dtype=F64, bias=True)
        z = torch.randn(2, dtype=F64, generator=torch.Generator().manual_seed(seed))
        tr = G.trace(z[None])
        y = tr.y[0].numpy()
        eps = 1e-3
        b = theorem2_bound(G, z, noise=eps)
        assert b.verdict == "holds", b.reason
        truth = [x[0].numpy() for x in tr.hidden]
        for _ in range(4):
            e = rng.standard_normal(y.size)
            _check_bound(G, z.numpy(), b, y + eps * e / np.linalg.norm(e), truth)


def test_theorem2_coherence_condition_case():
    # W_2 with nearly orthonormal columns: mu small, so the paper's coherence condition holds,
    # which implies ERC > 0 (Tropp); the bound must then hold and be tight-ish.
    rng = np.random.default_rng(3)
    Q, _ = np.linalg.qr(rng.standard_normal((80, 10)))
    W2 = Q + 0.01 * rng.standard_normal((80, 10))
    W1 = rng.standard_normal((10, 3))
    G = _gen([W1, W2])
    z = torch.tensor([0.7, -1.2, 0.4], dtype=F64)
    tr = G.trace(z[None])
    cert = certify(G, z, noise=1e-2)
    coh = cert.condition("Theorem 2 coherence, x_1")
    assert coh.verdict == "holds"
    mu = mutual_coherence(W2)
    s1 = cert.cardinalities[0]
    assert s1 < (1 + 1 / mu) / 2
    S = np.flatnonzero(tr.hidden[0][0].numpy() > 0)
    assert lasso_constants(W2, S).erc > 0
    b = cert.theorem2
    assert b.verdict == "holds"
    y = tr.y[0].numpy()
    for _ in range(5):
        e = rng.standard_normal(y.size)
        _check_bound(G, z.numpy(), b, y + 1e-2 * e / np.linalg.norm(e), [tr.hidden[0][0].numpy()])


def test_theorem2_noiseless_limit_and_explicit_lam():
    G = random_generator([3, 12, 200], output="identity", seed=2, dtype=F64)
    z = torch.randn(3, dtype=F64, generator=torch.Generator().manual_seed(2))
    b0 = theorem2_bound(G, z, noise=0.0)
    assert b0.verdict == "holds" and b0.z_error == 0.0  # exact recovery in the lam -> 0+ limit
    tr = G.trace(z[None])
    b = theorem2_bound(G, z, noise=0.0, lam=[1e-3])  # the LASSO bias at lam = 1e-3
    assert b.verdict == "holds" and 0 < b.z_error < 1
    _check_bound(G, z.numpy(), b, tr.y[0].numpy(), [tr.hidden[0][0].numpy()])
    # Too small a lam under noise is reported as failing the condition.
    bad = theorem2_bound(G, z, noise=1e-2, lam=[1e-9])
    assert bad.verdict == "fails" and "lam" in bad.reason


def test_theorem2_against_geninv_layered_bp():
    if not hasattr(geninv, "layered_bp"):
        pytest.skip("geninv.layered_bp is not available")
    # geninv.layered_bp solves the *nonnegative* Lagrangian pursuit with one lam for every layer
    # and a relative support threshold 1e-4. The bound covers it where every layer's support is
    # guaranteed exact (then the unconstrained minimizer is positive on the support, so it is
    # also the nonnegative one); lam = the largest per-layer lam the bound asks for.
    rng = np.random.default_rng(0)
    checked = 0
    for dims, seeds in (([3, 12, 200], range(2, 14, 2)), ([2, 6, 16, 300], (5, 21, 22))):
        for seed in seeds:
            G = random_generator(dims, output="identity", seed=seed, dtype=F64, bias=True)
            z = torch.randn(dims[0], dtype=F64, generator=torch.Generator().manual_seed(seed))
            tr = G.trace(z[None])
            eps = 1e-3
            b0 = theorem2_bound(G, z, noise=eps, support_tol=1e-4)
            if b0.verdict != "holds":
                continue
            lam = max(b0.lam)
            b = theorem2_bound(G, z, noise=eps, lam=[lam] * G.n_hidden, support_tol=1e-4)
            if b.verdict != "holds" or not all(lb.exact_support for lb in b.layers if lb.layer > 0):
                continue
            for _ in range(2):
                e = torch.from_numpy(rng.standard_normal(dims[-1]))
                y = tr.y + eps * e / torch.linalg.norm(e)
                res = geninv.layered_bp(G, y, lam=lam, debias=False, tol=1e-13, max_iter=50_000, support_tol=1e-4)
                # An iterative solver stopped at a 1e-13 relative change: 1e-6 relative slack.
                assert torch.linalg.norm(res.z[0] - z) <= b.z_error * (1 + 1e-6) + 1e-10
                for i, (xh, x) in enumerate(zip(res.layers, tr.hidden), start=1):
                    assert torch.linalg.norm(xh[0] - x[0]) <= b.layer_errors[i] * (1 + 1e-6) + 1e-10
            checked += 1
    assert checked >= 3


# -- CLI -------------------------------------------------------------------------------------
def test_cli_certify_random_and_json(tmp_path, capsys):
    out = tmp_path / "cert.json"
    rc = main(["certify", "--random", "20,60,600", "--n", "3", "--json", str(out), "--architecture", "10"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "unique:" in text and "Theorem 1 (i)" in text and "Corollary 1" in text and "architecture" in text
    d = json.loads(out.read_text())
    assert len(d["certificates"]) == 3 and d["architecture"]["trials"] == 10


def test_cli_certify_model_file_and_latents(tmp_path, capsys):
    G = random_generator([20, 200, 600], seed=0)
    path = tmp_path / "g.safetensors"
    G.save(str(path))
    zf = tmp_path / "z.npy"
    np.save(zf, np.random.default_rng(0).standard_normal((2, 20)))
    assert main(["certify", str(path), "--z", str(zf), "--no-s-forms"]) == 0
    assert "unique: True" in capsys.readouterr().out
    assert main(["certify", "--random", "20,x,600"]) == 2
    assert main(["certify", str(tmp_path / "missing.safetensors")]) == 2
    bad = tmp_path / "z.txt"
    bad.write_text("1 2 3")
    assert main(["certify", str(path), "--z", str(bad)]) == 2


def test_report_prints_a_table():
    G = random_generator([20, 40, 600], seed=0)
    c = certify(G, G.sample(1, seed=0)[0][0], noise=1e-3)
    s = str(c)
    for head in ("layer", "s/s_prev", "Thm1 signal", "Cor1", "Thm2 coherence", "Thm2 err <="):
        assert head in s
    assert s.count("\n") > 8
    assert math.isfinite(c.expansion[-1])


def test_relu_output_uses_the_rows_of_the_image_support():
    G = random_generator([10, 60, 200], output="relu", seed=0, dtype=F64)
    z, y = G.sample(2, seed=0)
    for k, c in enumerate(certify(G, z)):
        assert c.output_rows == int((y[k] > 0).sum()) < 200
        assert c.unique is True
        assert c.theorem2 is not None and c.theorem2.verdict == "undecided"  # noise moves the support of y


def test_float32_generator_and_input_errors():
    G = random_generator([20, 200, 600], seed=0)  # float32 weights: certified in float64
    c = certify(G, torch.randn(20))
    assert c.unique is True
    with pytest.raises(InputError):
        certify(random_generator([5, 8], seed=0), torch.randn(5))  # no hidden layer
    with pytest.raises(InputError):
        certify(G, layers=[torch.rand(200), torch.rand(3)])


@pytest.mark.parametrize("dims,seed,eps", [([1, 4, 12, 300], 17, 0.1), ([1, 4, 12, 300], 33, 0.1),
                                           ([2, 6, 16, 300], 31, 3e-3)])
def test_theorem2_bound_with_uncertain_middle_support(dims, seed, eps):
    # Larger noise: some small entries of x_2 may drop out of the estimated support, so the
    # middle-layer constants are taken in the worst case over every possible row set (enumerated).
    G = random_generator(dims, output="identity", seed=seed, dtype=F64, bias=True)
    z = torch.randn(dims[0], dtype=F64, generator=torch.Generator().manual_seed(seed))
    tr = G.trace(z[None])
    b = theorem2_bound(G, z, noise=eps, max_enum=4)
    assert b.verdict == "holds"
    assert b.layers[1].rows.startswith("enumerated")
    rng = np.random.default_rng(seed)
    y = tr.y[0].numpy()
    truth = [x[0].numpy() for x in tr.hidden]
    for _ in range(8):
        e = rng.standard_normal(y.size)
        _check_bound(G, z.numpy(), b, y + eps * e / np.linalg.norm(e), truth)

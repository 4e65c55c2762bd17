"""Per-signal uniqueness certificates (Theorem 1, Corollary 1, Theorem 2).

:func:`certify` answers "is *this* signal's inverse unique, and how stable is it?"
(:func:`geninv.certificates.architecture.certify_architecture` answers "how invertible is this
network in practice?").

Meaning of ``unique`` (docs/method.md sec. 3): Theorem 1 shows that ``z`` is the only latent whose hidden
layers are at most as dense as this signal's (``||x_i'||_0 <= s_i``) and that produces the same
image. So

- ``True``: every condition of Theorem 1 holds for this signal's supports (the per-signal form
  ``spark(W_{L+1}) > 2 s_L``, ``spark(W_i^{S_i}) > 2 s_{i-1}``, ``rank(W_1^{S_1}) = n_0``; a
  condition also holds when its s-spark / s-rank form holds, which is stronger);
- ``False``: a second latent ``z' != z`` with the *same* supports and the same image (the same
  measurements, for a ``mask`` or ``measure``) was constructed and verified by a forward pass
  (the local linear map ``W_{L+1} D_L W_L ... D_1 W_1``, on the measured rows, has a null
  direction ``d`` and ``z' = z + t d`` keeps every ReLU pattern), so the inverse is not unique
  even within Theorem 1's class;
- ``None``: neither (a sufficient condition fails or is undecided, but no witness was found).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from geninv.certificates.bounds import coherence_condition, theorem2_bound_one
from geninv.certificates.certificate import HOLDS, Certificate, Condition, verdict_of
from geninv.certificates.coherence import mutual_coherence, single_thread_blas
from geninv.certificates.spark import Bound, matrix_rank, spark_of_array
from geninv.certificates.subsets import s_coherence, s_rank, s_spark
from geninv.exceptions import InputError, ShapeError, describe
from geninv.model.generator import Generator

__all__ = ["certify", "check_generator"]


class _Ctx:
    """Per-generator float64 weights and caches shared by the samples of one call."""

    def __init__(self, G: Generator, *, max_work: int, lp_tries: int, samples: int, seed: int) -> None:
        self.Ws = [W.detach().cpu().to(torch.float64).numpy() for W in G.weights]
        self.bs = [b.detach().cpu().to(torch.float64).numpy() for b in G.biases]
        self.act = G.output_activation
        self.dims = G.dims
        self.L = G.n_hidden
        self.max_work, self.lp_tries, self.samples, self.seed = max_work, lp_tries, samples, seed
        # The rows that carry the output equations: those of W_{L+1}, or of A W_{L+1} for an
        # identity output measured by a general operator A (set by :meth:`measure_with`).
        self.Wout = self.Ws[self.L]
        self.A: np.ndarray | None = None
        self._spark: dict[tuple[int, bytes], Bound] = {}
        self._s: dict[tuple[Any, ...], Bound] = {}
        self._mu: dict[bytes, float] = {}

    def measure_with(self, A: np.ndarray) -> None:
        """Measure the image by the matrix ``A`` (m, n)."""
        self.A = A
        if self.act.name == "identity":
            self.Wout = A @ self.Ws[self.L]

    def matrix(self, i: int) -> np.ndarray:
        """``W_{i+1}`` for a hidden layer's input, the output equations' matrix for ``i == L``."""
        return self.Wout if i == self.L else self.Ws[i]

    def spark_rows(self, i: int, rows: np.ndarray, gt: int, cache: bool) -> Bound:
        """A spark interval of ``W_{i+1}[rows]`` that decides ``spark > gt`` when affordable.

        With ``cache``, an interval computed for an earlier ``gt`` is reused whenever it already
        decides this one (the output layer is shared by every sample of a batch).
        """
        key = (i, rows.tobytes())
        old = self._spark.get(key) if cache else None
        if old is not None and (old.exact or old.exceeds(gt) is not None):
            return old
        b = spark_of_array(self.matrix(i)[rows], max_work=self.max_work, lp_tries=self.lp_tries, seed=self.seed, gt=gt)
        if cache and (old is None or b.upper - b.lower <= old.upper - old.lower):
            self._spark[key] = b
        return b

    def s_quantity(self, kind: str, i: int, s: int) -> Bound:
        key = (kind, i, s)
        if key not in self._s:
            f = {"rank": s_rank, "spark": s_spark, "mu": s_coherence}[kind]
            self._s[key] = f(self.Ws[i], s, max_work=self.max_work, samples=self.samples, seed=self.seed)
        return self._s[key]

    def mu_rows(self, i: int, rows: np.ndarray) -> float:
        key = bytes([i]) + rows.tobytes()
        if key not in self._mu:
            self._mu[key] = mutual_coherence(self.matrix(i)[rows]) if rows.size else 1.0
        return self._mu[key]

    def forward(self, z: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """Pre-activations ``[p_1..p_{L+1}]`` and the image ``y`` in float64."""
        pre, x = [], z
        for i in range(self.L + 1):
            p = self.Ws[i] @ x + self.bs[i]
            pre.append(p)
            x = np.maximum(p, 0.0) if i < self.L else self.act(torch.from_numpy(p)).numpy()
        return pre, x


def _witness(ctx: _Ctx, z: np.ndarray, seen: np.ndarray | None = None) -> dict[str, Any] | None:
    """A second latent with the same supports and the same measurements, or None (see module docstring).

    ``seen``: the image entries the measurements depend on (observed pixels of a mask, the
    columns a general operator reads), None for all. Their pre-activations stay fixed (active
    ones for a ReLU output, whose inactive seen entries stay inactive); for an identity output
    measured by an operator ``A``, ``A`` times the pre-activation stays fixed.
    """
    pre, y = ctx.forward(z)
    J = np.eye(z.size)
    Ps = []
    for i in range(ctx.L):
        P = ctx.Ws[i] @ J
        Ps.append(P)
        J = (pre[i] > 0)[:, None] * P
    Pout = ctx.Ws[ctx.L] @ J
    rows = np.ones(Pout.shape[0], dtype=bool) if seen is None else seen
    pres = list(pre[: ctx.L])
    if ctx.A is not None and ctx.act.name == "identity":
        M = ctx.A @ Pout
    elif ctx.act.invertible:
        M = Pout[rows]
    else:
        M = Pout[rows & (pre[ctx.L] > 0)]
        Ps.append(Pout[rows])  # the inactive seen output units must stay inactive
        pres.append(pre[ctx.L][rows])
    if M.shape[0]:
        _, sv, Vt = np.linalg.svd(M, full_matrices=True)
        smax = sv[0] if sv.size else 0.0
        rank = int((sv > 1e-10 * max(smax, 1e-300)).sum())
    else:
        Vt, rank, smax = np.eye(z.size), 0, 0.0
    if rank >= z.size:
        return None
    d = Vt[-1]

    def measured(img: np.ndarray) -> np.ndarray:
        return ctx.A @ img if ctx.A is not None else img[rows]

    scale = 1.0 + float(np.linalg.norm(z))
    for sign in (1.0, -1.0):
        dd = sign * d
        t_max = scale
        feasible = True
        for p, P in zip(pres, Ps):
            v = P @ dd
            moving = np.abs(v) > 1e-14 * (1.0 + np.abs(P).sum(axis=1))
            toward = moving & (np.sign(v) != np.sign(p))  # moving towards zero (or off an exact zero)
            if (toward & (p == 0) & (v > 0)).any():
                feasible = False
                break
            ratios = np.abs(p[toward & (p != 0)]) / np.abs(v[toward & (p != 0)])
            if ratios.size:
                t_max = min(t_max, float(ratios.min()))
        if not feasible or t_max <= 1e-8 * scale:
            continue
        t = 0.5 * t_max
        z2 = z + t * dd
        pre2, y2 = ctx.forward(z2)
        same = all(np.array_equal(a > 0, b > 0) for a, b in zip(pre[: ctx.L], pre2[: ctx.L]))
        gap = float(np.linalg.norm(measured(y2) - measured(y)))
        if same and gap <= 1e-9 * (1.0 + float(np.linalg.norm(measured(y)))):
            return {"z_alt": z2.tolist(), "distance": float(np.linalg.norm(z2 - z)), "image_gap": gap,
                    "direction": dd.tolist(), "local_rank": rank}
    return None


def _certify_one(
    ctx: _Ctx,
    xs: list[np.ndarray],
    z: np.ndarray | None,
    y: np.ndarray,
    noise: float,
    *,
    s_forms: bool,
    theorem2: bool,
    lam: list[float] | None,
    lam_factor: float,
    support_tol_solver: float,
    witness: bool,
    rows_ok: np.ndarray | None = None,
    seen: np.ndarray | None = None,
    rows_how: str = "",
) -> Certificate:
    L, Ws, dims = ctx.L, ctx.Ws, ctx.dims
    n0, n = dims[0], dims[-1]
    S = [np.flatnonzero(x > 0) for x in xs]
    s = [int(v.size) for v in S]
    # The rows of the output layer that carry equations: the entries of the image that are
    # measured (``rows_ok``: observed, not saturated) and, for a ReLU output, in supp(y); every
    # row of A W_{L+1} for an identity output measured by a general operator A.
    operator_rows = ctx.A is not None and ctx.act.name == "identity"
    if operator_rows:
        out_rows = np.arange(ctx.Wout.shape[0])
    else:
        base = np.ones(n, dtype=bool) if rows_ok is None else rows_ok
        out_rows = np.flatnonzero(base if ctx.act.invertible else base & (y > 0))
    m = int(out_rows.size)
    conds: list[Condition] = []
    notes: list[str] = []
    if operator_rows:
        wname, mname = f"A W_{L + 1}", "m"
    elif m == n:
        wname, mname = f"W_{L + 1}", "n"
    else:
        wname, mname = f"W_{L + 1}^R", "|R|"
        what = [rows_how] if rows_how else []
        if not ctx.act.invertible:
            what.append("in supp(y)")
        notes.append(f"R: the {m} of {n} output rows that carry equations ({', '.join(what)})")

    # Theorem 1 (i): spark of the output matrix (rows carrying equations) > 2 s_L.
    b = ctx.spark_rows(L, out_rows, 2 * s[-1], cache=True)
    t1 = {L: b.exceeds(2 * s[-1])}
    conds.append(Condition("thm1", "Theorem 1 (i)", L, f"spark({wname}) > 2 s_{L}",
                           f"spark = {b}, 2 s_{L} = {2 * s[-1]}", verdict_of(t1[L])))
    # Theorem 1 (ii): spark(W_i^{S_i}) > 2 s_{i-1}, i = 2..L (and the s-spark form).
    for i in range(L, 1, -1):
        gt = 2 * s[i - 2]
        b = ctx.spark_rows(i - 1, S[i - 1], gt, cache=False)
        v = b.exceeds(gt)
        conds.append(Condition("thm1", f"Theorem 1 (ii), i={i}", i - 1, f"spark(W_{i}^S_{i}) > 2 s_{i - 1}",
                               f"spark = {b}, 2 s_{i - 1} = {gt}", verdict_of(v)))
        if s_forms:
            bs_ = ctx.s_quantity("spark", i - 1, s[i - 1])
            vs = bs_.exceeds(gt)
            conds.append(Condition("thm1_s", f"Theorem 1 (ii) s-form, i={i}", i - 1,
                                   f"spark_s{i}(W_{i}) > 2 s_{i - 1}", f"spark_s = {bs_}, 2 s_{i - 1} = {gt}",
                                   verdict_of(vs)))
            if v is None and vs is True:
                v = True
        t1[i - 1] = v
    # Theorem 1 (iii): rank(W_1^{S_1}) = n_0 (and rank_{s_1}(W_1) = n_0).
    r1 = matrix_rank(Ws[0][S[0]], None) if s[0] else 0
    v3: bool | None = r1 == n0
    conds.append(Condition("thm1", "Theorem 1 (iii)", 0, "rank(W_1^S_1) = n_0", f"rank = {r1}, n_0 = {n0}",
                           verdict_of(v3)))
    if s_forms:
        br = ctx.s_quantity("rank", 0, s[0])
        vs3 = True if br.lower >= n0 else False if br.upper < n0 else None
        conds.append(Condition("thm1_s", "Theorem 1 (iii) s-form", 0, "rank_s1(W_1) = n_0 <= s_1",
                               f"rank_s = {br}, n_0 = {n0}", verdict_of(vs3)))
    t1[0] = v3
    # Corollary 1 (random weights): s_L < n/2, s_{i-1} < s_i/2, n_0 <= s_1.
    conds.append(Condition("cor1", "Corollary 1", L, f"s_{L} < {mname}/2", f"s_{L} = {s[-1]}, {mname}/2 = {m / 2:g}",
                           verdict_of(s[-1] < m / 2)))
    for i in range(L, 1, -1):
        conds.append(Condition("cor1", "Corollary 1", i - 1, f"s_{i - 1} < s_{i}/2",
                               f"s_{i - 1} = {s[i - 2]}, s_{i}/2 = {s[i - 1] / 2:g}", verdict_of(s[i - 2] < s[i - 1] / 2)))
    conds.append(Condition("cor1", "Corollary 1", 0, "n_0 <= s_1", f"n_0 = {n0}, s_1 = {s[0]}", verdict_of(n0 <= s[0])))
    # Theorem 2 coherence condition: s_i < (1 + 1/mu(W_{i+1}^{S_{i+1}})) / 2, i = 1..L.
    for i in range(L, 0, -1):
        rows = out_rows if i == L else S[i]
        mu = ctx.mu_rows(i, rows)
        thr = (1 + 1 / mu) / 2 if mu > 0 else math.inf
        sup = wname if i == L else f"W_{i + 1}^S_{i + 1}"
        conds.append(Condition("thm2_coh", f"Theorem 2 coherence, x_{i}", i, f"s_{i} < (1 + 1/mu({sup}))/2",
                               f"s_{i} = {s[i - 1]}, mu = {mu:.3g}, bound = {thr:.3g}",
                               verdict_of(coherence_condition(s[i - 1], mu))))
        if s_forms and i < L:
            bm = ctx.s_quantity("mu", i, s[i])
            # Holds if it holds at the largest possible mu_s, fails if it fails at the smallest.
            vm = True if coherence_condition(s[i - 1], bm.upper) else False if not coherence_condition(
                s[i - 1], bm.lower) else None
            conds.append(Condition("thm2_coh", f"Theorem 2 coherence s-form, x_{i}", i,
                                   f"s_{i} < (1 + 1/mu_s{i + 1}(W_{i + 1}))/2", f"mu_s = {bm}", verdict_of(vm)))
    t2 = None
    if theorem2 and m:
        t2 = theorem2_bound_one([*Ws[:L], ctx.Wout], ctx.act, xs, y, noise, lam=lam, lam_factor=lam_factor,
                                support_tol=support_tol_solver, rows=None if operator_rows or m == n else out_rows)
        zerr = f"||z_hat - z|| <= {t2.z_error:.3g}" if math.isfinite(t2.z_error) else t2.reason
        conds.append(Condition("thm2_bound", "Theorem 2 error bound", 0, "LASSO support inclusion at every layer",
                               zerr, t2.verdict))

    # The verdict.
    verdicts = [t1[k] for k in sorted(t1)]
    wit = None
    if all(v is True for v in verdicts):
        unique: bool | None = True
        reason = ("Theorem 1 holds with this signal's supports: no other latent whose layers are at most "
                  "as dense gives this image")
    else:
        failing = [c.theorem for c in conds if c.key == "thm1" and c.verdict != HOLDS]
        wit = _witness(ctx, z, seen) if (witness and z is not None) else None
        if wit is not None:
            unique = False
            reason = (f"non-unique: the local linear map has rank {wit['local_rank']} < n_0 = {n0}, and z' = z + t d "
                      "gives the same image with the same supports")
        else:
            unique = None
            reason = "Theorem 1 not established (" + ", ".join(
                f"{f}: {next(c.verdict for c in conds if c.theorem == f)}" for f in failing) + ")"
    return Certificate(list(dims), s, m, conds, t2, unique, reason, wit, float(noise), ctx.act.name, notes)


@single_thread_blas
def certify(
    G: Generator,
    z: Any = None,
    *,
    layers: Sequence[Tensor] | None = None,
    mask: Any = None,
    measure: Any = None,
    noise: float | Tensor = 0.0,
    lam: Any = None,
    lam_factor: float = 2.0,
    support_tol: float = 1e-4,
    solver_support_tol: float = 0.0,
    s_forms: bool = True,
    theorem2: bool = True,
    max_work: int = 20_000,
    lp_tries: int = 3,
    samples: int = 50,
    seed: int = 0,
) -> Certificate | list[Certificate]:
    """Certify uniqueness (Theorem 1, Corollary 1) and stability (Theorem 2) of signals of ``G``.

    Each signal gets a :class:`Certificate`: the verdict ``unique`` (True, False or None; see the
    module docstring), every condition with the numbers it was decided with, and Layered
    Basis-Pursuit's certified error at the given noise level.

    Parameters
    ----------
    G : Generator
        ReLU hidden layers (Theorem 1, Corollary 1, Theorem 2), or every hidden layer invertible
        (LeakyReLU, PLU, tanh, ...: the rank conditions instead, :mod:`geninv.certificates.rank`;
        only ``z``, ``mask`` and a ``Mask`` measure are read then).
    z : Tensor of shape (n_0,) or (B, n_0), or SolveResult, optional
        The latents; supports are those of the exact forward pass (``x_i > 0``). A
        :class:`geninv.SolveResult` gives both ``z`` and its estimated ``layers``.
    layers : sequence of Tensor, each (n_i,) or (B, n_i), optional
        Estimated hidden layers ``[x_1, ..., x_L]`` (e.g. a solver's); supports are the entries
        above ``support_tol`` x the layer's largest entry. With ``layers`` the certificate is
        about the representation they describe.
    mask : Tensor of shape (n,) or (B, n), bool, or Mask, optional
        Observed pixels (True = observed), one mask or one per signal: the certificate is about
        the inpainting problem ``M y``. Only observed rows carry equations.
    measure : operator, optional
        The measurement operator (``Mask``, ``Identity``, or any operator with ``forward`` and
        ``shape`` (m, n), e.g. ``GaussianMatrix``). For an identity output the equations are the
        rows of ``A W_{L+1}``; otherwise an image entry carries an equation when ``A``
        determines it, i.e. when ``e_j`` lies in the span of ``A``'s rows (all entries for an
        ``A`` of rank n, none for a generic wide one).
    noise : float or Tensor of shape (B,)
        ``||e||_2`` bound on the image noise, for the Theorem 2 error bound.
    lam : sequence of float (L,), optional
        Layered Basis-Pursuit's ``lam`` for ``[x_1, ..., x_L]``; default chosen by the bound
        (see :func:`geninv.certificates.theorem2_bound`).
    lam_factor, solver_support_tol : float
        Passed to the Theorem 2 bound.
    support_tol : float
        Relative threshold for supports of given ``layers``.
    s_forms : bool
        Also check the s-spark / s-rank / s-coherence forms (worst case over row subsets).
    theorem2 : bool
        Compute the Theorem 2 error bound.
    max_work, lp_tries, samples, seed
        Budgets of the spark computations (see :func:`geninv.certificates.spark`, :func:`s_spark`).

    Returns
    -------
    Certificate (1-D ``z`` or 1-D layers) or list of Certificate (a batch)

    Notes
    -----
    The rows that carry the output equations, per signal: the measured entries of the image
    (``mask``, ``measure``) that are not saturated in the generator's precision (a tanh /
    sigmoid value rounded to its bound gives no equation on the pre-activation: the solvers
    leave it out, :func:`geninv.solvers.measurement.saturated`), and for a ReLU output those in
    ``supp(y)``. Theorem 1 (i) and Corollary 1 count them (``Certificate.output_rows``). A
    batch with per-signal masks is one call: the work shared by its signals (the s-forms, the
    spark of a row set common to several signals) is done once.

    Examples
    --------
    >>> G = random_generator([20, 200, 600], seed=0)
    >>> cert = certify(G, torch.randn(20))
    >>> cert.unique
    True
    >>> print(cert)  # doctest: +SKIP
    """
    from geninv._validate import as_batch, as_float
    from geninv.certificates.spark import check_options
    from geninv.solvers.result import SolveResult

    # -- invertible hidden layers: the rank conditions (module certificates.rank) --
    if isinstance(G, Generator) and G.n_hidden and not G.relu_hidden and G.invertible_hidden:
        from geninv.certificates.rank import certify_invertible

        return certify_invertible(G, z, mask=mask, measure=measure, certificate=Certificate,  # type: ignore[no-any-return]
                                  condition=Condition)
    # -- end of the invertible-layer dispatch --
    check_generator(G)
    # Every scalar option is checked before any work (a bad budget or tolerance must not surface
    # as a NumPy / torch error from deep inside the spark computations).
    o = check_options(max_work=max_work, samples=samples, lp_tries=lp_tries, seed=seed)
    max_work, samples, lp_tries, seed = o["max_work"], o["samples"], o["lp_tries"], o["seed"]
    support_tol = as_float(support_tol, "support_tol")
    if not 0.0 <= support_tol < 1.0:
        raise InputError(f"support_tol: expected a relative threshold in [0, 1), received {support_tol!r}")
    solver_support_tol = as_float(solver_support_tol, "solver_support_tol")
    if not 0.0 <= solver_support_tol < 1.0:
        raise InputError(f"solver_support_tol: expected a relative threshold in [0, 1), received {solver_support_tol!r}")
    lam_factor = as_float(lam_factor, "lam_factor")
    if not lam_factor > 1.0:
        raise InputError(f"lam_factor: expected a finite number > 1, received {lam_factor!r}")
    for name, flag in (("s_forms", s_forms), ("theorem2", theorem2)):
        if not isinstance(flag, bool):
            raise InputError(f"{name}: expected a bool, received {describe(flag)}")
    nz = _as_nonnegative(noise, "noise")
    lam_t = None if lam is None else _as_nonnegative(lam, "lam")
    if isinstance(z, SolveResult):
        layers = z.layers if layers is None else layers
        z = z.z
    if z is None and layers is None:
        raise InputError("z, layers: expected latents z or estimated layers, received neither")
    single = False
    zz: Tensor | None = None
    if z is not None:
        single = isinstance(z, Tensor) and z.ndim == 1
        zz = as_batch(z, G.latent_dim, "z").to(G.device, G.dtype)
    ctx = _Ctx(G, max_work=max_work, lp_tries=lp_tries, samples=samples, seed=seed)
    if layers is not None:
        layers = list(layers)
        if len(layers) != G.n_hidden:
            raise InputError(f"layers: expected {G.n_hidden} hidden layers [x_1..x_L], received {len(layers)}")
        if z is None:
            single = isinstance(layers[0], Tensor) and layers[0].ndim == 1
        xs_b = [as_batch(x, G.dims[i + 1], f"layers[{i}]").detach().cpu().to(torch.float64) for i, x in enumerate(layers)]
        B = xs_b[0].shape[0]
        if any(x.shape[0] != B for x in xs_b) or (zz is not None and zz.shape[0] != B):
            raise InputError("layers, z: expected the same batch size for every layer and z")
        xs_b = [torch.where(x > support_tol * x.amax(dim=1, keepdim=True).clamp_min(0), x, torch.zeros_like(x))
                for x in xs_b]
        # The image of the representation: phi(W_{L+1} x_L + b_{L+1}).
        last = G.layers[-1].to(dtype=torch.float64)
        ys = last(xs_b[-1])
        y_data = G.layers[-1](xs_b[-1].to(G.device, G.dtype))
        zs = None if zz is None else zz.detach().cpu().to(torch.float64).numpy()
        if zs is None:
            zs = _latent_from_layers(ctx, [x.numpy() for x in xs_b])
    else:
        assert zz is not None
        tr = G.trace(zz)
        xs_b = [x.detach().cpu().to(torch.float64) for x in tr.hidden]
        ys = tr.y.detach().cpu().to(torch.float64)
        y_data = tr.y.detach()
        zs = zz.detach().cpu().to(torch.float64).numpy()
        B = zz.shape[0]
    if nz.numel() not in (1, B):
        raise InputError(f"noise: expected a finite float >= 0 or a ({B},) tensor, received {describe(noise)}")
    nz = nz.expand(B) if nz.numel() == 1 else nz
    lam_list = None if lam_t is None else [float(v) for v in lam_t]
    if lam_list is not None and len(lam_list) != G.n_hidden:
        raise InputError(f"lam: expected {G.n_hidden} values (one per hidden layer), received {len(lam_list)}")
    seen, rows_ok, how = _measured_rows(G, ctx, mask, measure, y_data, B)
    certs = []
    for k in range(B):
        xs = [x[k].numpy() for x in xs_b]
        zk = None if zs is None else (zs[k] if zs.ndim == 2 else None)
        certs.append(_certify_one(ctx, xs, zk, ys[k].numpy(), float(nz[k]), s_forms=s_forms, theorem2=theorem2,
                                  lam=lam_list, lam_factor=lam_factor, support_tol_solver=solver_support_tol,
                                  witness=True, rows_ok=None if rows_ok is None else rows_ok[k],
                                  seen=None if seen is None else seen[k], rows_how=how))
    return certs[0] if single else certs


def _measured_rows(G: Generator, ctx: _Ctx, mask: Any, measure: Any, y_data: Tensor,
                   B: int) -> tuple[np.ndarray | None, np.ndarray | None, str]:
    """Validate ``mask`` / ``measure`` and return, per signal, the image entries the measurements
    read (``seen``, for the witness), those that carry equations (``rows_ok``: determined by
    the measurements and not saturated in ``y_data``'s precision), each (B, n) bool or None,
    and a description of the rows."""
    from geninv.operators import Identity, Mask
    from geninv.solvers.measurement import saturated

    n = G.output_dim
    if mask is not None and measure is not None:
        raise InputError("mask, measure: expected at most one of them, received both")
    if isinstance(measure, Identity):
        if measure.n != n:
            raise ShapeError(f"measure: expected an operator on R^{n}, received Identity({measure.n})")
        measure = None
    if isinstance(measure, Mask):
        mask, measure = measure, None
    seen: np.ndarray | None = None
    how: list[str] = []
    if mask is not None:
        mk = mask if isinstance(mask, Mask) else Mask(mask) if isinstance(mask, Tensor) else None
        if mk is None:
            raise InputError(f"mask: expected a boolean tensor of shape ({n},) or ({B}, {n}), received {describe(mask)}")
        mt = mk.mask
        if mt.shape[1] != n or mt.shape[0] not in (1, B):
            raise ShapeError(f"mask: expected shape ({n},), (1, {n}) or ({B}, {n}), received {tuple(mt.shape)}")
        seen = mt.expand(B, n).cpu().numpy().copy()
        how.append("observed")
    elif measure is not None:
        for attr in ("forward", "shape"):
            if not hasattr(measure, attr):
                raise InputError(f"measure: expected a geninv operator (forward, shape), received {describe(measure)}")
        shape = tuple(measure.shape)
        if len(shape) != 2 or shape[1] != n:
            raise ShapeError(f"measure: expected an operator of shape (m, {n}), received shape {shape}")
        with torch.no_grad():
            A = measure.forward(torch.eye(n, dtype=torch.float64, device=G.device)).detach().cpu().to(torch.float64)
        A_np = A.numpy().T.copy()  # (m, n): the rows of A
        ctx.measure_with(A_np)
        if ctx.act.name == "identity":
            return None, None, ""
        # e_j in the span of A's rows: the j-th diagonal entry of the projector onto it is 1.
        _, sv, Vt = np.linalg.svd(A_np, full_matrices=False)
        r = int((sv > max(A_np.shape) * np.finfo(np.float64).eps * (sv[0] if sv.size else 0.0)).sum())
        det = (Vt[:r] ** 2).sum(axis=0) >= 1.0 - 1e-9
        seen = np.broadcast_to(np.abs(A_np).sum(axis=0) > 0, (B, n)).copy()
        rows = np.broadcast_to(det, (B, n)).copy()
        how.append("determined by A")
        sat = saturated(G.output_activation, y_data).cpu().numpy()
        if sat.any():
            how.append("not saturated")
        return seen, rows & ~sat, ", ".join(how)
    sat = saturated(G.output_activation, y_data).cpu().numpy()
    if not sat.any():
        return seen, seen, ", ".join(how)
    how.append("not saturated")
    rows_ok = ~sat if seen is None else seen & ~sat
    return seen, rows_ok, ", ".join(how)


def check_generator(G: Any) -> None:
    """InputError naming ``G`` unless it is a :class:`Generator` with at least one hidden layer."""
    if not isinstance(G, Generator):
        raise InputError(f"G: expected a geninv Generator (convert a torch module with Generator.from_torch), "
                         f"received {describe(G)}")
    if G.n_hidden < 1:
        raise InputError(f"G: expected a generator with at least one hidden ReLU layer, received {G!r} "
                         "(with none, z is unique iff W_1 has full column rank)")
    G.require_relu_hidden("the certificates (Theorem 1, Corollary 1: not applicable otherwise)")


def _as_nonnegative(value: Any, name: str) -> Tensor:
    """A real number or real sequence / tensor as a flat float64 tensor of finite values >= 0."""
    bad = (isinstance(value, (str, bytes, bool))
           or (isinstance(value, Tensor) and (value.is_complex() or value.dtype == torch.bool))
           or (isinstance(value, np.ndarray) and value.dtype.kind not in "fiu"))
    t = None
    if not bad:
        try:
            t = torch.as_tensor(value, dtype=torch.float64).detach().cpu().flatten()
        except (TypeError, ValueError, RuntimeError):
            t = None
    if t is None or not bool(torch.isfinite(t).all()) or bool((t < 0).any()):
        raise InputError(f"{name}: expected finite real values >= 0, received {describe(value)}")
    return t


def _latent_from_layers(ctx: _Ctx, xs: list[np.ndarray]) -> np.ndarray | None:
    """``z = pinv(W_1^{S_1}) (x_1^{S_1} - b_1^{S_1})`` per sample, kept only where it reproduces the layers."""
    out = []
    for k in range(xs[0].shape[0]):
        x1 = xs[0][k]
        S1 = x1 > 0
        if not S1.any():
            return None
        zk = np.linalg.lstsq(ctx.Ws[0][S1], x1[S1] - ctx.bs[0][S1], rcond=None)[0]
        pre, _ = ctx.forward(zk)
        ok = all(np.allclose(np.maximum(p, 0), x[k], rtol=1e-6, atol=1e-8 * (1 + np.abs(x[k]).max()))
                 for p, x in zip(pre[: ctx.L], xs))
        if not ok:
            return None
        out.append(zk)
    return np.stack(out)

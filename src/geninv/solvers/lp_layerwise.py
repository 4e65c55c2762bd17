"""Layer-wise linear programming (Lei, Jalal, Dhillon, Dimakis, NeurIPS 2019; docs/method.md sec. 7).

A ReLU layer ``x_{i+1} = relu(W x + b)`` is linear once the support ``S`` of ``x_{i+1}`` is
known: ``W^S x + b^S = x_{i+1}^S`` and ``W^{S^c} x + b^{S^c} <= 0``. Going down from the image,
each layer's input is therefore a feasibility LP, solved per sample with HiGHS
(``scipy.optimize.linprog(method="highs")``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from scipy.optimize import linprog
from torch import Tensor

from geninv.exceptions import InputError, describe
from geninv.model.generator import Generator
from geninv.operators import Operator
from geninv.solvers.loop import Callback
from geninv.solvers.measurement import Measurement, saturated
from geninv.solvers.packing import pack_result
from geninv.solvers.result import SolveResult

__all__ = ["lp_layerwise"]

_NOISE = ("exact", "linf", "l1")
#: Seconds HiGHS may spend on one LP (one layer of one sample). Measured: the 20-200-600 tanh
#: generator's LPs take ~0.05 s each, but a rare one ran for minutes without this limit; it then
#: ends with status 1 and the sample takes the stage's fallback (l_inf LP, then least squares).
LP_TIME_LIMIT = 20.0

_STATUS = {0: "optimal", 1: "iteration or time limit", 2: "infeasible", 3: "unbounded", 4: "numerical difficulties"}


@dataclass
class _Stage:
    """One layer's problem ``M x = r`` (equalities), ``C x + h <= 0`` (inequalities), ``x >= 0`` if ``nonneg``."""

    M: np.ndarray  # (p, k)
    r: np.ndarray  # (p,)
    C: np.ndarray  # (q, k)
    h: np.ndarray  # (q,)
    nonneg: bool

    def violation(self, x: np.ndarray) -> tuple[float, float, float]:
        """Constraint violations of ``x``: (l_inf, l_1, l_2 norm) of ``[M x - r, max(C x + h, 0), min(x, 0)]``.

        The l_inf / l_1 values are the objectives the ``"linf"`` / ``"l1"`` LPs minimize (they also
        count the sign constraint, which those LPs enforce exactly).
        """
        parts = [self.M @ x - self.r]
        if self.C.shape[0]:
            parts.append(np.maximum(self.C @ x + self.h, 0.0))
        if self.nonneg:
            parts.append(np.minimum(x, 0.0))
        v = np.abs(np.concatenate(parts))
        if not v.size:
            return 0.0, 0.0, 0.0
        return float(v.max()), float(v.sum()), float(np.sqrt((v * v).sum()))


def _solve_stage(st: _Stage, noise: str, tol: float) -> tuple[np.ndarray | None, int, float, int]:
    """Solve one stage with HiGHS; return (x or None, status, LP objective, iterations)."""
    p, k = st.M.shape
    q = st.C.shape[0]
    xb = (0.0, None) if st.nonneg else (None, None)
    opts = {"primal_feasibility_tolerance": tol, "dual_feasibility_tolerance": tol, "presolve": True,
            "time_limit": LP_TIME_LIMIT}
    if noise == "exact":
        res = linprog(
            np.zeros(k), A_ub=st.C if q else None, b_ub=-st.h if q else None, A_eq=st.M, b_eq=st.r,
            bounds=[xb] * k, method="highs", options=opts,
        )
        x = res.x if res.status == 0 else None
        return x, int(res.status), 0.0 if res.status == 0 else float("nan"), int(res.nit)
    M = sp.csr_matrix(st.M)
    C = sp.csr_matrix(st.C) if q else sp.csr_matrix((0, k))
    if noise == "linf":
        # variables (x, t): min t  s.t.  |M x - r| <= t,  C x + h <= t  (the hinge of relu(C x + h) against 0)
        one_p = sp.csr_matrix(np.ones((p, 1)))
        A = sp.vstack([sp.hstack([M, -one_p]), sp.hstack([-M, -one_p]), sp.hstack([C, -sp.csr_matrix(np.ones((q, 1)))])])
        b = np.concatenate([st.r, -st.r, -st.h])
        c = np.zeros(k + 1)
        c[-1] = 1.0
        bounds = [xb] * k + [(0.0, None)]
    else:
        # variables (x, e, u): min 1^T e + 1^T u  s.t.  |M x - r| <= e,  C x + h <= u,  e, u >= 0
        Ip, Iq = sp.identity(p, format="csr"), sp.identity(q, format="csr")
        A = sp.vstack([
            sp.hstack([M, -Ip, sp.csr_matrix((p, q))]),
            sp.hstack([-M, -Ip, sp.csr_matrix((p, q))]),
            sp.hstack([C, sp.csr_matrix((q, p)), -Iq]),
        ])
        b = np.concatenate([st.r, -st.r, -st.h])
        c = np.concatenate([np.zeros(k), np.ones(p + q)])
        bounds = [xb] * k + [(0.0, None)] * (p + q)
    res = linprog(c, A_ub=A.tocsr(), b_ub=b, bounds=bounds, method="highs", options=opts)
    if res.status != 0:
        return None, int(res.status), float("nan"), int(res.nit)
    return res.x[:k], 0, float(res.fun), int(res.nit)


def _lstsq_stage(st: _Stage) -> np.ndarray:
    """Finite fallback: least squares on the equalities (clipped at 0 for a hidden layer)."""
    k = st.M.shape[1]
    x = np.linalg.lstsq(st.M, st.r, rcond=None)[0] if st.M.shape[0] else np.zeros(k)
    return np.maximum(x, 0.0) if st.nonneg else x


def _support(x: np.ndarray, rel: float) -> np.ndarray:
    """Relative-threshold support ``x > rel * max(x)`` (empty when ``x <= 0`` everywhere)."""
    top = float(x.max()) if x.size else 0.0
    if not top > 0:
        return np.zeros(x.shape, dtype=bool)
    return x > rel * top


def _top_problem(G: Generator, y: object, measure: Operator | None) -> tuple[Tensor, str, Tensor | None, np.ndarray | None]:
    """Validate ``y`` and say how the image layer is observed.

    Returns ``(y, kind, observed, A)``: kind ``"entries"`` with ``y`` as (B, n) signals and a
    bool (B, n) tensor of observed entries (no operator, Identity, a pixel mask, or an operator
    whose matrix selects entries, whose (B, m) measurements are scattered back to width n), or
    ``"linear"`` with the (B, m) measurements and the dense matrix A (m, n) of a general
    operator (which needs an identity ``phi``).
    """
    n = G.output_dim
    yy, meas = Measurement.for_width(measure, n, y)
    yy = yy.detach()
    if meas.is_identity:
        return yy, "entries", torch.ones(yy.shape, dtype=torch.bool, device=yy.device), None
    if meas.diagonal:
        return yy, "entries", meas.obs, None
    assert measure is not None
    eye = torch.eye(n, dtype=yy.dtype, device=yy.device)
    A = np.asarray(measure.forward(eye).detach().cpu().double().numpy()).T
    # An operator whose rows are unit vectors e_j only selects entries of phi(.): keep phi^{-1}.
    ones = A == 1.0
    if np.all((A == 0.0) | ones) and np.all(ones.sum(axis=1) == 1):
        cols = torch.from_numpy(ones.argmax(axis=1)).to(yy.device)
        full = torch.zeros(yy.shape[0], n, dtype=yy.dtype, device=yy.device)
        full[:, cols] = yy  # a column selected twice keeps one of its (equal, if consistent) values
        obs = torch.zeros(n, dtype=torch.bool, device=yy.device)
        obs[cols] = True
        return full, "entries", obs[None].expand(yy.shape[0], n), None
    if G.output_activation.name != "identity":
        raise InputError(
            f"measure: lp_layerwise needs phi^{{-1}} of the observed entries, but a general operator mixes "
            f"entries of the {G.output_activation.name} output, which makes the top layer non-linear (not an LP); "
            "expected None, a Mask or an entry-selecting operator, or a generator with an identity output"
        )
    return yy, "linear", None, A


def lp_layerwise(
    G: Generator,
    y: Tensor,
    *,
    measure: Operator | None = None,
    noise: str = "exact",
    tol: float | None = None,
    support_tol: float | None = None,
    clamp: float = 1e-6,
    callback: Callback | None = None,
) -> SolveResult:
    """Invert ``y = G(z)`` one layer at a time by linear programming (Lei et al., 2019).

    Parameters
    ----------
    G : Generator
    y : Tensor of shape (B, n), or (B, m) with an operator other than Identity/Mask
        Signals; for a pixel mask only the observed entries are used, and of those only the
        unsaturated ones for a tanh / sigmoid output (a value at a bound of the range in the
        data's precision gives no equation on the pre-activation; decided per sample,
        :func:`geninv.solvers.measurement.saturated`). With another operator
        ``A`` (m, n), the measurements ``A G(z)`` (the convention of :func:`geninv.invert`).
    measure : operator, optional
        None (everything observed), a :class:`~geninv.operators.Mask` (per-sample masks allowed),
        any operator whose matrix selects entries, or, for a generator with an identity output
        activation, any linear operator (the top layer's equalities become ``A W_{L+1} x = y - A b_{L+1}``).
        A general operator with a non-linear output activation raises :class:`InputError`.
    noise : {"exact", "linf", "l1"}
        ``"exact"``: feasibility LPs (noiseless signals). ``"linf"`` / ``"l1"``: minimize the
        l_inf / l_1 norm of the layer's residual (equalities and the hinge ``max(W^{S^c} x + b^{S^c}, 0)``
        of the inequalities) with slack variables, so every LP is feasible.
    tol : float, optional
        HiGHS primal and dual feasibility tolerance; default 1e-7 (HiGHS's own) for float64
        signals and 1e-5 for float32 ones, whose rounding (amplified by ``phi^{-1}``) exceeds 1e-7.
    support_tol : float, optional
        Support of each LP solution: ``x > support_tol * max(x)`` (relative, never ``> 0``; a
        false positive turns a true inequality into a wrong equality). Default for ``"exact"``:
        1e-6 for float64 signals (vertex solutions have exact zeros; a larger threshold would
        drop small true entries, whose inequality the true point then violates), 1e-4 for float32
        ones (whose rounding leaves entries ~1e-6 of the maximum); 1e-2 with noise, where the
        residual-minimizing LPs leave many tiny false entries. Measured on [20, 200, 600] tanh,
        60 dB input noise: median SNR of z 5 dB (linf) / 62 dB (l1) at 1e-6, 48 / 68 dB at 1e-2.
    clamp : float
        For ``noise != "exact"`` and a tanh/sigmoid output, observed values are clipped into the
        open range by this margin before ``phi^{-1}``; with ``"exact"`` out-of-range values raise.
    callback : callable, optional
        ``callback(b, state)`` after each sample, ``b`` the number of samples done; ``state`` a
        dict with ``"stage"`` (``"lp_layerwise"``), ``"x"`` and ``"z"`` (the latents (B, n_0), the
        same tensor; zeros for samples not done yet) and ``"objective"`` (B,) their LP objective
        summed over the stages. Returning True stops; the remaining samples are returned as zeros
        with ``converged=False``.

    Returns
    -------
    SolveResult
        ``z`` the first layer's LP solution; ``layers`` the LP solutions ``[x_1, ..., x_L]``;
        ``supports`` their relative-threshold supports; ``converged`` True when every LP of the
        sample was solved; ``n_iter`` HiGHS iterations summed over the layers; ``history``
        ``"objective"`` (the stage's constraint violation ``v = [M x - r, max(C x + h, 0), min(x, 0)]``
        in the norm the LP minimizes: ``||v||_1`` for ``"l1"``, ``||v||_inf`` otherwise, so ~0 for a
        solved ``"exact"`` LP) and ``"residual"`` (``||v||_2 / ||r||``), each (L + 1, B), one row per
        stage from the image layer down to ``z`` (NaN for stages not run after a callback stop); ``info["status"]``
        (L + 1, B) HiGHS status codes (0 optimal, 2 infeasible, ...; -1 not run).

    Notes
    -----
    With ``u = phi^{-1}(y)`` on the observed entries O (docs/method.md sec. 7), for ``i = L + 1, ..., 1``::

        find x_{i-1}  s.t.  W_i^{S} x + b_i^{S} = x_i^{S},   W_i^{S^c} x + b_i^{S^c} <= 0,   x >= 0 (i > 1)

    with ``x_{L+1} = u`` and ``S = O`` at the image layer (no inequalities there unless the output
    activation is ReLU, whose zeros give inequalities as in the hidden layers), ``S = supp(x_i)``
    below, and ``x_0 = z`` free. Each LP runs in float64. Where the layers expand enough for the
    inverse to be unique (docs/method.md sec. 3), each LP's feasible set is a single point and the
    planted latent is recovered exactly. An infeasible or failed LP (numerically inconsistent
    data, a wrong support) is first retried, for ``"exact"``, as the ``"linf"`` LP, whose solution
    is accepted when its violation is below ``1e3 eps max(1, ||r||_inf)`` (eps of ``y``'s dtype:
    noiseless data up to rounding; ``info["relaxed"]`` marks these stages). Otherwise the sample
    gets ``converged=False``, a warning, and that layer and every layer
    below it fall back to least squares on the equalities (clipped at 0 for hidden layers), so
    the result stays finite.

    Examples
    --------
    >>> import torch, geninv
    >>> G = geninv.random_generator([20, 200, 600], seed=0, dtype=torch.float64)
    >>> z, y = G.sample(2, seed=1)
    >>> res = lp_layerwise(G, y)
    >>> bool((geninv.relative_error(z, res.z) < 1e-6).all())
    True
    """
    t0 = time.perf_counter()
    if not isinstance(G, Generator):
        raise InputError(f"G: expected a geninv Generator, received {describe(G)}")
    G.require_relu_hidden("lp_layerwise")
    if noise not in _NOISE:
        raise InputError(f"noise: expected one of {list(_NOISE)}, received {noise!r}")
    y, kind, observed, A = _top_problem(G, G.flatten_output(y), measure)
    if tol is None:
        tol = 1e-7 if y.dtype == torch.float64 else 1e-5
    if not (isinstance(tol, (int, float)) and not isinstance(tol, bool) and 0 < float(tol) < 1):
        raise InputError(f"tol: expected a feasibility tolerance in (0, 1), received {tol!r}")
    if support_tol is None:
        support_tol = (1e-6 if y.dtype == torch.float64 else 1e-4) if noise == "exact" else 1e-2
    if not (isinstance(support_tol, (int, float)) and 0 <= float(support_tol) < 1):
        raise InputError(f"support_tol: expected a relative threshold in [0, 1), received {support_tol!r}")
    if not (isinstance(clamp, (int, float)) and 0 < float(clamp) < 0.5):
        raise InputError(f"clamp: expected a margin in (0, 0.5), received {clamp!r}")
    B = y.shape[0]
    L = G.n_hidden
    phi = G.output_activation

    # phi^{-1} of the observed entries, for the whole batch at once (validated here, at the boundary).
    # Saturated entries (at a bound of a tanh/sigmoid range in the data's precision) give no
    # equation on the pre-activation: they are left out, per sample; hidden entries are filled
    # with phi(0) (inside the range) and never used.
    if kind == "entries" and phi.name != "relu":
        assert observed is not None
        observed = observed & ~saturated(phi, y)
        y_obs = torch.where(observed, y, phi(torch.zeros((), dtype=y.dtype, device=y.device)))
        u = phi.inverse(y_obs, clamp=None if noise == "exact" else float(clamp), name="y")
    else:
        u = y
    u_np = u.double().cpu().numpy()
    obs_np = observed.cpu().numpy() if observed is not None else None
    Ws = [W.detach().double().cpu().numpy() for W in G.weights]
    bs = [b.detach().double().cpu().numpy() for b in G.biases]
    dims = G.dims

    z_out = np.zeros((B, dims[0]))
    x_out = [np.zeros((B, d)) for d in dims[1:-1]]
    objective = np.full((L + 1, B), np.nan)
    residual = np.full((L + 1, B), np.nan)
    status = np.full((L + 1, B), -1, dtype=np.int64)
    n_iter = np.zeros(B, dtype=np.int64)
    converged = np.zeros(B, dtype=bool)
    failed_stage = np.full(B, -1, dtype=np.int64)
    relaxed = np.zeros((L + 1, B), dtype=bool)
    data_eps = float(torch.finfo(y.dtype).eps)
    stopped = False

    for s in range(B):
        # image layer: equalities on the observed entries (or A W x = A (y - b) for a linear operator)
        W, b = Ws[-1], bs[-1]
        if kind == "linear":
            assert A is not None
            st = _Stage(A @ W, u_np[s] - A @ b, np.zeros((0, W.shape[1])), np.zeros(0), nonneg=True)
        elif phi.name == "relu":
            assert obs_np is not None
            O = obs_np[s]
            S = _support(np.where(O, u_np[s], 0.0), support_tol)
            Z = O & ~S
            st = _Stage(W[S], u_np[s][S] - b[S], W[Z], b[Z], nonneg=True)
        else:
            assert obs_np is not None
            O = obs_np[s]
            st = _Stage(W[O], u_np[s][O] - b[O], np.zeros((0, W.shape[1])), np.zeros(0), nonneg=True)
        ok = True
        for j, i in enumerate(range(L + 1, 0, -1)):  # stage j solves for x_{i-1}
            st.nonneg = i > 1
            if ok:
                x, stat, _, nit = _solve_stage(st, noise, float(tol))
                n_iter[s] += nit
                if x is None and noise == "exact":
                    # Rounding of the data (float32, phi^{-1} near saturation) can make noiseless
                    # equalities inconsistent beyond HiGHS's tolerance: accept the l_inf-closest point
                    # when its violation is at the data's rounding level.
                    xr, stat_r, t, nit_r = _solve_stage(st, "linf", float(tol))
                    n_iter[s] += nit_r
                    scale = max(1.0, float(np.abs(st.r).max(initial=0.0)))
                    if xr is not None and t <= 1e3 * data_eps * scale:
                        x, relaxed[j, s] = xr, True
                        stat = 0
                status[j, s] = stat
                if x is None:
                    ok = False
                    failed_stage[s] = j
            if not ok:
                x = _lstsq_stage(st)
            assert x is not None
            v_inf, v_1, v_2 = st.violation(x)
            nr = float(np.linalg.norm(st.r))
            objective[j, s] = v_1 if noise == "l1" else v_inf
            residual[j, s] = v_2 / nr if nr > 0 else v_2
            if i == 1:
                z_out[s] = x
                break
            x_out[i - 2][s] = x
            S = _support(x, support_tol)
            W, b = Ws[i - 2], bs[i - 2]
            st = _Stage(W[S], x[S] - b[S], W[~S], b[~S], nonneg=True)
        converged[s] = ok
        if callback is not None:
            z_partial = torch.from_numpy(z_out).to(y.device, y.dtype)
            obj_partial = torch.from_numpy(np.nan_to_num(objective, nan=0.0).sum(axis=0)).to(y.device, y.dtype)
            if callback(s + 1, {"stage": "lp_layerwise", "x": z_partial, "z": z_partial, "objective": obj_partial}):
                stopped = True
                break

    notes = []
    n_failed = int((failed_stage >= 0).sum())
    if n_failed:
        codes = sorted({_STATUS.get(int(c), str(int(c))) for c in status[status > 0]})
        notes.append(f"{n_failed} of {B} sample(s) had an LP that HiGHS did not solve ({', '.join(codes)}); "
                     "those layers fell back to least squares (converged=False)")

    def back(a: np.ndarray) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(y.device, y.dtype)

    layers = [back(x) for x in x_out]
    supports = [torch.from_numpy(np.stack([_support(r, support_tol) for r in x])).to(y.device) for x in x_out]
    info = {
        "noise": noise, "tol": float(tol), "support_tol": float(support_tol), "clamp": float(clamp),
        "status": torch.from_numpy(status), "relaxed": torch.from_numpy(relaxed), "failed_stage": torch.from_numpy(failed_stage),
        "top": kind, "stopped_by_callback": stopped,
    }
    return pack_result("lp_layerwise", back(z_out), layers, supports, torch.from_numpy(converged).to(y.device),
                       torch.from_numpy(n_iter).to(y.device), {"objective": back(objective), "residual": back(residual)},
                       t0, info, y.dtype, notes=notes, unconverged_hint=None)

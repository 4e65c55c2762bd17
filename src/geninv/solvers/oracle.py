"""The Oracle (docs/method.md sec. 4; the paper's Algorithms 1 and 6): inversion with known supports."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from geninv._validate import as_bool_rows
from geninv.exceptions import InputError, ShapeError, describe
from geninv.model.generator import Generator
from geninv.solvers.checks import check_option, check_problem, check_seed
from geninv.solvers.debias import fit_supports
from geninv.solvers.image_layer import choose_domains
from geninv.solvers.linalg import supported_lstsq
from geninv.solvers.loop import Callback
from geninv.solvers.measurement import Measurement, preactivation_target, unsaturated
from geninv.solvers.network import hidden_layers
from geninv.solvers.relu_output import check_relu_measure, is_relu_output, output_support
from geninv.solvers.result import SolveResult, finish

__all__ = ["oracle", "check_supports"]


def check_supports(supports: object, G: Generator, B: int, device: torch.device) -> list[Tensor]:
    """Validate ``supports``: a list of L boolean (or 0/1) tensors of shape (B, n_i) or (n_i,)."""
    L = G.n_hidden
    dims = G.dims[1:-1]
    if hasattr(supports, "supports") and not isinstance(supports, (list, tuple)):
        supports = supports.supports  # a geninv Trace
    if not isinstance(supports, (list, tuple)):
        raise InputError(f"supports: expected a list of {L} boolean tensors (B, n_i) as from G.trace(z).supports, received {describe(supports)}")
    if len(supports) != L:
        raise ShapeError(f"supports: expected {L} tensors (one per hidden layer), received {len(supports)}")
    out = []
    for i, (s, n_i) in enumerate(zip(supports, dims)):
        s = as_bool_rows(s, B, n_i, device, f"supports[{i}]")
        empty = ~s.any(dim=1)
        if bool(empty.any()):
            which = empty.nonzero().flatten().tolist()[:5]
            raise InputError(
                f"supports[{i}]: expected at least one active unit per sample (an empty hidden layer leaves z "
                f"undetermined), received an empty support for sample(s) {which}"
            )
        out.append(s)
    return out


def oracle(
    G: Generator,
    y: Tensor,
    *,
    supports: Sequence[Tensor],
    measure: Any = None,
    mask: Tensor | None = None,
    mode: str = "auto",
    max_iter: int = 50,
    tol: float = 1e-10,
    seed: int | None = None,
    callback: Callback | None = None,
    solver: str = "auto",
) -> SolveResult:
    """Invert ``y`` knowing every hidden support (the Oracle).

    Parameters
    ----------
    G : Generator
    y : Tensor of shape (B, n) (or (B, m) for a general ``measure`` of shape (m, n))
    supports : list of L bool Tensors of shape (B, n_i) (or (n_i,)), or a Trace
        The supports ``S_1, ..., S_L`` (e.g. ``G.trace(z).supports``). Hidden layers with an
        invertible activation (LeakyReLU, PLU, tanh, ...) need none (their entries are ignored,
        ``supports=None`` when no hidden layer is ReLU): every row is an equation through the
        inverse activation, and ``info["rank"]`` / ``info["full_rank"]`` report the rank
        conditions that replace the sparsity ones
        (:func:`geninv.solvers.invertible_oracle.oracle_invertible`).
    measure : operator, optional
        ``Mask``, another operator with ``forward``/``adjoint``/``shape``, or None.
    mask : Tensor of shape (n,) or (B, n), bool, optional
        Shorthand for ``measure=Mask(mask)``.
    mode : {"auto", "layerwise", "end_to_end"}
        ``"layerwise"``: docs/method.md sec. 4 exactly, one pseudo-inverse per layer (needs
        ``phi^{-1}``, so an invertible output activation and a pixel mask or no measure, or
        an identity output with any linear operator; a ReLU output with a pixel mask or no
        measure uses its observed positive pixels as the rows of the first pseudo-inverse).
        A ReLU output through a general operator raises InputError (its support is not
        observed; :mod:`geninv.solvers.relu_output`). ``"end_to_end"``: fit ``z`` through the
        whole network with the supports frozen (Gauss-Newton in the signal domain; the
        debiasing step of the pursuits). ``"auto"`` (default): layerwise where available,
        decided per sample: a sample none of whose observed pixels is unsaturated takes the
        end-to-end fit (``info["mode"]`` is then a per-sample list). Saturated pixels (a
        tanh / sigmoid value at its bound in the data's precision) carry no equation on the
        pre-activation and are left out of the layerwise solve, per sample.
    max_iter, tol : int, float
        Gauss-Newton iterations and relative step tolerance of ``"end_to_end"`` (default 50, 1e-10).
    seed : int, optional
        Unused (the Oracle is deterministic).
    callback : callable, optional
        ``callback(k, state) -> bool | None``, called once with the answer,
        ``callback(0, {"stage": "oracle", "x": z, "z": z, ...})`` (nothing is left to stop, so
        its return value changes nothing).
    solver : {"auto", "dense", "krylov"}
        The layer-wise supported least squares: ``"dense"`` (gathered supported matrices, batched
        Cholesky), ``"krylov"`` (CGLS on the layers' operators, matrix-free for convolutions:
        :func:`geninv.solvers.krylov.cg_supported_lstsq`; ``info["cg_iterations"]``), ``"auto"``
        (default): dense unless one sample's dense solves exceed 256 MiB. Krylov needs a pixel
        mask or no measure and an invertible output.

    Returns
    -------
    SolveResult
        ``layers``: the layer-wise estimates ``x_1..x_L`` (``"layerwise"``) or the hidden layers
        of ``G(z)`` (``"end_to_end"``); ``supports``: the given ones; ``n_iter`` 0 (direct solves).

    Notes
    -----
    Layerwise (rows restricted to observed pixels ``M``)::

        x_L^{S_L}         = pinv(W_{L+1}^{M, S_L}) (phi^{-1}(y^M) - b_{L+1}^M)
        x_{i-1}^{S_{i-1}} = pinv(W_i^{S_i, S_{i-1}}) (x_i^{S_i} - b_i^{S_i})      i = L..2
        z                 = pinv(W_1^{S_1}) (x_1^{S_1} - b_1^{S_1})

    All samples are solved at once in float64 (:func:`geninv.solvers.linalg.supported_lstsq`:
    per-sample supported matrices gathered into one zero-padded batch, batched Cholesky with
    iterative refinement, pseudo-inverse for rank-deficient samples).

    Examples
    --------
    >>> G = random_generator([20, 200, 600], "tanh", dtype=torch.float64)
    >>> z, y = G.sample(4, seed=0)
    >>> res = oracle(G, y, supports=G.trace(z).supports)
    >>> bool((relative_error(z, res.z) < 1e-10).all())
    True
    """
    t0 = time.perf_counter()
    # -- invertible hidden layers: rank conditions instead of supports (module invertible_oracle) --
    if isinstance(G, Generator) and G.n_hidden and not G.relu_hidden and solver in ("auto", "dense"):
        from geninv.solvers.invertible_oracle import oracle_invertible

        return oracle_invertible(G, y, supports=supports, measure=measure, mask=mask, callback=callback)
    # -- end of the invertible-layer dispatch --
    G, yy, meas = check_problem(G, y, measure, mask)
    sup = check_supports(supports, G, yy.shape[0], yy.device)
    if mode not in ("auto", "layerwise", "end_to_end"):
        raise InputError(f"mode: expected 'auto', 'layerwise' or 'end_to_end', received {mode!r}")
    max_iter = check_option("max_iter", max_iter, kind="int", low=1)
    tol = check_option("tol", tol, kind="float", low=0.0)
    callback = check_option("callback", callback, kind="callable", allow_none=True)
    check_seed(seed)
    phi = G.output_activation
    check_relu_measure("oracle", G, meas)
    layerwise_ok = meas.diagonal or phi.name == "identity"
    if mode == "layerwise" and not layerwise_ok:
        raise InputError(
            "mode: 'layerwise' needs phi^{-1} (an invertible output activation with a pixel mask or no measure, "
            f"or an identity output); received output {phi.name} with measure kind {meas.kind}. Use mode='end_to_end'"
        )
    B = yy.shape[0]
    if mode == "layerwise" or (mode == "auto" and layerwise_ok and not meas.diagonal):
        lw = torch.ones(B, dtype=torch.bool, device=yy.device)
    elif mode == "auto" and layerwise_ok:
        # per sample: layerwise where phi^{-1} of the unsaturated observed entries is defined
        _, lw = choose_domains("auto", G, yy, meas, out_of_range="pre")
    else:
        lw = torch.zeros(B, dtype=torch.bool, device=yy.device)
    use_layerwise = bool(lw.all())
    # -- matrix-free layer-wise solves (module krylov) --
    from geninv.solvers.krylov import krylov_chosen, krylov_layerwise

    krylov = krylov_chosen(solver, G, sup, meas) and use_layerwise
    if solver == "krylov" and not use_layerwise:
        raise InputError("solver: expected 'auto' or 'dense' where some sample takes the end-to-end fit, received 'krylov'")
    cg_info: dict[str, Any] = {}
    # -- end of the matrix-free dispatch --
    with torch.no_grad():
        if use_layerwise and krylov:
            z, layers, cg_it, converged = krylov_layerwise(G, yy, sup, meas)
            converged = converged & torch.isfinite(z).all(dim=1)
            cg_info = {"solver": "krylov", "cg_iterations": cg_it}
        elif use_layerwise:
            z, layers = _layerwise(G, yy, sup, meas)
            converged = torch.isfinite(z).all(dim=1)
        elif not bool(lw.any()):
            z, converged, _ = fit_supports(G, yy, sup, meas, max_iter=max_iter, tol=tol)
            layers = hidden_layers(G, z.to(yy.dtype))
        else:
            a, e = lw.nonzero().squeeze(1), (~lw).nonzero().squeeze(1)
            za, la = _layerwise(G, yy[a], [s[a] for s in sup], meas.subset(a))
            ze, converged_e, _ = fit_supports(G, yy[e], [s[e] for s in sup], meas.subset(e),
                                              max_iter=max_iter, tol=tol)
            z = torch.empty(B, G.latent_dim, dtype=za.dtype, device=yy.device)
            z[a], z[e] = za, ze.to(za.dtype)
            converged = torch.empty(B, dtype=torch.bool, device=yy.device)
            converged[a], converged[e] = torch.isfinite(za).all(dim=1), converged_e
            layers = [x.to(za.dtype) for x in hidden_layers(G, z.to(yy.dtype))]
            for x, xa in zip(layers, la):
                x[a] = xa.to(x.dtype)
    if callback is not None:
        callback(0, {"stage": "oracle", "x": z.to(yy.dtype), "z": z.to(yy.dtype), "active": 0, "change": None,
                     "objective": None})
    n_iter = torch.zeros(yy.shape[0], dtype=torch.int64, device=yy.device)
    info: dict[str, Any] = {"mode": "layerwise" if use_layerwise else "end_to_end" if not bool(lw.any())
                            else ["layerwise" if v else "end_to_end" for v in lw.tolist()],
                            "solver": "dense", **cg_info}
    return finish("oracle", G, z, layers, [s.clone() for s in sup], converged, n_iter, history={}, t0=t0, info=info,
                  dtype=yy.dtype, y=yy, meas=meas)


def _layerwise(G: Generator, y: Tensor, sup: list[Tensor], meas: Measurement) -> tuple[Tensor, list[Tensor]]:
    L = G.n_hidden
    Ws, bs = G.weights, G.biases
    if meas.diagonal and is_relu_output(G):
        # A ReLU output: the observed positive pixels are the equations (the output's support).
        pos, _ = output_support(y, meas)
        x = supported_lstsq(Ws[-1], y - bs[-1], pos, sup[-1] if L else None)
    elif meas.diagonal:
        m = unsaturated(G, y, meas)  # saturated pixels give no equation on the pre-activation
        t = preactivation_target(G, y, m) - bs[-1]
        x = supported_lstsq(Ws[-1], t, m.obs, sup[-1] if L else None)
    else:
        # Identity output and a linear operator A: y = A (W x + b).
        AW = meas.op.forward(Ws[-1].T.to(y.dtype)).T
        Ab = meas.op.forward(bs[-1].to(y.dtype)[None])
        x = supported_lstsq(AW, y - Ab, None, sup[-1] if L else None)
    if L == 0:
        return x, []
    layers = [x]
    for i in range(L - 1, 0, -1):
        # x_i = relu(W_{i+1} x_{i-1} ...): Ws[i] maps layer i (1-based) to layer i+1.
        x = supported_lstsq(Ws[i], x - bs[i].to(torch.float64), sup[i], sup[i - 1])
        layers.insert(0, x)
    z = supported_lstsq(Ws[0], x - bs[0].to(torch.float64), sup[0], None)
    return z, layers


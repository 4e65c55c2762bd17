"""Certificates for generators whose hidden layers are all invertible (LeakyReLU, PLU, tanh, sigmoid,
softplus, ELU): the rank conditions.

An invertible hidden layer has no zeros, so Theorem 1's sparsity conditions do not apply. Each
layer is instead inverted through its inverse activation and a linear system, and ``z`` is the
only latent with this image when every such system has a unique solution:

- ``rank(W_{L+1}^M) = n_L`` on the ``M`` observed, unsaturated rows of the image layer;
- ``rank(W_i) = n_{i-1}`` for ``i = L, ..., 1``.

``unique`` is True where every rank condition holds. Where one fails the conditions say
nothing on their own (the range of the layers below may avoid the null space); ``unique`` is
then False only with a verified witness: a null direction ``d`` of the network's local
Jacobian on the observed rows and a latent ``z' = z + t d`` whose image equals ``y`` on those
rows to rounding (exact for piecewise-linear activations, LeakyReLU and PLU, for small ``t``),
and None otherwise.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from geninv.exceptions import InputError, UnsupportedLayerError, describe
from geninv.model.generator import Generator

__all__ = ["certify_invertible"]

HOLDS, FAILS = "holds", "fails"


def _rank(A: Tensor) -> int:
    return int(torch.linalg.matrix_rank(A)) if A.numel() else 0


def _rows(G: Generator, y: Tensor, mask: Any) -> Tensor:
    """Observed, unsaturated rows (B, n) bool."""
    from geninv.operators import Mask
    from geninv.solvers.measurement import saturated

    B, n = y.shape
    if mask is None:
        obs = torch.ones(B, n, dtype=torch.bool)
    else:
        m = mask.mask if isinstance(mask, Mask) else mask
        if not isinstance(m, Tensor) or m.shape[-1] != n or m.ndim not in (1, 2):
            raise InputError(f"mask: expected a bool tensor of shape ({n},) or ({B}, {n}) or a Mask, received {describe(mask)}")
        obs = (m != 0).cpu().expand(B, n)
    return obs & ~saturated(G.output_activation, y)


def _witness(G64: Generator, z: Tensor, rows: Tensor) -> dict[str, Any] | None:
    """``z' = z + t d`` with ``d`` a null direction of the local Jacobian on ``rows``, verified."""
    J = torch.autograd.functional.jacobian(lambda v: G64.forward_unchecked(v[None])[0], z)[rows]
    if _rank(J) >= z.numel():
        return None
    d = torch.linalg.svd(J, full_matrices=True).Vh[-1]
    y0 = G64.forward_unchecked(z[None])[0][rows]
    tol = 1e3 * torch.finfo(torch.float64).eps * max(1.0, float(y0.norm()))
    for t in (1e-2, 1e-4, 1e-6):
        z2 = z + t * max(1.0, float(z.norm())) * d
        gap = float((G64.forward_unchecked(z2[None])[0][rows] - y0).norm())
        if gap <= tol:
            return {"z_alt": z2.tolist(), "distance": float((z2 - z).norm()), "image_gap": gap}
    return None


def certify_invertible(G: Generator, z: Any, *, mask: Any = None, measure: Any = None, certificate: Any,
                       condition: Any) -> Any:
    """The rank-condition certificate of each signal ``G(z)`` (module docstring).

    Parameters
    ----------
    G : Generator
        Every hidden activation invertible.
    z : Tensor of shape (n_0,) or (B, n_0), or SolveResult
    mask : Tensor of shape (n,) or (B, n), bool, or Mask, optional
        Observed pixels.
    measure : Mask or None
        A general operator is not supported here (InputError).
    certificate, condition : type
        :class:`geninv.certificates.Certificate` and :class:`geninv.certificates.Condition` (passed
        in by :func:`geninv.certificates.certify`, which dispatches here).

    Returns
    -------
    Certificate (1-D ``z``) or list of Certificate; conditions with ``theorem="Rank condition"``,
    in the table's "Thm1 signal" column (the per-signal uniqueness condition of each layer).
    """
    from geninv._validate import as_batch
    from geninv.operators import Mask
    from geninv.solvers.result import SolveResult

    for i, a in enumerate(G.hidden_activations):
        if not a.invertible:
            raise UnsupportedLayerError(f"G: the rank certificate expected invertible hidden layers, received hidden layer "
                                        f"{i + 1} with {a.name}")
    if measure is not None:
        if not isinstance(measure, Mask):
            raise InputError(f"measure: the rank certificate takes a Mask or None, received {describe(measure)}")
        mask = measure if mask is None else mask
    if isinstance(z, SolveResult):
        z = z.z
    if not isinstance(z, Tensor):
        raise InputError(f"z: expected latents of shape ({G.latent_dim},) or (B, {G.latent_dim}), received {describe(z)}")
    single = z.ndim == 1
    G64 = G.to(device="cpu", dtype=torch.float64)
    zz = as_batch(z, G.latent_dim, "z").detach().cpu().to(torch.float64)
    y = G64.forward_unchecked(zz)
    rows = _rows(G64, y, mask)
    Ws = G64.weights
    L = G64.n_hidden
    hidden_ranks = [_rank(Ws[i]) for i in range(L)]
    certs = []
    for k in range(zz.shape[0]):
        r_img = _rank(Ws[-1][rows[k]])
        m_k = int(rows[k].sum())
        conds = [condition("thm1", "Rank condition", L, f"rank(W_{L + 1}^M) = n_{L}",
                           f"rank {r_img} of {Ws[-1].shape[1]} columns, {m_k} observed rows",
                           HOLDS if r_img == Ws[-1].shape[1] else FAILS)]
        for i in range(L - 1, -1, -1):
            n_in = Ws[i].shape[1]
            conds.append(condition("thm1", "Rank condition", i, f"rank(W_{i + 1}) = n_{i}",
                                   f"rank {hidden_ranks[i]} of {n_in} columns, {Ws[i].shape[0]} rows",
                                   HOLDS if hidden_ranks[i] == n_in else FAILS))
        ok = all(c.verdict == HOLDS for c in conds)
        witness = None if ok else _witness(G64, zz[k], rows[k])
        if ok:
            unique, reason = True, "every rank condition holds: each layer's inverse is unique"
        elif witness is not None:
            unique, reason = False, "a rank condition fails and a second latent with the same observed image was verified"
        else:
            unique, reason = None, "a rank condition fails (sufficient conditions only) and no second latent was found"
        certs.append(certificate(dims=list(G.dims), cardinalities=list(G.dims[1:-1]), output_rows=m_k, conditions=conds,
                                 theorem2=None, unique=unique, reason=reason, witness=witness,
                                 activation=G.output_activation.name,
                                 notes=["invertible hidden layers: the rank conditions replace Theorem 1's sparsity "
                                        "conditions; Corollary 1 and Theorem 2 do not apply (no sparse layer)"]))
    return certs[0] if single else certs

"""The Oracle's expected error under white noise (Theorem 3): per layer, to first order in the
noise level, end to end or layer by layer (the paper's Algorithm 1)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from geninv.exceptions import InputError
from geninv.model.generator import Generator
from geninv.solvers.checks import check_generator
from geninv.solvers.linalg import one_thread
from geninv.solvers.measurement import resolve_measurement
from geninv.solvers.network import support_affine

__all__ = ["oracle_expected_error"]


def oracle_expected_error(
    G: Generator,
    z: Tensor,
    sigma: float | Tensor,
    *,
    measure: Any = None,
    mask: Tensor | None = None,
    mode: str = "end_to_end",
    supports: Sequence[Tensor] | None = None,
) -> dict[str, Tensor]:
    """Theorem 3 made concrete: the Oracle's expected squared error per layer under white noise.

    Parameters
    ----------
    G : Generator
    z : Tensor of shape (B, n_0)
        The true latents.
    sigma : float or Tensor of shape (B,)
        Noise standard deviation on each observed entry.
    measure, mask :
        As in :func:`geninv.invert`.
    mode : {"end_to_end", "layerwise"}
        ``"end_to_end"``: least squares of ``z`` through the whole network with the true
        supports (``geninv.oracle(..., mode="end_to_end")``, the best unbiased estimate that
        knows the supports). ``"layerwise"``: the paper's Algorithm 1 (one pseudo-inverse per
        layer, on ``phi^{-1}(y)``; pixel mask or none).
    supports : list of bool Tensors (B, n_i), optional
        Default: those of ``G(z)``.

    Returns
    -------
    dict
        ``{"z": (B,), "x1": (B,), ..., "xL": (B,), "y": (B,)}``: expected ``||est - true||_2^2``
        (for ``"y"`` the re-synthesis ``G(z_hat)`` on all ``n`` entries), to first order in ``sigma``.

    Notes
    -----
    With the supports frozen the network is affine in ``z`` up to the output activation:
    ``a = J z + c`` (:func:`geninv.solvers.network.support_affine`), and ``x_i = J_i z + c_i``.

    * End to end: linearizing ``phi`` at the truth, ``y = phi(a) + e`` gives the linear model with
      ``K = A diag(phi'(a)) J``; least squares has covariance ``C = sigma^2 (K^T K)^{-1}``, so
      ``E||z_hat - z||^2 = sigma^2 tr((K^T K)^{-1})`` (exact when ``phi`` is the identity: then
      ``K = A P`` with ``P = W_{L+1} D_L W_L ... D_1 W_1`` the composed supported map), and
      ``E||x_i_hat - x_i||^2 = tr(J_i C J_i^T)``, ``E||G(z_hat) - G(z)||^2 = tr(Q C Q^T)`` with
      ``Q = diag(phi'(a)) J``.
    * Layerwise: ``x_L_hat = pinv(M W_{L+1}[:, S_L]) M (phi^{-1}(y) - b)`` has error ``P_L D e``,
      ``D = diag((phi^{-1})'(y))``, and every later pseudo-inverse is applied to the previous
      error: ``E_i = pinv(W_{i+1}[S_{i+1}, S_i]) E_{i+1}[S_{i+1}]``; ``E||.||^2 = sigma^2 ||E_i D||_F^2``.
      The error of layer ``i`` lives on ``s_i`` coordinates and the image-layer pseudo-inverse
      keeps ``s_L`` of the ``n`` noise dimensions: the ``s_i`` scaling and the ``s_L / n``
      attenuation of Theorem 3 (for Gaussian ``W``, ``E||x_L_hat - x_L||^2 ~ sigma^2 s_L n_L / (n - s_L)``).
    """
    G = check_generator(G)
    z = z.to(torch.float64)
    B = z.shape[0]
    G64 = G.to(dtype=torch.float64)
    y0 = G64.forward_unchecked(z)
    yy, meas = resolve_measurement(measure, mask, G64, y0 if measure is None or hasattr(measure, "mask") else
                                   measure.forward(y0))
    sig = torch.as_tensor(sigma, dtype=torch.float64).flatten().expand(B)
    tr = G64.trace(z)
    sup = list(tr.supports) if supports is None else [s.to(torch.bool) for s in supports]
    phi = G64.output_activation
    names = [f"x{i + 1}" for i in range(G.n_hidden)]
    out: dict[str, Tensor] = {}
    if mode == "end_to_end":
        J, c = support_affine(G64, sup, B, dtype=torch.float64)
        a = torch.baddbmm(c.unsqueeze(-1), J, z.unsqueeze(-1)).squeeze(-1)
        Q = phi.derivative(a)[:, :, None] * J
        K = meas.apply_cols(Q)
        with one_thread():
            C = torch.linalg.pinv(K.transpose(1, 2) @ K, hermitian=True) * sig[:, None, None] ** 2
        out["z"] = C.diagonal(dim1=1, dim2=2).sum(dim=1)
        Ji = None
        for i, name in enumerate(names):
            si = sup[i].to(torch.float64)
            Ji = si[:, :, None] * (G64.weights[0][None] if Ji is None else G64.weights[i] @ Ji)
            out[name] = ((Ji @ C) * Ji).sum(dim=(1, 2))
        out["y"] = ((Q @ C) * Q).sum(dim=(1, 2))
        return out
    if mode != "layerwise":
        raise InputError(f"mode: expected 'end_to_end' or 'layerwise', received {mode!r}")
    if not (meas.diagonal and phi.invertible):
        raise InputError("mode: 'layerwise' needs an invertible output activation and a pixel mask or no measure")
    W = G64.weights[-1]
    wob = meas.w if meas.w is not None else torch.ones(B, W.shape[0], dtype=torch.float64)
    a = tr.pre[-1]
    d = 1.0 / phi.derivative(a)  # (phi^{-1})'(y) at the clean image
    L = G.n_hidden
    M = wob[:, :, None] * W[None] * sup[-1].to(torch.float64)[:, None, :]  # (B, n, n_L)
    with one_thread():
        E = torch.linalg.pinv(M) * (wob * d)[:, None, :]  # (B, n_L, n): error of x_L = E e
        errs = {names[-1]: E}
        for i in range(L - 1, 0, -1):
            Mi = sup[i].to(torch.float64)[:, :, None] * G64.weights[i][None] * sup[i - 1].to(torch.float64)[:, None, :]
            E = torch.linalg.pinv(Mi) @ E
            errs[names[i - 1]] = E
        M1 = sup[0].to(torch.float64)[:, :, None] * G64.weights[0][None]
        Ez = torch.linalg.pinv(M1) @ E
    out["z"] = sig**2 * Ez.square().sum(dim=(1, 2))
    for name in names:
        out[name] = sig**2 * errs[name].square().sum(dim=(1, 2))
    Jz, c = support_affine(G64, sup, B, dtype=torch.float64)
    Qy = phi.derivative(tr.pre[-1])[:, :, None] * Jz @ Ez
    out["y"] = sig**2 * Qy.square().sum(dim=(1, 2))
    return out

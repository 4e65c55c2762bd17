"""Refinement on the whole network: the regularized data fit ``1/2 ||A (y - G(z))||^2 +
gamma/2 ||z||^2``, its Levenberg-Marquardt minimization with supports re-read at every step,
and the largest fit value that counts as explaining ``y``."""

from __future__ import annotations

import torch
from torch import Tensor

from geninv.model.generator import Generator
from geninv.solvers.measurement import Measurement
from geninv.solvers.network import AffineCache, hidden_layers, support_affine

__all__ = ["network_fit", "gauss_newton_refine", "fit_threshold"]


def network_fit(G: Generator, y: Tensor, z: Tensor, meas: Measurement, gamma: Tensor | float = 0.0) -> Tensor:
    """``1/2 ||A (y - G(z))||^2 + gamma/2 ||z||^2`` per sample (B,), in ``z``'s dtype (no checks)."""
    r = meas.apply(G.forward_unchecked(z)) - y
    val = 0.5 * r.square().sum(dim=1)
    g = torch.as_tensor(gamma, dtype=z.dtype, device=z.device)
    if bool((g != 0).any()):
        val = val + 0.5 * g * z.square().sum(dim=1)
    return val


def gauss_newton_refine(
    G: Generator,
    y: Tensor,
    meas: Measurement,
    z0: Tensor,
    *,
    gamma: Tensor | float = 0.0,
    max_iter: int = 50,
    tol: float = 1e-12,
    rel_decrease: float = 0.0,
    jac_dtype: torch.dtype = torch.float64,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Levenberg-Marquardt on the whole network from ``z0``, supports re-read at every step.

    Minimizes ``F(z) = 1/2 ||A (y - G(z))||^2 + gamma/2 ||z||^2`` per sample, in float64.

    Parameters
    ----------
    G : Generator
    y : Tensor of shape (B, m)
    meas : Measurement
        From :func:`geninv.solvers.measurement.resolve_measurement`.
    z0 : Tensor of shape (B, n_0)
    gamma : float or Tensor of shape (B,)
        Gaussian-prior weight (``sigma^2 / sigma_z^2`` for the MAP estimate; 0 for least squares).
    max_iter : int
        Gauss-Newton steps per sample (each accepted or rejected step counts).
    tol : float
        A sample stops after an accepted step with ``||dz|| <= tol ||z||``.
    rel_decrease : float
        A sample also stops after an accepted step that lowers ``F`` by at most
        ``rel_decrease F`` (default 0: off). Noisy data: Gauss-Newton converges linearly to a
        nonzero residual ``F ~ sigma^2 (m - n_0) / 2`` and such a step changes the fit far less
        than its statistical error; exact data converge quadratically (the decrease is about
        ``F`` itself) and never trigger it.
    jac_dtype : torch.dtype
        Precision of the supported Jacobian products (default float64; float32 for float32 data
        halves the cost of a step and only perturbs its direction, the acceptance test stays in
        float64).

    Returns
    -------
    z : Tensor (B, n_0), float64
    objective : Tensor (B,), float64, ``F(z)``
    n_iter : Tensor (B,), int64
    converged : Tensor (B,), bool

    Notes
    -----
    At ``z_k`` the ReLU supports ``D_i = diag(W_i x_{i-1} + b_i > 0)`` are read off the network
    and the output pre-activation is the affine map ``a = J z + c`` of
    :func:`geninv.solvers.network.support_affine` (exact on the linear piece containing ``z_k``).
    With ``q = phi'(a)`` and the Jacobian ``K = A diag(q) J``::

        dz = -(K^T K + gamma I + d_k s_k I)^{-1} (K^T r_k + gamma z_k),   r_k = A phi(a) - y
        z_{k+1} = z_k + dz   if F(z_k + dz) <= F(z_k)  (F on the true network: the step may
                                                        cross into another linear piece)
        d_{k+1} = 0.3 d_k on acceptance, 10 d_k on rejection   (d_0 = 1e-6, s_k = mean diag K^T K)

    so ``F`` never increases. Near a solution where no unit sits on its kink the supports are
    constant and this is Gauss-Newton on a smooth least-squares problem: quadratic convergence
    for zero-residual (noiseless) data. A step costs ``B`` solves of size ``n_0`` and, for the
    samples whose supports changed since their last step, one supported-Jacobian product
    ``sum_i n_i n_{i-1} n_0`` each (the map is kept per sample; near the solution the supports
    stop changing); no per-sample Python loop; finished samples leave the working batch.
    """
    G64 = G.to(dtype=torch.float64) if G.dtype != torch.float64 else G
    phi = G64.output_activation
    y = y.to(torch.float64)
    z = z0.to(torch.float64).clone()
    B, n0 = z.shape
    dev = z.device
    gam = torch.as_tensor(gamma, dtype=torch.float64, device=dev).flatten()
    gam = gam.expand(B).clone() if gam.numel() == 1 else gam.clone()
    obj = network_fit(G64, y, z, meas, gam)
    n_iter = torch.zeros(B, dtype=torch.int64, device=dev)
    converged = torch.zeros(B, dtype=torch.bool, device=dev)
    damp = torch.full((B,), 1e-6, dtype=torch.float64, device=dev)
    eye = torch.eye(n0, dtype=torch.float64, device=dev)
    idx = torch.arange(B, device=dev)
    # Nothing to gain below the rounding level of the data fit.
    y_obs = meas.observed(y)
    floor = 0.5 * (64 * torch.finfo(torch.float64).eps * y_obs.norm(dim=1)) ** 2
    done0 = (obj <= floor) & (gam == 0)
    converged |= done0
    idx = idx[~done0]
    cache = AffineCache(G64, B, jac_dtype, jac_dtype)
    for _ in range(max_iter):
        if idx.numel() == 0:
            break
        zb, yb, gb = z[idx], y[idx], gam[idx]
        mb = meas.subset(idx)
        sups = [x > 0 for x in hidden_layers(G64, zb)]
        # The affine map depends on the supports only: rebuilt just where they changed.
        J, c = cache.maps(idx, sups, lambda s, k: support_affine(G64, s, k, dtype=jac_dtype))
        J, c = J.to(torch.float64), c.to(torch.float64)
        a = torch.baddbmm(c.unsqueeze(-1), J, zb.unsqueeze(-1)).squeeze(-1)
        r = mb.apply(phi(a)) - yb
        K = mb.apply_cols(phi.derivative(a)[:, :, None] * J)
        del J, c
        H = K.transpose(1, 2) @ K
        g = (K.transpose(1, 2) @ r.unsqueeze(-1)).squeeze(-1) + gb[:, None] * zb
        del K
        H = H + gb[:, None, None] * eye
        sc = H.diagonal(dim1=1, dim2=2).mean(dim=1).clamp_min(torch.finfo(torch.float64).tiny)
        dz = -torch.linalg.solve(H + (damp[idx] * sc)[:, None, None] * eye, g.unsqueeze(-1)).squeeze(-1)
        z_new = zb + dz
        o_new = network_fit(G64, yb, z_new, mb, gb)
        acc = (o_new <= obj[idx]) & torch.isfinite(o_new)
        obj_old = obj[idx]
        z[idx] = torch.where(acc[:, None], z_new, zb)
        obj[idx] = torch.where(acc, o_new, obj[idx])
        damp[idx] = torch.where(acc, damp[idx] * 0.3, damp[idx] * 10.0).clamp(1e-12, 1e12)
        n_iter[idx] += 1
        small = dz.norm(dim=1) <= tol * zb.norm(dim=1).clamp_min(1e-30)
        at_floor = (obj[idx] <= floor[idx]) & (gb == 0)
        if rel_decrease:
            small = small | (obj_old - obj[idx] <= rel_decrease * obj[idx])
        ok = (acc & small) | at_floor
        stuck = damp[idx] >= 1e12  # no descent direction left at rounding level: a (local) minimum
        converged[idx] = ok | stuck
        idx = idx[~(ok | stuck)]
    return z, obj, n_iter, converged


def fit_threshold(y: Tensor, meas: Measurement, sigma: Tensor | None, fit_tol: float) -> Tensor:
    """The largest data-fit value ``1/2 ||A (y - G(z))||^2`` that counts as explaining ``y`` (B,).

    Noiseless (``sigma`` None or 0): ``1/2 (fit_tol ||y_obs||)^2``. With white noise of standard
    deviation ``sigma`` on ``m`` observed entries: ``1/2 sigma^2 (m + 4 sqrt(2 m))``, four standard
    deviations above the mean of ``||e||^2 / sigma^2 ~ chi^2_m`` (the true ``z`` fits at about
    ``sigma^2 m``; a local minimum of the wrong basin much worse). Both terms are added.
    """
    y64 = y.to(torch.float64)
    yo = meas.observed(y64)
    m = meas.n_observed(y64).to(torch.float64)
    thr = 0.5 * (fit_tol * yo.norm(dim=1)) ** 2
    if sigma is not None:
        s = sigma.to(torch.float64)
        thr = thr + 0.5 * s**2 * (m + 4.0 * torch.sqrt(2.0 * m))
    return thr

"""The network with frozen ReLU supports as an affine map of ``z``, the hidden layers at ``z``,
and the true objective ``1/2 ||A (y - G(z))||^2``."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor

from geninv.model.generator import Generator
from geninv.model.layer_ops import LinearMap, apply, apply_t, cast, left_apply
from geninv.solvers.measurement import Measurement

__all__ = ["support_affine", "hidden_affine", "hidden_layers", "downward", "network_objective", "output_preactivation", "AffineCache",
           "FrozenNetwork"]


def support_affine(G: Generator, supports: Sequence[Tensor], supports_batch: int = 1,
                   dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """The network with frozen ReLU supports as an affine map of ``z``.

    Returns ``J`` (B, n, n_0) and ``c`` (B, n), in ``dtype``, such that the output
    pre-activation is ``a = J z + c`` when every hidden layer ``i`` is ``D_i (W_i x_{i-1} + b_i)``
    with ``D_i = diag(supports[i])``. Cost ``B sum_i n_i n_{i-1} n_0`` (products from the
    latent side, where ``n_0`` is small).
    """
    Ws = [cast(W, dtype) for W in G.maps]  # a matrix-free layer is applied as its operator
    bs = [b.to(dtype) for b in G.biases]
    if G.n_hidden == 0:
        B = supports_batch
        return G.weight(0).to(dtype)[None].expand(B, -1, -1), bs[0][None].expand(B, -1)
    J, c = hidden_affine(Ws, bs, supports, dtype)
    B, n0 = c.shape[0], Ws[0].shape[1]
    J = left_apply(Ws[-1], J.reshape(J.shape[0], B * n0)).reshape(-1, B, n0).transpose(0, 1)
    c = apply(Ws[-1], c, bs[-1])
    return J, c


def hidden_affine(Ws: Sequence[LinearMap], bs: Sequence[Tensor], supports: Sequence[Tensor],
                   dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """The last hidden layer as an affine map of ``z`` with frozen supports: ``x_L = M z + c``.

    Returns ``M`` laid out as (n_L, B, n_0) (each layer is one plain matrix product ``W_i @ M``,
    a single GEMM with ``B n_0`` columns, ~2x faster on CPU than a broadcast batched product)
    and ``c`` (B, n_L). A matrix-free ``W_i`` is applied to the ``B n_0`` columns as one batch.
    """
    B = supports[0].shape[0]
    n0 = Ws[0].shape[1]
    s0 = supports[0].to(dtype)
    W0 = left_apply(Ws[0], torch.eye(n0, dtype=dtype, device=s0.device)) if not isinstance(Ws[0], Tensor) else Ws[0]
    # The supports are 0 / 1, so every product below is exact; they are laid out in full (a
    # broadcast product in bfloat16 is several times slower on CPU than a dense one).
    wide = torch.float32 if dtype in (torch.bfloat16, torch.float16) else dtype
    J = (s0.T.to(wide)[:, :, None] * W0.to(wide)[:, None, :]).to(dtype)
    c = s0 * bs[0][None]
    for i in range(1, len(supports)):
        si = supports[i].to(dtype)
        J = left_apply(Ws[i], J.reshape(J.shape[0], B * n0)).reshape(-1, B, n0)
        J = J * si.T[:, :, None].expand(-1, -1, n0).contiguous()
        c = si * apply(Ws[i], c, bs[i])
    return J, c


def network_objective(G: Generator, y: Tensor, z: Tensor, meas: Measurement) -> Tensor:
    """``1/2 ||A (y - G(z))||^2`` per sample, in float64 (the true, non-frozen network)."""
    G64 = G.to(dtype=torch.float64)
    p = G64.forward_unchecked(z.to(torch.float64))
    return 0.5 * (meas.apply(p) - y.to(torch.float64)).square().sum(dim=1)


def downward(G: Generator, *, dense: bool = False, last: int = 0) -> Iterator[tuple[int, str, LinearMap, Tensor]]:
    """The hidden layers in the order a layer-by-layer pursuit solves them, from the top down:
    ``(i, stage, W_{i+1}, b_{i+1})`` for ``i = n_hidden - 1, ..., last``, where
    ``x_{i+1} = relu(W_{i+1} x_i + b_{i+1})`` (``x_0 = z``) and ``stage`` names the unknown ``x_i``
    (``"z"`` for ``i = 0``). ``W`` is :attr:`Generator.maps`' entry (a matrix-free layer's
    operator), or with ``dense`` the matrix (:attr:`Generator.weights`)."""
    Ws = G.weights if dense else G.maps
    for i in range(G.n_hidden - 1, last - 1, -1):
        yield i, ("z" if i == 0 else f"x{i}"), Ws[i], G.biases[i]


def hidden_layers(G: Generator, z: Tensor) -> list[Tensor]:
    """``[x_1, ..., x_L]`` of the network at ``z`` (no argument checks; NaN passes through)."""
    xs = []
    x = z
    for layer in G.layers[:-1]:
        x = layer(x)
        xs.append(x)
    return xs


def output_preactivation(G: Generator, supports: Sequence[Tensor], z: Tensor) -> Tensor:
    """``a = W_{L+1} x_L + b_{L+1}`` in float64 with every hidden support frozen (D_i (W_i x + b_i))."""
    x = z.to(torch.float64)
    for i, (W, b) in enumerate(zip(G.maps, G.biases)):
        x = apply(cast(W, torch.float64), x, b.to(torch.float64))
        if i < G.n_hidden:
            x = x * supports[i].to(torch.float64)
    return x


class FrozenNetwork:
    """The network with frozen hidden supports as a per-sample linear operator on ``z``:
    ``v -> W_{L+1} D_L W_L ... D_1 W_1 v`` (B, n_0) -> (B, n), the ``J_b`` of :func:`support_affine`
    without forming it (each layer through its map: a matrix, or a matrix-free operator), in
    ``dtype`` (default float64).

    Parameters
    ----------
    G : Generator
    supports : sequence of bool Tensor (B, n_i)
        One row per sample: row ``b`` of every batch given to :meth:`forward` / :meth:`adjoint`
        is sample ``b``.
    dtype : torch.dtype
        Precision of the products (the inputs are converted to it).
    """

    matrix_free = True

    def __init__(self, G: Generator, supports: Sequence[Tensor], dtype: torch.dtype = torch.float64) -> None:
        self.dtype = dtype
        self.maps = [cast(W, dtype) for W in G.maps]
        self.masks = [s_.to(dtype) for s_ in supports]
        self.shape = (G.output_dim, G.latent_dim)

    def forward(self, v: Tensor) -> Tensor:
        x = v.to(self.dtype)
        for i, W in enumerate(self.maps):
            x = apply(W, x)
            if i < len(self.masks):
                x = x * self.masks[i]
        return x

    def adjoint(self, u: Tensor) -> Tensor:
        g = u.to(self.dtype)
        for i in range(len(self.maps) - 1, -1, -1):
            if i < len(self.masks):
                g = g * self.masks[i]
            g = apply_t(self.maps[i], g)
        return g


class AffineCache:
    """The fixed-support network's affine maps ``G(z) = phi(J_b z + c_b)`` of a batch, rebuilt
    per sample only where its supports change (the refinements re-read the supports each step,
    and most steps change none).

    Parameters
    ----------
    G : Generator
    batch : int
    jac_dtype : torch.dtype
        Precision kept for ``J_b`` (B, n, n_0).
    offset_dtype : torch.dtype, optional
        Precision kept for ``c_b`` (B, n); None: no offset kept (:meth:`refresh` only, for a
        caller that computes the pre-activation on the network itself).
    """

    def __init__(self, G: Generator, batch: int, jac_dtype: torch.dtype, offset_dtype: torch.dtype | None = None) -> None:
        dev = G.device
        n_out = G.dims[-1]
        self.J = torch.empty(batch, n_out, G.latent_dim, dtype=jac_dtype, device=dev)
        # No offset kept where the caller computes the pre-activation on the network itself.
        self.c = torch.empty(batch, n_out if offset_dtype is not None else 0, dtype=offset_dtype or jac_dtype,
                             device=dev)
        self.supports = [torch.zeros(batch, n, dtype=torch.bool, device=dev) for n in G.dims[1:-1]]
        self.have = torch.zeros(batch, dtype=torch.bool, device=dev)

    def _stale(self, idx: Tensor, supports: Sequence[Tensor]) -> Tensor:
        """The samples of ``idx`` (a bool mask over it) whose map is missing or whose supports changed;
        their supports are recorded."""
        stale = ~self.have[idx]
        for s_new, s_old in zip(supports, self.supports):
            stale |= (s_new != s_old[idx]).any(dim=1)
        if bool(stale.any()):
            st = idx[stale]
            for s_new, s_old in zip(supports, self.supports):
                s_old[st] = s_new[stale]
            self.have[st] = True
        return stale

    def maps(self, idx: Tensor, supports: Sequence[Tensor],
             build: Callable[[list[Tensor], int], tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
        """``(J_b, c_b)`` of the samples ``idx`` with hidden ``supports`` (each (len(idx), n_i)),
        ``build(stale_supports, count)`` called once for the samples whose supports changed."""
        stale = self._stale(idx, supports)
        if bool(stale.any()):
            st = idx[stale]
            self.J[st], self.c[st] = build([x[stale] for x in supports], st.numel())
        return self.J[idx], self.c[idx]

    def refresh(self, idx: Tensor, supports: Sequence[Tensor], build: Callable[[list[Tensor], int], Tensor]) -> Tensor:
        """Build ``J_b`` (in :attr:`J`) for the samples of ``idx`` whose supports changed, ``build``
        returning their ``J`` (no offset: for a caller that computes the pre-activation on the
        network itself); returns which of ``idx`` were built (len(idx),) bool."""
        stale = self._stale(idx, supports)
        if bool(stale.any()):
            st = idx[stale]
            self.J[st] = build([x[stale] for x in supports], st.numel())
        return stale

"""Setting up a gradient method: the public arguments checked once, the data fit built.

``G`` is a geninv :class:`~geninv.model.generator.Generator` (any hidden activations; a ReLU
chain gets the hand-written gradient) or any differentiable callable ``G(z)`` given with its
latent size; the measurement is resolved once
(:meth:`geninv.solvers.measurement.Measurement.for_width`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from geninv.exceptions import InputError, describe
from geninv.model.activations import Activation
from geninv.model.generator import Generator
from geninv.solvers.data_fit import DataFit
from geninv.solvers.measurement import Measurement

__all__ = ["LatentMap", "setup_fit", "callable_latent_fn", "latent_size", "initial_latent", "check_int", "check_float"]

#: A differentiable callable ``G(z)``: latents (B, n_0) to signals (B, ...).
LatentMap = Callable[[Tensor], Tensor]


def callable_latent_fn(G: LatentMap, latent_dim: object,
                       y: object) -> tuple[Callable[[Tensor], Tensor], int, tuple[int, ...]]:
    """A callable ``G(z)`` as ``(B, n_0) -> (B, n)`` on the dtype of ``y``.

    Returns ``(fn, n_0, output shape)``; ``G`` is probed once on zeros of shape (2, n_0), so a
    callable that does not take latents of that size fails here with an :class:`InputError`.
    """
    if latent_dim is None:
        hint = " (or convert a chain-structured module with geninv.Generator.from_torch)" if isinstance(G, torch.nn.Module) else ""
        raise InputError(f"latent_dim: expected the latent size n_0 of the callable G{hint}, received None")
    n0 = check_int(latent_dim, "latent_dim", 1)
    dt = y.dtype if isinstance(y, Tensor) and y.is_floating_point() else torch.get_default_dtype()
    dev = y.device if isinstance(y, Tensor) else torch.device("cpu")
    p = next(iter(G.parameters()), None) if isinstance(G, torch.nn.Module) else None
    gdt = p.dtype if p is not None else dt
    if p is not None:
        dev = p.device

    def fn(z: Tensor) -> Tensor:
        out = G(z.to(dev, gdt))
        return out.reshape(z.shape[0], -1).to(z.device, z.dtype)

    with torch.no_grad():
        try:
            probe = G(torch.zeros(2, n0, dtype=gdt, device=dev))
        except Exception as e:
            raise InputError(f"G: expected a callable taking latents of shape (B, {n0}) (latent_dim={n0}), received one "
                             f"that fails on them ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(probe, Tensor) or probe.ndim < 2 or probe.shape[0] != 2 or not probe.is_floating_point():
        raise InputError(f"G: expected G(z) of shape (B, ...) for z of shape (B, {n0}), received {describe(probe)} for B = 2")
    return fn, n0, tuple(int(d) for d in probe.shape[1:])


def setup_fit(G: object, y: object, measure: object | None, method: str,
              latent_dim: object = None) -> tuple[Generator | None, Tensor, DataFit, float]:
    """Validate the public arguments of a gradient method.

    Returns ``(G, y, fit, op_norm)``: the generator on ``y``'s device and dtype (None for a
    callable), ``y`` as a (B, m) batch, its :class:`~geninv.solvers.data_fit.DataFit` and ``||A||_2``.

    ``y`` is (B, n) (or in the generator's output shape) for no operator, an Identity or a Mask, and
    the measurements (B, m) for any other operator (the convention of :func:`geninv.invert`).
    """
    fn: Callable[[Tensor], Tensor] | None = None
    hidden_fn: Callable[[Tensor], list[Tensor]] | None = None
    certificate = None
    if isinstance(G, Generator):
        if latent_dim is not None and latent_dim != G.latent_dim:
            raise InputError(f"latent_dim: expected None or {G.latent_dim} (the generator's), received {latent_dim!r}")
        y = G.flatten_output(y)
        n = G.output_dim
        out_shape: tuple[int, ...] = G.output_shape
    elif callable(G):
        fn, n0, out_shape = callable_latent_fn(G, latent_dim, y)
        n = math.prod(out_shape)
        if isinstance(y, Tensor) and y.ndim in (len(out_shape), len(out_shape) + 1) and tuple(y.shape[-len(out_shape):]) == out_shape:
            y = y.reshape(-1, n)
        certificate = ("not available: G is an arbitrary callable, so nothing is known of its layers "
                       "(no uniqueness or stability certificate; the result is a local minimum of the data fit)")
    else:
        raise InputError(f"G: expected a geninv Generator or a callable G(z) with latent_dim=, received {describe(G)}")
    yy, meas = Measurement.for_width(measure, n, y)
    yy = yy.detach()
    if isinstance(G, Generator):
        GG: Generator | None = G.like(yy)
        assert GG is not None
        # A matrix-free layer (no dense W for the hand-written pass) runs through autograd.
        Ws = [] if GG.matrix_free else [W.detach() for W in GG.weights]
        bs = [b.detach() for b in GG.biases]
        phi = GG.output_activation
        if not GG.relu_hidden or GG.matrix_free:
            G_ = GG
            fn = G_.forward_unchecked

            def hidden_fn(z: Tensor) -> list[Tensor]:
                return G_.trace(z).hidden

        if not GG.relu_hidden:
            i = next(i for i, a in enumerate(GG.hidden_activations) if a.name != "relu")
            certificate = (f"not available: hidden layer {i + 1} uses {GG.hidden_activations[i].name}; the certificates "
                           "(Theorem 1, Corollary 1) are for ReLU hidden layers")
    else:
        GG, Ws, bs, phi = None, [], [], Activation("identity")
    fit = DataFit(Ws, bs, phi, meas, yy, fn=fn, hidden_fn=hidden_fn, certificate=certificate)
    if meas.is_identity:
        return GG, yy, fit, 1.0
    op_norm = float(measure.norm())  # type: ignore[union-attr]
    # A pixel mask (possibly different per sample) has norm at most 1.
    return GG, yy, fit, min(op_norm, 1.0) if meas.diagonal else op_norm

def latent_size(G: Generator | None, latent_dim: object) -> int:
    """``n_0``: the generator's, or the checked ``latent_dim`` of a callable."""
    return G.latent_dim if G is not None else int(latent_dim)  # type: ignore[call-overload]


# Salt of the start's stream: without it ``seed=s`` would start exactly at ``G.sample(B, seed=s)``'s
# latents (the same CPU float64 normal stream), a planted solution handed to the solver.
_SEED_SALT = 0x5EED_57A2_7000


def initial_latent(B: int, n0: int, seed: int, like: Tensor) -> Tensor:
    """``z ~ N(0, I)`` (B, n_0) from a CPU generator seeded from ``seed`` (the same on every device)."""
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int(seed) + _SEED_SALT)
    return torch.randn(B, n0, generator=gen, dtype=torch.float64).to(like.device, like.dtype)


def check_int(value: object, name: str, minimum: int) -> int:
    """``value`` as an int ``>= minimum`` (bool refused), else an InputError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{name}: expected an int >= {minimum}, received {value!r}")
    return value


def check_float(value: object, name: str, *, positive: bool = True, upper: float | None = None) -> float:
    """``value`` as a finite float, ``> 0`` (``>= 0`` without ``positive``) and ``< upper``, else an InputError."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))
    if ok and positive:
        ok = float(value) > 0  # type: ignore[arg-type]
    if ok and upper is not None:
        ok = float(value) < upper  # type: ignore[arg-type]
    if not ok:
        rng = ("> 0" if positive else ">= 0") + (f" and < {upper}" if upper is not None else "")
        raise InputError(f"{name}: expected a finite number {rng}, received {value!r}")
    return float(value)  # type: ignore[arg-type]

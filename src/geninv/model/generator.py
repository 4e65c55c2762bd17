"""The generator model ``y = phi(W_{L+1} phi_L(W_L ... phi_1(W_1 z + b_1) ... + b_L) + b_{L+1})``.

The paper's model has ``phi_i = relu`` on every hidden layer; a generator read from a torch module
may use any elementwise activation there (the pursuits then refuse it, gradient methods and the
layer-wise inverse of invertible activations do not).
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from geninv._validate import as_batch, as_device, as_dtype, as_int
from geninv.exceptions import (
    GenInvError,
    InputError,
    ModelFileError,
    NumericalError,
    ShapeError,
    UnsupportedLayerError,
    describe,
)
from geninv.model.activations import Activation, get_activation
from geninv.model.io import read_layers, write_layers
from geninv.model.layer_ops import LayerOperator, LinearMap
from geninv.model.layers import Layer

__all__ = ["Generator", "Trace", "random_generator", "save_generator", "load_generator"]


@dataclass(frozen=True)
class Trace:
    """Every layer of ``G(z)`` for a batch.

    Attributes
    ----------
    pre : list of Tensor
        Pre-activations ``W_i x_{i-1} + b_i`` for ``i = 1..L+1``, each (B, n_i).
    post : list of Tensor
        ``[x_1, ..., x_L, y]``: the hidden layers then the output, each (B, n_i).
    """

    pre: list[Tensor]
    post: list[Tensor]

    @property
    def hidden(self) -> list[Tensor]:
        """``[x_1, ..., x_L]``."""
        return self.post[:-1]

    @property
    def y(self) -> Tensor:
        return self.post[-1]

    @property
    def supports(self) -> list[Tensor]:
        """Boolean supports ``S_i = (x_i > 0)`` of the hidden layers, each (B, n_i)."""
        return [x > 0 for x in self.hidden]

    @property
    def cardinalities(self) -> list[Tensor]:
        """``s_i = |S_i|`` per sample, each (B,) int64."""
        return [s.sum(dim=1) for s in self.supports]


class Generator:
    """A generator ``y = phi(W_{L+1} x_L + b_{L+1})``, ``x_i = phi_i(W_i x_{i-1} + b_i)``, ``x_0 = z``.

    Parameters
    ----------
    layers : sequence of Layer
        ``L + 1`` layers. The paper's model (every pursuit, the Oracle, the certificates) has
        ReLU on all but the last; other hidden activations are accepted for gradient methods
        and, when invertible, for the layer-wise inverse.
    output_shape : tuple of int, optional
        Per-sample shape of ``G(z)`` (e.g. ``(1, 28, 28)``); the default is ``(n,)``. Every
        computation uses the flattened (C-order) signal of width ``n = prod(output_shape)``.
    latent_shape : tuple of int, optional
        Per-sample shape the source module takes its latent in (e.g. ``(100, 1, 1)``); the
        default is ``(n_0,)``. ``z`` may be given flat (B, n_0) or in this shape.

    Examples
    --------
    >>> G = random_generator([20, 200, 600], output="tanh", seed=0)
    >>> y = G(torch.randn(4, 20))
    >>> tuple(y.shape)
    (4, 600)
    """

    def __init__(self, layers: Sequence[Layer], *, output_shape: Sequence[int] | None = None,
                 latent_shape: Sequence[int] | None = None) -> None:
        if isinstance(layers, (Layer, str, bytes)) or not hasattr(layers, "__iter__"):
            raise InputError(f"layers: expected a sequence of geninv Layer, received {type(layers).__name__}")
        layers = list(layers)
        if not layers:
            raise InputError("layers: expected at least one layer, received none")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise InputError(f"layers[{i}]: expected a geninv Layer, received {type(layer).__name__}")
            if i > 0 and layer.n_in != layers[i - 1].n_out:
                raise ShapeError(
                    f"layers[{i}]: expected input width {layers[i - 1].n_out}, received {layer.n_in}"
                )
            if layer.b.dtype != layers[0].b.dtype or layer.b.device != layers[0].b.device:
                raise InputError(f"layers[{i}]: expected the dtype/device of layers[0], received {layer.b.dtype} on {layer.b.device}")
        self.layers: list[Layer] = layers
        self.output_shape: tuple[int, ...] = _shape(output_shape, layers[-1].n_out, "output_shape")
        self.latent_shape: tuple[int, ...] = _shape(latent_shape, layers[0].n_in, "latent_shape")

    # -- construction -----------------------------------------------------------
    @classmethod
    def from_torch(
        cls,
        module: nn.Module,
        example_input: Tensor | None = None,
        check: bool = True,
        *,
        memory_budget: int | None = None,
    ) -> Generator:
        """Read any chain-structured torch module as a generator.

        The module is traced (``torch.fx`` symbolic tracing; where that fails, e.g. on
        data-dependent control flow, one forward pass on ``example_input`` is recorded) into
        a chain of affine maps and elementwise activations, wherever they are applied (inside
        Sequentials or in the owner's ``forward``, e.g. ``torch.sigmoid(self.net(z))``).

        Accepted: ``Linear``, ``Conv1d``/``Conv2d``, ``ConvTranspose1d``/``ConvTranspose2d``
        (any stride, padding, output padding, dilation, groups; bias or none),
        ``BatchNorm1d``/``BatchNorm2d`` in eval mode (folded into the affine map), ``Dropout``
        in eval mode and ``Identity`` (dropped), ``Flatten``/``Unflatten``/``view``/``reshape``,
        ``Upsample`` (nearest, linear, bilinear), products and sums with Python numbers, and
        the activations ReLU, LeakyReLU, Tanh, Sigmoid, Softplus, ELU, GELU, SiLU and
        :class:`geninv.PLU` (modules or functions). Consecutive affine maps are composed; each
        layer's weight is materialized as a dense matrix, exactly (float64 composition).

        Parameters
        ----------
        module : nn.Module
            The generator; batch-norm and dropout must be in eval mode (``module.eval()``).
        example_input : Tensor of shape (B, *latent_shape), optional
            A latent batch (only its per-sample shape is used), needed when the first layer is
            not an ``nn.Linear`` (e.g. a DCGAN taking ``z`` of shape (B, 100, 1, 1)).
        check : bool
            Compare ``G(z)`` with ``module(z)`` on 4 random latents and raise
            UnsupportedLayerError when they differ by more than ``1e4 eps`` times the output's
            scale (naming the largest difference): catches an operation the trace missed.
        memory_budget : int, optional
            Largest dense weight of one layer, in bytes (default 512 MiB). A layer above it is
            kept matrix-free (``layer.W`` None, ``layer.operator`` the module's own operations):
            gd, adam, latent_pursuit, layered_bp, the Oracle's Krylov solves and the debiasing run
            on it; what needs the dense weight (:attr:`weights`: certificates, the dense Oracle,
            the linear program) raises UnsupportedLayerError naming the layer.

        Returns
        -------
        Generator
            With ``output_shape`` the module's per-sample output shape and ``latent_shape``
            its latent's.

        Raises
        ------
        UnsupportedLayerError
            Naming the node and why, for anything that is not such a chain (branches, skip
            connections, attention, batch-norm in training mode, a non-elementwise operation).

        Examples
        --------
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Unflatten(1, (2, 4, 4)),
        ...                     nn.ConvTranspose2d(2, 1, 4, stride=2, padding=1), nn.Tanh())
        >>> G = Generator.from_torch(net)
        >>> G.dims, G.output_shape
        ([8, 32, 64], (1, 8, 8))
        """
        from geninv.model.trace import DEFAULT_MEMORY_BUDGET, chain_from_torch, layers_from_chain

        if not isinstance(check, bool):
            raise InputError(f"check: expected True or False, received {check!r}")
        budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else as_int(memory_budget, "memory_budget", minimum=1)
        if not isinstance(module, nn.Module):
            raise UnsupportedLayerError(f"module: expected a torch nn.Module, received {type(module).__name__}")
        params = list(module.parameters())
        dtype = params[0].dtype if params else torch.get_default_dtype()
        device = params[0].device if params else torch.device("cpu")
        if not dtype.is_floating_point:
            raise UnsupportedLayerError(f"module: expected floating parameters, received {dtype}")
        steps, latent_shape, output_shape, _ = chain_from_torch(module, example_input)
        layers = layers_from_chain(steps, latent_shape, dtype, memory_budget=budget)
        for i in range(1, len(layers)):
            if layers[i].n_in != layers[i - 1].n_out:  # pragma: no cover - guaranteed by the trace
                raise UnsupportedLayerError(f"layer {i + 1}: expected input width {layers[i - 1].n_out}, received "
                                            f"{layers[i].n_in}")
        G = cls([layer.to(device) for layer in layers], output_shape=output_shape, latent_shape=latent_shape)
        if check:
            G._check_against(module)
        return G

    def _check_against(self, module: nn.Module) -> None:
        """UnsupportedLayerError unless ``G(z)`` reproduces ``module(z)`` on 4 random latents."""
        gen = torch.Generator().manual_seed(12345)
        z = torch.randn(4, self.latent_dim, generator=gen, dtype=torch.float64).to(self.device, self.dtype)
        with torch.no_grad():
            ref = module(z.reshape(4, *self.latent_shape))
            if not isinstance(ref, Tensor) or tuple(ref.shape) != (4, *self.output_shape):
                raise UnsupportedLayerError(
                    f"module: expected module(z) of shape (4, {', '.join(map(str, self.output_shape))}) as traced, "
                    f"received {describe(ref)}"
                )
            out = self.forward_unchecked(z).reshape(ref.shape)
        diff = (out.to(torch.float64) - ref.to(torch.float64)).abs()
        scale = max(1.0, float(ref.abs().max()))
        tol = 1e4 * torch.finfo(self.dtype).eps * scale
        worst = float(diff.max()) if diff.numel() else 0.0
        if not worst <= tol:
            idx = tuple(int(i) for i in torch.unravel_index(torch.argmax(torch.nan_to_num(diff, nan=float("inf"))),
                                                             diff.shape))
            raise UnsupportedLayerError(
                f"module: expected the traced chain to reproduce module(z) (check=True), received a largest difference "
                f"of {worst:.3g} > {tol:.3g} at output entry {idx[1:]} of latent {idx[0]} (G(z) = {float(out[idx]):.6g}, "
                f"module(z) = {float(ref[idx]):.6g}): an operation the trace did not see (e.g. applied outside "
                "forward, or on a global) changes the output; pass check=False to accept it"
            )

    def to_torch(self) -> nn.Sequential:
        """An equivalent ``nn.Sequential`` of Linear layers (batch-norms folded, convolutions as dense
        matrices), taking a flat latent (B, n_0) and returning (B, *output_shape)."""
        mods: list[nn.Module] = []
        for layer, W in zip(self.layers, self.weights):
            lin = nn.Linear(layer.n_in, layer.n_out, dtype=W.dtype, device=W.device)
            with torch.no_grad():
                lin.weight.copy_(W)
                lin.bias.copy_(layer.b)
            mods.append(lin)
            mods.append(_torch_activation(layer.activation))
        if len(self.output_shape) > 1:
            mods.append(nn.Unflatten(1, self.output_shape))
        return nn.Sequential(*mods)

    # -- shape information ------------------------------------------------------
    @property
    def dims(self) -> list[int]:
        """``[n_0, n_1, ..., n_L, n]``."""
        return [self.layers[0].n_in] + [layer.n_out for layer in self.layers]

    @property
    def latent_dim(self) -> int:
        return self.layers[0].n_in

    @property
    def output_dim(self) -> int:
        return self.layers[-1].n_out

    @property
    def n_hidden(self) -> int:
        """``L``, the number of hidden layers."""
        return len(self.layers) - 1

    @property
    def hidden_activations(self) -> list[Activation]:
        """``[phi_1, ..., phi_L]``."""
        return [layer.activation for layer in self.layers[:-1]]

    @property
    def relu_hidden(self) -> bool:
        """True for the paper's model: every hidden layer is ReLU."""
        return all(a.name == "relu" for a in self.hidden_activations)

    def require_relu_hidden(self, method: str) -> None:
        """UnsupportedLayerError naming the first hidden layer that is not ReLU.

        The pursuits, the Oracle and the certificates rely on the sparsity of ReLU hidden layers
        (the paper's model); ``method`` names the caller in the message.
        """
        for i, layer in enumerate(self.layers[:-1]):
            a = layer.activation
            if a.name != "relu":
                src = f" ({layer.name})" if layer.name else ""
                alt = ("gradient methods (method='gd' or 'adam') or geninv.layerwise_inverse (invertible hidden "
                       "activations)") if self.invertible_hidden else "gradient methods (method='gd' or 'adam')"
                raise UnsupportedLayerError(
                    f"G: {method} expected ReLU hidden layers (the paper's sparse model), received hidden layer "
                    f"{i + 1}{src} with activation {a.name}; use {alt}"
                )

    @property
    def invertible_hidden(self) -> bool:
        """True when every hidden activation is strictly monotone (leaky ReLU, tanh, sigmoid, ...)."""
        return all(a.invertible for a in self.hidden_activations)

    def flatten_output(self, y: object) -> object:
        """``y`` in the generator's output shape, (B, *output_shape) or output_shape, as (B, n) or (n,).

        Anything else is returned unchanged (the caller validates it).
        """
        k = len(self.output_shape)
        if k > 1 and isinstance(y, Tensor) and y.ndim in (k, k + 1) and tuple(y.shape[-k:]) == self.output_shape:
            return y.reshape(-1, self.output_dim) if y.ndim == k + 1 else y.reshape(self.output_dim)
        return y

    def unflatten_output(self, y: Tensor) -> Tensor:
        """(B, n) -> (B, *output_shape)."""
        return y.reshape(y.shape[0], *self.output_shape)

    @property
    def output_activation(self) -> Activation:
        return self.layers[-1].activation

    @property
    def weights(self) -> list[Tensor]:
        """Each layer's dense ``W`` (n_i, n_{i-1}) (:meth:`weight`: UnsupportedLayerError naming a
        matrix-free layer)."""
        return [self.weight(i) for i in range(len(self.layers))]

    def weight(self, i: int) -> Tensor:
        """Layer ``i``'s dense ``W`` (0-based; -1 is the output layer).

        Raises
        ------
        UnsupportedLayerError
            Naming the layer when it is matrix-free (a convolution kept as an operator because
            its dense weight exceeds the import's memory budget): what asks for the dense weights
            (certificates, the dense Oracle, the linear program, the hybrid's exact path) does not
            run on it; :attr:`maps` reaches every layer.
        """
        layer = self.layers[i]
        if layer.W is None:
            n_out, n_in = layer.shape
            k = i % len(self.layers) + 1
            raise UnsupportedLayerError(
                f"layer {k} ({layer.name or 'unnamed'}): expected a dense weight, received a matrix-free one "
                f"({n_out} x {n_in}, {n_out * n_in * 8 / 2**20:.0f} MiB in float64, above the import's "
                "memory_budget); this computation needs W itself. On matrix-free layers run gd, adam, the oracle, "
                "or latent_pursuit, layered_bp, hybrid, auto in their exact form (noise_level=0, or signals their "
                "image layer fits exactly), or import with a larger memory_budget="
            )
        return layer.W

    @property
    def maps(self) -> list[LinearMap]:
        """Each layer's ``W`` as the solvers take it: the dense matrix where it is materialized, the
        matrix-free operator otherwise (:attr:`geninv.model.layers.Layer.map`)."""
        return [layer.map for layer in self.layers]

    @property
    def matrix_free(self) -> bool:
        """True when some layer's ``W`` is not materialized."""
        return any(layer.W is None for layer in self.layers)

    @property
    def operators(self) -> list[LayerOperator]:
        """Each layer's ``W`` as an operator (matrix-free for layers read from convolutions)."""
        return [layer.operator for layer in self.layers]

    @property
    def biases(self) -> list[Tensor]:
        return [layer.b for layer in self.layers]

    @property
    def dtype(self) -> torch.dtype:
        return self.layers[0].b.dtype

    @property
    def device(self) -> torch.device:
        return self.layers[0].b.device

    def has_bias(self) -> bool:
        return any(bool((layer.b != 0).any()) for layer in self.layers)

    def to(self, device: torch.device | str | torch.dtype | None = None, dtype: torch.dtype | None = None) -> Generator:
        """A copy on ``device`` with ``dtype`` (this generator is left unchanged).

        As with ``torch.Tensor.to``, ``G.to(torch.float64)`` changes only the dtype.
        """
        if isinstance(device, torch.dtype) and dtype is None:
            device, dtype = None, device
        if dtype is not None:
            dtype = as_dtype(dtype)
        if device is not None:
            device = as_device(device)
        return Generator([layer.to(device, dtype) for layer in self.layers], output_shape=self.output_shape,
                         latent_shape=self.latent_shape)

    def like(self, t: Tensor) -> Generator:
        """This generator on ``t``'s device and dtype (no copy when they already agree)."""
        if t.dtype == self.dtype and t.device == self.device:
            return self
        return self.to(t.device, t.dtype)

    # -- evaluation -------------------------------------------------------------
    def _check_z(self, z: object) -> Tensor:
        k = len(self.latent_shape)
        if k > 1 and isinstance(z, Tensor) and z.ndim in (k, k + 1) and tuple(z.shape[-k:]) == self.latent_shape:
            z = z.reshape(-1, self.latent_dim)
        zz = as_batch(z, self.latent_dim, "z")
        if zz.dtype != self.dtype or zz.device != self.device:
            zz = zz.to(self.device, self.dtype)
        return zz

    def __call__(self, z: Tensor) -> Tensor:
        """``G(z)`` for ``z`` of shape (B, n_0); returns (B, *output_shape), i.e. (B, n) by default.

        Raises NumericalError if a layer overflows to Inf/NaN (huge weights or latents in a
        low precision), instead of returning a poisoned signal.
        """
        x = self._check_z(z)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            _check_overflow(x, i, self.dtype)
        return x if len(self.output_shape) == 1 else self.unflatten_output(x)

    def forward_unchecked(self, z: Tensor) -> Tensor:
        """``G(z)`` as (B, n) without argument checks (for solver inner loops; keeps autograd)."""
        x = z
        for layer in self.layers:
            x = layer(x)
        return x

    def trace(self, z: Tensor) -> Trace:
        """Every layer of ``G(z)``: pre-activations, ``[x_1, ..., x_L, y]`` and supports."""
        x = self._check_z(z)
        pre: list[Tensor] = []
        post: list[Tensor] = []
        for i, layer in enumerate(self.layers):
            a = layer.pre(x)
            _check_overflow(a, i, self.dtype)
            x = layer.activation(a)
            pre.append(a)
            post.append(x)
        return Trace(pre, post)

    def sample(self, n: int, *, seed: int | None = None) -> tuple[Tensor, Tensor]:
        """Draw ``z ~ N(0, I)`` (n of them) and return ``(z, G(z))``."""
        n = as_int(n, "n", minimum=1)
        gen = torch.Generator(device="cpu")
        gen.manual_seed(0 if seed is None else as_int(seed, "seed"))
        z = torch.randn(n, self.latent_dim, generator=gen, dtype=torch.float64).to(self.device, self.dtype)
        return z, self(z)

    # -- io -----------------------------------------------------------------------
    def save(self, path: str) -> None:
        """Write the generator as one safetensors file with its architecture as JSON metadata."""
        save_generator(self, path)

    def __repr__(self) -> str:
        arch = " -> ".join(str(d) for d in self.dims)
        names = list(dict.fromkeys(a.name for a in self.hidden_activations))
        extra = "" if self.relu_hidden else f", hidden={'/'.join(names)}"
        shape = f", output_shape={self.output_shape}" if len(self.output_shape) > 1 else ""
        return f"Generator({arch}, output={self.output_activation.name}{extra}{shape}, dtype={self.dtype})"


def _check_overflow(x: Tensor, i: int, dtype: torch.dtype) -> None:
    if not bool(torch.isfinite(x).all()):
        raise NumericalError(
            f"G(z): expected finite values in layer {i + 1}, received {int((~torch.isfinite(x)).sum())} Inf/NaN entries "
            f"(the forward pass overflowed in {dtype}; use smaller latents/weights or float64)"
        )


def _shape(shape: Sequence[int] | None, n: int, name: str) -> tuple[int, ...]:
    if shape is None:
        return (n,)
    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__iter__"):
        raise InputError(f"{name}: expected a sequence of positive ints, received {shape!r}")
    out = tuple(shape)
    if not out or not all(isinstance(d, numbers.Integral) and not isinstance(d, bool) and d > 0 for d in out):
        raise InputError(f"{name}: expected a sequence of positive ints, received {shape!r}")
    out = tuple(int(d) for d in out)
    if math.prod(out) != n:
        raise ShapeError(f"{name}: expected {n} entries in all (the layer width), received {out} ({math.prod(out)})")
    return out


def _torch_activation(a: Activation) -> nn.Module:
    from geninv.model.activations import PLU

    p = a.params
    if a.name == "relu":
        return nn.ReLU()
    if a.name == "leaky_relu":
        return nn.LeakyReLU(p["slope"])
    if a.name == "tanh":
        return nn.Tanh()
    if a.name == "sigmoid":
        return nn.Sigmoid()
    if a.name == "plu":
        return PLU(p["alpha"], p["c"])
    if a.name == "softplus":
        return nn.Softplus(p["beta"], p["threshold"])
    if a.name == "elu":
        return nn.ELU(p["alpha"])
    if a.name == "gelu":
        return nn.GELU(approximate="tanh" if p["tanh"] else "none")
    if a.name == "silu":
        return nn.SiLU()
    return nn.Identity()


def random_generator(
    dims: Sequence[int],
    output: str | Activation = "tanh",
    *,
    seed: int = 0,
    bias: bool = False,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> Generator:
    """A generator with i.i.d. Gaussian weights of variance ``1 / fan_in``.

    Parameters
    ----------
    dims : sequence of int
        ``[n_0, n_1, ..., n_L, n]`` (at least two entries).
    output : str or Activation
        The output activation (``"tanh"`` in the paper's Fig. 4).
    seed : int
        Seed of the weights; the same seed gives the same generator on any device.
    bias : bool
        Draw biases ``N(0, 0.1^2)`` if True; zero biases otherwise (the paper's setting).
    """
    if isinstance(dims, (str, bytes)) or not hasattr(dims, "__iter__"):
        raise InputError(f"dims: expected at least two positive integers, received {dims!r}")
    dims = list(dims)
    ok = all(isinstance(d, numbers.Integral) and not isinstance(d, bool) and d > 0 for d in dims)
    if len(dims) < 2 or not ok:
        raise InputError(f"dims: expected at least two positive integers, received {dims!r}")
    dims = [int(d) for d in dims]
    act_out = get_activation(output)
    dtype = as_dtype(dtype)
    device = as_device(device)
    gen = torch.Generator(device="cpu")
    gen.manual_seed(as_int(seed, "seed"))
    layers = []
    for i in range(len(dims) - 1):
        W = torch.randn(dims[i + 1], dims[i], generator=gen, dtype=torch.float64) / dims[i] ** 0.5
        b = (0.1 * torch.randn(dims[i + 1], generator=gen, dtype=torch.float64)) if bias else torch.zeros(dims[i + 1], dtype=torch.float64)
        act = act_out if i == len(dims) - 2 else Activation("relu")
        layers.append(Layer(W.to(device, dtype), b.to(device, dtype), act))
    return Generator(layers)


def save_generator(G: Generator, path: str | os.PathLike[str]) -> None:
    """Write ``G`` to ``path`` atomically (the same file as :meth:`Generator.save`)."""
    extra: dict[str, Any] = {}
    if len(G.output_shape) > 1:
        extra["output_shape"] = list(G.output_shape)
    if len(G.latent_shape) > 1:
        extra["latent_shape"] = list(G.latent_shape)
    write_layers(G.layers, path, extra=extra)


def load_generator(path: str | os.PathLike[str], *, dtype: torch.dtype | None = None, device: str | torch.device = "cpu") -> Generator:
    """Load a generator written by :meth:`Generator.save`.

    Raises
    ------
    ModelFileError
        If the file is missing, not safetensors (a pickle or zip is refused unread),
        truncated, corrupt, or its weights do not match its architecture.
    """
    if dtype is not None:
        dtype = as_dtype(dtype)
    device = as_device(device)
    layers, arch = read_layers(path)
    try:
        G = Generator(layers, output_shape=arch.get("output_shape"), latent_shape=arch.get("latent_shape"))
    except GenInvError as e:
        raise ModelFileError(f"path {os.fsdecode(path)!r}: expected a consistent generator, received an inconsistent one: {e}") from None
    if dtype is not None or str(device) != "cpu":
        G = G.to(device, dtype)
    return G

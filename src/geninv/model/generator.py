"""The generator model ``y = phi(W_{L+1} relu(W_L ... relu(W_1 z + b_1) ... + b_L) + b_{L+1})``."""

from __future__ import annotations

import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from geninv._validate import as_batch, as_device, as_dtype, as_int
from geninv.exceptions import GenInvError, InputError, ModelFileError, NumericalError, ShapeError
from geninv.model.activations import Activation, get_activation
from geninv.model.io import read_layers, write_layers
from geninv.model.layers import Layer, layers_from_torch

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
    """A fully connected generator with ReLU hidden layers.

    Parameters
    ----------
    layers : sequence of Layer
        ``L + 1`` layers; all but the last use ReLU, the last any invertible activation
        (or ReLU/identity).

    Examples
    --------
    >>> G = random_generator([20, 200, 600], output="tanh", seed=0)
    >>> y = G(torch.randn(4, 20))
    >>> tuple(y.shape)
    (4, 600)
    """

    def __init__(self, layers: Sequence[Layer]) -> None:
        if isinstance(layers, (Layer, str, bytes)) or not hasattr(layers, "__iter__"):
            raise InputError(f"layers: expected a sequence of geninv Layer, received {type(layers).__name__}")
        layers = list(layers)
        if not layers:
            raise InputError("layers: expected at least one layer, received none")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise InputError(f"layers[{i}]: expected a geninv Layer, received {type(layer).__name__}")
            if i < len(layers) - 1 and layer.activation.name != "relu":
                raise InputError(
                    f"layers[{i}]: expected relu on a hidden layer, received {layer.activation.name}"
                )
            if i > 0 and layer.n_in != layers[i - 1].n_out:
                raise ShapeError(
                    f"layers[{i}]: expected input width {layers[i - 1].n_out}, received {layer.n_in}"
                )
            if layer.W.dtype != layers[0].W.dtype or layer.W.device != layers[0].W.device:
                raise InputError(f"layers[{i}]: expected the dtype/device of layers[0], received {layer.W.dtype} on {layer.W.device}")
        self.layers: list[Layer] = layers

    # -- construction -----------------------------------------------------------
    @classmethod
    def from_torch(cls, module: nn.Module) -> Generator:
        """Read an ``nn.Sequential`` of Linear/BatchNorm1d/activations (see :func:`layers_from_torch`)."""
        return cls(layers_from_torch(module))

    def to_torch(self) -> nn.Sequential:
        """An equivalent ``nn.Sequential`` (batch-norms already folded)."""
        mods: list[nn.Module] = []
        for layer in self.layers:
            lin = nn.Linear(layer.n_in, layer.n_out, dtype=layer.W.dtype, device=layer.W.device)
            with torch.no_grad():
                lin.weight.copy_(layer.W)
                lin.bias.copy_(layer.b)
            mods.append(lin)
            mods.append(_torch_activation(layer.activation))
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
        """``L``, the number of hidden (ReLU) layers."""
        return len(self.layers) - 1

    @property
    def output_activation(self) -> Activation:
        return self.layers[-1].activation

    @property
    def weights(self) -> list[Tensor]:
        return [layer.W for layer in self.layers]

    @property
    def biases(self) -> list[Tensor]:
        return [layer.b for layer in self.layers]

    @property
    def dtype(self) -> torch.dtype:
        return self.layers[0].W.dtype

    @property
    def device(self) -> torch.device:
        return self.layers[0].W.device

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
        return Generator([layer.to(device, dtype) for layer in self.layers])

    def like(self, t: Tensor) -> Generator:
        """This generator on ``t``'s device and dtype (no copy when they already agree)."""
        if t.dtype == self.dtype and t.device == self.device:
            return self
        return self.to(t.device, t.dtype)

    # -- evaluation -------------------------------------------------------------
    def _check_z(self, z: object) -> Tensor:
        zz = as_batch(z, self.latent_dim, "z")
        if zz.dtype != self.dtype or zz.device != self.device:
            zz = zz.to(self.device, self.dtype)
        return zz

    def __call__(self, z: Tensor) -> Tensor:
        """``G(z)`` for ``z`` of shape (B, n_0); returns (B, n).

        Raises NumericalError if a layer overflows to Inf/NaN (huge weights or latents in a
        low precision), instead of returning a poisoned signal.
        """
        x = self._check_z(z)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            _check_overflow(x, i, self.dtype)
        return x

    def forward_unchecked(self, z: Tensor) -> Tensor:
        """``G(z)`` without argument checks (for solver inner loops; keeps autograd)."""
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
        write_layers(self.layers, path)

    def __repr__(self) -> str:
        arch = " -> ".join(str(d) for d in self.dims)
        return f"Generator({arch}, output={self.output_activation.name}, dtype={self.dtype})"


def _check_overflow(x: Tensor, i: int, dtype: torch.dtype) -> None:
    if not bool(torch.isfinite(x).all()):
        raise NumericalError(
            f"G(z): expected finite values in layer {i + 1}, received {int((~torch.isfinite(x)).sum())} Inf/NaN entries "
            f"(the forward pass overflowed in {dtype}; use smaller latents/weights or float64)"
        )


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
    write_layers(G.layers, path)


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
    layers, _ = read_layers(path)
    try:
        G = Generator(layers)
    except GenInvError as e:
        raise ModelFileError(f"path {os.fsdecode(path)!r}: expected a consistent generator, received an inconsistent one: {e}") from None
    if dtype is not None or str(device) != "cpu":
        G = G.to(device, dtype)
    return G

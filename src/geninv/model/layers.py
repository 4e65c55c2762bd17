"""Fully connected layers and reading them from torch modules.

A :class:`Layer` is ``x_out = phi(W x_in + b)``. :func:`layers_from_torch` turns an
``nn.Sequential`` of ``Linear``, ``BatchNorm1d``, activations and nested Sequentials into
layers, folding each batch-norm (eval statistics) exactly into the preceding Linear.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from geninv.exceptions import InputError, ShapeError, UnsupportedLayerError, describe
from geninv.model.activations import PLU, Activation, activation_of_module
from geninv.model.layer_ops import DenseOperator, LayerOperator, LinearMap

__all__ = ["Layer", "layers_from_torch"]


@dataclass(frozen=True)
class Layer:
    """One fully connected layer ``phi(W x + b)``.

    Attributes
    ----------
    W : Tensor of shape (n_out, n_in), or None
        The dense weight; None for a layer kept matrix-free (a convolution whose dense ``W``
        would exceed the import's memory budget), whose ``W`` is then only reachable as
        :attr:`op`.
    b : Tensor of shape (n_out,)
    activation : Activation
    name : str
        Where the layer came from (the module nodes it was read from), for messages.
    op : LayerOperator, optional
        ``W`` as an operator; a layer read from convolutions carries a matrix-free
        :class:`~geninv.model.layer_ops.ChainOperator` (the module's own operations), every other
        layer gets :class:`~geninv.model.layer_ops.DenseOperator` (see :attr:`operator`).
        Required when ``W`` is None.
    """

    W: Tensor | None
    b: Tensor
    activation: Activation
    name: str = ""
    op: LayerOperator | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.W is None:
            if not isinstance(self.op, LayerOperator) or not self.op.matrix_free:
                raise InputError(f"W: expected a torch.Tensor, or None with a matrix-free op; received None with op "
                                 f"{describe(self.op)}")
        for arg, t in (("W", self.W), ("b", self.b)):
            if arg == "W" and t is None:
                continue
            if not isinstance(t, Tensor):
                raise InputError(f"{arg}: expected a torch.Tensor, received {describe(t)}")
            if not t.is_floating_point():
                raise InputError(f"{arg}: expected a floating tensor, received dtype {t.dtype}")
        if not isinstance(self.activation, Activation):
            raise InputError(f"activation: expected a geninv Activation, received {describe(self.activation)}")
        shape = self.shape
        if self.W is not None and self.W.ndim != 2:
            raise ShapeError(f"W: expected a 2-D weight (n_out, n_in), received shape {tuple(self.W.shape)}")
        if self.b.shape != (shape[0],):
            raise ShapeError(
                f"b: expected shape ({shape[0]},) to match W {shape}, "
                f"received {tuple(self.b.shape)}"
            )
        if shape[0] == 0 or shape[1] == 0:
            raise ShapeError(f"W: expected a non-empty weight (n_out, n_in), received shape {shape}")
        if self.W is not None and (self.b.dtype != self.W.dtype or self.b.device != self.W.device):
            raise InputError(
                f"b: expected the dtype and device of W ({self.W.dtype} on {self.W.device}), "
                f"received {self.b.dtype} on {self.b.device}"
            )
        if not ((self.W is None or torch.isfinite(self.W).all()) and torch.isfinite(self.b).all()):
            raise InputError("W, b: expected finite weights, received NaN or Inf")

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_out, n_in)`` of ``W``."""
        if self.W is None:
            assert self.op is not None
            return (int(self.op.shape[0]), int(self.op.shape[1]))
        return (int(self.W.shape[0]), int(self.W.shape[1]))

    @property
    def n_in(self) -> int:
        return self.shape[1]

    @property
    def n_out(self) -> int:
        return self.shape[0]

    @property
    def matrix_free(self) -> bool:
        """True when ``W`` is not materialized (only :attr:`op` reaches it)."""
        return self.W is None

    @property
    def map(self) -> LinearMap:
        """``W`` as the solvers take it: the dense matrix, or the operator of a matrix-free layer."""
        return self.W if self.W is not None else self.operator

    @functools.cached_property
    def spectral_norm(self) -> float:
        """``||W||_2`` (computed once per layer, in float64; by power iteration when matrix-free)."""
        if self.W is None:
            return self.operator.norm()
        return float(torch.linalg.matrix_norm(self.W.detach().double(), ord=2))

    @functools.cached_property
    def operator(self) -> LayerOperator:
        """``W`` as an operator (forward, adjoint, cached spectral norm): :attr:`op`, or the dense matrix."""
        if self.op is not None:
            if tuple(self.op.shape) != self.shape:
                raise ShapeError(f"op: expected an operator of shape {self.shape}, received {self.op.shape}")
            return self.op
        assert self.W is not None
        return DenseOperator(self.W)

    def pre(self, x: Tensor) -> Tensor:
        """Pre-activation ``W x + b`` for a batch ``x`` of shape (B, n_in)."""
        if self.W is None:
            return self.operator.forward(x) + self.b.to(x.dtype)
        return torch.addmm(self.b, x, self.W.T)

    def __call__(self, x: Tensor) -> Tensor:
        return self.activation(self.pre(x))

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Layer:
        W = None if self.W is None else self.W.to(device=device, dtype=dtype)
        return Layer(W, self.b.to(device=device, dtype=dtype), self.activation, self.name, self.op)


_ACT_MODULES = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.Identity, PLU)


def _flatten(module: nn.Module, prefix: str) -> list[tuple[str, nn.Module]]:
    if isinstance(module, nn.Sequential):
        out: list[tuple[str, nn.Module]] = []
        for name, child in module.named_children():
            out.extend(_flatten(child, f"{prefix}.{name}" if prefix else name))
        return out
    return [(prefix or type(module).__name__, module)]


def layers_from_torch(module: nn.Module) -> list[Layer]:
    """Read a torch module into a list of :class:`Layer`.

    Accepted: ``Linear``, ``BatchNorm1d`` in eval mode directly after a Linear (folded
    exactly: ``W <- diag(g) W``, ``b <- g (b - mean) + beta`` with
    ``g = gamma / sqrt(var + eps)``), one activation after each Linear (ReLU on hidden
    layers; ReLU, LeakyReLU, Tanh, Sigmoid, Identity or :class:`PLU` on the last), ``Dropout``
    in eval mode (a no-op), and nested ``nn.Sequential``. A Linear with no activation after it
    gets the identity.

    Raises
    ------
    UnsupportedLayerError
        Naming the offending layer and its position, for anything else.
    """
    if not isinstance(module, nn.Module):
        raise UnsupportedLayerError(f"module: expected a torch nn.Module, received {type(module).__name__}")
    items = _flatten(module, "")
    if not items:
        raise UnsupportedLayerError("module: expected at least one nn.Linear, received an empty Sequential")
    layers: list[Layer] = []
    W: Tensor | None = None
    b: Tensor | None = None
    act: Activation | None = None
    last_kind = "start"

    def where(pos: int, name: str, m: nn.Module) -> str:
        return f"layer {pos} ({name}: {type(m).__name__})"

    def close() -> None:
        nonlocal W, b, act
        if W is not None and b is not None:
            layers.append(Layer(W, b, act or Activation("identity")))
        W, b, act = None, None, None

    for pos, (name, m) in enumerate(items):
        if isinstance(m, nn.Linear):
            close()
            W = m.weight.detach().clone()
            b = m.bias.detach().clone() if m.bias is not None else torch.zeros(m.out_features, dtype=W.dtype)
            last_kind = "linear"
        elif isinstance(m, nn.BatchNorm1d):
            if m.training:
                raise UnsupportedLayerError(
                    f"{where(pos, name, m)}: expected BatchNorm1d in eval mode (call module.eval()); "
                    "received one in training mode, whose output depends on the batch"
                )
            if last_kind != "linear" or W is None or b is None:
                raise UnsupportedLayerError(
                    f"{where(pos, name, m)}: expected BatchNorm1d directly after a Linear, received it after {last_kind}"
                )
            if m.running_mean is None or m.running_var is None:
                raise UnsupportedLayerError(f"{where(pos, name, m)}: expected tracked running statistics, received none")
            if m.num_features != W.shape[0]:
                raise UnsupportedLayerError(
                    f"{where(pos, name, m)}: expected {W.shape[0]} features, received {m.num_features}"
                )
            dt = torch.float64
            g = 1.0 / torch.sqrt(m.running_var.detach().to(dt) + m.eps)
            if m.affine:
                g = g * m.weight.detach().to(dt)
                beta = m.bias.detach().to(dt)
            else:
                beta = torch.zeros_like(g)
            W = (g[:, None] * W.to(dt)).to(W.dtype)
            b = (g * (b.to(dt) - m.running_mean.detach().to(dt)) + beta).to(b.dtype)
            last_kind = "batchnorm"
        elif isinstance(m, _ACT_MODULES):
            if last_kind in ("activation", "start"):
                raise UnsupportedLayerError(
                    f"{where(pos, name, m)}: expected an activation after a Linear, received it after {last_kind} "
                    "(two activations in a row or an activation first)"
                )
            act = activation_of_module(m) or Activation("identity")  # nn.Identity: the identity
            last_kind = "activation"
        elif isinstance(m, nn.Dropout):
            if m.training and m.p > 0:
                raise UnsupportedLayerError(
                    f"{where(pos, name, m)}: expected Dropout in eval mode (call module.eval()), received training mode"
                )
        else:
            raise UnsupportedLayerError(
                f"{where(pos, name, m)}: expected Linear, BatchNorm1d, ReLU, LeakyReLU, Tanh, Sigmoid, "
                f"Identity, Dropout or geninv.PLU; received {type(m).__name__}"
            )
    close()
    if not layers:
        raise UnsupportedLayerError("module: expected at least one nn.Linear, received none")
    for i, layer in enumerate(layers[:-1]):
        if layer.activation.name != "relu":
            raise UnsupportedLayerError(
                f"hidden layer {i + 1}: expected a ReLU activation inside the generator, received "
                f"{layer.activation.name}"
            )
        if layer.n_out != layers[i + 1].n_in:
            raise UnsupportedLayerError(
                f"layer {i + 2}: expected input width {layer.n_out}, received {layers[i + 1].n_in}"
            )
    return layers

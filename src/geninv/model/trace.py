"""Reading an arbitrary chain-structured torch module as a chain of affine maps and activations.

:func:`chain_from_torch` traces a module (``torch.fx`` symbolic tracing; where that fails, a
recording of one forward pass on an example latent) into a list of steps: affine maps (Linear,
Conv1d/2d, ConvTranspose1d/2d, BatchNorm1d/2d in eval mode, Upsample), reshapes (view, reshape,
flatten, unflatten, squeeze, unsqueeze) and elementwise activations, wherever in the module they
are applied (in a Sequential or in the owner's ``forward``). :func:`layers_from_chain` groups the
steps into layers ``phi(W x + b)``: consecutive affine maps are composed into one, and each
composed map is materialized as its dense matrix, column by column (``W e_j = f(e_j) - f(0)``,
``b = f(0)``), in float64, by running the module's own operations on the unit vectors. This is
exact up to the float64 rounding of the composition, whatever the stride, padding,
output padding or groups of a convolution. A layer whose dense matrix would exceed the memory
budget is not materialized: it is kept matrix-free, as the module's own operations
(:class:`~geninv.model.layer_ops.ChainOperator`).
"""

from __future__ import annotations

import copy
import inspect
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geninv.exceptions import UnsupportedLayerError
from geninv.model.activations import PLU, Activation, activation_of_module
from geninv.model.layer_ops import ChainOperator
from geninv.model.layers import Layer

__all__ = ["Step", "chain_from_torch", "layers_from_chain", "DEFAULT_MEMORY_BUDGET"]

#: Largest dense weight (bytes, in the module's dtype) one layer may take when materialized.
DEFAULT_MEMORY_BUDGET = 2**29


@dataclass(frozen=True)
class Step:
    """One step of the chain.

    Attributes
    ----------
    kind : str
        ``"affine"`` (``fn`` is an affine map), ``"reshape"`` (``fn`` only reshapes) or
        ``"activation"`` (``activation`` is applied elementwise).
    name : str
        The node it came from, e.g. ``"net.3 (ConvTranspose2d)"``.
    in_shape, out_shape : tuple of int
        Per-sample shapes (without the batch dimension).
    fn : callable or None
        ``(k, *in_shape) -> (k, *out_shape)`` on float64 tensors (affine and reshape steps).
    activation : Activation or None
    """

    kind: str
    name: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    fn: Callable[[Tensor], Tensor] | None = None
    activation: Activation | None = None


_AFFINE_MODULES = (
    nn.Linear, nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.BatchNorm1d, nn.BatchNorm2d,
    nn.Upsample,
)
_NOOP_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity)
_RESHAPE_MODULES = (nn.Flatten, nn.Unflatten)
_RESHAPE_METHODS = ("view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze", "view_as", "reshape_as")
_NOOP_METHODS = ("contiguous", "clone", "detach")
_SUPPORTED = ("Linear, Conv1d/2d, ConvTranspose1d/2d, BatchNorm1d/2d (eval), Upsample, Dropout (eval), Identity, "
              "Flatten/Unflatten/view/reshape, and the activations ReLU, LeakyReLU, Tanh, Sigmoid, Softplus, ELU, "
              "GELU, SiLU, geninv.PLU")


# Parameters of torch functions implemented in C (no Python signature): names and defaults.
_BUILTIN_PARAMS: dict[Any, tuple[tuple[str, Any], ...]] = {
    F.gelu: (("input", None), ("approximate", "none")),
    F.softplus: (("input", None), ("beta", 1.0), ("threshold", 20.0)),
}


def _bind(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    if fn in _BUILTIN_PARAMS:
        spec = _BUILTIN_PARAMS[fn]
        out = {name: default for name, default in spec}
        out.update(zip((name for name, _ in spec), args))
        out.update(kwargs)
        return out
    sig = inspect.signature(fn)
    bound = sig.bind(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def _function_activation(target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Activation | None:
    """The activation a functional call computes (None if it is not one of ours)."""
    if target in (torch.relu, F.relu, torch.relu_, "relu", "relu_", torch.Tensor.relu):
        return Activation("relu")
    if target in (torch.tanh, F.tanh, "tanh", "tanh_", torch.Tensor.tanh):
        return Activation("tanh")
    if target in (torch.sigmoid, F.sigmoid, "sigmoid", "sigmoid_", torch.Tensor.sigmoid):
        return Activation("sigmoid")
    if target is F.silu:
        return Activation("silu")
    if target in (F.leaky_relu, F.softplus, F.elu, F.gelu):
        p = _bind(target, args, kwargs)
        if target is F.leaky_relu:
            return Activation("leaky_relu", {"slope": float(p["negative_slope"])})
        if target is F.softplus:
            return Activation("softplus", {"beta": float(p["beta"]), "threshold": float(p["threshold"])})
        if target is F.elu:
            return Activation("elu", {"alpha": float(p["alpha"])})
        return Activation("gelu", {"tanh": 1.0 if p.get("approximate", "none") == "tanh" else 0.0})
    return None


class _X:
    """Placeholder for the chain's running tensor inside recorded call arguments."""


_XS = _X()


def _subst(a: Any, x: Tensor) -> Any:
    if a is _XS:
        return x
    if isinstance(a, (list, tuple)):
        return type(a)(_subst(v, x) for v in a)
    if isinstance(a, dict):
        return {k: _subst(v, x) for k, v in a.items()}
    return a


def _contains_x(a: Any) -> bool:
    if a is _XS:
        return True
    if isinstance(a, (list, tuple)):
        return any(_contains_x(v) for v in a)
    if isinstance(a, dict):
        return any(_contains_x(v) for v in a.values())
    return False


def _classify(kind: str, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any], name: str,
              in_shape: tuple[int, ...], out_shape: tuple[int, ...], module: nn.Module | None) -> Step | None:
    """One recorded operation -> a Step (None: a no-op); UnsupportedLayerError otherwise.

    ``args``/``kwargs`` hold the running tensor as ``_XS``; ``module`` is the submodule of a
    module call (in float64).
    """
    if kind == "module":
        assert module is not None
        label = f"{name} ({type(module).__name__})"
        if isinstance(module, _NOOP_MODULES):
            if isinstance(module, nn.Dropout | nn.Dropout1d | nn.Dropout2d) and module.training and module.p > 0:
                raise UnsupportedLayerError(
                    f"node {label}: expected Dropout in eval mode (call module.eval()), received training mode "
                    "(its output is random)"
                )
            return None
        act = activation_of_module(module)
        if act is not None:
            return Step("activation", label, in_shape, out_shape, activation=act)
        if isinstance(module, _RESHAPE_MODULES):
            return Step("reshape", label, in_shape, out_shape, fn=_reshaper(out_shape))
        if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
            if module.training:
                raise UnsupportedLayerError(
                    f"node {label}: expected batch-norm in eval mode (call module.eval()); received one in training "
                    "mode, whose output depends on the statistics of the batch"
                )
            if module.running_mean is None or module.running_var is None:
                raise UnsupportedLayerError(f"node {label}: expected tracked running statistics, received none "
                                            "(track_running_stats=False normalizes with the batch's statistics)")
        if isinstance(module, nn.Upsample) and module.mode not in ("nearest", "linear", "bilinear"):
            raise UnsupportedLayerError(f"node {label}: expected a linear upsampling (nearest, linear, bilinear), "
                                        f"received mode {module.mode!r}")
        if isinstance(module, _AFFINE_MODULES):
            m = module
            return Step("affine", label, in_shape, out_shape, fn=lambda x: m(x))
        raise UnsupportedLayerError(
            f"node {label}: expected a chain of {_SUPPORTED}; received {type(module).__name__}, which geninv cannot "
            "read as an affine map or an elementwise activation"
        )
    label = f"{name} ({target if isinstance(target, str) else getattr(target, '__name__', repr(target))})"
    rest_args = tuple(a for a in args if a is not _XS)
    act = None
    try:
        act = _function_activation(target, args, kwargs)
    except TypeError:
        act = None
    if act is not None:
        return Step("activation", label, in_shape, out_shape, activation=act)
    tname = target if isinstance(target, str) else getattr(target, "__name__", "")
    if tname in _NOOP_METHODS and out_shape == in_shape:
        return None
    if tname in _RESHAPE_METHODS or target in (torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze):
        return Step("reshape", label, in_shape, out_shape, fn=_reshaper(out_shape))
    if target in (F.dropout, F.dropout1d, F.dropout2d):
        p = _bind(target, args, kwargs)
        if p.get("training") and p.get("p", 0) > 0:
            raise UnsupportedLayerError(f"node {label}: expected dropout with training=False, received training=True")
        return None
    if target in (F.linear, F.conv1d, F.conv2d, F.conv_transpose1d, F.conv_transpose2d, F.interpolate, F.batch_norm):
        if target is F.batch_norm and _bind(target, args, kwargs).get("training"):
            raise UnsupportedLayerError(f"node {label}: expected batch_norm with training=False, received training=True "
                                        "(normalization by the statistics of the batch)")
        if target is F.interpolate and _bind(target, args, kwargs).get("mode") not in ("nearest", "linear", "bilinear"):
            raise UnsupportedLayerError(f"node {label}: expected a linear interpolation mode, received "
                                        f"{_bind(target, args, kwargs).get('mode')!r}")
        if args and args[0] is not _XS:
            raise UnsupportedLayerError(f"node {label}: expected the running tensor as the first argument")
        a, kw = args, kwargs
        return Step("affine", label, in_shape, out_shape, fn=lambda x: target(*_subst(a, x), **_subst(kw, x)))
    if target in (operator.mul, operator.truediv, operator.add, operator.sub, operator.neg, torch.mul, torch.add,
                  torch.sub, torch.div, torch.neg, "mul", "add", "sub", "div", "neg", "__mul__", "__add__",
                  "__sub__", "__truediv__", "__rmul__", "__radd__", "__neg__"):
        scalar_ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in rest_args)
        if scalar_ok and not kwargs and (tname not in ("truediv", "div", "__truediv__") or args[0] is _XS):
            a = args
            return Step("affine", label, in_shape, out_shape,
                        fn=lambda x: (target(*_subst(a, x)) if callable(target) else getattr(x, target)(*_subst(a[1:], x))))
        raise UnsupportedLayerError(
            f"node {label}: expected an arithmetic operation with a Python number (an affine map), received one "
            "with a tensor operand (a second branch or a learned tensor the chain cannot read)"
        )
    raise UnsupportedLayerError(
        f"node {label}: expected a chain of {_SUPPORTED}; received the operation {tname or target!r}, which geninv "
        "cannot read as an affine map or an elementwise activation"
    )


def _reshaper(out_shape: tuple[int, ...]) -> Callable[[Tensor], Tensor]:
    return lambda x: x.reshape(x.shape[0], *out_shape)


# -- torch.fx ---------------------------------------------------------------------------------------
def _fx_records(module: nn.Module, example: Tensor) -> list[tuple[str, Any, tuple, dict, str, tuple, tuple, Any]]:
    """Records ``(kind, target, args, kwargs, name, in_shape, out_shape, submodule)`` of the data chain."""
    import torch.fx as fx

    class _Tracer(fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return isinstance(m, PLU) or super().is_leaf_module(m, qualname)

    gm = fx.GraphModule(module, _Tracer().trace(module))
    values: dict[str, Any] = {}
    interp = fx.Interpreter(gm)

    def run_node(n: fx.Node) -> Any:
        try:
            out = fx.Interpreter.run_node(interp, n)
        except Exception as e:
            what = f"{n.target} ({type(gm.get_submodule(str(n.target))).__name__})" if n.op == "call_module" else n.name
            shapes = [tuple(values[a.name].shape[1:]) for a in n.all_input_nodes if isinstance(values.get(a.name), Tensor)]
            raise UnsupportedLayerError(
                f"node {what}: expected an input it accepts, received per-sample shape(s) {shapes} on which it fails "
                f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})"
            ) from None
        values[n.name] = out
        return out

    interp.run_node = run_node  # type: ignore[method-assign]
    try:
        with torch.no_grad():
            interp.run(example)
    except UnsupportedLayerError as e:  # fx appends the graph's text to the message: keep ours
        raise UnsupportedLayerError(str(e.args[0]).split("\n")[0] if e.args else str(e)) from None
    nodes = list(gm.graph.nodes)
    placeholders = [n for n in nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise UnsupportedLayerError(f"module: expected a forward taking one latent tensor, received {len(placeholders)} "
                                    f"inputs ({', '.join(n.name for n in placeholders)})")

    def is_data(n: Any) -> bool:
        return isinstance(n, fx.Node) and isinstance(values.get(n.name), Tensor) and n.op != "get_attr"

    def is_query(n: fx.Node) -> bool:
        """A question about the running tensor's shape (``x.size(0)``, ``x.shape``): not a data operation."""
        if n.op == "call_method" and n.target in ("size", "dim", "numel"):
            return True
        return n.op == "call_function" and (n.target in (len,) or (
            n.target is getattr and len(n.args) > 1 and n.args[1] in ("shape", "dtype", "device", "ndim")))

    def derived(n: fx.Node) -> bool:
        return any(is_data(a) for a in n.all_input_nodes)

    records = []
    cur = placeholders[0]
    for n in nodes:
        if n.op in ("placeholder", "output", "get_attr") or not derived(n) or is_query(n):
            continue
        data_in = [a for a in n.all_input_nodes if is_data(a)]
        what = (f"{n.target} ({type(gm.get_submodule(str(n.target))).__name__})" if n.op == "call_module"
                else n.name)
        if not isinstance(values.get(n.name), Tensor):
            raise UnsupportedLayerError(
                f"node {what}: expected an operation returning one tensor, received one returning "
                f"{type(values.get(n.name)).__name__} (attention or a layer with several outputs)"
            )
        if len(data_in) != 1 or data_in[0] is not cur:
            srcs = ", ".join(a.name for a in data_in) or "none"
            raise UnsupportedLayerError(
                f"node {what}: expected a chain (each operation applied to the previous one's output only), "
                f"received an operation on {srcs} (a branch, a skip connection or attention)"
            )
        users = [u for u in cur.users if not is_query(u)]
        if len(users) > 1:
            raise UnsupportedLayerError(
                f"node {cur.name}: expected its output to feed one operation, received {len(users)} "
                f"({', '.join(u.name for u in users)}): a branch, a skip connection or attention"
            )

        def conv(a: Any, cur: fx.Node = cur) -> Any:
            if isinstance(a, fx.Node):
                if a is cur:
                    return _XS
                return values[a.name]
            if isinstance(a, (list, tuple)):
                return type(a)(conv(v) for v in a)
            if isinstance(a, dict):
                return {k: conv(v) for k, v in a.items()}
            return a

        args, kwargs = conv(tuple(n.args)), conv(dict(n.kwargs))
        in_shape = tuple(values[cur.name].shape[1:])
        out_shape = tuple(values[n.name].shape[1:])
        if n.op == "call_module":
            sub = gm.get_submodule(str(n.target))
            records.append(("module", n.target, args, kwargs, str(n.target), in_shape, out_shape, sub))
        else:
            if n.op == "call_method" and args and args[0] is not _XS:
                raise UnsupportedLayerError(f"node {what}: expected a method of the running tensor")
            records.append(("function" if n.op == "call_function" else "method", n.target, args, kwargs, n.name,
                            in_shape, out_shape, None))
        cur = n
    out_node = next(n for n in nodes if n.op == "output")
    ret = out_node.args[0]
    if ret is not cur:
        raise UnsupportedLayerError(
            f"node output: expected the module to return the end of its chain ({cur.name}), received {ret!r} "
            "(several outputs or a tuple)"
        )
    return records


# -- recording one forward pass ---------------------------------------------------------------------
def _recorded(module: nn.Module, example: Tensor) -> list[tuple[str, Any, tuple, dict, str, tuple, tuple, Any]]:
    """The data chain of ``module(example)``, recorded at leaf modules and at functions called outside them."""
    from torch.overrides import TorchFunctionMode

    events: list[tuple[str, Any, tuple, dict, str, Any, Any, Any]] = []
    depth = [0]
    names = {m: n for n, m in module.named_modules()}
    leaves = [m for m in module.modules() if not list(m.children())]

    def pre(m: nn.Module, inputs: tuple) -> None:
        depth[0] += 1

    def post(m: nn.Module, inputs: tuple, out: Any) -> None:
        depth[0] -= 1
        if depth[0] == 0:
            events.append(("module", m, inputs, {}, names.get(m, type(m).__name__), inputs, out, m))

    class Rec(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            if depth[0] == 0 and isinstance(out, Tensor):
                events.append(("function", func, tuple(args), dict(kwargs), getattr(func, "__name__", str(func)),
                               None, out, None))
            return out

    handles = []
    for m in leaves:
        if m is module:
            continue
        handles.append(m.register_forward_pre_hook(pre))
        handles.append(m.register_forward_hook(post))
    try:
        with torch.no_grad(), Rec():
            result = module(example)
    finally:
        for h in handles:
            h.remove()
    if not isinstance(result, Tensor):
        raise UnsupportedLayerError(f"module: expected forward to return one tensor, received {type(result).__name__}")
    records = []
    cur: Tensor = example
    seen: dict[int, str] = {}
    for kind, target, args, kwargs, name, _, out, sub in events:
        def conv(a: Any, cur: Tensor = cur, name: str = name) -> Any:
            if isinstance(a, Tensor):
                if a is cur:
                    return _XS
                if isinstance(a, nn.Parameter) or any(a is p for p in module.parameters()) or \
                        any(a is b for b in module.buffers()):
                    return a
                if id(a) in seen or a is example:
                    raise UnsupportedLayerError(
                        f"node {name}: expected a chain (each operation applied to the previous one's output only), "
                        f"received an operation that also uses the output of {seen.get(id(a), 'the input')} "
                        "(a branch, a skip connection or attention)"
                    )
                return a
            if isinstance(a, (list, tuple)):
                return type(a)(conv(v) for v in a)
            if isinstance(a, dict):
                return {k: conv(v) for k, v in a.items()}
            return a

        if not (isinstance(out, Tensor) and out.ndim >= 1 and out.shape[0] == example.shape[0]):
            continue  # a scalar or statistic (e.g. a test in the forward's control flow), not a data operation
        cargs, ckw = conv(tuple(args)), conv(dict(kwargs))
        if not (_contains_x(cargs) or _contains_x(ckw)):
            continue  # a computation that does not touch the chain (e.g. a constant)
        records.append((kind, target, cargs, ckw, name, tuple(cur.shape[1:]), tuple(out.shape[1:]), sub))
        seen[id(out)] = name
        cur = out
    if cur is not result:
        raise UnsupportedLayerError("module: expected the module to return the end of its chain of operations, "
                                    "received a tensor computed off the chain")
    return records


# -- public -------------------------------------------------------------------------------------------
def _latent_shape(module: nn.Module) -> tuple[int, ...]:
    """The latent's per-sample shape, read off the first Linear when no example input is given."""
    for m in module.modules():
        if list(m.children()) or isinstance(m, _NOOP_MODULES + (nn.Flatten,)) or activation_of_module(m) is not None:
            continue
        if isinstance(m, nn.Linear):
            return (int(m.in_features),)
        if isinstance(m, nn.BatchNorm1d):
            return (int(m.num_features),)
        break
    raise UnsupportedLayerError(
        f"module: expected a first nn.Linear to read the latent size from, received {type(module).__name__} whose "
        "first layer is not one; pass example_input= (a latent batch, e.g. torch.randn(2, 100, 1, 1))"
    )


def chain_from_torch(module: nn.Module, example_input: Tensor | None = None) -> tuple[list[Step], tuple[int, ...],
                                                                                      tuple[int, ...], nn.Module]:
    """Trace ``module`` into its chain of steps.

    Parameters
    ----------
    module : nn.Module
        A chain-structured module (each operation applied to the previous one's output).
    example_input : Tensor of shape (B, *latent_shape), optional
        A latent batch (only its per-sample shape is used: the trace runs on 3 seeded random
        latents of that shape); without it the latent is ``(B, n_0)`` with ``n_0`` the first
        Linear's input.

    Returns
    -------
    steps : list of Step
    latent_shape, output_shape : tuple of int
        Per-sample shapes.
    module64 : nn.Module
        The float64 copy of ``module`` the steps run on.
    """
    if not isinstance(module, nn.Module):
        raise UnsupportedLayerError(f"module: expected a torch nn.Module, received {type(module).__name__}")
    if example_input is None:
        latent_shape = _latent_shape(module)
    else:
        if not isinstance(example_input, Tensor) or example_input.ndim < 2 or not example_input.is_floating_point():
            raise UnsupportedLayerError(
                f"example_input: expected a floating latent batch of shape (B, ...), received "
                f"{type(example_input).__name__} of shape {tuple(getattr(example_input, 'shape', ()))}"
            )
        latent_shape = tuple(int(s) for s in example_input.shape[1:])
    m64 = copy.deepcopy(module).to(device="cpu", dtype=torch.float64)  # the user's module is left untouched
    m64.requires_grad_(False)  # the layers' matrix-free adjoints differentiate with respect to the input only
    gen = torch.Generator().manual_seed(0)
    example = torch.randn(3, *latent_shape, generator=gen, dtype=torch.float64)
    try:
        records = _fx_records(m64, example)
    except UnsupportedLayerError:
        raise
    except Exception as fx_err:  # symbolic tracing fails on data-dependent control flow: record a forward pass
        try:
            records = _recorded(m64, example)
        except UnsupportedLayerError:
            raise
        except Exception as e:
            raise UnsupportedLayerError(
                f"module: expected a forward pass on a latent of shape (B, {', '.join(map(str, latent_shape))}), "
                f"received an error from it ({type(e).__name__}: {e}); symbolic tracing also failed "
                f"({type(fx_err).__name__}: {str(fx_err)[:200]})"
            ) from None
    steps = []
    for kind, target, args, kwargs, name, in_shape, out_shape, sub in records:
        try:
            st = _classify(kind, target, args, kwargs, name, in_shape, out_shape, sub)
        except UnsupportedLayerError:
            raise
        except Exception as e:  # arguments geninv cannot interpret
            raise UnsupportedLayerError(f"node {name}: expected arguments geninv can read, received ones it cannot "
                                        f"({type(e).__name__}: {str(e)[:200]})") from None
        if st is not None:
            steps.append(st)
    with torch.no_grad():
        out = m64(example)
    return steps, latent_shape, tuple(out.shape[1:]), m64


def _affine_layer(fns: list[Callable[[Tensor], Tensor]], in_shape: tuple[int, ...], n_out: int, dtype: torch.dtype,
                  memory_budget: int) -> tuple[Tensor | None, Tensor, ChainOperator | None]:
    """``(W, b, op)`` of a layer's composed affine maps.

    ``W`` is materialized (float64, column by column) when it fits ``memory_budget`` bytes in
    ``dtype``; otherwise it is None and the layer is kept matrix-free: ``op`` (the module's own
    operations) is then the only access to ``W``. ``op`` is None for a plain Linear (dense is best).
    """
    n_in = math.prod(in_shape)
    size = n_in * n_out * torch.empty((), dtype=dtype).element_size()
    free = size > memory_budget
    op = ChainOperator(list(fns), in_shape, n_out) if free or len(in_shape) > 1 or len(fns) > 1 else None

    def f(x: Tensor) -> Tensor:
        for fn in fns:
            x = fn(x)
        return x.reshape(x.shape[0], -1)

    with torch.no_grad():
        b = f(torch.zeros(1, *in_shape, dtype=torch.float64))[0]
        if free:
            return None, b.to(dtype), op
        W = torch.empty(n_out, n_in, dtype=torch.float64)
        chunk = max(1, min(n_in, 2**24 // max(1, n_out)))
        for j in range(0, n_in, chunk):
            k = min(chunk, n_in - j)
            E = torch.zeros(k, n_in, dtype=torch.float64)
            E[torch.arange(k), torch.arange(j, j + k)] = 1.0
            W[:, j : j + k] = (f(E.reshape(k, *in_shape)) - b).T
    return W.to(dtype), b.to(dtype), op


def layers_from_chain(steps: list[Step], latent_shape: tuple[int, ...], dtype: torch.dtype, *,
                      memory_budget: int = DEFAULT_MEMORY_BUDGET) -> list[Layer]:
    """Group the chain's steps into layers ``phi(W x + b)`` (affine maps composed, and materialized
    where the dense weight fits ``memory_budget`` bytes; a larger one is kept matrix-free, ``W``
    None and the layer's ``op`` its only access).

    An affine map with no activation after it gets the identity; reshapes after the last
    activation only shape the output.

    Raises
    ------
    UnsupportedLayerError
        For an activation first or two activations in a row (naming the node), or no affine map.
    """
    layers: list[Layer] = []
    pending: list[Callable[[Tensor], Tensor]] = []
    pending_names: list[str] = []
    has_affine = False
    in_shape = tuple(latent_shape)
    prev = "the latent"
    for st in steps:
        if st.kind == "activation":
            if not has_affine:
                raise UnsupportedLayerError(
                    f"node {st.name}: expected an activation after an affine map (Linear, convolution, ...), "
                    f"received it directly after {prev} (two activations in a row or an activation first)"
                )
            n_out = math.prod(st.in_shape)
            label = " + ".join(pending_names)
            W, b, op = _affine_layer(pending, in_shape, n_out, dtype, memory_budget)
            assert st.activation is not None
            layers.append(Layer(W, b, st.activation, name=f"{label} -> {st.name}", op=op))
            pending, pending_names, has_affine = [], [], False
            in_shape = st.out_shape
        else:
            assert st.fn is not None
            pending.append(st.fn)
            pending_names.append(st.name)
            has_affine = has_affine or st.kind == "affine"
        prev = f"node {st.name}"
    if has_affine:
        n_out = math.prod(steps[-1].out_shape)
        label = " + ".join(pending_names)
        W, b, op = _affine_layer(pending, in_shape, n_out, dtype, memory_budget)
        layers.append(Layer(W, b, Activation("identity"), name=label, op=op))
    if not layers:
        raise UnsupportedLayerError("module: expected at least one affine map (Linear, convolution, ...), received none")
    return layers

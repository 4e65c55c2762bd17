"""MODEL on the command line: the shipped generator, a geninv generator file, or a torch state dict
with the architecture named by ``--arch`` (read without unpickling code)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from geninv.cli.common import one_line

if TYPE_CHECKING:
    import torch

    from geninv.model import Generator


def _parse_dims(text: str, flag: str) -> list[int]:
    from geninv.exceptions import InputError

    try:
        dims = [int(v) for v in text.split(",")]
    except ValueError:
        raise InputError(f"{flag}: expected comma-separated integers like 20,200,600, received {text!r}") from None
    if len(dims) < 2 or min(dims) < 1:
        raise InputError(f"{flag}: expected at least two positive widths like 20,200,600, received {text!r}")
    return dims


def _torch_output(name: str) -> object:
    from torch import nn

    from geninv.model import PLU

    return {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "relu": nn.ReLU, "leaky_relu": nn.LeakyReLU,
            "identity": nn.Identity, "plu": PLU}[name]()


def _read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors file or a torch file loaded with ``weights_only=True``."""
    from pathlib import Path

    import torch

    from geninv.exceptions import ModelFileError

    p = Path(path)
    if not p.is_file():
        raise ModelFileError(f"MODEL: expected an existing state-dict file, received {path!r}")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            sd: object = load_file(str(p))
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
            raise ModelFileError(f"MODEL: expected a safetensors state dict, could not read {path!r}: {one_line(e)}") from None
    else:
        import warnings

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch's notes on pickle protocols
                sd = torch.load(p, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - refused pickles and corrupt files alike
            raise ModelFileError(f"MODEL: expected a torch state dict of tensors, could not read {path!r} with "
                                 "torch.load(weights_only=True): it holds objects other than tensors, or is not a "
                                 "torch file; geninv never runs code from a model file") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not sd or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                     for k, v in sd.items()):
        raise ModelFileError(f"MODEL: expected a state dict (names to tensors) in {path!r}, received {type(sd).__name__}")
    return sd  # type: ignore[return-value]


def _from_state_dict(path: str, arch: str, output: str, batchnorm: bool) -> Generator:
    """``Generator.from_torch`` of the named architecture with the tensors of ``path``."""
    from torch import nn

    from geninv.exceptions import InputError
    from geninv.model import Generator

    dims = _parse_dims(arch, "--arch")
    sd = _read_state_dict(path)
    first = next(v for v in sd.values() if v.is_floating_point())
    mods: list[nn.Module] = []
    for i in range(len(dims) - 1):
        mods.append(nn.Linear(dims[i], dims[i + 1], dtype=first.dtype))
        if i < len(dims) - 2:
            if batchnorm:
                mods.append(nn.BatchNorm1d(dims[i + 1], dtype=first.dtype))
            mods.append(nn.ReLU())
    mods.append(_torch_output(output))  # type: ignore[arg-type]
    net = nn.Sequential(*mods)
    want = net.state_dict()
    # The same names, possibly under a common prefix ("net.", "module.", ...); else the same
    # tensors in the same order (a Sequential with other module indices, named submodules).
    keyed: dict[str, torch.Tensor] | None = None
    for k in sd:
        for w in want:
            if k.endswith(w):
                prefix = k[: len(k) - len(w)]
                cand = {w2: sd.get(prefix + w2) for w2 in want}
                if all(v is not None for v in cand.values()) and len(sd) == len(want):
                    keyed = cand  # type: ignore[assignment]
                    break
        if keyed is not None:
            break
    if keyed is None:
        tensors = list(sd.values())
        if len(tensors) == len(want) and all(tuple(a.shape) == tuple(b.shape) for a, b in zip(tensors, want.values(), strict=True)):
            keyed = dict(zip(want, tensors, strict=True))  # type: ignore[arg-type]
    if keyed is None or any(tuple(keyed[k].shape) != tuple(want[k].shape) for k in want):
        exp = ", ".join(f"{k} {tuple(v.shape)}" for k, v in list(want.items())[:6])
        got = ", ".join(f"{k} {tuple(v.shape)}" for k, v in list(sd.items())[:6])
        raise InputError(f"--arch: expected a state dict of {arch}{' with batch-norm' if batchnorm else ''} "
                         f"({len(want)} tensors: {exp}{', ...' if len(want) > 6 else ''}), received {len(sd)} tensors in "
                         f"{path!r}: {got}{', ...' if len(sd) > 6 else ''}")
    net.load_state_dict(keyed)
    net.eval()
    return Generator.from_torch(net)


def load_model(a: argparse.Namespace, default: str | None = None) -> Generator:
    """The generator named by MODEL (``a.generator``) and the state-dict flags."""
    from geninv.exceptions import InputError
    from geninv.model import load_generator
    from geninv.weights import load_mnist_generator

    spec = a.generator if a.generator is not None else default
    if a.arch is None:
        if a.batchnorm:
            raise InputError("--batchnorm: expected together with --arch (it describes a state-dict MODEL)")
        if a.output is not None and getattr(a, "random", None) is None:
            raise InputError("--output: expected together with --arch (or --random for certify)")
        if spec == "mnist":
            return load_mnist_generator()
        from geninv.exceptions import ModelFileError

        try:
            return load_generator(str(spec))
        except ModelFileError as e:
            if "torch" in str(e) or str(spec).endswith((".pt", ".pth")):
                raise ModelFileError(f"{e}; or, for a state dict, name its architecture: --arch DIMS [--output ACT] "
                                     "[--batchnorm]") from None
            raise
    if spec is None or spec == "mnist":
        raise InputError(f"--arch: expected a state-dict file as MODEL, received {spec!r} (the shipped generator "
                         "knows its architecture)")
    return _from_state_dict(spec, a.arch, a.output or "tanh", a.batchnorm)


"""Safe save/load of generators: one safetensors file, architecture as JSON metadata.

Nothing here unpickles: a file that is a pickle or a torch zip archive is refused before
any of its bytes are interpreted as objects.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import torch

from geninv.exceptions import GenInvError, ModelFileError
from geninv.model.activations import Activation
from geninv.model.generator import Generator
from geninv.model.layers import Layer

__all__ = ["save_generator", "load_generator", "FORMAT"]

FORMAT = "geninv.generator/1"
_MAX_HEADER = 100 * 2**20


def save_generator(G: Generator, path: str | os.PathLike[str]) -> None:
    """Write ``G`` to ``path`` atomically (write to a temporary file, then rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {}
    arch: dict[str, Any] = {"format": FORMAT, "dims": G.dims, "layers": []}
    for i, layer in enumerate(G.layers):
        tensors[f"layers.{i}.W"] = layer.W.detach().cpu().contiguous()
        tensors[f"layers.{i}.b"] = layer.b.detach().cpu().contiguous()
        arch["layers"].append({"n_in": layer.n_in, "n_out": layer.n_out, "activation": layer.activation.to_dict()})
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"geninv": json.dumps(arch)})
    os.replace(tmp, path)


def _sniff(path: Path, data: bytes) -> None:
    if data[:2] == b"PK":
        raise ModelFileError(
            f"path {str(path)!r}: expected a safetensors generator file, received a zip archive "
            "(a torch.save checkpoint?); geninv never unpickles. Convert it with "
            "Generator.from_torch(module).save(path) in a trusted session"
        )
    if data[:1] == b"\x80":
        raise ModelFileError(
            f"path {str(path)!r}: expected a safetensors generator file, received a pickle; "
            "refused without loading (pickles can execute code)"
        )
    if len(data) < 8:
        raise ModelFileError(f"path {str(path)!r}: expected a safetensors file, received {len(data)} bytes (truncated?)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > _MAX_HEADER or 8 + n > len(data):
        raise ModelFileError(
            f"path {str(path)!r}: expected a safetensors header of at most {len(data) - 8} bytes, "
            f"received a header length of {n} (corrupt or truncated file)"
        )
    try:
        header = json.loads(data[8 : 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(f"path {str(path)!r}: the safetensors header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise ModelFileError(f"path {str(path)!r}: expected a JSON object as safetensors header")
    end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__" and isinstance(v, dict) and "data_offsets" in v), default=0)
    if 8 + n + end != len(data):
        raise ModelFileError(
            f"path {str(path)!r}: expected {8 + n + end} bytes from the header, received {len(data)} (truncated or corrupt file)"
        )


def load_generator(path: str | os.PathLike[str], *, dtype: torch.dtype | None = None, device: str | torch.device = "cpu") -> Generator:
    """Load a generator written by :meth:`Generator.save`.

    Raises
    ------
    ModelFileError
        If the file is missing, not safetensors (a pickle or zip is refused unread),
        truncated, corrupt, or its weights do not match its architecture.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"path {str(path)!r}: expected an existing generator file, received a missing path")
    data = path.read_bytes()
    _sniff(path, data)
    try:
        tensors = load(data)
        n = struct.unpack("<Q", data[:8])[0]
        meta = json.loads(data[8 : 8 + n]).get("__metadata__") or {}
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise ModelFileError(f"path {str(path)!r}: corrupt safetensors file ({e})") from None
    if "geninv" not in meta:
        raise ModelFileError(
            f"path {str(path)!r}: expected geninv architecture metadata (format {FORMAT}), received a safetensors "
            f"file without it (keys: {sorted(tensors)[:6]})"
        )
    try:
        arch = json.loads(meta["geninv"])
        if arch.get("format") != FORMAT:
            raise ModelFileError(f"path {str(path)!r}: expected format {FORMAT}, received {arch.get('format')!r}")
        layers = []
        for i, spec in enumerate(arch["layers"]):
            W, b = tensors[f"layers.{i}.W"], tensors[f"layers.{i}.b"]
            if tuple(W.shape) != (spec["n_out"], spec["n_in"]) or tuple(b.shape) != (spec["n_out"],):
                raise ModelFileError(
                    f"path {str(path)!r}: layer {i}: expected W of shape ({spec['n_out']}, {spec['n_in']}) and b of "
                    f"({spec['n_out']},), received {tuple(W.shape)} and {tuple(b.shape)}"
                )
            layers.append(Layer(W, b, Activation.from_dict(spec["activation"])))
        G = Generator(layers)
    except ModelFileError:
        raise
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise ModelFileError(f"path {str(path)!r}: malformed geninv architecture metadata (missing {e})") from None
    except GenInvError as e:
        raise ModelFileError(f"path {str(path)!r}: inconsistent generator: {e}") from None
    if dtype is not None or str(device) != "cpu":
        G = G.to(device, dtype)
    return G

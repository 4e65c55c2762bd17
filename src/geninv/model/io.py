"""Safe save/load of a generator's layers: one safetensors file, architecture as JSON metadata.

Nothing here unpickles: a file that is a pickle or a torch zip archive is refused before
any of its bytes are interpreted as objects. safetensors has no checksum of its own, so the
architecture JSON carries ``sha256``, a digest of itself and of every tensor's bytes: a flipped
byte anywhere in the file is refused instead of silently changing a weight (files written
before the digest existed, or by other tools, load without this check).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from geninv.exceptions import GenInvError, ModelFileError, UnsupportedLayerError
from geninv.model.activations import Activation
from geninv.model.layers import Layer

__all__ = ["write_layers", "read_layers", "FORMAT", "save_module_state", "load_module_state", "MODULE_FORMAT"]

FORMAT = "geninv.generator/1"
_MAX_HEADER = 100 * 2**20


def write_layers(layers: Sequence[Layer], path: str | os.PathLike[str], *, extra: Mapping[str, Any] | None = None) -> None:
    """Write a generator's ``layers`` to ``path`` atomically (write to a temporary file, then rename).

    ``extra``: further JSON entries of the architecture record (read back by :func:`read_layers`).
    """

    path = _as_path(path)
    tensors = {}
    dims = [layers[0].n_in] + [layer.n_out for layer in layers]
    arch: dict[str, Any] = {**(extra or {}), "format": FORMAT, "dims": dims, "layers": []}
    for i, layer in enumerate(layers):
        if layer.W is None:
            raise UnsupportedLayerError(f"layer {i + 1} ({layer.name or 'unnamed'}): expected a dense weight to save, "
                                        "received a matrix-free one; save the torch module (its state_dict) instead")
        tensors[f"layers.{i}.W"] = layer.W.detach().cpu().contiguous()
        tensors[f"layers.{i}.b"] = layer.b.detach().cpu().contiguous()
        spec = {"n_in": layer.n_in, "n_out": layer.n_out, "activation": layer.activation.to_dict()}
        if layer.name:
            spec["name"] = layer.name
        arch["layers"].append(spec)
    _write_signed(tensors, arch, path)


def _write_signed(tensors: dict[str, torch.Tensor], meta: dict[str, Any], path: Path) -> None:
    """Write ``tensors`` to ``path`` atomically (a temporary file, then rename), with ``meta`` and its
    sha256 over ``meta`` and every tensor as the ``geninv`` JSON metadata (``meta`` gains ``sha256``)."""
    from safetensors.torch import save_file

    meta["sha256"] = _digest(meta, tensors)
    tmp = path.with_name(path.name + ".tmp")
    try:
        save_file(tensors, str(tmp), metadata={"geninv": json.dumps(meta)})
        # safetensors creates owner-only files; a model file is ordinary data (umask applies).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except Exception as e:  # safetensors raises its own error type (not OSError) for I/O failures
        if tmp.parent.is_dir():
            tmp.unlink(missing_ok=True)
        raise ModelFileError(f"path {str(path)!r}: expected a writable file path, received one that cannot be written ({e})") from None


def _digest(arch: dict[str, Any], tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({k: v for k, v in arch.items() if k != "sha256"}, sort_keys=True).encode())
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        h.update(f"|{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _as_path(path: object) -> Path:
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not isinstance(path, (str, os.PathLike)) or str(path) == "":
        raise ModelFileError(f"path: expected a file path (str or os.PathLike), received {type(path).__name__} {path!r}"[:200])
    return Path(path)


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
        raise ModelFileError(f"path {str(path)!r}: expected a UTF-8 JSON safetensors header, received invalid bytes ({e})") from None
    if not isinstance(header, dict):
        raise ModelFileError(f"path {str(path)!r}: expected a JSON object as safetensors header, received {type(header).__name__}")
    try:
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__" and isinstance(v, dict) and "data_offsets" in v), default=0)
    except (TypeError, ValueError, IndexError, KeyError):
        raise ModelFileError(f"path {str(path)!r}: expected integer data_offsets in the safetensors header, received malformed ones (corrupt file)") from None
    if 8 + n + end != len(data):
        raise ModelFileError(
            f"path {str(path)!r}: expected {8 + n + end} bytes from the header, received {len(data)} (truncated or corrupt file)"
        )


def read_layers(path: str | os.PathLike[str]) -> tuple[list[Layer], dict[str, Any]]:
    """The layers stored by :func:`write_layers` (tensors on the CPU, as stored) and the
    architecture record (a dict: ``format``, ``dims``, ``layers``, any ``extra`` entries).

    Raises
    ------
    ModelFileError
        If the file is missing, not safetensors (a pickle or zip is refused unread),
        truncated, corrupt, or its weights do not match its architecture.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = _as_path(path)
    if path.is_dir():
        raise ModelFileError(f"path {str(path)!r}: expected a generator file, received a directory")
    if not path.is_file():
        raise ModelFileError(f"path {str(path)!r}: expected an existing generator file, received a missing path")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ModelFileError(f"path {str(path)!r}: expected a readable generator file, received one that cannot be read ({e.strerror})") from None
    _sniff(path, data)
    try:
        tensors = load(data)
        n = struct.unpack("<Q", data[:8])[0]
        meta = json.loads(data[8 : 8 + n]).get("__metadata__") or {}
    except (SafetensorError, ValueError, RuntimeError, TypeError, AttributeError) as e:
        raise ModelFileError(f"path {str(path)!r}: expected a valid safetensors file, received a corrupt one ({e})") from None
    if not isinstance(meta, dict):
        raise ModelFileError(f"path {str(path)!r}: expected a JSON object as safetensors __metadata__, received {type(meta).__name__}")
    if "geninv" not in meta:
        raise ModelFileError(
            f"path {str(path)!r}: expected geninv architecture metadata (format {FORMAT}), received a safetensors "
            f"file without it (keys: {sorted(tensors)[:6]})"
        )
    try:
        arch = json.loads(meta["geninv"])
        if arch.get("format") != FORMAT:
            raise ModelFileError(f"path {str(path)!r}: expected format {FORMAT}, received {arch.get('format')!r}")
        for i, spec in enumerate(arch["layers"]):
            W, b = tensors[f"layers.{i}.W"], tensors[f"layers.{i}.b"]
            if tuple(W.shape) != (spec["n_out"], spec["n_in"]) or tuple(b.shape) != (spec["n_out"],):
                raise ModelFileError(
                    f"path {str(path)!r}: layer {i}: expected W of shape ({spec['n_out']}, {spec['n_in']}) and b of "
                    f"({spec['n_out']},), received {tuple(W.shape)} and {tuple(b.shape)}"
                )
        if "sha256" in arch and _digest(arch, tensors) != arch["sha256"]:
            raise ModelFileError(
                f"path {str(path)!r}: expected sha256 {str(arch['sha256'])[:16]}... of the stored architecture and "
                "weights, received different bytes (corrupt file)"
            )
        layers = []
        for i, spec in enumerate(arch["layers"]):
            W, b = tensors[f"layers.{i}.W"], tensors[f"layers.{i}.b"]
            layers.append(Layer(W, b, Activation.from_dict(spec["activation"]), str(spec.get("name", ""))))
    except ModelFileError:
        raise
    except (KeyError, TypeError, AttributeError, IndexError, ValueError) as e:  # JSONDecodeError is a ValueError
        what = f"missing {e}" if isinstance(e, KeyError) else f"{type(e).__name__}: {e}"
        raise ModelFileError(f"path {str(path)!r}: expected geninv architecture metadata ({FORMAT}), received malformed metadata ({what})") from None
    except GenInvError as e:
        raise ModelFileError(f"path {str(path)!r}: expected a consistent generator, received an inconsistent one: {e}") from None
    return layers, arch


MODULE_FORMAT = "geninv.module_state/1"


def save_module_state(state: dict[str, torch.Tensor], config: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write a torch module's ``state_dict`` and the JSON ``config`` that rebuilds the module to one
    safetensors file, with a sha256 of the config and every tensor (checked by :func:`load_module_state`).

    Used for generators whose dense form is large (convolutional ones): the file holds the
    convolution kernels, and :meth:`Generator.from_torch` reads the rebuilt module.
    """

    path = _as_path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    meta: dict[str, Any] = {"format": MODULE_FORMAT, "config": config}
    _write_signed(tensors, meta, path)


def load_module_state(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state_dict, config)`` from a file written by :func:`save_module_state` (never unpickles).

    Raises
    ------
    ModelFileError
        Missing, not safetensors, truncated, or its sha256 does not match (corrupt).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = _as_path(path)
    if not path.is_file():
        raise ModelFileError(f"path {str(path)!r}: expected an existing module file, received a missing path")
    data = path.read_bytes()
    _sniff(path, data)
    try:
        tensors = load(data)
        n = struct.unpack("<Q", data[:8])[0]
        meta = json.loads(json.loads(data[8 : 8 + n]).get("__metadata__", {}).get("geninv", "{}"))
    except (SafetensorError, ValueError, RuntimeError, TypeError, AttributeError) as e:
        raise ModelFileError(f"path {str(path)!r}: expected a valid safetensors file, received a corrupt one ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != MODULE_FORMAT or "sha256" not in meta:
        raise ModelFileError(f"path {str(path)!r}: expected format {MODULE_FORMAT} with a sha256, received "
                             f"{meta.get('format') if isinstance(meta, dict) else meta!r}")
    if _digest(meta, tensors) != meta["sha256"]:
        raise ModelFileError(f"path {str(path)!r}: expected sha256 {str(meta['sha256'])[:16]}... of the stored config and "
                             "weights, received different bytes (corrupt file)")
    return tensors, dict(meta["config"])

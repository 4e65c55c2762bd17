"""Pretrained generators shipped with geninv.

``mnist_generator.safetensors`` is the paper's MNIST generator (20 -> 128 -> 392 -> 784,
ReLU hidden layers with batch-norm folded in, PLU output, images in ``[-1, 1]``), written by
``geninv train mnist``; ``mnist_generator.json`` beside it records the exact command, seed,
data, epochs, library versions and final losses, so it can be reproduced.

``conv_expansive_module.safetensors`` (20 -> 196 -> 588 -> 784) and
``conv_dcgan_module.safetensors`` (20 -> 1568 -> 3136 -> 784) are two convolutional MNIST
generators (``geninv train mnist --conv C1 C2``: Linear to (C1, 7, 7), two stride-2 transposed
convolutions, batch-norm and ReLU, PLU output), stored as the module's kernels and config
(:func:`geninv.model.io.save_module_state`), each with its JSON training record
``conv_*_generator.json``.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from geninv.exceptions import ModelFileError
from geninv.model import load_generator
from geninv.model.generator import Generator

__all__ = ["mnist_generator_path", "mnist_generator_record", "load_mnist_generator", "CONV_GENERATORS",
           "load_conv_generator", "load_conv_module", "conv_generator_record"]

#: name -> the ``geninv train mnist --conv`` channel counts of the shipped convolutional generators.
CONV_GENERATORS = {"conv_expansive": (4, 3), "conv_dcgan": (32, 16)}


def mnist_generator_path() -> Path:
    """Path of the shipped ``mnist_generator.safetensors`` inside the installed package."""
    p = Path(str(resources.files("geninv.weights").joinpath("mnist_generator.safetensors")))
    if not p.is_file():
        raise ModelFileError(
            f"path {str(p)!r}: expected the shipped MNIST generator, received a missing file "
            "(a broken install? reinstall geninv, or retrain with `geninv train mnist`)"
        )
    return p


def mnist_generator_record() -> dict[str, Any]:
    """The JSON record of how the shipped generator was trained (command, seed, data, epochs, losses)."""
    p = mnist_generator_path().with_suffix(".json")
    try:
        return dict(json.loads(p.read_text()))
    except (OSError, json.JSONDecodeError) as e:
        raise ModelFileError(f"path {str(p)!r}: expected the JSON record of the shipped generator ({e})") from None


def load_mnist_generator(*, dtype: torch.dtype | None = None, device: str | torch.device = "cpu") -> Generator:
    """The trained MNIST generator of the paper (docs/method.md sec. 8), shipped with the package.

    Parameters
    ----------
    dtype : torch.dtype, optional
        Convert the (float32) weights, e.g. to ``torch.float64`` for certificates.
    device : str or torch.device

    Returns
    -------
    Generator
        ``dims == [20, 128, 392, 784]``, ReLU hidden layers, PLU output (``alpha=0.1, c=1``);
        images are rows of 784 pixels in ``[-1, 1]`` (see :func:`geninv.data.mnist`).

    Examples
    --------
    >>> G = load_mnist_generator()
    >>> G.dims
    [20, 128, 392, 784]
    >>> z, y = G.sample(16, seed=0)
    """
    return load_generator(mnist_generator_path(), dtype=dtype, device=device)


def _conv_path(name: str) -> Path:
    from geninv.exceptions import InputError

    if name not in CONV_GENERATORS:
        raise InputError(f"name: expected one of {sorted(CONV_GENERATORS)}, received {name!r}")
    p = Path(str(resources.files("geninv.weights").joinpath(f"{name}_module.safetensors")))
    if not p.is_file():
        raise ModelFileError(f"path {str(p)!r}: expected the shipped generator {name!r}, received a missing file "
                             "(a broken install? reinstall geninv)")
    return p


def conv_generator_record(name: str) -> dict[str, Any]:
    """The JSON record of how the shipped convolutional generator ``name`` was trained."""
    p = _conv_path(name).with_name(f"{name}_generator.json")
    try:
        return dict(json.loads(p.read_text()))
    except (OSError, json.JSONDecodeError) as e:
        raise ModelFileError(f"path {str(p)!r}: expected the JSON record of the shipped generator ({e})") from None


def load_conv_module(name: str) -> torch.nn.Module:
    """The shipped convolutional generator ``name`` as the torch module it was trained as (eval mode)."""
    from geninv.model.io import load_module_state
    from geninv.train.gan import GANConfig, build_generator

    path = _conv_path(name)
    state, config = load_module_state(path)
    module = build_generator(GANConfig.from_dict(config))
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        raise ModelFileError(f"path {str(path)!r}: expected the weights of the stored architecture, received others "
                             f"({str(e).splitlines()[0]})") from None
    return module.eval()


def load_conv_generator(name: str, *, dtype: torch.dtype | None = None, device: str | torch.device = "cpu",
                        memory_budget: int | None = None) -> Generator:
    """A shipped convolutional MNIST generator: ``"conv_expansive"`` or ``"conv_dcgan"``.

    The file holds the trained module's kernels (safetensors, checked by sha256); the module is
    rebuilt and read with :meth:`Generator.from_torch` (transposed convolutions as dense
    matrices, batch-norm folded, checked against the module). ``memory_budget`` (bytes, see
    :meth:`Generator.from_torch`): a layer whose dense weight exceeds it is kept matrix-free.

    Returns
    -------
    Generator
        ``dims`` ``[20, 196, 588, 784]`` (expansive) or ``[20, 1568, 3136, 784]`` (DCGAN-shaped),
        ReLU hidden layers, PLU output; images are rows of 784 pixels in ``[-1, 1]``.

    Examples
    --------
    >>> load_conv_generator("conv_expansive").dims
    [20, 196, 588, 784]
    """
    module = load_conv_module(name)
    if dtype is not None:
        module = module.to(dtype)  # fold batch-norm and compose in the precision asked for
    G = Generator.from_torch(module, memory_budget=memory_budget)
    return G if str(device) == "cpu" else G.to(device)

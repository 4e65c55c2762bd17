"""`geninv.invert_chunked`: the same answer as inverting each chunk, planted recovery, memory
budget, and resume from a checkpoint directory without solving finished chunks again."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import geninv
import geninv.solvers as solvers
from geninv.solvers.chunked import bytes_per_signal, chunk_size_for


@pytest.fixture()
def planted():
    G = geninv.random_generator([20, 200, 600], seed=0, dtype=torch.float64)
    z, y = G.sample(10, seed=1)
    return G, z, y


def test_chunks_give_what_each_chunk_gives_alone(planted):
    G, z, y = planted
    res = geninv.invert_chunked(G, y, chunk_size=4)
    assert res.info["chunks"] == 3 and res.z.shape == (10, 20) and res.converged.shape == (10,)
    for lo in (0, 4, 8):
        alone = geninv.invert(G, y[lo:lo + 4], method="latent_pursuit")  # invert_chunked's default method
        assert torch.equal(res.z[lo:lo + 4], alone.z)  # the same call on the same rows: identical bits
        for a, b in zip(res.supports, alone.supports, strict=True):
            assert torch.equal(a[lo:lo + 4], b)
    # float64, n_1 = 200 (unique regime): every latent recovered to rounding level
    assert (geninv.snr(z, res.z) > 120).all() and res.converged.all()


def test_memory_budget_sets_the_chunk_size(planted):
    G, _, y = planted
    per = bytes_per_signal(G, torch.float64)
    assert chunk_size_for(G, 10, 3.5 * per, torch.float64) == 3
    assert chunk_size_for(G, 10, 1e12, torch.float64) == 10 and chunk_size_for(G, 10, 1.0, torch.float64) == 1
    res = geninv.invert_chunked(G, y, memory_budget=3.5 * per)
    assert res.info["chunk_size"] == 3 and res.info["chunks"] == 4


def test_resume_reads_finished_chunks_and_redoes_changed_ones(planted, tmp_path, monkeypatch):
    G, _, y = planted
    first = geninv.invert_chunked(G, y, chunk_size=4, checkpoint=tmp_path / "parts")
    assert len(list((tmp_path / "parts").glob("chunk_*.safetensors"))) == 3
    real, calls = solvers.invert, []
    monkeypatch.setattr(solvers, "invert", lambda *a, **k: (calls.append(a[1].shape[0]), real(*a, **k))[1])
    again = geninv.invert_chunked(G, y, chunk_size=4, checkpoint=tmp_path / "parts")
    assert calls == [] and again.info["resumed"] == 3 and torch.equal(again.z, first.z)
    y2 = y.clone()
    y2[5] = G.sample(1, seed=99)[1][0]  # a different signal in the second chunk
    changed = geninv.invert_chunked(G, y2, chunk_size=4, checkpoint=tmp_path / "parts")
    assert calls == [4] and changed.info["resumed"] == 2
    # other options are other work: nothing is reused
    calls.clear()
    geninv.invert_chunked(G, y, chunk_size=4, checkpoint=tmp_path / "parts", max_iter=50)
    assert calls == [4, 4, 2]


def test_numpy_memmap_and_per_sample_mask(planted, tmp_path):
    G, z, y = planted
    np.save(tmp_path / "y.npy", y.numpy())
    ymap = np.load(tmp_path / "y.npy", mmap_mode="r")
    masks = torch.stack([geninv.random_mask(600, 0.3, seed=s) for s in range(10)])
    res = geninv.invert_chunked(G, ymap, chunk_size=3, mask=masks.numpy())
    assert res.z.dtype == torch.float64
    # 30 % hidden, still 420 observed pixels >> 2 s_1: recovered to rounding level
    assert (geninv.snr(z, res.z) > 120).all()


def test_bad_arguments_name_the_argument(planted):
    G, _, y = planted
    with pytest.raises(geninv.InputError, match="chunk_size"):
        geninv.invert_chunked(G, y, chunk_size=0)
    with pytest.raises(geninv.ShapeError, match="y: expected shape"):
        geninv.invert_chunked(G, y[:, :5])
    with pytest.raises(geninv.InputError, match="memory_budget"):
        geninv.invert_chunked(G, y, memory_budget=-1)

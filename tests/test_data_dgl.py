"""DGL binary graph reader: real MAGB files against an independent byte scan and the README's
constants, plus truncated / corrupted / out-of-range inputs."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from mlaga_fast.data.dgl_format import dgl_graph_bytes, read_dgl_graph

# From /work/shared/data/README.md: nodes, stored edges, classes.
EXPECTED = {"Toys": (20695, 63443, 18), "Grocery": (17074, 85670, 20)}
TENSOR_MAGIC = struct.pack("<Q", 0xDD5E40F096B4A13F)


def independent_records(raw: bytes) -> list[np.ndarray]:
    """Every 1-D int64 tensor record in the file, found by scanning for the tensor magic number
    (no knowledge of the graph layout): magic, reserved, ctx(8), ndim(4), dtype(4), shape, nbytes, data."""
    out, pos = [], 0
    while (pos := raw.find(TENSOR_MAGIC, pos)) >= 0:
        ndim = struct.unpack_from("<i", raw, pos + 24)[0]
        code, bits = raw[pos + 28], raw[pos + 29]
        if ndim == 1 and (code, bits) == (0, 64):
            (length,) = struct.unpack_from("<q", raw, pos + 32)
            (nbytes,) = struct.unpack_from("<q", raw, pos + 40)
            if nbytes == 8 * length:
                out.append(np.frombuffer(raw, "<i8", length, pos + 48))
        pos += 8
    return out


def _real(magb_dir: Path, name: str) -> Path:
    p = magb_dir / f"{name}Graph.pt"
    if not p.exists():
        pytest.skip(f"real MAGB graph not found at {p}")
    return p


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_graph_matches_independent_scan(name, magb_dir):
    path = _real(magb_dir, name)
    n, e, k = EXPECTED[name]
    g = read_dgl_graph(path)
    assert g.num_nodes == n
    assert g.src.shape == (e,) and g.dst.shape == (e,)
    assert g.src.dtype == np.int64
    assert set(g.ndata) == {"label"}
    assert len(np.unique(g.ndata["label"])) == k
    recs = independent_records(path.read_bytes())
    edge_recs = [r for r in recs if r.shape == (e,)]
    assert len(edge_recs) == 2  # source ids then destination ids
    np.testing.assert_array_equal(g.src, edge_recs[0])
    np.testing.assert_array_equal(g.dst, edge_recs[1])
    label_recs = [r for r in recs if r.shape == (n,)]
    np.testing.assert_array_equal(g.ndata["label"], label_recs[-1])


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_writer_reproduces_real_file(name, magb_dir):
    # DGL pads the first 4 KiB with uninitialised memory; everything after it must match byte for byte.
    path = _real(magb_dir, name)
    raw = path.read_bytes()
    g = read_dgl_graph(path)
    out = dgl_graph_bytes(g.src, g.dst, g.num_nodes, g.ndata)
    assert len(out) == len(raw)
    assert out[4096:] == raw[4096:]
    assert out[:32] == raw[:32]


def _small(tmp_path, src=(0, 1, 2), dst=(1, 2, 0), n=4, ndata=None) -> Path:
    p = tmp_path / "g.pt"
    p.write_bytes(dgl_graph_bytes(np.array(src), np.array(dst), n, ndata or {"label": np.arange(n)}))
    return p


def test_small_roundtrip(tmp_path):
    feat = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    p = _small(tmp_path, ndata={"label": np.array([0, 1, 1, 0]), "feat": feat})
    g = read_dgl_graph(p)
    np.testing.assert_array_equal(g.src, [0, 1, 2])
    np.testing.assert_array_equal(g.dst, [1, 2, 0])
    np.testing.assert_array_equal(g.ndata["feat"], feat)


def test_truncated_everywhere(tmp_path):
    raw = _small(tmp_path).read_bytes()
    cuts = [0, 7, 31, 100, 4095, 4100, 4200, len(raw) // 2, len(raw) - 9, len(raw) - 1]
    for cut in cuts:
        p = tmp_path / f"cut{cut}.pt"
        p.write_bytes(raw[:cut])
        with pytest.raises(ValueError, match="truncated"):
            read_dgl_graph(p)


def test_truncated_real_file(tmp_path, magb_dir):
    raw = _real(magb_dir, "Toys").read_bytes()
    p = tmp_path / "ToysGraph.pt"
    p.write_bytes(raw[: len(raw) - 300_000])
    with pytest.raises(ValueError, match="truncated"):
        read_dgl_graph(p)


def test_bad_magic_and_not_dgl(tmp_path):
    raw = bytearray(_small(tmp_path).read_bytes())
    raw[0] ^= 0xFF
    p = tmp_path / "bad.pt"
    p.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="magic"):
        read_dgl_graph(p)
    p.write_bytes(b"PK\x03\x04" + b"\x00" * 5000)  # a torch zip pickle is not a DGL file
    with pytest.raises(ValueError, match="magic"):
        read_dgl_graph(p)
    with pytest.raises(ValueError, match="not found"):
        read_dgl_graph(tmp_path / "missing.pt")


def test_out_of_range_edge(tmp_path):
    p = _small(tmp_path, src=(0, 1, 2), dst=(1, 9, 0), n=4)
    with pytest.raises(ValueError, match=r"edge 1 has destination node id 9, out of range \[0, 4\)"):
        read_dgl_graph(p)


def test_out_of_range_edge_patched_real_file(tmp_path, magb_dir):
    raw = bytearray(_real(magb_dir, "Grocery").read_bytes())
    # Find the source-id record independently: the first int64 record of length == stored edges.
    pos = 0
    while True:
        pos = raw.find(TENSOR_MAGIC, pos)
        if struct.unpack_from("<q", raw, pos + 32)[0] == EXPECTED["Grocery"][1]:
            break
        pos += 8
    struct.pack_into("<q", raw, pos + 48 + 8 * 5, 10**9)  # source id of edge 5
    p = tmp_path / "GroceryGraph.pt"
    p.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="edge 5 has source node id 1000000000"):
        read_dgl_graph(p)


def test_label_length_mismatch(tmp_path):
    p = _small(tmp_path, ndata={"label": np.arange(3)})
    with pytest.raises(ValueError, match="node data 'label' has 3 rows, expected 4"):
        read_dgl_graph(p)


def test_random_corruption_never_crashes(tmp_path):
    """Bit flips and cuts anywhere give a ValueError or a graph that passes its own checks."""
    raw = _small(tmp_path).read_bytes()
    rng = np.random.default_rng(0)
    p = tmp_path / "fuzz.pt"
    for trial in range(300):
        b = bytearray(raw)
        for _ in range(rng.integers(1, 4)):
            i = int(rng.integers(4096, len(b)))
            b[i] = int(rng.integers(0, 256))
        if trial % 3 == 0:
            b = b[: int(rng.integers(0, len(b)))]
        p.write_bytes(bytes(b))
        try:
            g = read_dgl_graph(p)
        except ValueError:
            continue
        assert g.src.shape == g.dst.shape
        assert ((g.src >= 0) & (g.src < g.num_nodes)).all()

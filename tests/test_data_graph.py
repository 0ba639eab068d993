"""MultimodalGraph construction and validation, against set-based references."""
from __future__ import annotations

import numpy as np
import pytest

from mlaga_fast.data import LinkSplit, MultimodalGraph
from mlaga_fast.data.graph import symmetrize


def reference_clean(src, dst):
    """Plain-Python reference: undirected pairs, self-loops and duplicates counted."""
    loops = sum(1 for a, b in zip(src, dst) if a == b)
    pairs = {(min(a, b), max(a, b)) for a, b in zip(src, dst) if a != b}
    return pairs, loops, (len(src) - loops) - len(pairs)


@pytest.mark.parametrize("seed", range(6))
def test_symmetrize_matches_reference(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    m = int(rng.integers(0, 200))
    src, dst = rng.integers(0, n, m), rng.integers(0, n, m)
    g = MultimodalGraph.from_edges("t", src, dst, n)
    pairs, loops, dups = reference_clean(src.tolist(), dst.tolist())
    assert g.num_edges == len(pairs)
    assert g.stats["self_loops_dropped"] == loops
    assert g.stats["duplicates_merged"] == dups
    assert g.stats["stored_edges"] == m
    # every pair in both directions, neighbours sorted
    for v in range(n):
        nb = g.indices[g.indptr[v]:g.indptr[v + 1]].tolist()
        assert nb == sorted({b for a, b in pairs if a == v} | {a for a, b in pairs if b == v})
    assert {tuple(p) for p in g.edge_pairs().T.tolist()} == pairs


def test_counts_hand_example():
    # (0,1) twice plus its reverse, a self-loop on 2, (2,3) once
    g = MultimodalGraph.from_edges("t", [0, 0, 1, 2, 2], [1, 1, 0, 2, 3], 5)
    assert g.stats["self_loops_dropped"] == 1
    assert g.stats["duplicates_merged"] == 2
    assert g.num_edges == 2
    np.testing.assert_array_equal(g.indptr, [0, 1, 2, 3, 4, 4])
    np.testing.assert_array_equal(g.indices, [1, 0, 3, 2])
    assert g.num_classes == 0 and isinstance(g.num_classes, int)


def _ok(**kw):
    base = dict(labels=[0, 1, 0, -1], class_names=["a", "b"], texts=["w", "x", "y", "z"])
    base.update(kw)
    return MultimodalGraph.from_edges("t", [0, 1, 2], [1, 2, 3], 4, **base)


def test_valid_graph_and_num_classes():
    g = _ok(train=[0], val=[1], test=[2])
    assert g.num_nodes == 4 and g.num_classes == 2
    assert g.train_graph()[0] is g.indptr  # no link split: the full graph


@pytest.mark.parametrize("kw, pattern", [
    (dict(labels=[0, 1, 0]), r"labels has 3 entries for 4 nodes \(first bad index 3\)"),
    (dict(labels=[0, 1, 5, 0]), r"labels: value 5 at index 2 is outside \[-1, 2\)"),
    (dict(labels=[0, -2, 0, 0]), r"labels: value -2 at index 1"),
    (dict(texts=["a", "b"]), r"texts has 2 entries for 4 nodes"),
    (dict(texts=["a", "b", 3, "d"]), r"texts\[2\] must be a string"),
    (dict(train=[0, 7]), r"train: node id 7 at index 1 is out of range \[0, 4\)"),
    (dict(train=[0, 1, 0]), r"train: node id 0 at index 2 appears more than once"),
    (dict(train=[0, 1], test=[2, 1]), r"test: node 1 at index 1 is also in train"),
    (dict(features={"clip": np.array([[0.0], [1.0], [np.nan], [0.0]])}), r"features\['clip'\]: non-finite value .* row 2"),
    (dict(features={"clip": np.zeros((3, 2))}), r"features\['clip'\] has 3 rows for 4 nodes"),
    (dict(train=[0.5]), r"train must hold integer ids; entry 0 is 0.5"),
])
def test_bad_fields_name_field_and_index(kw, pattern):
    with pytest.raises(ValueError, match=pattern):
        _ok(**kw)


def test_out_of_range_edges():
    with pytest.raises(ValueError, match=r"dst: node id 4 at index 2 is out of range \[0, 4\)"):
        MultimodalGraph.from_edges("t", [0, 1, 2], [1, 2, 4], 4)
    with pytest.raises(ValueError, match=r"src: node id -1 at index 0"):
        symmetrize([-1], [0], 3)
    with pytest.raises(ValueError, match="differ in length"):
        symmetrize([0, 1], [1], 3)


@pytest.mark.parametrize("indptr, indices, pattern", [
    ([0, 1, 2], [1, 2], r"indices\[1\] = 2 is out of range"),  # the C++ check
    ([0, 2, 1], [1, 0], r"non-decreasing"),
    ([0, 1, 1], [1], r"edge \(0, 1\) at index 0 has no reverse"),
    ([0, 1, 2], [0, 0], r"self-loop on node 0 at index 0"),
    ([0, 2, 3, 4], [2, 1, 0, 0], r"unsorted neighbour 1 of node 0 at index 1"),
    ([0, 2, 4], [1, 1, 0, 0], r"duplicate neighbour 1 of node 0 at index 1"),
])
def test_bad_csr(indptr, indices, pattern):
    with pytest.raises(ValueError, match=pattern):
        MultimodalGraph("t", indptr, indices)


def test_link_split_validation_and_train_graph():
    # path 0-1-2-3-4 plus chord 0-2
    g = MultimodalGraph.from_edges("t", [0, 1, 2, 3, 0], [1, 2, 3, 4, 2], 5)
    ok = LinkSplit(train_pos=[[0, 1, 3], [1, 2, 4]], val_pos=[[0], [2]], val_neg=[[0], [4]],
                   test_pos=[[3], [2]], test_neg=[[1], [4]])
    g.set_link_split(ok)
    ip, ix = g.train_graph()
    kept = {(int(a), int(b)) for a in range(5) for b in ix[ip[a]:ip[a + 1]]}
    assert kept == {(0, 1), (1, 0), (1, 2), (2, 1), (3, 4), (4, 3)}
    bad_neg = LinkSplit(train_pos=[[0], [1]], val_pos=[[0], [2]], val_neg=[[1], [2]],
                        test_pos=[[3], [2]], test_neg=[[1], [4]])
    with pytest.raises(ValueError, match=r"val_neg: pair \(1, 2\) at column 0 is an edge"):
        g.set_link_split(bad_neg)
    bad_pos = LinkSplit(train_pos=[[0], [1]], val_pos=[[0], [4]], val_neg=[[1], [4]],
                        test_pos=[[3], [2]], test_neg=[[1], [4]])
    with pytest.raises(ValueError, match=r"val_pos: pair \(0, 4\) at column 0 is not an edge"):
        g.set_link_split(bad_pos)
    unequal = LinkSplit(train_pos=[[0], [1]], val_pos=[[0], [2]], val_neg=[[0, 1], [4, 4]],
                        test_pos=[[3], [2]], test_neg=[[1], [4]])
    with pytest.raises(ValueError, match="val_neg has 2 pairs but val_pos has 1"):
        g.set_link_split(unequal)
    leak = LinkSplit(train_pos=[[2], [0]], val_pos=[[0], [2]], val_neg=[[0], [4]],
                     test_pos=[[3], [2]], test_neg=[[1], [4]])
    with pytest.raises(ValueError, match="also a held-out"):
        g.set_link_split(leak)
    with pytest.raises(ValueError, match=r"must have shape \[2, M\]"):
        LinkSplit(train_pos=np.zeros((3, 1)), val_pos=[[0], [2]], val_neg=[[0], [4]], test_pos=[[3], [2]],
                  test_neg=[[1], [4]])


@pytest.mark.parametrize("chunk", [1, 2, 1 << 20])
def test_link_split_checked_in_chunks_names_the_global_column(monkeypatch, chunk):
    """The split is validated a few columns at a time (bounded memory); every message still names the
    column in the whole array, the same for any chunk size."""
    import mlaga_fast.data.graph as graph_mod

    monkeypatch.setattr(graph_mod, "_CHUNK", chunk)
    g = MultimodalGraph.from_edges("t", [0, 1, 2, 3, 0], [1, 2, 3, 4, 2], 5)
    base = dict(val_pos=[[0], [2]], val_neg=[[0], [4]], test_pos=[[3], [2]], test_neg=[[1], [4]])
    g.set_link_split(LinkSplit(train_pos=[[0, 1, 3, 1], [1, 2, 4, 0]], **base))
    cases = {
        r"train_pos: pair \(1, 4\) at column 3 is not an edge": [[0, 1, 3, 1], [1, 2, 4, 4]],
        r"train_pos: self-loop at column 2": [[0, 1, 3, 1], [1, 2, 3, 0]],
        r"train_pos: node id 9 at \[1, 3\] is out of range \[0, 5\)": [[0, 1, 3, 1], [1, 2, 4, 9]],
        r"train_pos: node id -1 at \[0, 2\] is out of range": [[0, 1, -1, 1], [1, 2, 4, 9]],
        r"train_pos: pair \(2, 0\) at column 3 is also a held-out": [[0, 1, 3, 2], [1, 2, 4, 0]],
    }
    for msg, train in cases.items():
        with pytest.raises(ValueError, match=msg):
            g.set_link_split(LinkSplit(train_pos=train, **base))


def test_fingerprint_tracks_content():
    a, b = _ok(), _ok()
    assert a.fingerprint == b.fingerprint
    assert _ok(texts=["w", "x", "y", "Z"]).fingerprint != a.fingerprint
    assert _ok(labels=[1, 1, 0, -1]).fingerprint != a.fingerprint
    assert MultimodalGraph.from_edges("u", [0, 1, 2], [1, 2, 3], 4, labels=[0, 1, 0, -1], class_names=["a", "b"],
                                      texts=["w", "x", "y", "z"]).fingerprint != a.fingerprint


def test_pickles_for_dataloader_workers():
    import pickle

    g = _ok(train=[0], val=[1], test=[2])
    h = pickle.loads(pickle.dumps(g))
    np.testing.assert_array_equal(h.indices, g.indices)
    assert h.texts == g.texts and h.fingerprint == g.fingerprint
    assert h.train_graph()[0] is h.indptr

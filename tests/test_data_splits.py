"""Node splits and the link-prediction split, including the leakage test on the real graphs."""
from __future__ import annotations


import numpy as np
import pytest
from click.testing import CliRunner

from mlaga_fast.cli.main import cli
from mlaga_fast.data import MultimodalGraph, load, random_node_split, save, split_links
from mlaga_fast.data.magb import load_magb



def _edge_set(indptr, indices) -> set:
    """Directed (u, v) pairs of a CSR, built with plain Python from the raw arrays."""
    out = set()
    for u in range(len(indptr) - 1):
        for v in indices[indptr[u]:indptr[u + 1]].tolist():
            out.add((u, v))
    return out


def assert_no_leak(g: MultimodalGraph):
    ls = g.link_split
    train = _edge_set(*g.train_graph())
    full = _edge_set(g.indptr, g.indices)
    for name in ("val_pos", "test_pos"):
        for u, v in getattr(ls, name).T.tolist():
            assert (u, v) not in train and (v, u) not in train, f"{name} edge ({u}, {v}) leaks into the training graph"
            assert (u, v) in full
    for name in ("val_neg", "test_neg"):
        for u, v in getattr(ls, name).T.tolist():
            assert (u, v) not in full and (v, u) not in full and u != v
    # training graph = full graph minus exactly the held-out pairs, still symmetric
    held = {(u, v) for a in (ls.val_pos, ls.test_pos) for u, v in a.T.tolist()}
    held |= {(v, u) for u, v in held}
    assert train == full - held
    assert {(min(u, v), max(u, v)) for u, v in ls.train_pos.T.tolist()} == {(u, v) for u, v in train if u < v}


def test_leakage_synthetic():
    rng = np.random.default_rng(0)
    g = MultimodalGraph.from_edges("s", rng.integers(0, 300, 2000), rng.integers(0, 300, 2000), 300)
    g.set_link_split(split_links(g, 0.05, 0.1, seed=0))
    assert_no_leak(g)


@pytest.mark.parametrize("name", ["Toys", "Grocery"])
def test_leakage_real_graph(name, tmp_path, magb_dir):
    g = load_magb(magb_dir, name, progress=False)
    save(g, tmp_path / "ds")
    r = CliRunner().invoke(cli, ["data", "split-links", str(tmp_path / "ds"), "--val", "0.05", "--test", "0.1",
                                 "--seed", "7"])
    assert r.exit_code == 0, r.output
    h = load(tmp_path / "ds")
    ls = h.link_split
    pairs = g.num_edges
    assert ls.val_pos.shape[1] == round(0.05 * pairs) and ls.test_pos.shape[1] == round(0.1 * pairs)
    assert ls.val_neg.shape == ls.val_pos.shape and ls.test_neg.shape == ls.test_pos.shape
    assert ls.train_pos.shape[1] == pairs - ls.val_pos.shape[1] - ls.test_pos.shape[1]
    assert_no_leak(h)
    # no node loses all its edges because of the split
    full_deg = np.diff(h.indptr)
    train_deg = np.diff(h.train_graph()[0])
    assert not np.any((full_deg > 0) & (train_deg == 0))
    # negatives are distinct
    negs = np.concatenate([ls.val_neg, ls.test_neg], axis=1)
    assert len({(min(u, v), max(u, v)) for u, v in negs.T.tolist()}) == negs.shape[1]


def test_link_split_is_seeded():
    rng = np.random.default_rng(1)
    g = MultimodalGraph.from_edges("s", rng.integers(0, 100, 600), rng.integers(0, 100, 600), 100)
    a, b, c = split_links(g, seed=3), split_links(g, seed=3), split_links(g, seed=4)
    for f, arr in a.arrays().items():
        np.testing.assert_array_equal(arr, b.arrays()[f])
    assert not np.array_equal(a.val_pos, c.val_pos)


def test_link_split_refuses_impossible():
    star = MultimodalGraph.from_edges("star", [0, 0, 0], [1, 2, 3], 4)
    with pytest.raises(ValueError, match="can be held out"):
        split_links(star, 0.5, 0.5, seed=0)
    full = MultimodalGraph.from_edges("k4", [0, 0, 0, 1, 1, 2], [1, 2, 3, 2, 3, 3], 4)
    with pytest.raises(ValueError, match="non-edges"):
        split_links(full, 0.2, 0.2, seed=0, min_train_degree=0)
    with pytest.raises(ValueError, match="fraction"):
        split_links(star, 1.5, 0.1)


def test_random_node_split():
    labels = np.array([0, 1, -1, 2] * 25)  # 75 labelled
    tr, va, te = random_node_split(100, 0.6, 0.2, 0.2, seed=0, labels=labels)
    assert (len(tr), len(va), len(te)) == (45, 15, 15)
    allx = np.concatenate([tr, va, te])
    assert len(set(allx.tolist())) == 75 and (labels[allx] >= 0).all()
    tr2, _, _ = random_node_split(100, 0.6, 0.2, 0.2, seed=0, labels=labels)
    np.testing.assert_array_equal(tr, tr2)
    tr3, _, _ = random_node_split(100, 0.6, 0.2, 0.2, seed=1, labels=labels)
    assert not np.array_equal(tr, tr3)
    with pytest.raises(ValueError, match="more than 1"):
        random_node_split(10, 0.7, 0.2, 0.2)

"""to_pyg / from_pyg round trip (skipped without torch_geometric)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch_geometric")

import torch  # noqa: E402
from torch_geometric.data import Data  # noqa: E402

from mlaga_fast.data import MultimodalGraph, split_links  # noqa: E402
from mlaga_fast.data.pyg import from_pyg, to_pyg  # noqa: E402


def test_roundtrip():
    rng = np.random.default_rng(0)
    n = 60
    g = MultimodalGraph.from_edges("p", rng.integers(0, n, 300), rng.integers(0, n, 300), n,
                                   labels=rng.integers(0, 3, n), class_names=["a", "b", "c"],
                                   texts=[f"t{i}" for i in range(n)], train=np.arange(10), val=np.arange(10, 20),
                                   test=np.arange(20, 30), features={"clip": rng.standard_normal((n, 5))})
    g.set_link_split(split_links(g, 0.1, 0.1, seed=0))
    d = to_pyg(g, x="clip")
    assert d.num_nodes == n and d.edge_index.shape == (2, 2 * g.num_edges)
    assert int(d.train_mask.sum()) == 10 and d.x.shape == (n, 5) and d.texts[3] == "t3"
    # independent check: edge_index pairs equal the CSR's directed pairs
    pairs = {(int(a), int(b)) for a, b in d.edge_index.T.tolist()}
    assert pairs == {(u, int(v)) for u in range(n) for v in g.indices[g.indptr[u]:g.indptr[u + 1]]}
    h = from_pyg(d)
    np.testing.assert_array_equal(h.indptr, g.indptr)
    np.testing.assert_array_equal(h.indices, g.indices)
    np.testing.assert_array_equal(h.labels, g.labels)
    np.testing.assert_array_equal(h.val, g.val)
    np.testing.assert_array_equal(h.link_split.test_neg, g.link_split.test_neg)
    assert h.texts == g.texts and h.class_names == g.class_names and h.name == "p"
    with pytest.raises(ValueError, match="x='nope' is not a feature"):
        to_pyg(g, x="nope")


def test_from_pyg_directed_input_and_bad_mask():
    d = Data(edge_index=torch.tensor([[0, 1, 2, 2], [1, 0, 2, 3]]), num_nodes=4, y=torch.tensor([[0], [1], [0], [1]]))
    g = from_pyg(d, name="x")
    assert g.num_edges == 2 and g.stats["duplicates_merged"] == 1 and g.stats["self_loops_dropped"] == 1
    assert g.labels.tolist() == [0, 1, 0, 1]
    d.train_mask = torch.ones(3, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"train_mask has shape \(3,\), expected \(4,\)"):
        from_pyg(d)
    bad = Data(edge_index=torch.tensor([[0], [7]]), num_nodes=4)
    with pytest.raises(ValueError, match="dst: node id 7 at index 0 is out of range"):
        from_pyg(bad)

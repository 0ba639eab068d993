"""PPR on the real MAGB co-purchase graphs (Toys, Grocery) against float64 power iteration."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers.ppr_reference import power_ppr

from mlaga_fast.ppr import ppr_dense, ppr_topk

def load_csr(path: Path):
    from mlaga_fast.data.dgl_format import read_dgl_graph

    g = read_dgl_graph(path)
    n = int(g.num_nodes)
    src, dst = np.asarray(g.src, np.int64), np.asarray(g.dst, np.int64)
    keep = src != dst  # the graph is undirected: symmetrise, drop self-loops, merge duplicates
    key = np.unique(np.concatenate([src[keep] * n + dst[keep], dst[keep] * n + src[keep]]))
    rows, cols = key // n, key % n
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
    return indptr, cols


@pytest.mark.parametrize("name", ["ToysGraph.pt", "GroceryGraph.pt"])
def test_real_graph_bound_and_topk(name, magb_dir):
    indptr, indices = load_csr(magb_dir / name)
    n = indptr.shape[0] - 1
    deg = np.diff(indptr).astype(np.float64)
    rng = np.random.default_rng(0)
    # a hub, a typical node and random ones (isolated nodes included if drawn)
    sources = np.unique(np.concatenate([[int(np.argmax(deg))], rng.choice(n, 5, replace=False)]))
    alpha, eps, k = 0.15, 1e-4, 32
    pi = power_ppr(indptr, indices, sources, alpha, tol=1e-13)
    p = ppr_dense(indptr, indices, sources, alpha=alpha, eps=eps)
    gap = pi - p
    # power iteration stops with an L1 error below 1e-13 * (1 - alpha) / alpha
    assert gap.min() >= -1e-11
    assert np.all(gap < np.where(deg > 0, eps * deg, 1e-11))
    idx, val = ppr_topk(indptr, indices, sources, alpha=alpha, eps=eps, k=k)
    for i, s in enumerate(sources):
        got = idx[i][idx[i] >= 0]
        assert s not in got
        assert np.all(np.diff(val[i][: got.size]) <= 0)
        assert np.all(pi[i, got] - val[i][: got.size] < eps * deg[got] + 1e-7)
        if got.size == k:
            rest = np.setdiff1d(np.arange(n), np.append(got, s))
            assert np.all(pi[i, rest] - pi[i, got].min() < eps * deg[rest] + 1e-7)

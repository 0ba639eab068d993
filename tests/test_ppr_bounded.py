"""The CUDA kernel's per-source algorithm (bounded hash table, 32 lanes, overflow) run on the host.

bounded_topk_host compiles push_core.h's bounded_push_source with the lanes run one after the
other, so these tests exercise the CUDA kernel body without a GPU. With the serial lane order it
pushes in the same FIFO order as the CPU kernel, so the two must agree bit for bit.
"""
from __future__ import annotations

import numpy as np
import pytest
from helpers.ppr_reference import csr_from_edges, exact_ppr, random_graph

from mlaga_fast.ppr import bounded_topk_host, ppr_topk


@pytest.mark.parametrize("seed,n,m,eps", [(0, 300, 1200, 1e-4), (1, 64, 400, 1e-3), (2, 500, 700, 1e-5)])
def test_bounded_matches_cpu_kernel_exactly(seed, n, m, eps):
    rng = np.random.default_rng(seed)
    indptr, indices = random_graph(rng, n, m)
    sources = np.arange(n)
    mask = rng.random(n) < 0.7
    for cand in (None, mask):
        idx, val, stats = ppr_topk(indptr, indices, sources, eps=eps, k=12, candidates=cand, return_stats=True)
        bidx, bval, status, pushes = bounded_topk_host(indptr, indices.astype(np.int32), sources, eps=eps,
                                                       k=12, candidates=cand, capacity=1 << 12)
        assert np.all(status == 0)
        np.testing.assert_array_equal(bidx, idx)
        np.testing.assert_array_equal(bval, val)
        assert int(pushes.sum()) == stats["edge_pushes"]


def test_overflow_is_reported_never_silent():
    rng = np.random.default_rng(3)
    indptr, indices = random_graph(rng, 200, 150, loops=False, dups=False)
    deg = np.diff(indptr)
    sources = np.arange(200)
    # capacity 8: a source may touch at most 4 nodes, so anything with degree >= 4 overflows
    idx, val, status, _ = bounded_topk_host(indptr, indices, sources, eps=1e-3, k=5, capacity=8)
    assert np.all(status[deg >= 4] == 1)
    assert np.all(idx[status == 1] == -1) and np.all(val[status == 1] == 0)
    ok = status == 0
    assert ok.any()  # low-degree sources fit
    cidx, cval = ppr_topk(indptr, indices, sources[ok], eps=1e-3, k=5)
    np.testing.assert_array_equal(idx[ok], cidx)
    np.testing.assert_array_equal(val[ok], cval)
    # and the rows that did fit still meet the bound
    pi = exact_ppr(indptr, indices, sources[ok], 0.15)
    for i, row in enumerate(idx[ok]):
        got = row[row >= 0]
        assert np.all(pi[i, got] - val[ok][i][: got.size] < 1e-3 * deg[got] + 1e-7)


def test_table_is_reset_between_sources():
    # A source after an overflowed one must see a clean table: same answer as on its own.
    indptr, indices = csr_from_edges(40, np.zeros(30, np.int64), np.arange(1, 31))  # hub 0 + leaves
    indptr2, indices2 = indptr, indices
    alone = bounded_topk_host(indptr2, indices2, [35], k=3, capacity=16)
    after = bounded_topk_host(indptr2, indices2, [0, 35, 3, 35], k=3, capacity=16)
    assert after[2].tolist() == [1, 0, 1, 0]
    np.testing.assert_array_equal(after[0][1], alone[0][0])
    np.testing.assert_array_equal(after[0][3], alone[0][0])


def test_star_hub_fits_large_table():
    leaves = 100_000
    indptr, indices = csr_from_edges(leaves + 1, np.zeros(leaves, np.int64), np.arange(1, leaves + 1))
    b = bounded_topk_host(indptr, indices, [0], eps=1e-7, k=4, capacity=1 << 18)
    c = ppr_topk(indptr, indices, [0], eps=1e-7, k=4)
    assert b[2].tolist() == [0]
    np.testing.assert_array_equal(b[0], c[0])
    np.testing.assert_array_equal(b[0][0], [1, 2, 3, 4])
    over = bounded_topk_host(indptr, indices, [0], eps=1e-7, k=4, capacity=1 << 16)
    assert over[2].tolist() == [1]


@pytest.mark.parametrize("cap", [0, 1, 3, 12, 1 << 31])
def test_bad_capacity(cap):
    indptr, indices = csr_from_edges(3, [0], [1])
    with pytest.raises(ValueError, match="capacity"):
        bounded_topk_host(indptr, indices, [0], capacity=cap)

"""PprGraph: node orders are invisible in the results, the graph is a private copy, and tables
validate the graph once and do not grow with the number of chunks."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from helpers.ppr_reference import csr_from_edges, exact_ppr, random_graph

from mlaga_fast import _C
from mlaga_fast.data import MultimodalGraph
from mlaga_fast.data.splits import random_node_split
from mlaga_fast.ppr import PprGraph, compute_table, ppr_topk, prepared_graph

ORDERS = ("degree", "rcm")


def _graphs():
    rng = np.random.default_rng(3)
    yield "random with loops and duplicates", random_graph(rng, 400, 1600)
    yield "sparse (isolated nodes)", random_graph(rng, 300, 120, loops=False, dups=False)
    indptr = np.concatenate([[0], np.full(61, 60)]).astype(np.int64)  # directed star into dangling leaves
    yield "directed, dangling", (indptr, np.arange(1, 61, dtype=np.int64))
    yield "star with tied leaves", csr_from_edges(2001, np.zeros(2000, np.int64), np.arange(1, 2001))


@pytest.mark.parametrize("order", ORDERS)
def test_order_gives_the_same_answer_in_the_callers_ids(order):
    for label, (indptr, indices) in _graphs():
        n = indptr.shape[0] - 1
        rng = np.random.default_rng(1)
        sources = np.unique(rng.integers(0, n, 40))
        mask = rng.random(n) < 0.6
        plain, ordered = PprGraph(indptr, indices, order="none"), PprGraph(indptr, indices, order=order)
        assert ordered.order == order
        perm = ordered._g.caller_ids()
        assert sorted(perm.tolist()) == list(range(n)), "the order must be a permutation"
        for cand in (None, mask):
            for excl in (True, False):
                a = plain.topk(sources, k=12, eps=1e-5, candidates=cand, exclude_source=excl, return_stats=True)
                b = ordered.topk(sources, k=12, eps=1e-5, candidates=cand, exclude_source=excl, return_stats=True)
                # Rows keep their neighbour order, so the push is the same sequence of float
                # operations: ids, values and work are identical, not merely close.
                np.testing.assert_array_equal(a[0], b[0], err_msg=label)
                np.testing.assert_array_equal(a[1], b[1], err_msg=label)
                assert a[2] == b[2], label
        np.testing.assert_array_equal(plain.dense(sources[:5], eps=1e-6), ordered.dense(sources[:5], eps=1e-6))
        for x, y in zip(plain.bounded_topk_host(sources, k=6, capacity=1 << 13),
                        ordered.bounded_topk_host(sources, k=6, capacity=1 << 13)):
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("order", ORDERS)
def test_ordered_topk_meets_the_bound_against_exact_ppr(order):
    rng = np.random.default_rng(11)
    indptr, indices = random_graph(rng, 300, 1200, loops=False, dups=False)
    deg = np.diff(indptr).astype(np.float64)
    eps, k = 1e-4, 10
    sources = rng.choice(300, 20, replace=False)
    idx, val = PprGraph(indptr, indices, order=order).topk(sources, eps=eps, k=k)
    pi = exact_ppr(indptr, indices, sources, 0.15)
    for i, s in enumerate(sources):
        got = idx[i][idx[i] >= 0]
        assert s not in got  # the source excluded by its caller id
        assert np.all(val[i][: got.size] <= pi[i, got] * (1 + 1e-6) + 1e-12)
        assert np.all(pi[i, got] - val[i][: got.size] < eps * deg[got] + 1e-7)  # ids are the caller's


def test_ties_go_to_the_smaller_caller_id_whatever_the_order():
    # 2000 leaves of one hub tie exactly; "degree" puts the hub first and keeps the leaves' order,
    # "rcm" reverses it, yet the top-5 must be leaves 1..5 in the caller's ids.
    indptr, indices = csr_from_edges(2001, np.zeros(2000, np.int64), np.arange(1, 2001))
    for order in ("none",) + ORDERS:
        idx, val = PprGraph(indptr, indices, order=order).topk([0], eps=1e-7, k=5)
        np.testing.assert_array_equal(idx[0], [1, 2, 3, 4, 5])


def test_rcm_orders_a_shuffled_path_by_its_walk():
    n = 500
    walk = np.random.default_rng(0).permutation(n)  # the path visits nodes in this order
    indptr, indices = csr_from_edges(n, walk[:-1], walk[1:])
    perm = PprGraph(indptr, indices, order="rcm")._g.caller_ids()
    pos = np.empty(n, np.int64)
    pos[perm] = np.arange(n)
    rows = np.repeat(np.arange(n), np.diff(indptr))
    assert np.abs(pos[rows] - pos[indices]).max() == 1  # bandwidth 1: neighbours are adjacent ids
    assert np.abs(rows - indices).max() > 100  # ... which the shuffled ids were not


def test_the_graph_is_a_private_copy():
    rng = np.random.default_rng(5)
    indptr, indices = random_graph(rng, 200, 800)
    g = PprGraph(indptr, indices)
    before = g.topk(np.arange(200), k=8)
    indices[:] = 0  # the caller's arrays change (or are freed) after preparation
    indptr[:] = 0
    after = g.topk(np.arange(200), k=8)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])


def test_32_bit_ids_whatever_the_input_width():
    rng = np.random.default_rng(6)
    indptr, indices = random_graph(rng, 100, 300)
    assert PprGraph(indptr, indices)._g.index_width == 4
    a = ppr_topk(indptr, indices, np.arange(100), k=5)
    b = ppr_topk(indptr, indices.astype(np.int32), np.arange(100), k=5)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def _dataset(n=600, seed=0):
    rng = np.random.default_rng(seed)
    indptr, indices = random_graph(rng, n, 4 * n, loops=False, dups=False)
    labels = rng.integers(0, 4, n)
    tr, va, te = random_node_split(n, seed=seed, labels=labels)
    return MultimodalGraph("table-test", indptr, indices, labels=labels, train=tr, val=va, test=te)


def test_a_table_validates_the_graph_once():
    g = _dataset()
    before = _C._csr_checks_run()
    src, idx, val, _ = compute_table(g, k=5, sources="all", chunk=16, progress=False)  # 38 chunks
    assert _C._csr_checks_run() - before == 1
    compute_table(g, k=5, sources="train", chunk=7, progress=False)  # same graph: prepared already
    assert _C._csr_checks_run() - before == 1
    ref = ppr_topk(*g.train_graph(), src, k=5, candidates=np.isin(np.arange(g.num_nodes), g.train))
    np.testing.assert_array_equal(idx, ref[0])
    np.testing.assert_array_equal(val, ref[1])
    g.set_link_split(None)  # a new train graph is prepared (and validated) again
    assert prepared_graph(g) is prepared_graph(g)


def test_table_memory_does_not_grow_with_the_number_of_chunks():
    g = _dataset(n=3000, seed=1)
    prepared_graph(g)  # one-time preparation, outside the measurement

    def peak(chunk):
        tracemalloc.start()
        compute_table(g, k=16, sources="all", chunk=chunk, progress=False)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    table = 3000 * 16 * 12  # idx int64 + val float32
    one, many = peak(3000), peak(3)  # 1 chunk vs 1000 chunks
    assert many <= one + 64 * 1024, (one, many)
    assert many < 2 * table  # the table itself, plus O(N + chunk) around it

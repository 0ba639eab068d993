"""CPU forward-push PPR against exact PPR: the eps * d(v) bound, top-k order, edge cases, errors."""
from __future__ import annotations

import numpy as np
import pytest
from helpers.ppr_reference import csr_from_edges, exact_ppr, random_graph, reference_topk

from mlaga_fast.ppr import bounded_topk_host, ppr_dense, ppr_topk

LOWER_TOL = 1e-12  # float64 rounding of the push sums


def check_bound(indptr, pi, p, eps):
    """0 <= pi - p < eps * d(v) for every node (dangling nodes: exact)."""
    deg = np.diff(indptr).astype(np.float64)
    gap = pi - p
    assert gap.min() >= -LOWER_TOL, f"p exceeds pi by {-gap.min()}"
    limit = np.where(deg > 0, eps * deg, LOWER_TOL)
    bad = np.argwhere(gap >= limit)
    assert bad.size == 0, f"bound violated at (source row, node) {bad[:3].tolist()}: gap {gap[tuple(bad[0])]}"


@pytest.mark.parametrize("seed,n,m,alpha,eps", [
    (0, 120, 300, 0.15, 1e-3),
    (1, 200, 900, 0.15, 1e-4),
    (2, 80, 120, 0.5, 1e-2),   # sparse: many isolated nodes and small components
    (3, 150, 1500, 0.05, 1e-3),
])
def test_bound_every_node_random_graphs(seed, n, m, alpha, eps):
    rng = np.random.default_rng(seed)
    indptr, indices = random_graph(rng, n, m)  # with self-loops and duplicate edges
    sources = np.arange(n)
    p = ppr_dense(indptr, indices, sources, alpha=alpha, eps=eps)
    pi = exact_ppr(indptr, indices, sources, alpha)
    check_bound(indptr, pi, p, eps)


def test_bound_is_not_vacuous():
    # The approximation must actually be close: with a small eps the top entries match exactly.
    rng = np.random.default_rng(5)
    indptr, indices = random_graph(rng, 100, 400, loops=False, dups=False)
    p = ppr_dense(indptr, indices, [3], alpha=0.15, eps=1e-7)
    pi = exact_ppr(indptr, indices, [3], 0.15)
    np.testing.assert_allclose(p, pi, atol=1e-5)
    # ... and a coarse eps leaves a visible but bounded gap.
    p2 = ppr_dense(indptr, indices, [3], alpha=0.15, eps=1e-2)
    assert (pi - p2).max() > 1e-4


def test_topk_equals_numpy_selection_of_dense():
    rng = np.random.default_rng(7)
    indptr, indices = random_graph(rng, 150, 500)
    sources = np.arange(0, 150, 3)
    mask = rng.random(150) < 0.5
    for exclude in (True, False):
        for cand in (None, mask):
            p = ppr_dense(indptr, indices, sources, alpha=0.2, eps=1e-4)
            idx, val = ppr_topk(indptr, indices, sources, alpha=0.2, eps=1e-4, k=9, candidates=cand,
                                exclude_source=exclude)
            for i, s in enumerate(sources):
                ri, rv = reference_topk(p[i], 9, s, exclude, cand)
                np.testing.assert_array_equal(idx[i], ri)
                np.testing.assert_array_equal(val[i], rv)


def test_topk_agrees_with_exact_up_to_the_bound():
    rng = np.random.default_rng(11)
    indptr, indices = random_graph(rng, 300, 1200, loops=False, dups=False)
    deg = np.diff(indptr).astype(np.float64)
    eps, k = 1e-4, 10
    sources = rng.choice(300, 20, replace=False)
    idx, val = ppr_topk(indptr, indices, sources, alpha=0.15, eps=eps, k=k)
    pi = exact_ppr(indptr, indices, sources, 0.15)
    for i, s in enumerate(sources):
        got = idx[i][idx[i] >= 0]
        # returned values are lower bounds within eps * d (float32 rounding aside)
        assert np.all(val[i][: got.size] <= pi[i, got] * (1 + 1e-6) + 1e-12)
        assert np.all(pi[i, got] - val[i][: got.size] < eps * deg[got] + 1e-7)
        if got.size < k:
            continue
        # any node left out cannot beat a returned one by more than its own bound
        out = np.setdiff1d(np.arange(300), np.append(got, s))
        worst_in = pi[i, got].min()
        assert np.all(pi[i, out] - worst_in < eps * deg[out] + 1e-7)
        # and with a tiny eps, the top-k is exactly the exact top-k (distinct values here)
    idx2, _ = ppr_topk(indptr, indices, sources, alpha=0.15, eps=1e-9, k=k)
    for i, s in enumerate(sources):
        row = pi[i].copy()
        row[s] = -1
        want = np.argsort(-row, kind="stable")[:k]
        np.testing.assert_array_equal(np.sort(idx2[i]), np.sort(want))


def test_isolated_source_and_isolated_nodes():
    indptr, indices = csr_from_edges(5, [0, 1], [1, 2])  # nodes 3, 4 isolated
    p = ppr_dense(indptr, indices, [3], alpha=0.15, eps=1e-4)
    np.testing.assert_array_equal(p[0], [0, 0, 0, 1, 0])  # pi_s = e_s, exactly
    idx, val = ppr_topk(indptr, indices, [3], k=4)
    np.testing.assert_array_equal(idx[0], [-1] * 4)
    np.testing.assert_array_equal(val[0], [0] * 4)
    idx, val = ppr_topk(indptr, indices, [3], k=2, exclude_source=False)
    np.testing.assert_array_equal(idx[0], [3, -1])
    np.testing.assert_array_equal(val[0], [1, 0])


def test_directed_dangling_mass_settles():
    # Directed chain 0 -> 1 -> 2 with 2 dangling (no out-edges): the walk stays at 2.
    indptr = np.array([0, 1, 2, 2], np.int64)
    indices = np.array([1, 2], np.int64)
    alpha = 0.25
    p = ppr_dense(indptr, indices, [0], alpha=alpha, eps=1e-9)
    want = [alpha, (1 - alpha) * alpha, (1 - alpha) ** 2]
    np.testing.assert_allclose(p[0], want, rtol=1e-12)
    pi = exact_ppr(indptr, indices, [0], alpha)
    np.testing.assert_allclose(pi[0], want, rtol=1e-12)


def test_self_loops_and_duplicates_are_weights():
    # Node 0: self-loop + two parallel edges to 1 + one edge to 2.
    indptr, indices = csr_from_edges(4, [0, 0, 0, 0, 2], [0, 1, 1, 2, 3])
    assert np.diff(indptr).tolist() == [4, 2, 2, 1]
    eps = 1e-6
    p = ppr_dense(indptr, indices, [0, 1, 3], alpha=0.2, eps=eps)
    pi = exact_ppr(indptr, indices, [0, 1, 3], 0.2)
    check_bound(indptr, pi, p, eps)
    # first push from 0: 0.8 / 4 to itself (loop), 2 * 0.8 / 4 to 1, 0.8 / 4 to 2
    p1 = ppr_dense(indptr, indices, [0], alpha=0.2, eps=10.0)  # only the forced source push
    np.testing.assert_allclose(p1[0], [0.2, 0, 0, 0])


def test_star_graph_hub_100k():
    leaves = 100_000
    n = leaves + 1
    indptr, indices = csr_from_edges(n, np.zeros(leaves, np.int64), np.arange(1, n))
    alpha = 0.15
    q = (1 - alpha) ** 2
    # Closed forms. From the hub: even steps at the hub, odd steps spread evenly over the leaves.
    pi_hub = np.full(n, alpha * (1 - alpha) / (1 - q) / leaves)
    pi_hub[0] = alpha / (1 - q)
    # From leaf 7: h = alpha (1 - alpha) / (1 - q) at the hub, (1 - alpha) h / L at every leaf,
    # plus alpha at the source itself.
    h = alpha * (1 - alpha) / (1 - q)
    pi_leaf = np.full(n, (1 - alpha) * h / leaves)
    pi_leaf[0] = h
    pi_leaf[7] += alpha
    pi = np.stack([pi_hub, pi_leaf])
    np.testing.assert_allclose(pi.sum(axis=1), 1.0, rtol=1e-12)
    for eps in (1e-4, 1e-7):
        p = ppr_dense(indptr, indices, [0, 7], alpha=alpha, eps=eps)
        check_bound(indptr, pi, p, eps)
    # 100k tied leaves: ties go to the smaller ids
    idx, val = ppr_topk(indptr, indices, [0], alpha=alpha, eps=1e-7, k=5)
    np.testing.assert_array_equal(idx[0], [1, 2, 3, 4, 5])
    assert len(set(val[0].tolist())) == 1
    # from a leaf with a coarse eps the hub is never pushed (r(hub) < eps * 100k): nothing settles
    idx, val = ppr_topk(indptr, indices, [7], alpha=alpha, eps=1e-4, k=3)
    np.testing.assert_array_equal(idx[0], [-1, -1, -1])


def test_empty_sources_and_k_beyond_reach():
    indptr, indices = csr_from_edges(6, [0, 1, 3], [1, 2, 4])  # components {0,1,2}, {3,4}, {5}
    idx, val = ppr_topk(indptr, indices, np.zeros(0, np.int64), k=4)
    assert idx.shape == (0, 4) and val.shape == (0, 4)
    assert idx.dtype == np.int64 and val.dtype == np.float32
    idx, val = ppr_topk(indptr, indices, [0, 3], eps=1e-8, k=5)
    assert sorted(idx[0][:2].tolist()) == [1, 2] and idx[0][2:].tolist() == [-1, -1, -1]
    assert idx[1].tolist() == [4, -1, -1, -1, -1]
    assert np.all(val[0][:2] > 0) and np.all(val[0][2:] == 0)


def test_candidates_exclude_everything_and_do_not_change_the_walk():
    rng = np.random.default_rng(3)
    indptr, indices = random_graph(rng, 100, 400)
    sources = np.arange(20)
    idx, val = ppr_topk(indptr, indices, sources, k=6, candidates=np.zeros(100, bool))
    assert np.all(idx == -1) and np.all(val == 0)
    full_idx, full_val = ppr_topk(indptr, indices, sources, k=100)
    mask = np.zeros(100, bool)
    mask[::2] = True
    m_idx, m_val = ppr_topk(indptr, indices, sources, k=6, candidates=mask)
    for i in range(20):
        keep = full_idx[i][(full_idx[i] >= 0) & mask[np.maximum(full_idx[i], 0)]][:6]
        np.testing.assert_array_equal(m_idx[i][: keep.size], keep)
        lookup = dict(zip(full_idx[i].tolist(), full_val[i].tolist()))
        assert all(lookup[j] == v for j, v in zip(m_idx[i].tolist(), m_val[i].tolist()) if j >= 0)


def test_int32_indices_threads_and_torch_inputs():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    indptr, indices = random_graph(rng, 400, 2000)
    sources = rng.integers(0, 400, 64)
    a = ppr_topk(indptr, indices, sources, k=7, num_threads=1)
    b = ppr_topk(indptr, indices.astype(np.int32), sources, k=7, num_threads=2)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    t = ppr_topk(torch.from_numpy(indptr), torch.from_numpy(indices).int(), torch.from_numpy(sources), k=7)
    assert isinstance(t[0], torch.Tensor) and t[0].dtype == torch.int64 and t[1].dtype == torch.float32
    np.testing.assert_array_equal(t[0].numpy(), a[0])


def test_work_bound_and_stats():
    rng = np.random.default_rng(9)
    indptr, indices = random_graph(rng, 500, 3000, loops=False, dups=False)
    deg = np.diff(indptr)
    alpha, eps = 0.15, 1e-4
    _, _, _, per = bounded_topk_host(indptr, indices, np.arange(50), alpha=alpha, eps=eps, k=4, capacity=1 << 12)
    assert np.all(per <= 1 / (alpha * eps) + deg[:50])
    _, _, stats = ppr_topk(indptr, indices, np.arange(50), alpha=alpha, eps=eps, k=4, return_stats=True)
    assert stats["edge_pushes"] == int(per.sum())
    assert stats["pushes"] >= 50 and stats["touched"] >= 50


@pytest.mark.parametrize("kw,match", [
    ({"alpha": 0.0}, "alpha"), ({"alpha": 1.0}, "alpha"), ({"alpha": float("nan")}, "alpha"),
    ({"eps": 0.0}, "eps"), ({"eps": -1e-3}, "eps"), ({"eps": float("inf")}, "eps"),
    ({"k": 0}, "k must"), ({"num_threads": 0}, "num_threads"),
    ({"candidates": np.ones(4, bool)}, "one entry per node"),
    ({"candidates": np.ones(5, np.int64)}, "bool mask"),
])
def test_bad_parameters_raise(kw, match):
    indptr, indices = csr_from_edges(5, [0, 1], [1, 2])
    with pytest.raises(ValueError, match=match):
        ppr_topk(indptr, indices, [0], **kw)


def test_bad_graph_and_sources_raise_naming_the_index():
    indptr, indices = csr_from_edges(5, [0, 1], [1, 2])
    with pytest.raises(ValueError, match=r"sources\[2\] = 9"):
        ppr_topk(indptr, indices, [0, 1, 9, -1])
    with pytest.raises(ValueError, match=r"sources\[0\] = -1"):
        ppr_topk(indptr, indices, [-1])
    bad = indices.copy()
    bad[3] = 5
    with pytest.raises(ValueError, match=r"indices\[3\] = 5"):
        ppr_topk(indptr, bad, [0])
    bad_ptr = indptr.copy()
    bad_ptr[2] = 0
    with pytest.raises(ValueError, match="non-decreasing"):
        ppr_topk(bad_ptr, indices, [0])
    bad_end = indptr.copy()
    bad_end[-1] = 5
    with pytest.raises(ValueError, match=r"indptr\[-1\] must equal len\(indices\)"):
        ppr_topk(bad_end, indices, [0])
    with pytest.raises(ValueError, match="indptr must be 1-D"):
        ppr_topk(indptr[None, :], indices, [0])
    with pytest.raises(ValueError, match="integers"):
        ppr_topk(indptr, indices, np.array([0.5]))
    with pytest.raises(ValueError, match="1-D"):
        ppr_topk(indptr, indices, np.zeros((2, 2), np.int64))
    with pytest.raises(ValueError, match="device"):
        ppr_topk(indptr, indices, [0], device="tpu")


def test_dangling_targets_below_eps_still_settle():
    # Directed: node 0 points at 100 dangling nodes. Each gets (1 - alpha) / 100 < eps of residual,
    # which a dangling node must still settle in full (its threshold is ~0, not eps * 0).
    n = 101
    indptr = np.concatenate([[0], np.full(n, 100)]).astype(np.int64)
    indices = np.arange(1, n, dtype=np.int64)
    for sources in ([0], [0, 5, 0]):
        p = ppr_dense(indptr, indices, sources, alpha=0.15, eps=0.1)
        np.testing.assert_allclose(p[0], np.concatenate([[0.15], np.full(100, 0.85 / 100)]), rtol=1e-15)
        np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-15)
    b = bounded_topk_host(indptr, indices, [0], alpha=0.15, eps=0.1, k=3, capacity=1 << 9)
    a = ppr_topk(indptr, indices, [0], alpha=0.15, eps=0.1, k=3)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[0][0], [1, 2, 3])


@pytest.mark.parametrize("case", ["random", "star", "directed"])
def test_hash_and_dense_workspaces_agree(case):
    # The hash-table scratch (auto for huge N) must give bit-identical results to the dense one,
    # including table growth (the star hub touches 20k nodes, past the 4096-slot start).
    rng = np.random.default_rng(21)
    if case == "random":
        indptr, indices = random_graph(rng, 3000, 12000)
        sources, eps = np.arange(0, 3000, 29), 1e-4
    elif case == "star":
        indptr, indices = csr_from_edges(20_001, np.zeros(20_000, np.int64), np.arange(1, 20_001))
        sources, eps = np.array([0, 5, 0]), 1e-7
    else:
        indptr = np.concatenate([[0], np.full(101, 100)]).astype(np.int64)
        indices = np.arange(1, 101, dtype=np.int64)
        sources, eps = np.array([0, 3]), 0.1
    mask = rng.random(indptr.shape[0] - 1) < 0.5
    for cand in (None, mask):
        d = ppr_topk(indptr, indices, sources, eps=eps, k=20, candidates=cand, workspace="dense", return_stats=True)
        h = ppr_topk(indptr, indices, sources, eps=eps, k=20, candidates=cand, workspace="hash", return_stats=True)
        np.testing.assert_array_equal(d[0], h[0])
        np.testing.assert_array_equal(d[1], h[1])
        assert d[2] == h[2]
    np.testing.assert_array_equal(ppr_dense(indptr, indices, sources, eps=eps, workspace="dense"),
                                  ppr_dense(indptr, indices, sources, eps=eps, workspace="hash"))
    with pytest.raises(ValueError, match="workspace"):
        ppr_topk(indptr, indices, sources, workspace="sparse")


def test_cuda_request_without_cuda_is_a_clear_error():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    indptr, indices = csr_from_edges(3, [0], [1])
    with pytest.raises(ValueError, match="CUDA is not available"):
        ppr_topk(indptr, indices, [0], device="cuda")

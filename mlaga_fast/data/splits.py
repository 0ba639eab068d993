"""Seeded node splits and the link-prediction edge split.

Both are pure functions of (graph, fractions, seed): the same inputs give the same split on any
machine, because they draw from ``numpy.random.default_rng(seed)`` in a fixed order.
"""
from __future__ import annotations

import numpy as np

from mlaga_fast.data.graph import LinkSplit, MultimodalGraph, csr_keys


def _check_fractions(**fr: float) -> None:
    for k, v in fr.items():
        if not (isinstance(v, (int, float)) and 0.0 <= v <= 1.0):
            raise ValueError(f"{k} must be a fraction in [0, 1], got {v!r}")
    if sum(fr.values()) > 1.0 + 1e-9:
        raise ValueError(f"fractions {fr} add up to more than 1")


def random_node_split(num_nodes: int, train: float = 0.6, val: float = 0.2, test: float = 0.2,
                      seed: int = 0, labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded split of the nodes (only labelled ones, label >= 0, when ``labels`` is given) into
    sorted int64 (train, val, test). MAGB's default is 60/20/20."""
    _check_fractions(train=train, val=val, test=test)
    pool = np.arange(num_nodes, dtype=np.int64)
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (num_nodes,):
            raise ValueError(f"labels has {labels.shape[0]} entries for {num_nodes} nodes")
        pool = pool[labels >= 0]
    perm = np.random.default_rng(seed).permutation(pool)
    n = perm.shape[0]
    n_tr = int(np.floor(train * n + 1e-9))
    n_va = int(np.floor(val * n + 1e-9))
    n_te = n - n_tr - n_va if abs(train + val + test - 1.0) < 1e-9 else int(np.floor(test * n + 1e-9))
    parts = perm[:n_tr], perm[n_tr:n_tr + n_va], perm[n_tr + n_va:n_tr + n_va + n_te]
    return tuple(np.sort(p) for p in parts)  # type: ignore[return-value]


def sample_negative_pairs(indptr: np.ndarray, indices: np.ndarray, count: int, rng: np.random.Generator,
                          exclude_keys: np.ndarray | None = None, max_rounds: int = 100) -> np.ndarray:
    """``count`` distinct unordered node pairs [2, count] (u < v) that are not edges of the graph
    and not in ``exclude_keys`` (direction-free keys min * N + max)."""
    n = indptr.shape[0] - 1
    if count == 0:
        return np.zeros((2, 0), np.int64)
    possible = n * (n - 1) // 2 - indices.shape[0] // 2
    if n < 2 or possible < count:
        raise ValueError(f"cannot sample {count} negative pairs: the graph has only {max(possible, 0)} non-edges")
    edge = csr_keys(indptr, indices)  # directed keys; (u, v) with u < v suffices below
    taken = np.zeros(0, np.int64) if exclude_keys is None else np.unique(exclude_keys)
    chosen: list[np.ndarray] = []
    have = 0
    for _ in range(max_rounds):
        need = count - have
        m = 2 * need + 64
        a = rng.integers(0, n, size=m, dtype=np.int64)
        b = rng.integers(0, n, size=m, dtype=np.int64)
        ok = a != b
        u, v = np.minimum(a[ok], b[ok]), np.maximum(a[ok], b[ok])
        key = u * np.int64(n) + v
        pos = np.minimum(np.searchsorted(edge, key), max(edge.size - 1, 0))
        ok = edge[pos] != key if edge.size else np.ones(key.shape, bool)
        key = key[ok]
        key = key[~np.isin(key, taken)]
        _, first = np.unique(key, return_index=True)  # drop repeats, keep draw order
        key = key[np.sort(first)][:need]
        chosen.append(key)
        taken = np.union1d(taken, key)
        have += key.shape[0]
        if have == count:
            keys = np.concatenate(chosen)
            return np.stack([keys // n, keys % n])
    raise ValueError(f"could not sample {count} negative pairs in {max_rounds} rounds (graph too dense)")


def split_links(graph: MultimodalGraph, val: float = 0.05, test: float = 0.1, seed: int = 0,
                min_train_degree: int = 1) -> LinkSplit:
    """Hold out ``val`` and ``test`` fractions of the undirected edges as positives, each with as
    many negatives (pairs that are not edges of the full graph, all distinct). An edge is held out
    only while both endpoints keep at least ``min_train_degree`` training edges, so the split
    does not isolate nodes (0 disables this). The rest of the edges form ``train_pos``."""
    _check_fractions(val=val, test=test)
    if min_train_degree < 0:
        raise ValueError(f"min_train_degree must be >= 0, got {min_train_degree}")
    pairs = graph.edge_pairs()  # [2, P], u < v
    p = pairs.shape[1]
    n_val, n_test = int(round(val * p)), int(round(test * p))
    want = n_val + n_test
    rng = np.random.default_rng(seed)
    order = rng.permutation(p)
    if min_train_degree == 0:
        held = order[:want]
    else:
        deg = np.diff(graph.indptr).copy()
        picked = []
        u_all, v_all = pairs[0], pairs[1]
        for e in order.tolist():  # greedy, in random order; O(P) at worst, cheap next to sampling
            if len(picked) == want:
                break
            u, v = u_all[e], v_all[e]
            if deg[u] > min_train_degree and deg[v] > min_train_degree:
                picked.append(e)
                deg[u] -= 1
                deg[v] -= 1
        if len(picked) < want:
            raise ValueError(f"only {len(picked)} of {want} edges can be held out while every node keeps "
                             f"{min_train_degree} training edge(s); lower val/test or min_train_degree")
        held = np.asarray(picked, dtype=np.int64)
    val_pos = pairs[:, held[:n_val]]
    test_pos = pairs[:, held[n_val:want]]
    keep = np.ones(p, dtype=bool)
    keep[held] = False
    neg = sample_negative_pairs(graph.indptr, graph.indices, want, rng)
    split = LinkSplit(train_pos=pairs[:, keep], val_pos=val_pos, val_neg=neg[:, :n_val],
                      test_pos=test_pos, test_neg=neg[:, n_val:])
    split.validate(graph.indptr, graph.indices)
    return split

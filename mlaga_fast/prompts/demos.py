"""Demonstrations for Stage 2 prompts, chosen so that no held-out information reaches a prompt.

NC: demonstrations are labelled *training* nodes. "ppr" takes the target's top Personalized PageRank
nodes among them (on graph.train_graph(), computed once for all nodes and cached on disk);
"random" draws uniformly from them (an ablation); "none" shows no demonstrations.

LP: one demonstration pair per prompt. A "Yes" demo is a training positive (link_split.train_pos),
a "No" demo a pair that is an edge of no split and is not a held-out negative either, so neither
answer of a val/test pair can ever be shown. Training targets: train_pos plus sampled non-edges.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

DEMO_MODES = ("ppr", "random", "none")


def _keys(pairs: np.ndarray, n: int) -> np.ndarray:
    """Direction-free int64 key per pair [2, M] -> [M]: min * n + max."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(2, -1)
    return np.minimum(pairs[0], pairs[1]) * np.int64(n) + np.maximum(pairs[0], pairs[1])


def train_label_pool(graph) -> np.ndarray:
    """Training nodes with a label: the only nodes whose label a prompt may show. int64 sorted."""
    tr = np.asarray(graph.train, dtype=np.int64)
    return np.sort(tr[np.asarray(graph.labels)[tr] >= 0])


def ppr_demo_table(graph, *, k: int = 8, alpha: float = 0.15, eps: float = 1e-4,
                   cache_dir: str | Path | None = None, progress: bool = True) -> np.ndarray:
    """int64 [N, k]: for every node, its top-k PPR labelled training nodes (itself excluded), -1 padded.

    Computed on graph.train_graph() through mlaga_fast.ppr and cached as
    cache_dir/ppr_demos-k<k>.npz (the PPR module checks the graph fingerprint and parameters), so
    it is computed once per dataset and reused by training and every evaluation.
    """
    from mlaga_fast import ppr

    kw = dict(alpha=alpha, eps=eps, k=k, sources="all", candidates="train", exclude_source=True)
    if cache_dir is not None:
        _, idx, _ = ppr.cached_topk(graph, Path(cache_dir) / f"ppr_demos-k{k}.npz", progress=progress, **kw)
    else:
        _, idx, _, _ = ppr.compute_table(graph, progress=progress, **kw)
    idx = np.asarray(idx, dtype=np.int64)
    # Defence in depth: whatever the PPR backend returns, only training pool members may be shown.
    pool = train_label_pool(graph)
    bad = (idx >= 0) & ~np.isin(idx, pool)
    if bad.any():
        r = int(np.flatnonzero(bad.any(1))[0])
        raise ValueError(f"PPR returned a non-training node as a demonstration for node {r}: {idx[r].tolist()}")
    return idx


class NCDemos:
    """Picks m demonstrations for a target node under a mode; deterministic given (seed, target)."""

    def __init__(self, graph, mode: str = "ppr", m: int = 3, seed: int = 0, table: np.ndarray | None = None):
        if mode not in DEMO_MODES:
            raise ValueError(f"demos: {mode!r} is not one of {list(DEMO_MODES)}")
        if mode == "ppr" and table is None:
            raise ValueError("demos='ppr' needs a PPR table (ppr_demo_table)")
        self.mode, self.m, self.seed, self.table = mode, m, seed, table
        self.pool = train_label_pool(graph)
        self.labels = np.asarray(graph.labels)
        if mode != "none" and m > 0 and self.pool.size == 0:
            raise ValueError(f"graph {graph.name}: no labelled training nodes to draw demonstrations from")

    def __call__(self, target: int) -> tuple[list[int], list[int]]:
        """(demo node ids, their class ids), most relevant first."""
        if self.mode == "none" or self.m <= 0:
            return [], []
        if self.mode == "ppr":
            row = self.table[target]
            demos = [int(d) for d in row[row >= 0] if d != target][: self.m]
        else:
            rng = np.random.default_rng([self.seed, int(target)])
            cand = self.pool[self.pool != target]
            demos = [int(d) for d in rng.choice(cand, size=min(self.m, cand.size), replace=False)]
        return demos, [int(self.labels[d]) for d in demos]


class LinkPairs:
    """Training/eval pairs and leak-free demonstration pairs for link prediction."""

    def __init__(self, graph, seed: int = 0):
        ls = graph.link_split
        if ls is None:
            raise ValueError(f"graph {graph.name}: task lp needs a link split (link_split is None)")
        self.n = n = graph.num_nodes
        self.split = ls
        self.seed = seed
        self.train_pos = np.asarray(ls.train_pos, dtype=np.int64)  # [2, M]
        rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(graph.indptr))
        self._all_edges = np.unique(_keys(np.stack([rows, np.asarray(graph.indices)]), n))
        held = [ls.val_pos, ls.val_neg, ls.test_pos, ls.test_neg]
        self._held = np.unique(np.concatenate([_keys(h, n) for h in held]))
        # Train-positive neighbours of each node, for "Yes" demos that involve the query node.
        tp = np.concatenate([self.train_pos, self.train_pos[::-1]], axis=1)
        order = np.argsort(tp[0], kind="stable")
        self._nbr_ptr = np.concatenate([[0], np.cumsum(np.bincount(tp[0], minlength=n))])
        self._nbr = tp[1][order]

    def is_edge(self, keys: np.ndarray) -> np.ndarray:
        return np.isin(keys, self._all_edges)

    def is_held_out(self, keys: np.ndarray) -> np.ndarray:
        return np.isin(keys, self._held)

    def _non_edge(self, rng, a: int, avoid: int) -> int:
        for _ in range(1000):
            w = int(rng.integers(self.n))
            if w in (a, avoid):
                continue
            k = _keys(np.array([[a], [w]]), self.n)
            if not self.is_edge(k)[0] and not self.is_held_out(k)[0]:
                return w
        raise ValueError(f"lp demos: node {a} has no non-edge partner (graph too dense)")

    def demo(self, a: int, b: int, key: int = 0) -> tuple[int, int, bool]:
        """One demo pair for query (a, b), never (a, b) itself; balanced Yes/No, seeded by the query."""
        rng = np.random.default_rng([self.seed, int(a), int(b), int(key)])
        if rng.random() < 0.5 and self.train_pos.shape[1] > 0:
            nb = self._nbr[self._nbr_ptr[a]: self._nbr_ptr[a + 1]]
            nb = nb[nb != b]
            if nb.size:
                return int(a), int(rng.choice(nb)), True
            for _ in range(100):  # a has no other training edge: any training positive will do
                j = int(rng.integers(self.train_pos.shape[1]))
                u, v = int(self.train_pos[0, j]), int(self.train_pos[1, j])
                if {u, v} != {a, b}:
                    return u, v, True
        return int(a), self._non_edge(rng, a, b), False

    def train_pairs(self, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """count pairs [2, count] and labels [count] (half train_pos, half non-edges), shuffled."""
        npos = min(count // 2 + count % 2, self.train_pos.shape[1])
        pos = self.train_pos[:, rng.choice(self.train_pos.shape[1], size=npos, replace=False)]
        nneg = count - npos
        neg = np.empty((2, nneg), dtype=np.int64)
        got = 0
        while got < nneg:
            a = rng.integers(self.n, size=4 * (nneg - got) + 16)
            b = rng.integers(self.n, size=a.size)
            k = _keys(np.stack([a, b]), self.n)
            ok = (a != b) & ~self.is_edge(k) & ~self.is_held_out(k)
            take = np.flatnonzero(ok)[: nneg - got]
            neg[:, got: got + take.size] = np.stack([a[take], b[take]])
            got += take.size
        pairs = np.concatenate([pos, neg], axis=1)
        y = np.concatenate([np.ones(npos, np.int64), np.zeros(nneg, np.int64)])
        perm = rng.permutation(y.size)
        return pairs[:, perm], y[perm]

    def eval_pairs(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        if split not in ("val", "test"):
            raise ValueError(f"split: {split!r} is not one of ['val', 'test']")
        pos = np.asarray(getattr(self.split, f"{split}_pos"), dtype=np.int64)
        neg = np.asarray(getattr(self.split, f"{split}_neg"), dtype=np.int64)
        pairs = np.concatenate([pos, neg], axis=1)
        return pairs, np.concatenate([np.ones(pos.shape[1], np.int64), np.zeros(neg.shape[1], np.int64)])

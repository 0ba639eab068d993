"""Independent PPR references for the PPR tests (tests/test_ppr_reference.py checks them).

Nothing here calls mlaga_fast: the exact PPR is a sparse LU solve or a float64 power iteration of
pi = alpha e_s + (1 - alpha) pi P, with P = D^-1 A built from the CSR (duplicate edges count as
weights, self-loops are edges) and P[u][u] = 1 at dangling nodes.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import splu


def csr_from_edges(n: int, src, dst, symmetric: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """CSR keeping multiplicities and self-loops exactly as given (both directions if symmetric)."""
    src = np.asarray(src, dtype=np.int64)
    dst = np.asarray(dst, dtype=np.int64)
    if symmetric:
        loops = src == dst
        # a self-loop is stored once, every other pair in both directions
        src, dst = np.concatenate([src, dst[~loops]]), np.concatenate([dst, src[~loops]])
    order = np.lexsort((dst, src))
    src, dst = src[order], dst[order]
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(src, minlength=n), out=indptr[1:])
    return indptr, dst.copy()


def transition(indptr: np.ndarray, indices: np.ndarray) -> sp.csr_matrix:
    n = indptr.shape[0] - 1
    deg = np.diff(indptr).astype(np.float64)
    rows = np.repeat(np.arange(n), np.diff(indptr))
    a = sp.csr_matrix((np.ones(indices.shape[0]), (rows, indices)), shape=(n, n))  # sums duplicates
    inv = np.where(deg > 0, 1.0 / np.maximum(deg, 1.0), 0.0)
    p = sp.diags(inv) @ a
    dangling = np.flatnonzero(deg == 0)
    p = p + sp.csr_matrix((np.ones(dangling.size), (dangling, dangling)), shape=(n, n))
    return p.tocsr()


def exact_ppr(indptr, indices, sources, alpha: float) -> np.ndarray:
    """float64 [S, N] by a sparse LU solve of (I - (1 - alpha) P^T) pi^T = alpha e_s."""
    n = indptr.shape[0] - 1
    p = transition(indptr, indices)
    lu = splu((sp.identity(n, format="csc") - (1.0 - alpha) * p.T).tocsc())
    out = np.zeros((len(sources), n))
    for i, s in enumerate(sources):
        e = np.zeros(n)
        e[s] = alpha
        out[i] = lu.solve(e)
    return out


def power_ppr(indptr, indices, sources, alpha: float, tol: float = 1e-14, max_iter: int = 5000) -> np.ndarray:
    """float64 [S, N] by power iteration until the L1 change per column is below tol."""
    n = indptr.shape[0] - 1
    pt = transition(indptr, indices).T.tocsr()
    s = np.asarray(sources, dtype=np.int64)
    e = np.zeros((n, s.size))
    e[s, np.arange(s.size)] = 1.0
    x = e.copy()
    for _ in range(max_iter):
        nxt = alpha * e + (1.0 - alpha) * (pt @ x)
        done = np.abs(nxt - x).sum(axis=0).max() < tol
        x = nxt
        if done:
            break
    return x.T.copy()


def reference_topk(p_row: np.ndarray, k: int, source: int, exclude_source: bool, mask=None):
    """Top-k of one settled vector by NumPy: float32 value descending, ties by smaller id, only
    positive float32 values, padded with -1 / 0."""
    v32 = p_row.astype(np.float32)
    ok = v32 > 0
    if exclude_source:
        ok[source] = False
    if mask is not None:
        ok &= mask
    ids = np.flatnonzero(ok)
    order = np.lexsort((ids, -v32[ids]))[:k]
    idx = np.full(k, -1, np.int64)
    val = np.zeros(k, np.float32)
    idx[: order.size] = ids[order]
    val[: order.size] = v32[ids[order]]
    return idx, val


def random_graph(rng: np.random.Generator, n: int, m: int, loops: bool = True, dups: bool = True):
    src = rng.integers(0, n, m)
    dst = rng.integers(0, n, m)
    if not loops:
        keep = src != dst
        src, dst = src[keep], dst[keep]
    if not dups:
        key = np.unique(np.minimum(src, dst) * n + np.maximum(src, dst))
        src, dst = key // n, key % n
    return csr_from_edges(n, src, dst)

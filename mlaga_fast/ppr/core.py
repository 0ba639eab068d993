"""Array-level PPR API: forward-push top-k on the CPU (C++/OpenMP) or GPU (warp-per-source CUDA).

Definition (see csrc/ppr/ppr.h and docs/ppr.md): pi_s = alpha * e_s + (1 - alpha) * pi_s * D^-1 A,
dangling nodes keep their mass (P[u][u] = 1, so an isolated source has pi_s = e_s). The forward
push always pushes the source once, then pushes while r(u) >= eps * d(u); on an undirected graph
the settled vector p satisfies 0 <= pi_s(v) - p_s(v) < eps * d(v) for every node v.

Each function here prepares a PprGraph for one call (validation and a private copy, O(N + E));
to query one graph many times, build a mlaga_fast.ppr.PprGraph once and call its methods. Datasets
(MultimodalGraph) go through mlaga_fast.ppr.tables, which caches that PprGraph per graph.
"""
from __future__ import annotations

from typing import Any

from mlaga_fast.ppr.graph import PprGraph
from mlaga_fast.ppr.options import DEFAULT_ALPHA, DEFAULT_CUDA_BUDGET_BYTES, DEFAULT_EPS, DEFAULT_K, MAX_DEFAULT_CAPACITY
from mlaga_fast.utils.arrays import is_torch


def ppr_topk(indptr, indices, sources, *, alpha: float = DEFAULT_ALPHA, eps: float = DEFAULT_EPS,
             k: int = DEFAULT_K, candidates=None, exclude_source: bool = True, device: Any = None,
             num_threads: int | None = None, return_stats: bool = False,
             cuda_capacity: int | None = None, cuda_budget_bytes: int = DEFAULT_CUDA_BUDGET_BYTES,
             workspace: str = "auto", order: str = "none"):
    """Top-k approximate PPR of each source.

    indptr int64 [N+1], indices int32/int64 [E] (CSR, symmetric for the error guarantee);
    sources int [S]; candidates bool [N] or None (nodes that may be returned; it does not change
    the walk). Returns (idx int64 [S, k], val float32 [S, k]): rows sorted by value descending, ties
    by the smaller id, padded with idx = -1 and val = 0. With return_stats, a third element holds
    pushes / edge_pushes / touched (and, on CUDA, how many sources overflowed to the CPU).

    ``device``: anything torch.device accepts ('cpu', 'cuda', 'cuda:1', 0, ...), or None to run
    where the inputs live (CUDA when one is a CUDA tensor; results are then tensors on that
    device). torch inputs give torch outputs, NumPy inputs NumPy outputs. ``workspace`` picks the
    CPU kernel's scratch: "dense" N-sized arrays, a per-source "hash" table, or "auto" (hash from
    2^24 nodes on); ``order`` relabels the graph for locality ("none" here: a one-off call rarely
    repays an order; see PprGraph). Results are identical for every workspace and order.
    """
    graph = PprGraph(indptr, indices, order=order)
    out = graph.topk(sources, alpha=alpha, eps=eps, k=k, candidates=candidates, exclude_source=exclude_source,
                     device=_device_of(device, indptr, indices), num_threads=num_threads, return_stats=True,
                     cuda_capacity=cuda_capacity, cuda_budget_bytes=cuda_budget_bytes, workspace=workspace)
    idx, val, stats = out
    if (is_torch(indptr) or is_torch(indices)) and not is_torch(idx):
        import torch

        idx, val = torch.from_numpy(idx), torch.from_numpy(val)
    return (idx, val, stats) if return_stats else (idx, val)


def ppr_dense(indptr, indices, sources, *, alpha: float = DEFAULT_ALPHA, eps: float = DEFAULT_EPS,
              num_threads: int | None = None, workspace: str = "auto"):
    """The settled push vectors p_s themselves, float64 [S, N] (CPU; meant for small graphs and
    tests: the output has S * N entries)."""
    return PprGraph(indptr, indices, order="none").dense(sources, alpha=alpha, eps=eps, num_threads=num_threads,
                                                         workspace=workspace)


def bounded_topk_host(indptr, indices, sources, *, alpha: float = DEFAULT_ALPHA, eps: float = DEFAULT_EPS,
                      k: int = DEFAULT_K, candidates=None, exclude_source: bool = True,
                      capacity: int = MAX_DEFAULT_CAPACITY):
    """The CUDA kernel's algorithm (bounded hash table per source, 32 lanes) run on the host, one
    thread. Returns (idx, val, status int32 [S] (1 = overflowed: row is padding), edge_pushes [S]).
    For tests of the kernel body and for reasoning about overflow without a GPU."""
    return PprGraph(indptr, indices, order="none").bounded_topk_host(
        sources, alpha=alpha, eps=eps, k=k, candidates=candidates, exclude_source=exclude_source, capacity=capacity)


def _device_of(device, *graph_arrays):
    """None follows the inputs: a graph given as CUDA tensors runs on that device."""
    if device is not None:
        return device
    for a in graph_arrays:
        if is_torch(a) and a.device.type == "cuda":
            return a.device
    return None

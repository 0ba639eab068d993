"""PprGraph: a CSR graph prepared once for many PPR queries (the compiled core's only graph input).

Preparing (csrc/ppr/ppr_graph.h) validates the CSR, keeps a private copy (later changes to the
caller's arrays cannot reach a running query), stores neighbour ids in 32 bits when they fit and,
for large graphs, relabels the nodes for memory locality. Queries take and return the caller's ids,
and the order never changes a result: every value is bit-identical to the unordered graph's.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from mlaga_fast.ppr.options import (
    DEFAULT_ALPHA,
    DEFAULT_CUDA_BUDGET_BYTES,
    DEFAULT_EPS,
    DEFAULT_K,
    MAX_DEFAULT_CAPACITY,
    as_float,
    as_int,
    index_array,
    mask_array,
    require_memory,
    resolve_device,
    sources_array,
)
from mlaga_fast.utils.arrays import is_torch

ORDERS = ("auto", "none", "degree", "rcm")
# What "auto" picks. No order paid on the benchmark graphs (docs/ppr.md: on the 1M-node power-law
# graph "degree" and "rcm" ran within noise of "none" once a neighbour costs one cache line, and
# they cost 1.2 s and 1.6 s of preparation), so "auto" keeps the caller's order for now.
AUTO_ORDER = "none"
_WORKSPACES = {"auto": 0, "dense": 1, "hash": 2}


def resolve_order(order: str) -> str:
    if order not in ORDERS:
        raise ValueError(f"order must be one of {list(ORDERS)}, got {order!r}")
    return AUTO_ORDER if order == "auto" else order


def _workspace_code(workspace: str) -> int:
    if workspace not in _WORKSPACES:
        raise ValueError(f"workspace must be one of {list(_WORKSPACES)}, got {workspace!r}")
    return _WORKSPACES[workspace]


class PprGraph:
    """indptr int64 [N+1], indices int32/int64 [E] (NumPy arrays or torch tensors), symmetric for
    the error guarantee. ``order``: "none", "degree" (hubs first), "rcm" (reverse Cuthill-McKee) or
    "auto" (AUTO_ORDER)."""

    def __init__(self, indptr, indices, *, order: str = "auto"):
        from mlaga_fast import _C

        ip = index_array(indptr, "indptr", allow_int32=False)
        ix = index_array(indices, "indices", allow_int32=True)
        self._g = _C.PprGraph(ip, ix, resolve_order(order))

    @property
    def num_nodes(self) -> int:
        return self._g.num_nodes

    @property
    def num_edges(self) -> int:
        """Stored (directed) edges."""
        return self._g.num_edges

    @property
    def order(self) -> str:
        return self._g.order

    @property
    def memory_bytes(self) -> int:
        return self._g.memory_bytes

    def __repr__(self) -> str:
        return f"PprGraph(nodes={self.num_nodes}, stored_edges={self.num_edges}, order={self.order!r})"

    # ------------------------------------------------------------------------------- queries
    def topk(self, sources, *, alpha: float = DEFAULT_ALPHA, eps: float = DEFAULT_EPS, k: int = DEFAULT_K,
             candidates=None, exclude_source: bool = True, device: Any = None, num_threads: int | None = None,
             return_stats: bool = False, cuda_capacity: int | None = None,
             cuda_budget_bytes: int = DEFAULT_CUDA_BUDGET_BYTES, workspace: str = "auto", out=None):
        """Top-k approximate PPR of each source; see mlaga_fast.ppr.ppr_topk for the contract.

        ``out``: optional (idx int64 [S, k], val float32 [S, k]) NumPy arrays to write into (CPU).
        """
        dev = resolve_device(device, (sources, candidates))
        as_torch = any(is_torch(a) for a in (sources, candidates)) or dev != "cpu"
        src = sources_array(sources)
        mask = None if candidates is None else mask_array(candidates, self.num_nodes)
        a, e = as_float(alpha, "alpha"), as_float(eps, "eps")
        k = as_int(k, "k", lo=1)
        if dev != "cpu":
            from mlaga_fast.ppr.cuda import topk_cuda

            res = topk_cuda(self, src, mask, alpha=a, eps=e, k=k, exclude_source=bool(exclude_source), device=dev,
                            capacity=cuda_capacity, budget_bytes=as_int(cuda_budget_bytes, "cuda_budget_bytes", lo=1))
            return res if return_stats else res[:2]
        threads = 0 if num_threads is None else as_int(num_threads, "num_threads", lo=1)
        oi, ov = (None, None) if out is None else out
        idx, val, stats = self._g.topk(src, mask, a, e, k, bool(exclude_source), threads, _workspace_code(workspace),
                                       oi, ov)
        if as_torch:
            import torch

            idx, val = torch.from_numpy(idx), torch.from_numpy(val)
        return (idx, val, stats) if return_stats else (idx, val)

    def dense(self, sources, *, alpha: float = DEFAULT_ALPHA, eps: float = DEFAULT_EPS,
              num_threads: int | None = None, workspace: str = "auto") -> np.ndarray:
        """The settled push vectors p_s, float64 [S, N] in the caller's ids (CPU; small graphs)."""
        threads = 0 if num_threads is None else as_int(num_threads, "num_threads", lo=1)
        out, _ = self._g.dense(sources_array(sources), as_float(alpha, "alpha"), as_float(eps, "eps"), threads,
                               _workspace_code(workspace))
        return out

    def bounded_topk_host(self, sources, *, alpha: float = DEFAULT_ALPHA, eps: float = DEFAULT_EPS,
                          k: int = DEFAULT_K, candidates=None, exclude_source: bool = True,
                          capacity: int = MAX_DEFAULT_CAPACITY):
        """The CUDA kernel's algorithm run on the host; see mlaga_fast.ppr.bounded_topk_host."""
        mask = None if candidates is None else mask_array(candidates, self.num_nodes)
        return self._g.bounded_host(sources_array(sources), mask, as_float(alpha, "alpha"), as_float(eps, "eps"),
                                    as_int(k, "k", lo=1), bool(exclude_source), as_int(capacity, "capacity"))


def check_table_memory(num_sources: int, k: int) -> None:
    """ValueError naming k before an [S, k] table is allocated that this machine cannot hold."""
    require_memory(12.0 * num_sources * k, f"k = {k} for {num_sources} sources: the [{num_sources}, {k}] table")

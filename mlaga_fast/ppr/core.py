"""Array-level PPR API: forward-push top-k on the CPU (C++/OpenMP) or GPU (warp-per-source CUDA).

Definition (see csrc/ppr/ppr.h and docs/ppr.md): pi_s = alpha * e_s + (1 - alpha) * pi_s * D^-1 A,
dangling nodes keep their mass (P[u][u] = 1, so an isolated source has pi_s = e_s). The forward
push always pushes the source once, then pushes while r(u) >= eps * d(u); on an undirected graph
the settled vector p satisfies 0 <= pi_s(v) - p_s(v) < eps * d(v) for every node v.

This module is array based (NumPy arrays or torch tensors, CPU or CUDA); MultimodalGraph only
appears in mlaga_fast.ppr.tables (ppr_topk_graph, cached_topk), used by Stage 2 and the CLI.
"""
from __future__ import annotations

import math

import numpy as np

# alpha = 0.15: the usual PageRank teleport (mean walk length 1/alpha ~ 6.7 hops), local enough for
# demonstrations to come from the neighbourhood yet reaching past 1-hop neighbours.
DEFAULT_ALPHA = 0.15
# eps = 1e-4: work per source is at most 1/(alpha*eps) ~ 67k edge pushes (~5k measured on MAGB),
# and on MAGB the median top-32 value is 3-9x its own error bound eps*d(v) (see docs/ppr.md).
DEFAULT_EPS = 1e-4
# k = 32: Stage 2 picks a handful of demonstrations among the top candidates; 32 leaves room for
# filtering (same-class balance, dropping val/test nodes) without recomputing.
DEFAULT_K = 32
# GPU: per-source hash table of at most 2^16 slots (2.1 MiB of scratch per warp), and a default
# budget of 1 GiB of scratch in total; sources that touch more than capacity/2 nodes overflow
# their table and are recomputed by the CPU kernel.
MAX_DEFAULT_CAPACITY = 1 << 16
DEFAULT_CUDA_BUDGET_BYTES = 1 << 30


# ----------------------------------------------------------------------------- input handling
def _is_torch(a) -> bool:
    return hasattr(a, "detach") and hasattr(a, "device") and hasattr(a, "data_ptr")


def _on_cuda(a) -> bool:
    return _is_torch(a) and a.device.type == "cuda"


def _to_numpy(a, name: str) -> np.ndarray:
    if _is_torch(a):
        a = a.detach().cpu().numpy()
    arr = np.asarray(a)
    if arr.dtype == object:
        raise ValueError(f"{name} must be a numeric array, got objects")
    return arr


def _index_array(a, name: str, allow_int32: bool) -> np.ndarray:
    arr = _to_numpy(a, name)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(arr.shape)}")
    if arr.dtype.kind not in "iu" or arr.dtype == np.bool_:
        if arr.size == 0:
            arr = arr.astype(np.int64)
        else:
            raise ValueError(f"{name} must hold integers, got dtype {arr.dtype}")
    if allow_int32 and arr.dtype == np.int32:
        return np.ascontiguousarray(arr)
    if arr.dtype.kind == "u" and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
        raise ValueError(f"{name} holds values too large for int64")
    return np.ascontiguousarray(arr, dtype=np.int64)


def _mask_array(a, num_nodes: int) -> np.ndarray:
    arr = _to_numpy(a, "candidates")
    if arr.dtype != np.bool_:
        raise ValueError(f"candidates must be a bool mask of length {num_nodes}, got dtype {arr.dtype}")
    if arr.ndim != 1 or arr.shape[0] != num_nodes:
        raise ValueError(f"candidates must have one entry per node ({num_nodes}), got shape {tuple(arr.shape)}")
    return np.ascontiguousarray(arr)


def _check_params(alpha: float, eps: float, k: int) -> None:
    if not (0.0 < float(alpha) < 1.0):
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if not (float(eps) > 0.0 and math.isfinite(float(eps))):
        raise ValueError(f"eps must be a finite number > 0, got {eps}")
    if int(k) != k or int(k) < 1:
        raise ValueError(f"k must be an integer >= 1, got {k}")


_WORKSPACES = {"auto": 0, "dense": 1, "hash": 2}


def _workspace_code(workspace: str) -> int:
    if workspace not in _WORKSPACES:
        raise ValueError(f"workspace must be one of {list(_WORKSPACES)}, got {workspace!r}")
    return _WORKSPACES[workspace]


def _sources_input(sources):
    if isinstance(sources, (int, np.integer)):
        return np.asarray([int(sources)], dtype=np.int64)
    if isinstance(sources, (list, tuple, range)):
        return np.asarray(list(sources), dtype=np.int64) if len(sources) else np.zeros(0, np.int64)
    return sources


# ----------------------------------------------------------------------------- public API
def ppr_topk(indptr, indices, sources, *, alpha: float = DEFAULT_ALPHA, eps: float = DEFAULT_EPS,
             k: int = DEFAULT_K, candidates=None, exclude_source: bool = True, device: str = "cpu",
             num_threads: int | None = None, return_stats: bool = False,
             cuda_capacity: int | None = None, cuda_budget_bytes: int = DEFAULT_CUDA_BUDGET_BYTES,
             workspace: str = "auto"):
    """Top-k approximate PPR of each source.

    indptr int64 [N+1], indices int32/int64 [E] (CSR, symmetric for the error guarantee);
    sources int [S]; candidates bool [N] or None (nodes that may be returned; it does not change
    the walk). Returns (idx int64 [S, k], val float32 [S, k]): rows sorted by value descending, ties
    by the smaller id, padded with idx = -1 and val = 0. With return_stats, a third element holds
    pushes / edge_pushes / touched (and, on CUDA, how many sources overflowed to the CPU).

    Runs the CUDA kernel when an input lives on a CUDA device or ``device`` names one (results are
    then torch tensors on that device); otherwise the OpenMP kernel with ``num_threads`` threads.
    torch inputs give torch outputs, NumPy inputs NumPy outputs. ``workspace`` picks the CPU
    kernel's scratch: "dense" N-sized arrays, a per-source "hash" table, or "auto" (hash from
    2^24 nodes on, where dense scratch would commit N * 16 bytes per thread); results are identical, only speed differs.
    """
    _check_params(alpha, eps, k)
    k = int(k)
    sources = _sources_input(sources)
    as_torch = any(_is_torch(a) for a in (indptr, indices, sources, candidates))
    cuda_in = [a for a in (indptr, indices, sources, candidates) if _on_cuda(a)]
    dev = str(device) if device is not None else "cpu"
    if cuda_in or dev.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} was requested but CUDA is not available here")
        target = cuda_in[0].device if cuda_in else torch.device(dev)
        if any(a.device != target for a in cuda_in):
            raise ValueError("all CUDA inputs must live on the same device")
        from mlaga_fast.ppr.cuda import topk_cuda

        out = topk_cuda(indptr, indices, sources, candidates, alpha=float(alpha), eps=float(eps), k=k,
                        exclude_source=bool(exclude_source), device=target, capacity=cuda_capacity,
                        budget_bytes=int(cuda_budget_bytes))
        return out if return_stats else out[:2]
    if dev != "cpu":
        raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {device!r}")
    from mlaga_fast import _C

    ip = _index_array(indptr, "indptr", allow_int32=False)
    ix = _index_array(indices, "indices", allow_int32=True)
    src = _index_array(sources, "sources", allow_int32=False)
    mask = None if candidates is None else _mask_array(candidates, ip.shape[0] - 1)
    if num_threads is not None and int(num_threads) < 1:
        raise ValueError(f"num_threads must be >= 1 or None, got {num_threads}")
    idx, val, stats = _C.ppr_topk(ip, ix, src, mask, float(alpha), float(eps), k, bool(exclude_source),
                                  int(num_threads or 0), _workspace_code(workspace))
    if as_torch:
        import torch

        idx, val = torch.from_numpy(idx), torch.from_numpy(val)
    return (idx, val, stats) if return_stats else (idx, val)


def ppr_dense(indptr, indices, sources, *, alpha: float = DEFAULT_ALPHA, eps: float = DEFAULT_EPS,
              num_threads: int | None = None, workspace: str = "auto") -> np.ndarray:
    """The settled push vectors p_s themselves, float64 [S, N] (CPU; meant for small graphs and
    tests: the output has S * N entries)."""
    _check_params(alpha, eps, 1)
    from mlaga_fast import _C

    ip = _index_array(indptr, "indptr", allow_int32=False)
    ix = _index_array(indices, "indices", allow_int32=True)
    src = _index_array(_sources_input(sources), "sources", allow_int32=False)
    out, _ = _C.ppr_dense(ip, ix, src, float(alpha), float(eps), int(num_threads or 0), _workspace_code(workspace))
    return out


def bounded_topk_host(indptr, indices, sources, *, alpha: float = DEFAULT_ALPHA, eps: float = DEFAULT_EPS,
                      k: int = DEFAULT_K, candidates=None, exclude_source: bool = True,
                      capacity: int = MAX_DEFAULT_CAPACITY):
    """The CUDA kernel's algorithm (bounded hash table per source, 32 lanes) run on the host, one
    thread. Returns (idx, val, status int32 [S] (1 = overflowed: row is padding), edge_pushes [S]).
    For tests of the kernel body and for reasoning about overflow without a GPU."""
    _check_params(alpha, eps, k)
    from mlaga_fast import _C

    ip = _index_array(indptr, "indptr", allow_int32=False)
    ix = _index_array(indices, "indices", allow_int32=True)
    src = _index_array(_sources_input(sources), "sources", allow_int32=False)
    mask = None if candidates is None else _mask_array(candidates, ip.shape[0] - 1)
    return _C.ppr_topk_bounded_host(ip, ix, src, mask, float(alpha), float(eps), int(k),
                                    bool(exclude_source), int(capacity))



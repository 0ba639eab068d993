"""What a PPR caller may pass: the defaults, and the coercion of arrays, numbers and devices.

Only types and shapes are settled here; the value checks (alpha, eps, the work bound, k,
num_threads, ids in range, the CSR itself) happen once, in the compiled core (csrc/ppr/ppr_graph.h),
whose errors are ValueErrors naming the parameter.
"""
from __future__ import annotations

import numbers
import os
from typing import Any

import numpy as np

from mlaga_fast.utils.arrays import is_torch, to_numpy

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
INT64_MAX = (1 << 63) - 1


def index_array(a: Any, name: str, allow_int32: bool) -> np.ndarray:
    """A 1-D C-contiguous int64 (or int32 when allowed) NumPy array of ids."""
    arr = to_numpy(a, name)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(arr.shape)}")
    if arr.dtype.kind not in "iu" or arr.dtype == np.bool_:
        if arr.size:
            raise ValueError(f"{name} must hold integers, got dtype {arr.dtype}")
        arr = arr.astype(np.int64)
    if allow_int32 and arr.dtype == np.int32:
        return np.ascontiguousarray(arr)
    if arr.dtype == np.uint64 and arr.size and int(arr.max()) > INT64_MAX:
        raise ValueError(f"{name} holds values too large for int64")
    return np.ascontiguousarray(arr, dtype=np.int64)


def mask_array(a: Any, num_nodes: int) -> np.ndarray:
    """A bool [N] candidate mask."""
    arr = to_numpy(a, "candidates")
    if arr.dtype != np.bool_:
        raise ValueError(f"candidates must be a bool mask of length {num_nodes}, got dtype {arr.dtype}")
    if arr.ndim != 1 or arr.shape[0] != num_nodes:
        raise ValueError(f"candidates must have one entry per node ({num_nodes}), got shape {tuple(arr.shape)}")
    return np.ascontiguousarray(arr)


def sources_array(sources: Any) -> np.ndarray:
    """Source ids as int64 [S]; a single int is one source."""
    if isinstance(sources, (numbers.Integral, np.integer)) and not isinstance(sources, bool):
        sources = [int(sources)]
    elif isinstance(sources, (list, tuple, range)) and len(sources) == 0:
        sources = np.zeros(0, np.int64)
    return index_array(sources, "sources", allow_int32=False)


def as_int(value: Any, name: str, lo: int = 0, hi: int = INT64_MAX) -> int:
    """An integer parameter (bools and non-integral numbers refused) in [lo, hi]."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)):
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            value = int(value)
        else:
            raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value}")
    return value


def as_float(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    return float(value)


def resolve_device(device: Any, inputs: tuple = ()):
    """Where a query runs: "cpu" or a torch.device('cuda', i).

    ``device`` may be anything torch.device accepts ('cpu', 'cpu:0', 'cuda', 'cuda:1', 0, a
    torch.device) or None, which follows the inputs (CUDA when one of them is a CUDA tensor).
    """
    cuda_in = [a for a in inputs if is_torch(a) and a.device.type == "cuda"]
    if device is None:
        if not cuda_in:
            return "cpu"
        device = cuda_in[0].device
    if isinstance(device, str) and device in ("cpu", "cpu:0"):
        return "cpu"
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device must be what torch.device accepts ('cpu', 'cuda', 'cuda:1', 0, ...), "
                         f"got {device!r}") from None
    if dev.type == "cpu":
        return "cpu"
    if dev.type != "cuda":
        raise ValueError(f"device {device!r} is not supported: PPR runs on 'cpu' or 'cuda'")
    if not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was requested but CUDA is not available here")
    if dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    if dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {device!r}: there are only {torch.cuda.device_count()} CUDA devices")
    if any(a.device != dev for a in cuda_in):
        raise ValueError(f"CUDA inputs must live on the device the query runs on ({dev})")
    return dev


def require_memory(nbytes: float, what: str, total: float | None = None) -> None:
    """ValueError naming ``what`` when ``nbytes`` exceed ``total`` (default: physical memory)."""
    if total is None:
        total = float(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    if nbytes > total:
        raise ValueError(f"{what} needs {nbytes / 2**30:.3g} GiB of memory, more than the {total / 2**30:.3g} GiB "
                         "available")

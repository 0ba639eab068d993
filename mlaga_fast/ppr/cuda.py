"""CUDA dispatch of the PPR push: scratch sizing, the launch, and the CPU fallback for overflows.

The graph, sources and candidate mask reach the kernel only through a PprGraph (validated once
on the host, uploaded by the compiled core), so nothing here re-checks them. Each warp owns a slab
of ppr_bounded_scratch_bytes(capacity, k) bytes; sources whose table overflows (more than
capacity / 2 touched nodes) come back with status 1 and are recomputed by the CPU kernel, so every
returned row meets the same error bound.
"""
from __future__ import annotations

import math

import numpy as np

from mlaga_fast.ppr.options import MAX_DEFAULT_CAPACITY, as_int, require_memory

MAX_WARPS = 1 << 14  # enough to fill any current GPU several times over


def default_capacity(alpha: float, eps: float, num_nodes: int) -> int:
    """Table slots per source: twice the worst-case touched count 1/(alpha*eps) + 1 (load <= 0.5),
    capped by 2 * N and by MAX_DEFAULT_CAPACITY, as a power of two (at least 64)."""
    need = 2.0 * (1.0 / (alpha * eps) + 2.0)
    need = min(need, 2.0 * max(num_nodes, 1), float(MAX_DEFAULT_CAPACITY))
    return max(64, 1 << int(math.ceil(math.log2(max(need, 2.0)))))


def topk_cuda(graph, sources: np.ndarray, mask: np.ndarray | None, *, alpha: float, eps: float, k: int,
              exclude_source: bool, device, capacity: int | None, budget_bytes: int):
    """(idx int64 [S, k], val float32 [S, k], stats) as tensors on ``device`` (a torch.device
    'cuda:i'). ``graph`` is a mlaga_fast.ppr.PprGraph; sources int64 [S] and mask bool [N] | None
    are host arrays in the caller's ids."""
    import torch
    from torch.utils.dlpack import to_dlpack

    from mlaga_fast import _C

    g = graph._g
    if not hasattr(g, "_topk_cuda"):
        raise RuntimeError("mlaga_fast was built without CUDA kernels; rebuild with MLAGA_CUDA=ON "
                           "or run the query with device='cpu'")
    s = int(sources.shape[0])
    total = float(torch.cuda.get_device_properties(device).total_memory)
    require_memory(12.0 * s * k, f"k = {k} for {s} sources: the [{s}, {k}] output on {device}", total)
    cap = as_int(capacity, "cuda_capacity") if capacity is not None else default_capacity(alpha, eps, graph.num_nodes)
    try:
        per_warp = int(_C.ppr_bounded_scratch_bytes(cap, k))
    except ValueError as e:
        raise ValueError(f"cuda_capacity: {e}") from None
    require_memory(per_warp, f"cuda_capacity = {cap} with k = {k}: one warp's table", total)
    with torch.cuda.device(device):
        idx = torch.full((s, k), -1, dtype=torch.int64, device=device)
        val = torch.zeros((s, k), dtype=torch.float32, device=device)
        stats = {"pushes": None, "edge_pushes": 0, "touched": None, "cuda_overflow": 0, "capacity": cap, "warps": 0}
        if s == 0:
            return idx, val, stats
        warps = int(max(1, min(s, MAX_WARPS, budget_bytes // per_warp)))
        status = torch.zeros(s, dtype=torch.int32, device=device)
        edge_pushes = torch.zeros(s, dtype=torch.int64, device=device)
        scratch = torch.empty(warps * per_warp, dtype=torch.uint8, device=device)
        stream = torch.cuda.current_stream(device)
        g._topk_cuda(sources, mask, alpha, eps, k, exclude_source, cap, warps, device.index, stream.cuda_stream,
                     to_dlpack(scratch), to_dlpack(idx), to_dlpack(val), to_dlpack(status), to_dlpack(edge_pushes))
        del scratch
    stats["warps"] = warps
    stats["edge_pushes"] = int(edge_pushes.sum().item())
    over = torch.nonzero(status, as_tuple=False).flatten()
    if over.numel():
        # Overflowed sources: the exact same guarantee from the CPU kernel.
        rows = over.cpu().numpy()
        cidx, cval, cst = graph.topk(sources[rows], alpha=alpha, eps=eps, k=k, candidates=mask,
                                     exclude_source=exclude_source, device="cpu", return_stats=True)
        idx[over] = torch.from_numpy(cidx).to(device)
        val[over] = torch.from_numpy(cval).to(device)
        stats["cuda_overflow"] = int(over.numel())
        stats["edge_pushes"] += int(cst["edge_pushes"])
    return idx, val, stats

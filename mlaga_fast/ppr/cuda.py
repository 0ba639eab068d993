"""CUDA dispatch of the PPR push: validation on the device, scratch sizing, CPU fallback.

The compiled kernel (csrc/ppr/ppr_cuda.cu) trusts its inputs, so everything it indexes with is
validated here first with torch ops on the device (one host sync per check, no copy of the graph).
Each warp owns a slab of bounded_scratch_bytes(capacity, k) bytes; sources whose table overflows
(more than capacity / 2 touched nodes) come back with status 1 and are recomputed by the CPU
kernel, so every returned row meets the same error bound.
"""
from __future__ import annotations

import math

import numpy as np

from mlaga_fast.ppr.core import MAX_DEFAULT_CAPACITY

MAX_WARPS = 1 << 14  # enough to fill any current GPU several times over


def default_capacity(alpha: float, eps: float, num_nodes: int) -> int:
    """Table slots per source: twice the worst-case touched count 1/(alpha*eps) + 1 (load <= 0.5),
    capped by 2 * N and by MAX_DEFAULT_CAPACITY, as a power of two (at least 64)."""
    need = 2.0 * (1.0 / (alpha * eps) + 2.0)
    need = min(need, 2.0 * max(num_nodes, 1), float(MAX_DEFAULT_CAPACITY))
    return max(64, 1 << int(math.ceil(math.log2(max(need, 2.0)))))


def _first_true(mask) -> int:
    import torch

    return int(torch.nonzero(mask, as_tuple=False)[0, 0].item())


def _validate_csr(indptr, indices) -> int:
    import torch

    if indptr.dtype != torch.int64 or indptr.dim() != 1:
        raise ValueError(f"indptr must be a 1-D int64 tensor, got {indptr.dtype} with shape {tuple(indptr.shape)}")
    if indices.dtype not in (torch.int32, torch.int64) or indices.dim() != 1:
        raise ValueError(f"indices must be a 1-D int32 or int64 tensor, got {indices.dtype} "
                         f"with shape {tuple(indices.shape)}")
    if indptr.numel() < 1:
        raise ValueError("indptr must have num_nodes + 1 >= 1 entries, got 0")
    n = indptr.numel() - 1
    if int(indptr[0].item()) != 0:
        raise ValueError(f"indptr[0] must be 0, got {int(indptr[0].item())}")
    if n > 0:
        dec = indptr[1:] < indptr[:-1]
        if bool(dec.any().item()):
            i = _first_true(dec) + 1
            raise ValueError(f"indptr must be non-decreasing: indptr[{i}] = {int(indptr[i].item())} "
                             f"< indptr[{i - 1}] = {int(indptr[i - 1].item())}")
    if int(indptr[-1].item()) != indices.numel():
        raise ValueError(f"indptr[-1] must equal len(indices) = {indices.numel()}, got {int(indptr[-1].item())}")
    if indices.numel():
        bad = (indices < 0) | (indices >= n)
        if bool(bad.any().item()):
            e = _first_true(bad)
            raise ValueError(f"indices[{e}] = {int(indices[e].item())} is out of range [0, {n})")
    return n


def topk_cuda(indptr, indices, sources, candidates, *, alpha: float, eps: float, k: int,
              exclude_source: bool, device, capacity: int | None, budget_bytes: int):
    """Returns (idx int64 [S, k], val float32 [S, k], stats) as tensors on ``device``."""
    import torch

    from mlaga_fast import _C

    if not hasattr(_C, "ppr_topk_cuda"):
        raise RuntimeError("mlaga_fast was built without CUDA kernels; rebuild with MLAGA_CUDA=ON "
                           "or call ppr_topk with CPU inputs and device='cpu'")
    device = torch.device(device)
    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())

    def dev_tensor(a, name):
        t = a if torch.is_tensor(a) else torch.as_tensor(np.asarray(a))
        if t.dtype == torch.bool and name != "candidates":
            raise ValueError(f"{name} must hold integers, got bool")
        return t.to(device).contiguous()

    ip = dev_tensor(indptr, "indptr")
    ix = dev_tensor(indices, "indices")
    if ix.dtype not in (torch.int32, torch.int64) and ix.numel() == 0:
        ix = ix.to(torch.int64)
    n = _validate_csr(ip, ix)
    src = dev_tensor(sources, "sources")
    if src.dim() != 1:
        raise ValueError(f"sources must be 1-D, got shape {tuple(src.shape)}")
    if src.numel() == 0:
        src = src.to(torch.int64)
    if src.dtype not in (torch.int32, torch.int64, torch.int16, torch.int8, torch.uint8):
        raise ValueError(f"sources must hold integers, got dtype {src.dtype}")
    src = src.to(torch.int64).contiguous()
    if src.numel():
        bad = (src < 0) | (src >= n)
        if bool(bad.any().item()):
            i = _first_true(bad)
            raise ValueError(f"sources[{i}] = {int(src[i].item())} is out of range [0, {n})")
    mask = None
    if candidates is not None:
        mask = dev_tensor(candidates, "candidates")
        if mask.dtype != torch.bool:
            raise ValueError(f"candidates must be a bool mask of length {n}, got dtype {mask.dtype}")
        if mask.dim() != 1 or mask.numel() != n:
            raise ValueError(f"candidates must have one entry per node ({n}), got shape {tuple(mask.shape)}")

    s = src.numel()
    idx = torch.full((s, k), -1, dtype=torch.int64, device=device)
    val = torch.zeros((s, k), dtype=torch.float32, device=device)
    stats = {"pushes": None, "edge_pushes": 0, "touched": None, "cuda_overflow": 0}
    if s == 0:
        return idx, val, stats
    cap = int(capacity) if capacity is not None else default_capacity(alpha, eps, n)
    if cap < 2 or cap & (cap - 1):
        raise ValueError(f"cuda_capacity must be a power of two >= 2, got {cap}")
    per_warp = int(_C.ppr_bounded_scratch_bytes(cap, k))
    warps = int(max(1, min(s, MAX_WARPS, budget_bytes // per_warp)))
    status = torch.zeros(s, dtype=torch.int32, device=device)
    edge_pushes = torch.zeros(s, dtype=torch.int64, device=device)
    with torch.cuda.device(device):
        scratch = torch.empty(warps * per_warp, dtype=torch.uint8, device=device)
        stream = torch.cuda.current_stream(device)
        _C.ppr_topk_cuda(ip.data_ptr(), ix.data_ptr(), ix.element_size(), n, ix.numel(), src.data_ptr(), s,
                         0 if mask is None else mask.data_ptr(), float(alpha), float(eps), int(k),
                         bool(exclude_source), cap, warps, scratch.data_ptr(), idx.data_ptr(),
                         val.data_ptr(), status.data_ptr(), edge_pushes.data_ptr(), stream.cuda_stream)
        stream.synchronize()
        del scratch
    over = torch.nonzero(status, as_tuple=False).flatten()
    stats["edge_pushes"] = int(edge_pushes.sum().item())
    if over.numel():
        # Overflowed sources: the exact same guarantee from the CPU kernel.
        from mlaga_fast import _C as C

        sub = src[over].cpu().numpy()
        cidx, cval, cst = C.ppr_topk(ip.cpu().numpy(), ix.cpu().numpy(), sub,
                                     None if mask is None else mask.cpu().numpy(), float(alpha),
                                     float(eps), int(k), bool(exclude_source), 0)
        idx[over] = torch.from_numpy(cidx).to(device)
        val[over] = torch.from_numpy(cval).to(device)
        stats["cuda_overflow"] = int(over.numel())
        stats["edge_pushes"] += int(cst["edge_pushes"])
    stats["capacity"] = cap
    stats["warps"] = warps
    return idx, val, stats

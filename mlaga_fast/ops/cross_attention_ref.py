"""Plain-PyTorch cross-attention: the ground truth the Triton and SDPA paths are tested against.

Computes in the inputs' dtype (so a test can measure PyTorch's own fp16 error by running it in
fp16 and its exact answer by running it in fp64). Same contract as
``mlaga_fast.ops.cross_attention.cross_attention``: a row with no valid key outputs 0 and passes
back zero gradients (no NaN anywhere).
"""
from __future__ import annotations

import torch


def cross_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                              mask: torch.Tensor | None = None, scale: float | None = None) -> torch.Tensor:
    """q [Bq, H, nq, dh] (Bq in {1, B}), k/v [B, H, L, dh], mask [B, L] bool -> [B, H, nq, dh]."""
    if scale is None:
        scale = q.shape[-1] ** -0.5
    s = torch.matmul(q, k.transpose(-1, -2)) * scale  # [B, H, nq, L] (q broadcasts over B)
    if mask is None:
        return torch.matmul(torch.softmax(s, dim=-1), v)
    keep = mask[:, None, None, :]  # [B, 1, 1, L]
    s = s.masked_fill(~keep, float("-inf"))
    # rows with no valid key: softmax over zeros instead of all -inf (which is NaN), then the
    # multiplication by the mask zeroes them; gradients through those rows are exactly 0
    empty = ~mask.any(dim=-1)  # [B]
    s = s.masked_fill(empty[:, None, None, None], 0.0)
    p = torch.softmax(s, dim=-1) * keep.to(s.dtype)  # [B, H, nq, L]
    return torch.matmul(p, v)


__all__ = ["cross_attention_reference"]

"""Multi-head cross-attention from nq learnable queries to a node's tokens, with one dispatch point.

Public surface:
  cross_attention(q, k, v, mask=None, scale=None, backend=None) -> [B, H, nq, dh]
  QueryCrossAttention      nn.Module (q / fused kv / out projections + cross_attention)
  torch.ops.mlaga_fast.cross_attention_fwd / _bwd   custom ops: the Triton path's only autograd
                                                     route (eager and torch.compile)

Backends, chosen only in `_select_backend`:
  "triton"    CUDA tensors and Triton installed (or forced; on CPU tensors only with
              TRITON_INTERPRET=1 set before triton is imported, as the tests do);
  "sdpa"      torch.nn.functional.scaled_dot_product_attention, everywhere else;
  "reference" plain PyTorch (mlaga_fast.ops.cross_attention_ref), for tests.
Override with the `backend=` argument or the env var MLAGA_ATTN_BACKEND=auto|triton|sdpa|reference.
All backends agree on rows with no valid key: output 0, gradients 0 (SDPA alone would give NaN).
Roofline and kernel design: see mlaga_fast/kernels/cross_attention.py (top-level kernels/).
"""
from __future__ import annotations

import importlib.util
import os
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from mlaga_fast.ops.cross_attention_ref import cross_attention_reference

BACKENDS = ("triton", "sdpa", "reference")
ENV_VAR = "MLAGA_ATTN_BACKEND"
_HAS_TRITON = importlib.util.find_spec("triton") is not None  # no import: keep mlaga_fast.ops light
_TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_MAX_TRITON_HEAD_DIM = 128  # head dim padded to a power of two; larger tiles would spill


def _kernels():
    """Import the Triton launchers on first use (Triton is optional for the package)."""
    from mlaga_fast.kernels import cross_attention as kern

    return kern


# ------------------------------------------------------------------------------------ checks
def _check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor]) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name} must be 4-D [batch, heads, tokens, head_dim], got shape {tuple(t.shape)}")
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape [B, H, L, dh], "
                         f"got k {tuple(k.shape)} and v {tuple(v.shape)}")
    B, H, L, dh = k.shape
    if q.shape[0] not in (1, B):
        raise ValueError(f"q batch must be 1 (shared queries) or B={B}, got q.shape[0]={q.shape[0]}")
    if q.shape[1] != H or q.shape[3] != dh:
        raise ValueError(f"q must be [B or 1, H={H}, nq, dh={dh}] to match k, got {tuple(q.shape)}")
    for i, n in enumerate(("batch", "heads", "nq", "head_dim")):
        if q.shape[i] == 0:
            raise ValueError(f"q dimension {i} ({n}) is empty: shape {tuple(q.shape)}")
    for i, n in enumerate(("batch", "heads", "L", "head_dim")):
        if k.shape[i] == 0:
            raise ValueError(f"k dimension {i} ({n}) is empty: shape {tuple(k.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not q.is_floating_point():
        raise ValueError(f"q, k, v must be floating point, got {q.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(f"mask must be a bool tensor [B, L] (True = valid key), got {got}")
        if tuple(mask.shape) != (B, L):
            raise ValueError(f"mask must be [B, L] = [{B}, {L}], got {tuple(mask.shape)}")
        if mask.device != k.device:
            raise ValueError(f"mask must be on {k.device}, got {mask.device}")


def _select_backend(q: torch.Tensor, k: torch.Tensor, backend: Optional[str] = None) -> str:
    """The one place that decides which implementation runs."""
    choice = backend if backend is not None else os.environ.get(ENV_VAR, "auto")
    choice = choice.strip().lower()
    if choice not in BACKENDS + ("auto",):
        raise ValueError(f"backend ({'argument' if backend is not None else ENV_VAR}) must be one of "
                         f"auto|triton|sdpa|reference, got {choice!r}")
    if choice == "auto":
        ok = (_HAS_TRITON and q.is_cuda and q.dtype in _TRITON_DTYPES and q.shape[-1] <= _MAX_TRITON_HEAD_DIM)
        return "triton" if ok else "sdpa"
    if choice == "triton":
        if not _HAS_TRITON:
            raise ValueError("backend 'triton' requested but triton is not installed")
        if not q.is_cuda and os.environ.get("TRITON_INTERPRET", "0") != "1":
            raise ValueError("backend 'triton' on CPU tensors needs TRITON_INTERPRET=1 set before triton is imported")
        if q.shape[-1] > _MAX_TRITON_HEAD_DIM:
            raise ValueError(f"backend 'triton' supports head_dim <= {_MAX_TRITON_HEAD_DIM}, got {q.shape[-1]}")
        if q.is_cuda and q.dtype not in _TRITON_DTYPES:
            # Triton's CUDA backend has no fp64 MMA (compiler assertion); fp64 runs in the interpreter only
            raise ValueError(f"backend 'triton' on CUDA supports fp16/bf16/fp32, got {q.dtype}")
    return choice


# ------------------------------------------------------------------------------- custom ops
@torch.library.custom_op("mlaga_fast::cross_attention_fwd", mutates_args=(),
                         schema="(Tensor q, Tensor k, Tensor v, Tensor? mask, float scale) -> (Tensor, Tensor)")
def _fwd_op(q, k, v, mask, scale):
    return _kernels().cross_attention_fwd(q, k, v, mask, scale)


@_fwd_op.register_fake
def _fwd_fake(q, k, v, mask, scale):
    B, H, L, dh = k.shape
    lse_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    return q.new_empty((B, H, q.shape[2], dh)), q.new_empty((B, H, q.shape[2]), dtype=lse_dtype)


@torch.library.custom_op(
    "mlaga_fast::cross_attention_bwd", mutates_args=(),
    schema="(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor? mask, Tensor out, Tensor lse, float scale)"
           " -> (Tensor, Tensor, Tensor)")
def _bwd_op(grad_out, q, k, v, mask, out, lse, scale):
    return _kernels().cross_attention_bwd(grad_out, q, k, v, mask, out, lse, scale)


@_bwd_op.register_fake
def _bwd_fake(grad_out, q, k, v, mask, out, lse, scale):
    # dk/dv come back contiguous whatever k/v's strides were
    return (q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape))


def _setup_context(ctx, inputs, output):
    q, k, v, mask, scale = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, mask, out, lse)
    ctx.scale = scale


def _backward(ctx, grad_out, grad_lse):
    q, k, v, mask, out, lse = ctx.saved_tensors
    dq, dk, dv = torch.ops.mlaga_fast.cross_attention_bwd(grad_out, q, k, v, mask, out, lse, ctx.scale)
    need = getattr(ctx, "needs_input_grad", (True, True, True))
    return (dq if need[0] else None, dk if need[1] else None, dv if need[2] else None, None, None)


_fwd_op.register_autograd(_backward, setup_context=_setup_context)


# ------------------------------------------------------------------------------- backends
def _sdpa(q, k, v, mask, scale):
    B = k.shape[0]
    if q.shape[0] != B:
        q = q.expand(B, -1, -1, -1)  # a view: SDPA has no batch broadcasting on every backend
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, scale=scale)
    empty = ~mask.any(dim=-1)  # [B]; no host sync: applied as tensor ops
    # unmask the empty rows so SDPA sees no all -inf row (NaN in forward AND backward), then zero
    # their outputs: the zeroed output sends back zero gradients
    attn = (mask | empty[:, None])[:, None, None, :]  # [B, 1, 1, L]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn, scale=scale)
    return out.masked_fill(empty[:, None, None, None], 0.0)


def cross_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor] = None,
                    scale: Optional[float] = None, backend: Optional[str] = None) -> torch.Tensor:
    """softmax(q k^T * scale, keys where mask) v per head.

    q [B or 1, H, nq, dh] (1: queries shared by the batch), k, v [B, H, L, dh] (any strides),
    mask [B, L] bool (True = valid key; None = all valid), scale default dh ** -0.5.
    Returns [B, H, nq, dh] in q's dtype; rows with no valid key are 0 (gradients 0).
    """
    _check_inputs(q, k, v, mask)
    if scale is None:
        scale = float(q.shape[-1]) ** -0.5
    scale = float(scale)
    which = _select_backend(q, k, backend)
    if which == "triton":
        return torch.ops.mlaga_fast.cross_attention_fwd(q, k, v, mask, scale)[0]
    if which == "sdpa":
        return _sdpa(q, k, v, mask, scale)
    return cross_attention_reference(q, k, v, mask, scale)


# --------------------------------------------------------------------------------- module
class QueryCrossAttention(nn.Module):
    """nq queries attend over a node's tokens: [nq | B, nq, dim] x [B, L, kv_dim] -> [B, nq, dim].

    K and V come from ONE Linear(kv_dim, 2 * dim), so X is read once for both projections; the
    attention reads K and V as strided views of that output (no transpose copies). `dropout`
    applies to the output projection (attention-probability dropout would need RNG inside the
    fused kernel and would make the backends disagree).
    """

    def __init__(self, dim: int, num_heads: int, kv_dim: Optional[int] = None, bias: bool = True,
                 dropout: float = 0.0, backend: Optional[str] = None):
        super().__init__()
        kv_dim = dim if kv_dim is None else kv_dim
        if dim <= 0 or num_heads <= 0 or kv_dim <= 0:
            raise ValueError(f"dim, num_heads, kv_dim must be positive, got {dim}, {num_heads}, {kv_dim}")
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if backend is not None and backend not in BACKENDS + ("auto",):
            raise ValueError(f"backend must be one of auto|triton|sdpa|reference, got {backend!r}")
        self.dim, self.num_heads, self.kv_dim = dim, num_heads, kv_dim
        self.head_dim = dim // num_heads
        self.backend = backend
        self.q_proj = nn.Linear(dim, dim, bias=bias)
        self.kv_proj = nn.Linear(kv_dim, 2 * dim, bias=bias)  # rows [0, dim): K, [dim, 2 dim): V
        self.out_proj = nn.Linear(dim, dim, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, queries: torch.Tensor, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.kv_dim:
            raise ValueError(f"x must be [B, L, kv_dim={self.kv_dim}], got {tuple(x.shape)}")
        B, L, _ = x.shape
        if queries.dim() not in (2, 3) or queries.shape[-1] != self.dim:
            raise ValueError(f"queries must be [nq, {self.dim}] or [B, nq, {self.dim}], got {tuple(queries.shape)}")
        if queries.dim() == 3 and queries.shape[0] != B:
            raise ValueError(f"queries batch ({queries.shape[0]}) must equal x batch ({B})")
        H, dh = self.num_heads, self.head_dim
        nq = queries.shape[-2]
        q = self.q_proj(queries)  # [nq, dim] or [B, nq, dim]
        q = q.view(-1, nq, H, dh).transpose(1, 2)  # [1 or B, H, nq, dh]
        kv = self.kv_proj(x).view(B, L, 2, H, dh)  # [B, L, 2, H, dh]
        k = kv[:, :, 0].transpose(1, 2)  # [B, H, L, dh] view
        v = kv[:, :, 1].transpose(1, 2)  # [B, H, L, dh] view
        o = cross_attention(q, k, v, mask, backend=self.backend)  # [B, H, nq, dh]
        o = o.transpose(1, 2).reshape(B, nq, self.dim)  # [B, nq, dim]
        return self.dropout(self.out_proj(o))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, kv_dim={self.kv_dim}, backend={self.backend}"


__all__ = ["cross_attention", "QueryCrossAttention", "BACKENDS", "ENV_VAR"]

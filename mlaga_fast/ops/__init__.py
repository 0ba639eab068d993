"""Neural-network ops with a fused-kernel path (Triton on CUDA) and PyTorch fallbacks.

Submodules import torch; Triton is imported only when a Triton path actually runs.
`from mlaga_fast.ops import QueryCrossAttention` resolves lazily. The function lives at
`mlaga_fast.ops.cross_attention.cross_attention` (the package attribute `cross_attention` is the
submodule once imported, so it is not re-exported here).
"""
from __future__ import annotations

_LAZY = {
    "QueryCrossAttention": "mlaga_fast.ops.cross_attention",
    "cross_attention_reference": "mlaga_fast.ops.cross_attention_ref",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mlaga_fast.ops' has no attribute {name!r}")


__all__ = list(_LAZY)

"""The one converter from what callers pass (NumPy arrays, torch tensors, lists) to NumPy."""
from __future__ import annotations

from typing import Any

import numpy as np


def is_torch(a: Any) -> bool:
    """True for a torch.Tensor, checked without importing torch."""
    return hasattr(a, "detach") and hasattr(a, "device") and hasattr(a, "data_ptr")


def to_numpy(a: Any, name: str) -> np.ndarray:
    """``a`` as a NumPy array in native byte order.

    A CPU tensor is shared, not copied; a CUDA tensor is copied to the host; tensors on any other
    device (meta, ...) are refused, as are object arrays. A big-endian array is converted, never
    reinterpreted. Errors are ValueError naming ``name``.
    """
    if is_torch(a):
        dev = a.device.type
        if dev not in ("cpu", "cuda"):
            raise ValueError(f"{name} is a tensor on device '{a.device}'; only 'cpu' and 'cuda' tensors are supported")
        t = a.detach()
        if dev != "cpu":
            t = t.cpu()
        try:
            a = t.resolve_conj().resolve_neg().numpy()
        except TypeError as e:  # e.g. bfloat16, which NumPy has no dtype for
            raise ValueError(f"{name} has dtype {t.dtype}, which has no NumPy equivalent: {e}") from None
    arr = np.asarray(a)
    if arr.dtype == object:
        raise ValueError(f"{name} must be a numeric array, got Python objects")
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


def used_columns(mask: Any) -> int:
    """Columns up to the last one that is real (True) in any row of a [B, L] torch mask; at least 1. The
    columns after it are padding in every row and can be cut before a masked encoder or attention runs."""
    used = mask.any(dim=0).nonzero()
    return int(used[-1]) + 1 if used.numel() else 1

"""Python face of the C++ CSR check: accepts NumPy arrays or CPU torch tensors."""
from __future__ import annotations

import numpy as np


def as_numpy(a, name: str) -> np.ndarray:
    """A C-contiguous NumPy view of an array-like (torch CPU tensors are shared, not copied)."""
    if hasattr(a, "detach") and hasattr(a, "cpu"):  # torch.Tensor without importing torch
        if a.device.type != "cpu":
            raise ValueError(f"{name} must be on the CPU for this call, got device {a.device}")
        a = a.detach().numpy()
    arr = np.asarray(a)
    if arr.dtype == object:
        raise ValueError(f"{name} must be a numeric array")
    return np.ascontiguousarray(arr)


def check_csr(indptr, indices, num_nodes: int | None = None) -> None:
    """Validate CSR arrays (see csrc/graph/csr_check.h); raises ValueError naming the problem."""
    from mlaga_fast import _C

    indptr = as_numpy(indptr, "indptr")
    indices = as_numpy(indices, "indices")
    if num_nodes is None:
        num_nodes = int(indptr.shape[0]) - 1 if indptr.ndim == 1 else -1
    _C.check_csr(indptr, indices, int(num_nodes))

"""Python face of the C++ CSR check (csrc/graph/csr_check.h): the one validation of a CSR graph."""
from __future__ import annotations

from mlaga_fast.utils.arrays import to_numpy


def check_csr(indptr, indices, num_nodes: int | None = None) -> None:
    """Validate CSR arrays (NumPy arrays or tensors); raises ValueError naming the problem."""
    import numpy as np

    from mlaga_fast import _C

    # ndim is checked before np.ascontiguousarray, which turns a 0-d array into a 1-d one
    indptr, indices = to_numpy(indptr, "indptr"), to_numpy(indices, "indices")
    for name, a in (("indptr", indptr), ("indices", indices)):
        if a.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {tuple(a.shape)}")
    indptr, indices = np.ascontiguousarray(indptr), np.ascontiguousarray(indices)
    if num_nodes is None:
        num_nodes = int(indptr.shape[0]) - 1
    _C.check_csr(indptr, indices, int(num_nodes))

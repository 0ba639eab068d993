"""Python face of the C++ CSR check (csrc/graph/csr_check.h): the one validation of a CSR graph."""
from __future__ import annotations

from mlaga_fast.utils.arrays import to_numpy


def check_csr(indptr, indices, num_nodes: int | None = None) -> None:
    """Validate CSR arrays (NumPy arrays or tensors); raises ValueError naming the problem."""
    import numpy as np

    from mlaga_fast import _C

    indptr = np.ascontiguousarray(to_numpy(indptr, "indptr"))
    indices = np.ascontiguousarray(to_numpy(indices, "indices"))
    if indptr.ndim != 1:
        raise ValueError(f"indptr must be 1-D, got shape {tuple(indptr.shape)}")
    if num_nodes is None:
        num_nodes = int(indptr.shape[0]) - 1
    _C.check_csr(indptr, indices, int(num_nodes))

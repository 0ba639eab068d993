"""The C++ CSR check: accepts well-formed graphs, names the problem in every malformed one."""
import re

import numpy as np
import pytest

from mlaga_fast import _C
from mlaga_fast.graph_check import check_csr


def _path_graph(n: int, index_dtype=np.int64):
    # Undirected path 0-1-...-(n-1), built independently of the code under test.
    rows, cols = [], []
    for i in range(n - 1):
        rows += [i, i + 1]
        cols += [i + 1, i]
    order = np.lexsort((cols, rows))
    rows, cols = np.array(rows)[order], np.array(cols)[order]
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.add.at(indptr, rows + 1, 1)
    return np.cumsum(indptr), cols.astype(index_dtype)


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_valid_graph_passes(dtype):
    indptr, indices = _path_graph(1000, dtype)
    check_csr(indptr, indices, 1000)
    _C.check_csr(indptr, indices, 1000)


def test_empty_graphs_pass():
    check_csr(np.zeros(1, np.int64), np.zeros(0, np.int64), 0)
    check_csr(np.zeros(6, np.int64), np.zeros(0, np.int64), 5)


def test_torch_tensors_accepted():
    torch = pytest.importorskip("torch")
    indptr, indices = _path_graph(10)
    check_csr(torch.from_numpy(indptr), torch.from_numpy(indices), 10)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda p, i: (p.astype(np.int32), i), "indptr must be int64"),
        (lambda p, i: (p, i.astype(np.float64)), "indices must be int32 or int64"),
        (lambda p, i: (p, i.astype(np.uint64)), "indices must be int32 or int64"),
        (lambda p, i: (p.reshape(1, -1), i), "indptr must be 1-D"),
        (lambda p, i: (p, i.reshape(2, -1)), "indices must be 1-D"),
        (lambda p, i: (p[:-1], i), "indptr must have num_nodes + 1 = 11 entries, got 10"),
        (lambda p, i: (p, i[:-1]), "indptr[-1] must equal len(indices) = 17, got 18"),
        (lambda p, i: (p, i[::2]), "C-contiguous"),
    ],
)
def test_malformed_inputs_raise_value_error(mutate, message):
    indptr, indices = _path_graph(10)
    bad_indptr, bad_indices = mutate(indptr, indices)
    with pytest.raises(ValueError, match=re.escape(message)):
        _C.check_csr(bad_indptr, bad_indices, 10)


def test_indptr_must_start_at_zero():
    indptr, indices = _path_graph(10)
    indptr = indptr + 1
    with pytest.raises(ValueError, match=r"indptr\[0\] must be 0, got 1"):
        check_csr(indptr, indices, 10)


def test_first_decreasing_indptr_position_is_named():
    indptr, indices = _path_graph(50)
    indptr[20] = indptr[21] + 1  # indptr[21] < indptr[20]: first violation at 21
    indptr[40] = 0  # a later violation must not be the one reported
    with pytest.raises(ValueError, match=r"non-decreasing: indptr\[21\]"):
        check_csr(indptr, indices, 50)


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
@pytest.mark.parametrize("bad_value", [-1, 10, 2**31 - 1])
def test_first_out_of_range_index_is_named(dtype, bad_value):
    indptr, indices = _path_graph(10, dtype)
    indices[7] = bad_value
    indices[12] = -5  # later bad entry; the first one must be reported
    with pytest.raises(ValueError, match=rf"indices\[7\] = {bad_value} is out of range \[0, 10\)"):
        check_csr(indptr, indices, 10)


def test_large_graph_first_bad_index_found_in_parallel():
    n = 200_000
    rng = np.random.default_rng(0)
    indices = rng.integers(0, n, size=2_000_000, dtype=np.int64)
    indptr = np.linspace(0, indices.size, n + 1).astype(np.int64)
    check_csr(indptr, indices, n)
    indices[1_234_567] = n
    indices[1_900_000] = n + 7
    with pytest.raises(ValueError, match=r"indices\[1234567\]"):
        check_csr(indptr, indices, n)


def test_negative_num_nodes():
    with pytest.raises(ValueError, match="num_nodes must be >= 0"):
        _C.check_csr(np.zeros(1, np.int64), np.zeros(0, np.int64), -1)


@pytest.mark.parametrize("indptr, indices, bad", [(np.int64(0), np.array([], np.int32), "indptr"),
                                                  (np.zeros(2, np.int64), np.int32(0), "indices"),
                                                  (np.zeros((2, 1), np.int64), np.array([], np.int32), "indptr")])
def test_arrays_that_are_not_1d_are_refused_as_ppr_refuses_them(indptr, indices, bad):
    """One check, one answer: a 0-d or 2-d array is refused here with the message ppr_topk gives it."""
    from mlaga_fast.ppr import ppr_topk

    with pytest.raises(ValueError, match=f"{bad} must be 1-D") as here:
        check_csr(indptr, indices, 1)
    with pytest.raises(ValueError, match=f"{bad} must be 1-D") as there:
        ppr_topk(indptr, indices, np.zeros(1, np.int64), k=1)
    assert str(here.value) == str(there.value)

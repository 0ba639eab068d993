"""The CUDA push kernel (warp per source, bounded hash table) against exact PPR and the CPU kernel.
Skipped without a CUDA device; the kernel body itself is covered on the CPU by test_ppr_bounded.py."""
from __future__ import annotations

import numpy as np
import pytest
from helpers.ppr_reference import csr_from_edges, exact_ppr, random_graph

from mlaga_fast.ppr import ppr_topk

pytestmark = pytest.mark.cuda


def _cuda(a):
    import torch

    return torch.as_tensor(a, device="cuda")


@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
def test_cuda_meets_the_bound(index_dtype):
    rng = np.random.default_rng(0)
    n = 400
    indptr, indices = random_graph(rng, n, 2000)
    deg = np.diff(indptr).astype(np.float64)
    sources = np.arange(n)
    eps, k = 1e-4, 16
    idx, val, stats = ppr_topk(_cuda(indptr), _cuda(indices.astype(index_dtype)), _cuda(sources), eps=eps, k=k,
                               return_stats=True)
    assert idx.is_cuda and val.is_cuda and idx.shape == (n, k)
    idx, val = idx.cpu().numpy(), val.cpu().numpy()
    pi = exact_ppr(indptr, indices, sources, 0.15)
    cidx, cval = ppr_topk(indptr, indices, sources, eps=eps, k=k)
    for i, s in enumerate(sources):
        got = idx[i][idx[i] >= 0]
        assert s not in got
        assert np.all(np.diff(val[i][: got.size]) <= 0)
        assert np.all(val[i][: got.size] <= pi[i, got] * (1 + 1e-5) + 1e-9)
        assert np.all(pi[i, got] - val[i][: got.size] < eps * deg[got] + 1e-6)
    # same push, different summation order only: values agree to float rounding
    np.testing.assert_allclose(np.sort(val, axis=1), np.sort(cval, axis=1), rtol=1e-4, atol=1e-6)
    assert stats["cuda_overflow"] == 0


def test_cuda_candidates_padding_and_empty():
    indptr, indices = csr_from_edges(6, [0, 1, 3], [1, 2, 4])
    idx, val = ppr_topk(_cuda(indptr), _cuda(indices), _cuda(np.array([0, 3, 5])), eps=1e-8, k=4)
    idx = idx.cpu().numpy()
    assert sorted(idx[0][:2].tolist()) == [1, 2] and idx[0][2:].tolist() == [-1, -1]
    assert idx[1].tolist() == [4, -1, -1, -1] and idx[2].tolist() == [-1] * 4
    mask = np.zeros(6, bool)
    idx, val = ppr_topk(_cuda(indptr), _cuda(indices), _cuda(np.array([0])), k=3, candidates=_cuda(mask))
    assert (idx.cpu().numpy() == -1).all() and (val.cpu().numpy() == 0).all()
    idx, val = ppr_topk(indptr, indices, np.zeros(0, np.int64), k=3, device="cuda")
    assert tuple(idx.shape) == (0, 3)


def test_cuda_overflow_falls_back_to_cpu():
    leaves = 5000
    indptr, indices = csr_from_edges(leaves + 1, np.zeros(leaves, np.int64), np.arange(1, leaves + 1))
    src = np.array([0, 3, 0])
    idx, val, stats = ppr_topk(_cuda(indptr), _cuda(indices), _cuda(src), eps=1e-7, k=5, return_stats=True,
                               cuda_capacity=1024)
    cidx, cval = ppr_topk(indptr, indices, src, eps=1e-7, k=5)
    assert stats["cuda_overflow"] >= 2
    np.testing.assert_array_equal(idx.cpu().numpy()[[0, 2]], cidx[[0, 2]])
    np.testing.assert_array_equal(val.cpu().numpy()[[0, 2]], cval[[0, 2]])


def test_cuda_validates_on_device():
    indptr, indices = csr_from_edges(5, [0, 1], [1, 2])
    bad = indices.copy()
    bad[1] = 7
    with pytest.raises(ValueError, match=r"indices\[1\] = 7"):
        ppr_topk(_cuda(indptr), _cuda(bad), _cuda(np.array([0])))
    with pytest.raises(ValueError, match=r"sources\[1\] = 5"):
        ppr_topk(_cuda(indptr), _cuda(indices), _cuda(np.array([0, 5])))
    with pytest.raises(ValueError, match="alpha"):
        ppr_topk(_cuda(indptr), _cuda(indices), _cuda(np.array([0])), alpha=2.0)

"""Hypothesis property tests of the push on small random graphs (self-loops, duplicates, isolated
nodes included): the eps * d(v) bound at every node, top-k order, the kernel body's agreement."""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from helpers.ppr_reference import csr_from_edges, exact_ppr, reference_topk

from mlaga_fast.ppr import bounded_topk_host, ppr_dense, ppr_topk


@st.composite
def graphs(draw):
    n = draw(st.integers(1, 24))
    m = draw(st.integers(0, 60))
    src = draw(st.lists(st.integers(0, n - 1), min_size=m, max_size=m))
    dst = draw(st.lists(st.integers(0, n - 1), min_size=m, max_size=m))
    return n, csr_from_edges(n, src, dst)


params = dict(
    alpha=st.floats(0.02, 0.95),
    eps=st.sampled_from([1e-1, 1e-2, 1e-3, 1e-4, 1e-6]),
    k=st.integers(1, 8),
    exclude=st.booleans(),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(g=graphs(), **params)
def test_bound_and_topk_property(g, alpha, eps, k, exclude):
    n, (indptr, indices) = g
    sources = np.arange(n)
    deg = np.diff(indptr).astype(np.float64)
    p = ppr_dense(indptr, indices, sources, alpha=alpha, eps=eps)
    pi = exact_ppr(indptr, indices, sources, alpha)
    gap = pi - p
    assert gap.min() >= -1e-12
    assert np.all(gap < np.where(deg > 0, eps * deg, 1e-12))
    idx, val = ppr_topk(indptr, indices, sources, alpha=alpha, eps=eps, k=k, exclude_source=exclude)
    for s in range(n):
        ri, rv = reference_topk(p[s], k, s, exclude)
        np.testing.assert_array_equal(idx[s], ri)
        np.testing.assert_array_equal(val[s], rv)


@settings(max_examples=100, deadline=None)
@given(g=graphs(), mask_seed=st.integers(0, 2**31 - 1), **params)
def test_kernel_body_property(g, mask_seed, alpha, eps, k, exclude):
    n, (indptr, indices) = g
    mask = np.random.default_rng(mask_seed).random(n) < 0.6
    sources = np.arange(n)
    a = ppr_topk(indptr, indices, sources, alpha=alpha, eps=eps, k=k, candidates=mask, exclude_source=exclude)
    # a table of 2^7 slots holds every node of these graphs: no overflow, identical answers
    b = bounded_topk_host(indptr, indices, sources, alpha=alpha, eps=eps, k=k, candidates=mask,
                          exclude_source=exclude, capacity=128)
    assert np.all(b[2] == 0)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert np.all(mask[a[0][a[0] >= 0]])

"""The PPR references of tests/helpers/ppr_reference.py agree with each other and with closed forms."""
from __future__ import annotations

import numpy as np
from helpers.ppr_reference import csr_from_edges, exact_ppr, power_ppr, random_graph


def test_lu_and_power_iteration_agree():
    rng = np.random.default_rng(1)
    indptr, indices = random_graph(rng, 60, 150)
    a = exact_ppr(indptr, indices, [0, 5, 17], 0.2)
    b = power_ppr(indptr, indices, [0, 5, 17], 0.2)
    np.testing.assert_allclose(a, b, atol=1e-12)
    np.testing.assert_allclose(a.sum(axis=1), 1.0, atol=1e-12)  # a probability vector


def test_reference_closed_form_path():
    # Two nodes joined by one edge: pi_0(0) = alpha / (1 - (1 - alpha)^2), pi_0(1) = 1 - pi_0(0).
    indptr, indices = csr_from_edges(2, [0], [1])
    alpha = 0.3
    pi = exact_ppr(indptr, indices, [0], alpha)[0]
    want0 = alpha / (1 - (1 - alpha) ** 2)
    np.testing.assert_allclose(pi, [want0, 1 - want0], atol=1e-14)


def test_reference_dangling_keeps_mass():
    indptr, indices = csr_from_edges(3, [0], [1])  # node 2 isolated
    pi = exact_ppr(indptr, indices, [2], 0.15)[0]
    np.testing.assert_allclose(pi, [0, 0, 1], atol=1e-15)

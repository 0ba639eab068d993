"""The C++ canonical-CSR check and pair lookup (csrc/graph/csr_canonical.h) against their NumPy reference:
the E-sized formulation the package used before (kept in benchmarks/bench_load.py as that benchmark's peer),
on random graphs and on each kind of damage."""
from __future__ import annotations

import functools

import numpy as np
import pytest

from mlaga_fast.data.graph import check_canonical_csr, csr_rows, pairs_in_csr, symmetrize


@functools.lru_cache(maxsize=None)
def _bench_load():
    """benchmarks/bench_load.py holds the NumPy formulation (the benchmark's peer, and the reference here);
    loaded once, not per reference call."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("bench_load", Path(__file__).resolve().parents[1] / "benchmarks"
                                                  / "bench_load.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def reference_violation(indptr: np.ndarray, indices: np.ndarray, n: int) -> tuple[int, int]:
    return _bench_load().numpy_violation(indptr, indices, n)


def _graph(n: int, m: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    indptr, indices, _ = symmetrize(rng.integers(0, n, m), rng.integers(0, n, m), n)
    return indptr, indices


def _damaged(indptr, indices, n, kind, rng):
    """A copy with one damage of `kind` (kept memory-safe: ids in range, indptr untouched)."""
    ix = indices.copy()
    rows = csr_rows(indptr)
    long_rows = np.flatnonzero(np.diff(indptr) >= 2)
    if kind == "self-loop":
        e = int(rng.integers(0, ix.size))
        ix[e] = rows[e]
    elif kind == "duplicate":
        u = int(rng.choice(long_rows))
        ix[indptr[u] + 1] = ix[indptr[u]]
    elif kind == "unsorted":
        u = int(rng.choice(long_rows))
        a, b = indptr[u], indptr[u] + 1
        ix[a], ix[b] = ix[b], ix[a]
    elif kind == "one-way edge":  # retarget an entry to a node whose row does not hold the source
        e = int(rng.integers(0, ix.size))
        u = rows[e]
        row = set(ix[indptr[u]:indptr[u + 1]].tolist()) | {u}
        free = [v for v in range(n) if v not in row]
        ix[e] = free[0]
        seg = np.sort(ix[indptr[u]:indptr[u + 1]])
        ix[indptr[u]:indptr[u + 1]] = seg  # keep the row sorted so the reverse check is what fails
    return ix


@pytest.mark.parametrize("seed", range(6))
def test_violations_match_the_numpy_reference(seed):
    from mlaga_fast import _C

    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(20, 300))
    indptr, indices = _graph(n, 3 * n, seed)
    assert _C.csr_violation(indptr, indices, n) == reference_violation(indptr, indices, n) == (0, -1)
    check_canonical_csr(indptr, indices, n)
    for kind in ("self-loop", "duplicate", "unsorted", "one-way edge"):
        ix = _damaged(indptr, indices, n, kind, rng)
        got, want = _C.csr_violation(indptr, ix, n), reference_violation(indptr, ix, n)
        assert got == want and got[0] != 0, (kind, got, want)


def test_messages_name_the_first_bad_entry():
    # node 0: [1, 2], node 1: [0], node 2: [0]: canonical
    indptr, indices = np.array([0, 2, 3, 4]), np.array([1, 2, 0, 0])
    check_canonical_csr(indptr, indices, 3)
    cases = {
        "self-loop on node 1 at index 2": np.array([1, 2, 1, 0]),
        "duplicate neighbour 1 of node 0 at index 1": np.array([1, 1, 0, 0]),
        "unsorted neighbour 1 of node 0 at index 1": np.array([2, 1, 0, 0]),
        r"edge \(0, 2\) at index 1 has no reverse edge": np.array([1, 2, 0, 1]),
    }
    for msg, ix in cases.items():
        with pytest.raises(ValueError, match=f"g.indices: {msg}"):
            check_canonical_csr(indptr, ix, 3, field="g")
    with pytest.raises(ValueError, match="g: .*indices"):  # memory safety first: an id out of range
        check_canonical_csr(indptr, np.array([1, 7, 0, 0]), 3, field="g")
    with pytest.raises(ValueError, match="g: indices must be int32 or int64, got dtype 'float64'"):
        check_canonical_csr(indptr, indices.astype(np.float64), 3, field="g")  # refused, not cast
    check_canonical_csr(indptr.astype(np.int32), indices.astype(np.int32), 3)  # int32 graphs are fine


def test_pairs_in_csr_matches_a_set_of_edges():
    indptr, indices = _graph(500, 2000, 7)
    edges = set(zip(csr_rows(indptr).tolist(), indices.tolist()))
    rng = np.random.default_rng(1)
    stored = np.stack([csr_rows(indptr), indices])[:, rng.integers(0, indices.size, 300)]
    pairs = np.concatenate([stored, rng.integers(-2, 502, (2, 700))], axis=1)  # some ids out of range
    got = pairs_in_csr(indptr, indices, pairs)
    want = np.array([(int(u), int(v)) in edges for u, v in pairs.T])
    assert got.dtype == bool and np.array_equal(got, want) and got[:300].all()
    assert pairs_in_csr(indptr, indices, np.zeros((2, 0), np.int64)).shape == (0,)


def test_pairs_in_csr_matches_the_numpy_peer():
    indptr, indices = _graph(300, 1500, 3)
    pairs = np.random.default_rng(2).integers(0, 300, (2, 4000))
    assert np.array_equal(pairs_in_csr(indptr, indices, pairs), _bench_load().numpy_pairs_in_csr(indptr, indices, pairs))


def test_bench_load_runs_both_sides(tmp_path):
    """Both sides of benchmarks/bench_load.py open the same small catalogue and write their figures."""
    import json

    out = tmp_path / "load.json"
    assert _bench_load().main(["--nodes", "300", "--work", str(tmp_path / "w"), "--out", str(out)]) == 0
    rep = json.loads(out.read_text())
    ours, peer = rep["results"]
    assert (ours["side"], peer["side"]) == ("ours", "numpy") and ours["nodes"] == peer["nodes"] == 300
    assert (ours["texts_type"], peer["texts_type"]) == ("TextBlob", "list")
    assert ours["stored_edges"] == peer["stored_edges"] > 0 and set(rep["numpy_over_ours"]) == {"time", "memory"}

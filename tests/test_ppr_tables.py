"""PPR on datasets: train-graph wrapper, table save/load, the cache and the `mlaga-fast ppr` CLI."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from helpers.ppr_reference import random_graph

from mlaga_fast.cli.main import cli
from mlaga_fast.data import MultimodalGraph, save, split_links
from mlaga_fast.data.splits import random_node_split
from mlaga_fast.ppr import (cached_topk, candidate_mask, load_table, ppr_topk, ppr_topk_graph, save_table,
                            table_meta)


def make_graph(seed: int = 0, n: int = 300, link: bool = True) -> MultimodalGraph:
    rng = np.random.default_rng(seed)
    indptr, indices = random_graph(rng, n, 4 * n, loops=False, dups=False)
    labels = rng.integers(0, 4, n)
    labels[rng.random(n) < 0.1] = -1  # some unlabelled nodes: never demonstrations
    tr, va, te = random_node_split(n, seed=seed, labels=labels)
    g = MultimodalGraph("ppr-test", indptr, indices, labels=labels, train=tr, val=va, test=te)
    if link:
        g.set_link_split(split_links(g, val=0.1, test=0.1, seed=seed))
    return g


def test_graph_wrapper_uses_train_graph():
    g = make_graph()
    tp, ti = g.train_graph()
    assert ti.shape[0] < g.indices.shape[0]  # held-out edges really are gone
    src = np.arange(0, 300, 7)
    a = ppr_topk_graph(g, src, k=8, eps=1e-5)
    b = ppr_topk(tp, ti, src, k=8, eps=1e-5)
    full = ppr_topk(g.indptr, g.indices, src, k=8, eps=1e-5)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], full[1])


def test_candidate_mask_is_labelled_train_nodes():
    g = make_graph(link=False)
    mask = candidate_mask(g, "train")
    want = np.zeros(g.num_nodes, bool)
    want[g.train] = True
    want &= g.labels >= 0
    np.testing.assert_array_equal(mask, want)
    assert candidate_mask(g, "all") is None
    with pytest.raises(ValueError, match="candidates"):
        candidate_mask(g, "everything")


def test_save_load_roundtrip_and_errors(tmp_path):
    src = np.array([3, 1], np.int64)
    idx = np.array([[1, -1], [2, 0]], np.int64)
    val = np.array([[0.5, 0], [0.25, 0.125]], np.float32)
    save_table(tmp_path / "t.npz", src, idx, val, {"alpha": 0.15, "eps": 1e-4})
    s2, i2, v2, meta = load_table(tmp_path / "t.npz")
    np.testing.assert_array_equal(s2, src)
    np.testing.assert_array_equal(i2, idx)
    np.testing.assert_array_equal(v2, val)
    assert meta["alpha"] == 0.15 and meta["num_sources"] == 2 and "mlaga_fast_version" in meta
    assert not [p for p in tmp_path.iterdir() if p.name != "t.npz"]  # no temp files left behind
    with pytest.raises(ValueError, match="shapes"):
        save_table(tmp_path / "u.npz", src, idx[:1], val[:1], {})
    (tmp_path / "junk.npz").write_bytes(b"not a table")
    with pytest.raises(ValueError, match="not a PPR table"):
        load_table(tmp_path / "junk.npz")
    with pytest.raises(ValueError, match="not found"):
        load_table(tmp_path / "missing.npz")


def test_cached_topk_reuses_and_recomputes(tmp_path, monkeypatch):
    g = make_graph()
    path = tmp_path / "cache" / "ppr.npz"
    src, idx, val = cached_topk(g, path, k=6, sources="all", candidates="train")
    assert path.is_file()
    mask = candidate_mask(g, "train")
    tp, ti = g.train_graph()
    ref = ppr_topk(tp, ti, np.arange(g.num_nodes), k=6, candidates=mask)
    np.testing.assert_array_equal(idx, ref[0])
    np.testing.assert_array_equal(val, ref[1])
    assert np.all(mask[idx[idx >= 0]])

    import mlaga_fast.ppr.tables as tables

    def boom(*a, **kw):
        raise AssertionError("recomputed although the cache matches")

    with monkeypatch.context() as m:
        m.setattr(tables, "compute_table", boom)
        src2, idx2, _ = cached_topk(g, path, k=6, sources="all", candidates="train")
        np.testing.assert_array_equal(idx2, idx)
        with pytest.raises(AssertionError, match="recomputed"):
            cached_topk(g, path, k=6, alpha=0.3, sources="all", candidates="train")
    # a mismatch recomputes and rewrites the cache
    cached_topk(g, path, k=6, alpha=0.3, sources="all", candidates="train")
    assert load_table(path)[3]["alpha"] == 0.3
    # a different graph (other fingerprint) is a mismatch too
    assert table_meta(make_graph(seed=1), alpha=0.3, eps=1e-4, k=6)["graph_fingerprint"] != g.fingerprint


def test_cli_writes_table_on_train_graph(tmp_path):
    g = make_graph()
    save(g, tmp_path / "ds")
    out = tmp_path / "ppr.npz"
    res = CliRunner().invoke(cli, ["ppr", "--data", str(tmp_path / "ds"), "--alpha", "0.2", "--eps", "1e-5",
                                   "--k", "5", "--sources", "test", "--candidates", "train", "--out", str(out),
                                   "--chunk", "16", "--no-progress"])
    assert res.exit_code == 0, res.output
    src, idx, val, meta = load_table(out)
    np.testing.assert_array_equal(src, g.test)
    tp, ti = g.train_graph()
    ref = ppr_topk(tp, ti, g.test, alpha=0.2, eps=1e-5, k=5, candidates=candidate_mask(g, "train"))
    np.testing.assert_array_equal(idx, ref[0])
    np.testing.assert_array_equal(val, ref[1])
    assert meta["alpha"] == 0.2 and meta["eps"] == 1e-5 and meta["k"] == 5
    assert meta["candidates"] == "train" and meta["sources"] == "test"
    assert meta["graph_fingerprint"] == g.fingerprint


def test_cli_rejects_bad_parameters(tmp_path):
    save(make_graph(link=False), tmp_path / "ds")
    res = CliRunner().invoke(cli, ["ppr", "--data", str(tmp_path / "ds"), "--alpha", "1.5",
                                   "--out", str(tmp_path / "x.npz"), "--no-progress"])
    assert res.exit_code != 0 and "alpha must be in (0, 1)" in res.output
    assert not (tmp_path / "x.npz").exists()

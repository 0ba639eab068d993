"""MM-GRAPH loader on synthetic files written in the benchmark's real layout (torch.save'd edges,
labels, split dicts, feature tensors, lp-edge-split dicts)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mlaga_fast.cli.main import cli
from mlaga_fast.data import load
from mlaga_fast.data.mmgraph import load_mmgraph

N = 10


def _nc(root, name="ele-fashion", labels=None, feat_rows=N, nan_row=None):
    d = root / name
    d.mkdir(parents=True)
    # a list of [src, dst] pairs, as nc_edges-nodeid.pt holds; includes a reverse duplicate and a self-loop
    edges = [[i, i + 1] for i in range(N - 1)] + [[1, 0], [4, 4]]
    torch.save(edges, d / "nc_edges-nodeid.pt")
    lab = labels if labels is not None else [0, 1, 2, 0, 1, 2, 0, 1, float("nan"), 2]
    torch.save(torch.tensor(lab, dtype=torch.float32), d / "labels-w-missing.pt")
    torch.save({"train_idx": torch.tensor([0, 1, 2, 3, 4]), "val_idx": torch.tensor([5, 6]),
                "test_idx": torch.tensor([7, 9])}, d / "split.pt")
    feat = torch.randn(feat_rows, 6)
    if nan_row is not None:
        feat[nan_row, 2] = float("nan")
    torch.save(feat, d / "clip_feat.pt")
    torch.save(torch.randn(feat_rows, 3).half(), d / "t5vit_feat.pt")
    return d


def test_nc_layout(tmp_path):
    _nc(tmp_path)
    r = CliRunner().invoke(cli, ["data", "prepare", "--format", "mmgraph", "--root", str(tmp_path), "--name",
                                 "ele-fashion", "--out", str(tmp_path / "ds"), "--no-progress"])
    assert r.exit_code == 0, r.output
    g = load(tmp_path / "ds")
    assert g.num_nodes == N and g.num_edges == N - 1
    assert g.stats["duplicates_merged"] == 1 and g.stats["self_loops_dropped"] == 1
    assert g.labels.tolist() == [0, 1, 2, 0, 1, 2, 0, 1, -1, 2]  # NaN = missing = -1
    assert g.train.tolist() == [0, 1, 2, 3, 4] and g.test.tolist() == [7, 9]
    assert sorted(g.features) == ["clip", "t5vit"] and g.features["t5vit"].dtype == np.float32
    assert g.texts is None and g.link_split is None


def test_nc_label_length_mismatch(tmp_path):
    _nc(tmp_path, labels=[0, 1, 2])
    with pytest.raises(ValueError, match="clip_feat.pt has 10 rows but other files imply 3 nodes"):
        load_mmgraph(tmp_path, "ele-fashion")


def test_nc_nan_feature(tmp_path):
    _nc(tmp_path, nan_row=7)
    with pytest.raises(ValueError, match=r"clip_feat.pt: non-finite value .* row 7"):
        load_mmgraph(tmp_path, "ele-fashion")


def test_nc_edge_out_of_range(tmp_path):
    d = _nc(tmp_path)
    torch.save([[0, 1], [2, 30]], d / "nc_edges-nodeid.pt")
    with pytest.raises(ValueError, match=r"edges: node id 30 at \[1, 1\] is out of range \[0, 10\)"):
        load_mmgraph(tmp_path, "ele-fashion")


def test_lp_layout(tmp_path):
    d = tmp_path / "sports-copurchase"
    d.mkdir()
    ring = [(i, (i + 1) % N) for i in range(N)] + [(i, (i + 2) % N) for i in range(N)]  # 20 edges
    tr, va, te = ring[:14], ring[14:17], ring[17:]
    def part(edges, neg=None):
        out = {"source_node": torch.tensor([a for a, _ in edges]), "target_node": torch.tensor([b for _, b in edges])}
        if neg is not None:
            out["target_node_neg"] = torch.tensor(neg)
        return out
    # valid row 0: first candidate is an edge (must be skipped), second is a non-edge
    va_src = [a for a, _ in va]
    va_neg = [[(va_src[0] + 1) % N, (va_src[0] + 5) % N]] + [[(s + 5) % N, (s + 4) % N] for s in va_src[1:]]
    torch.save({"train": part(tr), "valid": part(va, va_neg), "test": part(te)}, d / "lp-edge-split-hard.pt")
    torch.save(torch.randn(N, 4), d / "clip_feat.pt")
    g = load_mmgraph(tmp_path, "sports-copurchase", seed=0)
    assert g.num_nodes == N and g.num_edges == 20
    ls = g.link_split
    assert {tuple(p) for p in ls.val_pos.T.tolist()} == set(va)
    assert {tuple(p) for p in ls.test_pos.T.tolist()} == set(te)
    assert ls.val_neg[:, 0].tolist() == [va_src[0], (va_src[0] + 5) % N]
    assert ls.test_neg.shape == ls.test_pos.shape  # sampled, no candidates given
    ip, ix = g.train_graph()
    train_pairs = {(u, int(v)) for u in range(N) for v in ix[ip[u]:ip[u + 1]] if u < v}
    assert train_pairs == {(min(a, b), max(a, b)) for a, b in tr}

"""Stage 1 on several datasets: one node range over their features, a block-diagonal adjacency (a positive is
never drawn across graphs), the run's manifest listing every dataset, and the later stages accepting any of
their features."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mlaga_fast.features import FeatureStore
from mlaga_fast.features.union import FeatureUnion, union_csr
from mlaga_fast.train.align import StepBatches, train_align
from mlaga_fast.train.align_config import AlignConfig

TINY = dict(dim=16, num_layers=1, num_heads=2, num_queries=2, num_positives=3, batch_size=16, max_steps=4,
            warmup_steps=1, checkpoint_every=2, log_every=1, device="cpu", lr=3e-3)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def two(align_inputs, tmp_path_factory):
    """[(data, features)] x 2: the session's 96-node catalogue and a 64-node one of other categories."""
    from mlaga_fast.data.synth import make_catalogue
    from mlaga_fast.features import FeatureConfig, extract_features

    root = tmp_path_factory.mktemp("second")
    g = make_catalogue(root / "data", nodes=64, classes=3, categories="4-6", mean_degree=3, seed=5, name="second")
    extract_features(g, root / "feat", FeatureConfig(encoder="tiny", device="cpu", batch_size=32), progress=False)
    return [align_inputs, (root / "data", root / "feat")]


def test_union_reads_each_part_and_keeps_positives_in_their_graph(two):
    from mlaga_fast.data import load

    graphs = [load(d) for d, _ in two]
    stores = [FeatureStore(f) for _, f in two]
    union = FeatureUnion(stores)
    assert union.num_nodes == 96 + 64 and list(union.offsets) == [0, 96, 160]
    ids = np.array([159, 0, 96, 95, 3, 100, 96])  # any order, repeats, both parts
    got = union.get(ids)
    for k, (part, local) in enumerate([(1, 63), (0, 0), (1, 0), (0, 95), (0, 3), (1, 4), (1, 0)]):
        want = stores[part].get(np.array([local]))
        for key in want:
            assert torch.equal(got[key][k], want[key][0]), (key, k)
    with pytest.raises(ValueError, match=r"outside \[0, 160\)"):
        union.get(np.array([160]))

    indptr, indices = union_csr([g.train_graph() for g in graphs])
    # the same edges as each graph's, shifted: a float64-free reference via explicit edge sets
    edges = set()
    for g, off in zip(graphs, (0, 96)):
        ip, ix = g.train_graph()
        edges |= {(int(u) + off, int(v) + off) for u in range(g.num_nodes) for v in ix[ip[u]:ip[u + 1]]}
    rows = np.repeat(np.arange(160), np.diff(indptr))
    assert set(zip(rows.tolist(), indices.tolist())) == edges
    # the batches Stage 1 trains on: every positive in its anchor's graph, anchors from both graphs
    batches = StepBatches(union, indptr, indices, batch_size=32, num_positives=4, seed=0, rank=0, world_size=1,
                          start=0, stop=10)
    mixed = 0
    for micro in range(10):
        anchors, pos = batches.global_batch(micro)
        part_a = np.searchsorted(union.offsets, anchors, side="right") - 1  # [B]
        part_p = np.searchsorted(union.offsets, pos, side="right") - 1  # [B, k]
        assert (part_p == part_a[:, None]).all()
        mixed += len(set(part_a.tolist())) == 2
    assert mixed >= 8  # a batch's anchors (each other's negatives) come from both graphs


def test_union_refuses_features_of_another_shape(two):
    a, b = (FeatureStore(f) for _, f in two)
    other = copy.copy(b)
    other.text_dim = b.text_dim + 1
    with pytest.raises(ValueError, match=r"features other cannot train one aligner with a: text_dim"):
        FeatureUnion([a, other], names=["a", "other"])


def test_one_aligner_on_two_datasets(two, tmp_path):
    from mlaga_fast.cli.main import cli
    from mlaga_fast.models.embeddings import export_embeddings, load_embeddings
    from mlaga_fast.models.node_inputs import check_aligner_features
    from mlaga_fast.runs.manifest import check_features_match

    (d1, f1), (d2, f2) = two
    run = tmp_path / "mix"
    res = train_align(AlignConfig(**TINY), [d1, d2], [f1, f2], run, show_progress=False)
    man = json.loads((run / "manifest.json").read_text())
    assert [d["num_nodes"] for d in man["inputs"]["datasets"]] == [96, 64]
    assert [d["name"] for d in man["inputs"]["datasets"]][1] == "second"
    assert man["inputs"]["data_dir"] == str(d1.resolve()) and len(man["inputs"]["features"]) == 2
    assert res["steps"] == 4  # max_steps; one epoch would be 160 // 16 = 10
    s1, s2 = FeatureStore(f1), FeatureStore(f2)
    for s in (s1, s2):  # Stage 2 and embed take the features of either dataset, no --allow-unseen needed
        check_features_match(man, s)
        check_aligner_features(man, s, allow_unseen=False)
    export_embeddings(run, tmp_path / "emb2", features_dir=f2, device="cpu", progress=False)
    tokens, pooled, em = load_embeddings(tmp_path / "emb2")
    assert tokens.shape == (64, 2, 16) and em["graph_fingerprint"] == s2.manifest["graph_fingerprint"]

    # probe and plot on such a run read the first dataset by default
    r = CliRunner().invoke(cli, ["probe", "--run", str(run), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert 0 <= json.loads(r.output)["aligned"]["test"] <= 1
    r = CliRunner().invoke(cli, ["plot", "embeddings", "--run", str(run), "--out", str(tmp_path / "e.png"),
                                 "--device", "cpu", "--max-nodes", "40"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["nodes"] == 40 and (tmp_path / "e.png").is_file()

    # the CLI: comma-separated lists, the same count on both sides, --resume reading them back
    cli_run = tmp_path / "cli"
    args = ["train", "align", "--data", f"{d1},{d2}", "--features", f"{f1},{f2}", "--out", str(cli_run),
            "--dim", "16", "--num-heads", "2", "--num-queries", "2", "--num-layers", "1", "--batch-size", "16",
            "--max-steps", "2", "--device", "cpu", "--no-progress"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    saved = json.loads((cli_run / "inputs.json").read_text())
    assert saved == {"data": [str(d1.resolve()), str(d2.resolve())], "features": [str(f1.resolve()), str(f2.resolve())]}
    (cli_run / "manifest.json").unlink()
    (cli_run / "model.safetensors").unlink()
    r = CliRunner().invoke(cli, ["train", "align", "--out", str(cli_run), "--resume", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert len(json.loads((cli_run / "manifest.json").read_text())["inputs"]["datasets"]) == 2
    r = CliRunner().invoke(cli, ["train", "align", "--data", f"{d1},{d2}", "--features", str(f1), "--out",
                                 str(tmp_path / "bad"), "--device", "cpu"])
    assert r.exit_code != 0 and "--data lists 2 dataset(s) but --features 1" in r.output

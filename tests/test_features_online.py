"""Online features (encoders run per batch, nothing stored) read the same as stored shards."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mlaga_fast.data.synth import make_catalogue
from mlaga_fast.features import FeatureConfig, FeatureStore, extract_features
from mlaga_fast.features.encoders import load_encoder
from mlaga_fast.features.online import OnlineFeatures


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    keep = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(keep)


@pytest.fixture(scope="module")
def graph_and_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("online")
    graph = make_catalogue(root / "data", nodes=200, image_size=32)
    cfg = FeatureConfig(encoder="tiny", device="cpu", batch_size=32, shard_size=70, cpu_threads=1)
    extract_features(graph, root / "features", cfg, graph_fp=graph.fingerprint, progress=False)
    return graph, FeatureStore(root / "features")


def test_online_get_equals_the_stored_store(graph_and_store):
    graph, store = graph_and_store
    online = OnlineFeatures(graph, load_encoder("tiny", "cpu"), device="cpu", graph_fp=graph.fingerprint)
    assert (online.num_nodes, online.image_len, online.image_dim, online.text_len, online.text_dim) == \
           (store.num_nodes, store.image_len, store.image_dim, store.text_len, store.text_dim)
    assert online.fingerprint == store.fingerprint and online.encoder == store.encoder
    rng = np.random.default_rng(0)
    for idx in (rng.integers(0, 200, 37), np.array([199, 0, 0, 71]), np.arange(140, 200)):  # any order, repeats
        a, b = online.get(idx), store.get(idx)
        assert set(a) == set(b)
        for key in ("image_mask", "text_mask"):
            assert torch.equal(a[key], b[key]), key
        for key in ("image", "text"):
            assert a[key].dtype == b[key].dtype == torch.float16
            # the same fp32 encoder on other batch compositions: at most one fp16 rounding step apart
            torch.testing.assert_close(a[key].float(), b[key].float(), rtol=2 ** -10, atol=2 ** -14)
    empty = online.get(np.zeros(0, np.int64))
    assert empty["image"].shape == (0, store.image_len, store.image_dim)


def test_online_bf16_is_the_stored_bf16(graph_and_store, tmp_path):
    # stored features made in bf16 (what `--precision auto` may choose) match online ones asked for in bf16, by
    # fingerprint and value, and differ from the fp32 ones by fingerprint
    graph, store = graph_and_store
    cfg = FeatureConfig(encoder="tiny", device="cpu", batch_size=32, shard_size=70, cpu_threads=1, precision="bf16")
    bf16 = extract_features(graph, tmp_path / "bf16", cfg, graph_fp=graph.fingerprint, progress=False)
    online = OnlineFeatures(graph, "tiny", device="cpu", graph_fp=graph.fingerprint, precision="bf16")
    assert online.fingerprint == bf16.fingerprint != store.fingerprint
    idx = np.arange(0, 200, 3)
    a, b = online.get(idx), bf16.get(idx)
    for key in ("image", "text"):
        # bf16 on other batch compositions: a few bf16 rounding steps apart
        torch.testing.assert_close(a[key].float(), b[key].float(), rtol=2 ** -6, atol=2 ** -8)
    with pytest.raises(ValueError, match="precision"):
        OnlineFeatures(graph, "tiny", device="cpu", precision="fp16")


def test_online_and_stored_features_refuse_bad_ids_alike(graph_and_store):
    graph, store = graph_and_store
    online = OnlineFeatures(graph, "tiny", device="cpu")
    for source in (online, store):  # one check (FeatureReader._check_idx), one answer
        with pytest.raises(ValueError, match="node id 200 at position 1"):
            source.get([0, 200])
        with pytest.raises(ValueError, match="integer node ids"):
            source.get(np.array([0.5]))
        with pytest.raises(ValueError, match="1-D"):
            source.get(np.zeros((2, 2), np.int64))
        assert {k: v.shape for k, v in source.get_numpy(np.zeros(0, np.int64)).items()} == {
            "image": (0, store.image_len, store.image_dim), "image_mask": (0, store.image_len),
            "text": (0, store.text_len, store.text_dim), "text_mask": (0, store.text_len)}


def test_online_pooled_equals_the_stored_pooled(graph_and_store):
    graph, store = graph_and_store
    online = OnlineFeatures(graph, "tiny", device="cpu", graph_fp=graph.fingerprint)
    a, b = online.pooled(batch_size=64), store.pooled()  # float32 [N, Di + Dt] each
    assert a.shape == b.shape == (200, store.image_dim + store.text_dim)
    np.testing.assert_allclose(a, b, rtol=2 ** -9, atol=2 ** -12)  # tokens within one fp16 rounding step


def test_stage1_and_embed_run_on_online_features_as_on_stored(graph_and_store, tmp_path):
    """`online:tiny` in place of the stored folder: Stage 1 trains the same way (the same losses up to the
    fp16 rounding of a token), records the same features identity, and its exported tokens agree."""
    import json

    from click.testing import CliRunner

    from mlaga_fast.cli.main import cli
    from mlaga_fast.train.align import train_align
    from mlaga_fast.train.align_config import AlignConfig
    from mlaga_fast.models.embeddings import export_embeddings, load_embeddings
    from mlaga_fast.train.metrics import read_jsonl

    _, store = graph_and_store
    data = store.path.parent / "data"
    cfg = AlignConfig(dim=16, num_layers=1, num_heads=2, num_queries=2, batch_size=16, max_steps=4, warmup_steps=1,
                      log_every=1, checkpoint_every=100, device="cpu")
    train_align(cfg, data, store.path, tmp_path / "stored", show_progress=False)
    train_align(cfg, data, "online:tiny", tmp_path / "online", show_progress=False)
    losses = [[r["loss"] for r in read_jsonl(tmp_path / run / "metrics.jsonl")] for run in ("stored", "online")]
    assert len(losses[0]) == 4
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-3)
    man = json.loads((tmp_path / "online" / "manifest.json").read_text())
    assert man["inputs"]["features_dir"] == "online:tiny"
    assert man["inputs"]["features"]["fingerprint"] == store.fingerprint

    export_embeddings(tmp_path / "online", tmp_path / "emb_online", device="cpu", progress=False)  # recorded: online
    export_embeddings(tmp_path / "online", tmp_path / "emb_stored", features_dir=str(store.path), device="cpu",
                      progress=False)
    (tok_a, pool_a, _), (tok_b, pool_b, _) = (load_embeddings(tmp_path / e) for e in ("emb_online", "emb_stored"))
    np.testing.assert_allclose(np.asarray(tok_a, np.float32), np.asarray(tok_b, np.float32), rtol=1e-2, atol=1e-2)

    bad = CliRunner().invoke(cli, ["train", "align", "--data", str(data), "--features", "online:",
                                   "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "online:' needs an encoder spec" in bad.output
    bad = CliRunner().invoke(cli, ["train", "align", "--data", str(data), "--features", str(tmp_path / "nope"),
                                   "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "is not a features directory" in bad.output

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


def test_online_refuses_bad_ids(graph_and_store):
    graph, _ = graph_and_store
    online = OnlineFeatures(graph, "tiny", device="cpu")
    with pytest.raises(ValueError, match="node id 200 at position 1"):
        online.get([0, 200])
    with pytest.raises(ValueError, match="integer node ids"):
        online.get(np.array([0.5]))
    with pytest.raises(ValueError, match="1-D"):
        online.get(np.zeros((2, 2), np.int64))

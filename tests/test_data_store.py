"""Dataset directory: round trip, memory-mapping, atomic writes, and refusal of damaged directories."""
from __future__ import annotations

import json

import numpy as np
import pytest

import mlaga_fast.data.store as store
from mlaga_fast.data import ArrayImageSource, LinkSplit, MultimodalGraph, load, save, save_link_split, split_links


def _graph(n=50, seed=0, **kw) -> MultimodalGraph:
    rng = np.random.default_rng(seed)
    src, dst = rng.integers(0, n, 4 * n), rng.integers(0, n, 4 * n)
    labels = rng.integers(-1, 3, n)
    texts = [f"produit n°{i} – «{'x' * (i % 7)}» 🧸" for i in range(n)]
    return MultimodalGraph.from_edges("toy", src, dst, n, labels=labels, class_names=["a", "b", "c"], texts=texts,
                                      train=np.arange(0, 10), val=np.arange(10, 15), test=np.arange(15, 20),
                                      features={"clip": rng.standard_normal((n, 4)).astype(np.float32)}, **kw)


def test_roundtrip_everything(tmp_path):
    g = _graph(images=ArrayImageSource(np.full((50, 4, 4, 3), 7, np.uint8)))
    g.set_link_split(split_links(g, 0.1, 0.1, seed=1))
    save(g, tmp_path / "ds")
    h = load(tmp_path / "ds", verify_fingerprint=True)
    for f in ("indptr", "indices", "labels", "train", "val", "test"):
        np.testing.assert_array_equal(getattr(h, f), getattr(g, f))
        assert getattr(h, f).dtype == np.int64
    assert h.texts == g.texts and h.class_names == g.class_names and h.name == "toy"
    np.testing.assert_array_equal(h.features["clip"], g.features["clip"])
    for f, a in g.link_split.arrays().items():
        np.testing.assert_array_equal(getattr(h.link_split, f), a)
    np.testing.assert_array_equal(h.train_graph()[1], g.train_graph()[1])
    assert h.stats == g.stats
    m = json.loads((tmp_path / "ds" / "graph.json").read_text())
    assert m["fingerprint"] == g.fingerprint == h.fingerprint
    assert m["num_nodes"] == 50 and m["num_edges"] == g.num_edges
    assert "mlaga_fast_version" in m


def test_large_arrays_are_memory_mapped(tmp_path):
    n = 40_000
    rng = np.random.default_rng(0)
    g = MultimodalGraph.from_edges("big", rng.integers(0, n, 150_000), rng.integers(0, n, 150_000), n)
    assert g.indices.nbytes > store.MMAP_BYTES
    save(g, tmp_path / "ds")
    h = load(tmp_path / "ds")
    assert isinstance(h.indices, np.memmap) or isinstance(h.indices.base, np.memmap)
    np.testing.assert_array_equal(h.indices, g.indices)


def _cut_power_after_texts(monkeypatch) -> None:
    """Make the next save stop half-way (after it wrote the texts), as a power cut would."""
    real = store._write_texts

    def boom(d, texts):
        real(d, texts)
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(store, "_write_texts", boom)


def test_interrupted_save_leaves_old_dataset(tmp_path, monkeypatch):
    old = _graph(seed=0)
    save(old, tmp_path / "ds")
    _cut_power_after_texts(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        save(_graph(seed=1), tmp_path / "ds")
    h = load(tmp_path / "ds", verify_fingerprint=True)
    assert h.fingerprint == old.fingerprint
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]  # no half-written sibling left behind
    with pytest.raises(KeyboardInterrupt):
        save(_graph(seed=1), tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()


def test_damaged_directories_refused(tmp_path):
    save(_graph(), tmp_path / "ds")
    d = tmp_path / "ds"
    with pytest.raises(ValueError, match="not a dataset directory"):
        load(tmp_path)
    m = json.loads((d / "graph.json").read_text())
    m2 = dict(m, arrays=dict(m["arrays"], labels=dict(m["arrays"]["labels"], shape=[49])))
    (d / "graph.json").write_text(json.dumps(m2))
    with pytest.raises(ValueError, match=r"labels.npy holds int64 \[50\], but graph.json says int64 \[49\]"):
        load(d)
    (d / "graph.json").write_text(json.dumps(dict(m, format_version=99)))
    with pytest.raises(ValueError, match="newer than this mlaga_fast supports"):
        load(d)
    (d / "graph.json").write_text(json.dumps(m))
    np.save(d / "labels.npy", np.full(50, 9, np.int64))  # same shape, out-of-range content
    with pytest.raises(ValueError, match=r"labels: value 9 at index 0"):
        load(d)
    np.save(d / "labels.npy", np.zeros(50, np.int64))
    with pytest.raises(ValueError, match="fingerprint .* does not match"):
        load(d, verify_fingerprint=True)
    (d / "indices.npy").unlink()
    with pytest.raises(ValueError, match="indices.npy is missing"):
        load(d)
    (d / "graph.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load(d)


def test_save_link_split_in_place_keeps_other_files(tmp_path):
    g = _graph()
    save(g, tmp_path / "ds")
    (tmp_path / "ds" / "features").mkdir()  # another tool's output inside the dataset dir
    (tmp_path / "ds" / "features" / "manifest.json").write_text("{}")
    s1 = split_links(g, 0.1, 0.1, seed=0)
    h = save_link_split(tmp_path / "ds", s1, {"seed": 0})
    assert (tmp_path / "ds" / "features" / "manifest.json").exists()
    assert h.fingerprint != g.fingerprint
    s2 = split_links(g, 0.2, 0.1, seed=5)
    h2 = save_link_split(tmp_path / "ds", s2)
    np.testing.assert_array_equal(h2.link_split.val_pos, s2.val_pos)
    assert sorted(p.name for p in (tmp_path / "ds").iterdir() if p.name.startswith("link_split")) == ["link_split_b"]
    assert load(tmp_path / "ds", verify_fingerprint=True).fingerprint == h2.fingerprint
    bad = LinkSplit(s1.train_pos, s1.val_pos, s1.val_pos, s1.test_pos, s1.test_neg)
    with pytest.raises(ValueError, match="val_neg: pair .* is an edge"):
        save_link_split(tmp_path / "ds", bad)
    np.testing.assert_array_equal(load(tmp_path / "ds").link_split.val_pos, s2.val_pos)


def test_save_over_a_dataset_keeps_what_other_tools_wrote(tmp_path, monkeypatch):
    d = tmp_path / "ds"
    old = _graph(seed=0, images=ArrayImageSource(np.full((50, 4, 4, 3), 7, np.uint8)))
    old.set_link_split(split_links(old, 0.1, 0.1, seed=1))
    save(old, d)
    shard = np.arange(12, dtype=np.float16)
    (d / "features").mkdir()  # e.g. hours of encoder features, and a cache beside them
    np.save(d / "features" / "shard_00000.npy", shard)
    (d / "cache").mkdir()
    (d / "cache" / "ppr.npz").write_bytes(b"cached")
    (d / "notes.txt").write_text("mine")

    # an interrupted save over it leaves every file of the old directory as it was
    _cut_power_after_texts(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        save(_graph(seed=1), d)
    monkeypatch.undo()
    assert load(d, verify_fingerprint=True).fingerprint == old.fingerprint
    np.testing.assert_array_equal(np.load(d / "features" / "shard_00000.npy"), shard)

    new = _graph(seed=1)  # no images, no link split: the old dataset's files for them must go
    save(new, d)
    h = load(d, verify_fingerprint=True)
    assert h.fingerprint == new.fingerprint and h.link_split is None and h.images is None
    np.testing.assert_array_equal(np.load(d / "features" / "shard_00000.npy"), shard)
    assert (d / "cache" / "ppr.npz").read_bytes() == b"cached" and (d / "notes.txt").read_text() == "mine"
    names = sorted(p.name for p in d.iterdir())
    assert not any(n.startswith(("link_split", "images")) for n in names), names
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]  # no temp or old sibling left


def test_save_refuses_a_directory_that_is_not_a_dataset(tmp_path):
    d = tmp_path / "home"
    d.mkdir()
    (d / "thesis.tex").write_text("years of work")
    with pytest.raises(ValueError, match="non-empty directory without a dataset"):
        save(_graph(), d)
    assert [p.name for p in d.iterdir()] == ["thesis.tex"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="exists and is not a directory"):
        save(_graph(), tmp_path / "file")
    (tmp_path / "empty").mkdir()
    save(_graph(), tmp_path / "empty")  # an empty directory is fine
    assert load(tmp_path / "empty").num_nodes == 50


def test_texts_are_decoded_on_demand_and_equal_the_list(tmp_path):
    """load() maps texts.bin instead of decoding every text (210 MiB at 1M nodes); the sequence it returns
    must be the saved list, item by item, through every way the code reads it."""
    import pickle

    from mlaga_fast.data.texts import TextBlob

    g = _graph()
    save(g, tmp_path / "ds")
    h = load(tmp_path / "ds", verify_fingerprint=True)  # the fingerprint rehashes the texts through the blob
    assert isinstance(h.texts, TextBlob) and isinstance(h.texts._blob, np.memmap)
    assert len(h.texts) == 50 and list(h.texts) == g.texts and h.texts == g.texts
    assert h.texts[7] == g.texts[7] and h.texts[-1] == g.texts[-1] and h.texts[3:40:6] == g.texts[3:40:6]
    with pytest.raises(IndexError):
        h.texts[50]
    assert h.texts != g.texts[:-1] and h.texts != "not a list"
    again = pickle.loads(pickle.dumps(h.texts))  # spawned DataLoader workers reopen the files
    assert list(again) == g.texts and again.name == "texts.bin"


def test_damaged_texts_refused_with_the_file_named(tmp_path):
    g = _graph()
    save(g, tmp_path / "ds")
    d = tmp_path / "ds"
    blob = bytearray((d / "texts.bin").read_bytes())
    blob[5] = 0xFF  # never valid in UTF-8
    (d / "texts.bin").write_bytes(bytes(blob))
    with pytest.raises(ValueError, match=r"dataset .*: texts\.bin is not valid UTF-8"):
        load(d)
    save(g, d)
    off = np.load(d / "text_offsets.npy")
    cut = off.copy()
    first = next(i for i, t in enumerate(g.texts) if "°" in t)  # a 2-byte character after "produit n"
    cut[first + 1] = off[first] + len("produit n") + 1  # the next text starts inside "°"
    np.save(d / "text_offsets.npy", cut)
    h = load(d, validate=False)
    with pytest.raises(ValueError, match=f"texts.bin: text of node {first} .* not valid UTF-8"):
        h.texts[first]

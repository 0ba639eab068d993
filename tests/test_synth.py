"""Synthetic catalogue: determinism, graph statistics, mismatch, texts and pictures, checked
against independent computations (SciPy sparse, scikit-learn, plain NumPy)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mlaga_fast.data import synth, vocab
from mlaga_fast.data.synth_images import STYLE_VERSION, SyntheticImages, render_array


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def default_graph():
    return synth.make_catalogue(nodes=3000, seed=0)


# ---- determinism ---------------------------------------------------------------------------------

def test_same_seed_gives_byte_identical_dataset(tmp_path):
    kw = dict(nodes=600, classes=6, seed=7)
    synth.make_catalogue(tmp_path / "a", **kw)
    synth.make_catalogue(tmp_path / "b", **kw)
    synth.make_catalogue(tmp_path / "c", **{**kw, "seed": 8})
    a, b, c = (_files(tmp_path / x) for x in "abc")
    assert a.keys() == b.keys() and len(a) > 10
    for name in a:
        assert a[name] == b[name], f"{name} differs between two runs with one seed"
    # Another seed changes the structure, the texts and the pictures' classes.
    for name in ("indices.npy", "texts.bin", "labels.npy", "image_class.npy"):
        assert a[name] != c[name], f"{name} is the same for seeds 7 and 8"
    # The pictures themselves (rendered on demand, not stored) are also reproducible.
    from mlaga_fast.data.store import load

    ga, gb = load(tmp_path / "a"), load(tmp_path / "b")
    for i in (0, 17, 599):
        assert ga.load_image(i).tobytes() == gb.load_image(i).tobytes()


# ---- graph ---------------------------------------------------------------------------------------

def _edge_homophily_scipy(indptr, indices, labels) -> float:
    import scipy.sparse as sp

    n = len(indptr) - 1
    a = sp.csr_matrix((np.ones(len(indices)), indices, indptr), shape=(n, n)).tocoo()
    return float(np.mean(labels[a.row] == labels[a.col]))


@pytest.mark.parametrize("h", [0.1, 0.4, 0.7, 0.95])
def test_realised_homophily_matches_request(h):
    n, c = 3000, 8
    labels = synth.balanced_labels(n, c, np.random.default_rng(1))
    keys, _ = synth.dcsbm_edges(labels, c, mean_degree=8.0, exponent=2.5, homophily=h,
                                rng=np.random.default_rng(2))
    indptr, indices = synth.keys_to_csr(keys, n)
    assert abs(_edge_homophily_scipy(indptr, indices, labels) - h) < 0.02


def test_graph_is_canonical_symmetric_and_connected_per_node(default_graph):
    import scipy.sparse as sp

    from mlaga_fast.graph_check import check_csr

    g = default_graph
    n = g.num_nodes
    check_csr(g.indptr, g.indices, n)
    a = sp.csr_matrix((np.ones(len(g.indices)), g.indices, g.indptr), shape=(n, n))
    assert (a - a.T).nnz == 0  # symmetric
    assert a.diagonal().sum() == 0  # no self-loops
    assert a.max() == 1  # no duplicate entries summed up
    assert np.diff(g.indptr).min() >= 1  # every node has a contrastive positive
    assert abs(np.diff(g.indptr).mean() - 8.0) < 0.1


def test_degrees_are_heavy_tailed():
    n = 20000
    labels = synth.balanced_labels(n, 8, np.random.default_rng(3))
    keys, _ = synth.dcsbm_edges(labels, 8, mean_degree=8.0, exponent=2.5, homophily=0.7,
                                rng=np.random.default_rng(4))
    indptr, _ = synth.keys_to_csr(keys, n)
    deg = np.sort(np.diff(indptr))[::-1].astype(np.float64)
    assert deg[0] > 15 * deg.mean()
    # Hill estimator on the top 2% of degrees: density exponent gamma = 1 + tail index.
    k = n // 50
    gamma = 1.0 + k / np.sum(np.log(deg[:k] / deg[k]))
    assert 2.1 < gamma < 3.3, gamma
    # A Poisson (non-heavy-tailed) graph of the same mean would have max degree around 20.
    assert np.median(deg) < deg.mean()


# ---- labels, splits, mismatch ----------------------------------------------------------------------

def test_class_balance_and_stratified_splits(default_graph):
    g = default_graph
    counts = np.bincount(g.labels, minlength=8)
    assert counts.max() - counts.min() <= 1 and (g.labels >= 0).all()
    assert g.class_names == [cat.name for cat in vocab.CATEGORIES[:8]]
    allids = np.concatenate([g.train, g.val, g.test])
    assert np.array_equal(np.sort(allids), np.arange(g.num_nodes))  # disjoint and covering
    for k in range(8):
        ck = counts[k]
        assert abs(np.sum(g.labels[g.train] == k) - 0.6 * ck) <= 1
        assert abs(np.sum(g.labels[g.val] == k) - 0.2 * ck) <= 1


@pytest.mark.parametrize("pi,pt", [(0.15, 0.05), (0.0, 0.5), (1.0, 0.0)])
def test_mismatch_fractions_and_consistency(pi, pt):
    g = synth.make_catalogue(nodes=800, classes=5, image_mismatch=pi, text_mismatch=pt, seed=3, link_split=False)
    t = synth.synth_truth(g)
    n = g.num_nodes
    assert t["image_mismatch"].sum() == round(pi * n) and t["text_mismatch"].sum() == round(pt * n)
    assert np.array_equal(t["image_mismatch"], t["image_class"] != g.labels)
    assert np.array_equal(t["text_mismatch"], t["text_class"] != g.labels)
    assert np.array_equal(g.images.image_class, t["image_class"])
    # The title's product noun comes from the category the text shows, not the label's.
    for i in np.flatnonzero(t["text_mismatch"])[:50]:
        title = g.texts[i].split(". ")[0].lower()
        assert any(noun.lower() in title for noun in vocab.CATEGORIES[t["text_class"][i]].nouns)


def test_mismatched_picture_is_the_other_class_rendering():
    g = synth.make_catalogue(nodes=400, classes=4, image_mismatch=0.5, seed=11, link_split=False)
    t = synth.synth_truth(g)
    for i in np.flatnonzero(t["image_mismatch"])[:5]:
        got = np.asarray(g.load_image(int(i)))
        assert np.array_equal(got, render_array(11, int(i), int(t["image_class"][i]), 64))
        assert not np.array_equal(got, render_array(11, int(i), int(g.labels[i]), 64))


# ---- texts -----------------------------------------------------------------------------------------

def test_texts_carry_class_signal_but_are_not_trivial(default_graph):
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    g = default_graph
    vec = CountVectorizer(min_df=2, binary=True)
    x_tr = vec.fit_transform([g.texts[i] for i in g.train])
    clf = LogisticRegression(max_iter=200, C=0.5).fit(x_tr, g.labels[g.train])
    acc = float(np.mean(clf.predict(vec.transform([g.texts[i] for i in g.test])) == g.labels[g.test]))
    assert 0.8 < acc < 0.995, acc  # informative, yet mismatched texts keep it below perfect
    assert len(set(g.texts)) > 0.95 * g.num_nodes  # near-unique product texts
    shared = sum(any(b in tx for b in vocab.BRANDS) for tx in g.texts[:200])
    assert shared > 100  # the class-free shared vocabulary is mixed in


# ---- pictures ---------------------------------------------------------------------------------------

def test_pictures_differ_more_across_classes_than_within():
    feats, labs = [], []
    for c in range(8):
        for node in range(25):
            img = render_array(seed=0, node=1000 * c + node, cls=c, size=64)
            feats.append(img.reshape(-1, 3).astype(np.float64).mean(0))
            labs.append(c)
    f, lab = np.array(feats), np.array(labs)
    d = np.linalg.norm(f[:, None] - f[None], axis=-1)
    same = lab[:, None] == lab[None]
    off = ~np.eye(len(lab), dtype=bool)
    within, between = d[same & off].mean(), d[~same].mean()
    assert between > 1.3 * within, (within, between)
    assert within > 3.0  # and there is real variation inside a class


def test_default_looks_are_distinct():
    combos = [(c.look.shape, c.look.texture) for c in vocab.CATEGORIES]
    assert len(set(combos)) == len(combos)
    first8 = vocab.CATEGORIES[:8]
    assert len({c.look.shape for c in first8}) == 8 and len({c.look.texture for c in first8}) == 8


def test_rendering_is_a_pure_function_of_seed_node_class():
    a = render_array(5, 42, 3, 48)
    assert a.shape == (48, 48, 3) and a.dtype == np.uint8
    assert np.array_equal(a, render_array(5, 42, 3, 48))
    assert not np.array_equal(a, render_array(5, 43, 3, 48))
    assert not np.array_equal(a, render_array(6, 42, 3, 48))
    classes = np.zeros(50, dtype=np.int64)
    classes[42] = 3
    src = SyntheticImages(classes, seed=5, size=48, num_classes=4)
    assert np.array_equal(np.asarray(src.get(42)), a)
    batch = src.get_batch([42, 2])
    assert batch.shape == (2, 48, 48, 3) and np.array_equal(batch[0], a)


# ---- storage and errors -----------------------------------------------------------------------------

def test_roundtrip_and_style_version_guard(tmp_path):
    from mlaga_fast.data.store import load

    g = synth.make_catalogue(tmp_path / "d", nodes=300, classes=3, seed=2)
    h = load(tmp_path / "d", verify_fingerprint=True)
    assert h.images.kind == "synthetic" and len(h.images) == 300
    for name in ("indptr", "indices", "labels", "train", "test"):
        assert np.array_equal(getattr(g, name), getattr(h, name))
    assert h.texts == g.texts
    assert np.array_equal(np.asarray(h.load_image(9)), np.asarray(g.load_image(9)))
    for k, v in synth.synth_truth(g).items():
        assert np.array_equal(v, synth.synth_truth(h)[k])
    assert h.meta["config"]["seed"] == 2 and h.meta["image_style_version"] == STYLE_VERSION
    # A dataset drawn with another picture style is refused with a clear message.
    m = json.loads((tmp_path / "d" / "graph.json").read_text())
    m["images"]["style_version"] = STYLE_VERSION + 1
    (tmp_path / "d" / "graph.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="style_version"):
        load(tmp_path / "d")


@pytest.mark.parametrize("kw,field", [
    (dict(homophily=1.5), "homophily"), (dict(classes=21), "classes"), (dict(classes=1), "classes"),
    (dict(nodes=10), "nodes"), (dict(image_mismatch=-0.1), "image_mismatch"), (dict(seed=-1), "seed"),
    (dict(mean_degree=500.0), "mean_degree"), (dict(image_size=4), "image_size"),
])
def test_bad_config_names_the_field(kw, field):
    with pytest.raises(ValueError, match=field):
        synth.make_catalogue(**kw)


def test_bad_image_class_names_index():
    with pytest.raises(ValueError, match="index 2"):
        SyntheticImages(np.array([0, 1, 9]), seed=0, num_classes=8)
    src = SyntheticImages(np.array([0, 1]), seed=0, num_classes=8)
    with pytest.raises(IndexError):
        src.get(2)


# ---- the CI-sized catalogue and the CLI -------------------------------------------------------------

def test_ten_thousand_nodes_with_pictures(tmp_path):
    from mlaga_fast.data.store import load

    synth.make_catalogue(tmp_path / "big", nodes=10_000, classes=10, seed=0)
    g = load(tmp_path / "big")
    assert g.num_nodes == 10_000 and abs(g.stats["realised_homophily"] - 0.7) < 0.01
    batch = g.images.get_batch(np.arange(0, 10_000, 7))  # a seventh of them: keeps the test short
    assert batch.shape == (1429, 64, 64, 3)
    assert batch.reshape(len(batch), -1).std(axis=1).min() > 5  # every picture has content


def test_cli_synth(tmp_path):
    from click.testing import CliRunner

    from mlaga_fast.cli.main import cli  # the entry point registers `data` and `data synth`

    out = tmp_path / "cat"
    res = CliRunner().invoke(cli, ["data", "synth", "--out", str(out), "--nodes", "400", "--classes", "4",
                                   "--homophily", "0.6", "--seed", "3", "--preview", str(tmp_path / "p.png")])
    assert res.exit_code == 0, res.output
    m = json.loads((out / "graph.json").read_text())
    assert m["num_nodes"] == 400 and m["meta"]["config"]["homophily"] == 0.6
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = CliRunner().invoke(cli, ["data", "synth", "--out", str(tmp_path / "x"), "--nodes", "20",
                                   "--classes", "8"])
    assert res.exit_code != 0 and "nodes" in res.output

"""Baselines: graph ops against dense-matrix references, label propagation against its closed form,
and end-to-end NC / LP behaviour on seeded stochastic block models."""

import numpy as np
import pytest
import torch

from mlaga_fast.baselines.labelprop import label_propagation
from mlaga_fast.baselines.models import EdgeScorer, build_encoder, edge_index_from_csr, graph_operand
from mlaga_fast.baselines.train import (
    BaselineConfig,
    best_threshold,
    roc_auc,
    run_baseline,
    sample_negatives,
)
from mlaga_fast.data import MultimodalGraph, random_node_split, split_links
from mlaga_fast.eval.report import validate_result



# ------------------------------------------------------------------ helpers


def csr_from_dense(a: np.ndarray):
    indptr = np.r_[0, np.cumsum((a != 0).sum(1))].astype(np.int64)
    indices = np.nonzero(a)[1].astype(np.int64)  # row-major: sorted within each row
    return indptr, indices


def random_sym(n, p, rng, isolated=()):
    a = (rng.random((n, n)) < p).astype(np.float64)
    a = np.triu(a, 1)
    a = a + a.T
    for i in isolated:
        a[i, :] = a[:, i] = 0
    return a


def sbm_graph(n=600, c=4, p_in=0.05, p_out=0.002, seed=0, link=False, name="sbm"):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % c
    rng.shuffle(labels)
    prob = np.where(labels[:, None] == labels[None, :], p_in, p_out)
    upper = np.triu(rng.random((n, n)) < prob, 1)
    src, dst = np.nonzero(upper)
    tr, va, te = random_node_split(n, 0.6, 0.2, 0.2, seed=seed)
    g = MultimodalGraph.from_edges(name, src, dst, n, labels=labels,
                                   class_names=[f"c{i}" for i in range(c)], train=tr, val=va, test=te)
    if link:
        g.set_link_split(split_links(g, val=0.1, test=0.2, seed=seed))
    return g


def class_features(labels, c, dim, signal, seed):
    """Class-mean features plus unit Gaussian noise; `signal` is each mean's norm."""
    rng = np.random.default_rng(seed + 100)
    means = rng.standard_normal((c, dim))
    means *= signal / np.linalg.norm(means, axis=1, keepdims=True)
    return (means[labels] + rng.standard_normal((len(labels), dim))).astype(np.float32)


FAST = dict(hidden=64, epochs=100, patience=0, progress=False)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # These graphs are tiny: one thread is fastest, and it avoids OpenMP spin-waiting when the
    # test machine's cores are busy with other work.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# ------------------------------------------------------------------ PyG encoders vs dense math


def dense_gcn(a, x, conv):
    """D^-1/2 (A + I) D^-1/2 X W^T + b (GCNConv), float64."""
    ai = a + np.eye(len(a))
    d = ai.sum(1) ** -0.5
    return (d[:, None] * ai * d[None, :]) @ x @ _w(conv.lin.weight).T + _w(conv.bias)


def dense_sage(a, x, conv):
    """W_l mean_{j in N(i)} x_j + b_l + W_r x_i (SAGEConv, mean); an isolated node's mean is 0."""
    mean = a / np.maximum(a.sum(1, keepdims=True), 1)
    return mean @ x @ _w(conv.lin_l.weight).T + _w(conv.lin_l.bias) + x @ _w(conv.lin_r.weight).T


def dense_gat(a, x, conv):
    """GAT attention over N(i) + {i}: softmax_j LeakyReLU_0.2(a_dst . W x_i + a_src . W x_j)."""
    heads, c = conv.heads, conv.out_channels
    wx = (x @ _w(conv.lin.weight).T).reshape(len(x), heads, c)  # [N, H, C]
    s_src = (wx * _w(conv.att_src)).sum(-1)  # [N, H]
    s_dst = (wx * _w(conv.att_dst)).sum(-1)
    e = s_dst[:, None, :] + s_src[None, :, :]  # [N(target), N(source), H]
    e = np.where(e > 0, e, 0.2 * e)
    e = np.where((a + np.eye(len(a)) > 0)[:, :, None], e, -np.inf)
    att = np.exp(e - e.max(1, keepdims=True))
    att /= att.sum(1, keepdims=True)
    out = np.einsum("ijh,jhc->ihc", att, wx)  # [N, H, C]
    out = out.reshape(len(x), heads * c) if conv.concat else out.mean(1)
    return out + _w(conv.bias)


def _w(t):
    return t.detach().double().numpy()


DENSE = {"gcn": dense_gcn, "sage": dense_sage, "gat": dense_gat}


def test_edge_index_from_csr_lists_every_stored_edge():
    rng = np.random.default_rng(1)
    a = random_sym(12, 0.3, rng, isolated=(5,))
    ei = edge_index_from_csr(*csr_from_dense(a), 12)
    assert ei.dtype == torch.int64 and ei.shape == (2, int(a.sum()))
    np.testing.assert_array_equal(ei.numpy(), np.stack(np.nonzero(a)))


@pytest.mark.parametrize("model", ["mlp", "gcn", "sage", "gat"])
def test_encoders_match_dense_reference(model):
    # Isolated node 3: GCN/GAT see only its self-loop, SAGE an empty (zero) neighbour mean.
    rng = np.random.default_rng(2)
    a = random_sym(10, 0.35, rng, isolated=(3,))
    ei = edge_index_from_csr(*csr_from_dense(a), 10)
    x = torch.randn(10, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.manual_seed(0)
    enc = build_encoder(model, 6, 8, 3, dropout=0.0, heads=2).double().eval()
    if model == "mlp":
        def layer(conv, h):
            return h @ _w(conv.weight).T + _w(conv.bias)
    else:
        def layer(conv, h):
            return DENSE[model](a, h, conv)
    ref = layer(enc.conv2, np.maximum(layer(enc.conv1, x.numpy()), 0.0))
    with torch.no_grad():
        out = enc(x, ei).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("indptr, indices, msg", [
    ([0, 1, 3, 4], [1, 0, 9, 1], r"indices\[2\]"),                 # out of range
    ([0, 1, 3, 4], [1, 0, 1, 1], r"self-loop on node 1 at index 2"),  # (1, 1)
    ([0, 1, 3, 4], [1, 2, 0, 1], r"unsorted neighbour 0 of node 1"),  # unsorted row
    ([0, 1, 2, 2], [1, 0], None),                                     # fine: node 2 isolated
])
def test_bad_csr_is_refused(indptr, indices, msg):
    if msg is None:
        assert edge_index_from_csr(np.array(indptr), np.array(indices), 3).shape == (2, 2)
        return
    with pytest.raises(ValueError, match=msg):
        edge_index_from_csr(np.array(indptr), np.array(indices), 3)


def test_sage_on_the_csr_operand_is_the_mean_over_neighbours():
    # GraphSAGE takes the adjacency as a sparse CSR matrix (graph_operand): its layer must still be
    # W_l mean_{j in N(i)} x_j + b + W_r x_i (0 for a node without neighbours), as a float64 loop computes it,
    # and agree with the edge-list path in value and in gradients.
    rng = np.random.default_rng(3)
    a = random_sym(30, 0.15, rng, isolated=(4,))
    indptr, indices = csr_from_dense(a)
    adj, ei = graph_operand("sage", indptr, indices, 30), edge_index_from_csr(indptr, indices, 30)
    assert adj.layout == torch.sparse_csr and graph_operand("gcn", indptr, indices, 30).equal(ei)
    x = torch.randn(30, 5, generator=torch.Generator().manual_seed(2))
    enc = build_encoder("sage", 5, 8, 3, dropout=0.0).eval()
    conv = enc.conv1
    w_l, b, w_r = (t.detach().double().numpy() for t in (conv.lin_l.weight, conv.lin_l.bias, conv.lin_r.weight))
    xd = x.double().numpy()
    ref = np.empty((30, 8))
    for i in range(30):
        nb = indices[indptr[i]:indptr[i + 1]]
        mean = xd[nb].mean(0) if len(nb) else np.zeros(5)
        ref[i] = w_l @ mean + b + w_r @ xd[i]
    np.testing.assert_allclose(conv(x, adj).detach().double().numpy(), ref, rtol=1e-5, atol=1e-6)
    grads = []
    for g in (adj, ei):
        enc.zero_grad()
        out = enc(x, g)
        out.pow(2).sum().backward()
        grads.append((out.detach(), [p.grad.clone() for p in enc.parameters()]))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-5, atol=1e-6)
    for g0, g1 in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(g0, g1, rtol=1e-5, atol=1e-6)


@pytest.mark.cuda
@pytest.mark.parametrize("model", ["gcn", "sage", "gat"])
def test_encoders_on_cuda_match_cpu(model):
    rng = np.random.default_rng(7)
    ei = edge_index_from_csr(*csr_from_dense(random_sym(50, 0.1, rng)), 50)
    x = torch.randn(50, 6, generator=torch.Generator().manual_seed(1))
    enc = build_encoder(model, 6, 8, 3, dropout=0.0).eval()
    ref = enc(x, ei)
    gpu = enc.cuda()
    out = gpu(x.cuda(), ei.cuda())
    torch.testing.assert_close(out.cpu(), ref, rtol=1e-4, atol=1e-4)
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in gpu.parameters())


def test_edge_scorer_symmetric():
    h = torch.randn(5, 4)
    pairs = torch.tensor([[0, 1, 2], [3, 4, 0]])
    for kind in ("dot", "mlp"):
        s = EdgeScorer(kind, 4)
        torch.testing.assert_close(s(h, pairs), s(h, pairs.flip(0)))
    torch.testing.assert_close(EdgeScorer("dot", 4)(h, pairs), (h[pairs[0]] * h[pairs[1]]).sum(1))


# ------------------------------------------------------------------ label propagation


def test_labelprop_two_cliques_recovers_labels():
    a = np.zeros((12, 12))
    a[:5, :5] = 1
    a[5:11, 5:11] = 1
    np.fill_diagonal(a, 0)  # node 11 is isolated
    indptr, indices = csr_from_dense(a)
    truth = np.array([0] * 5 + [1] * 6 + [1])
    labels = np.full(12, -1)
    labels[[2, 7]] = truth[[2, 7]]  # one labelled node per clique
    r = label_propagation(indptr, indices, labels, np.array([2, 7]), 2)
    np.testing.assert_array_equal(r.pred[:11], truth[:11])
    assert r.converged and 1 < r.iterations < 1000
    assert r.unreached == 1 and r.scores[11].max() == 0.0


def test_labelprop_equals_closed_form():
    rng = np.random.default_rng(3)
    a = random_sym(30, 0.15, rng)
    indptr, indices = csr_from_dense(a)
    labels = rng.integers(0, 3, 30)
    train = np.arange(0, 30, 3)
    alpha = 0.8
    r = label_propagation(indptr, indices, labels, train, 3, alpha=alpha, tol=1e-12, max_iter=5000)
    d = a.sum(1)
    dm = np.where(d > 0, d, 1.0) ** -0.5
    S = dm[:, None] * a * dm[None, :]
    Y = np.zeros((30, 3))
    Y[train, labels[train]] = 1
    F = (1 - alpha) * np.linalg.solve(np.eye(30) - alpha * S, Y)
    np.testing.assert_allclose(r.scores, F, atol=1e-10)
    # contraction by alpha per step: convergence to 1e-12 needs about log(1e-12)/log(0.8) steps
    assert r.converged and r.iterations <= int(np.log(1e-12) / np.log(alpha)) + 30


def test_labelprop_bad_input():
    indptr, indices = csr_from_dense(random_sym(6, 0.5, np.random.default_rng(0)))
    labels = np.array([0, 1, -1, 0, 1, 0])
    with pytest.raises(ValueError, match=r"labels: training node 2"):
        label_propagation(indptr, indices, labels, np.array([0, 2]), 2)
    with pytest.raises(ValueError, match=r"train_idx: node 9 at index 1"):
        label_propagation(indptr, indices, labels, np.array([0, 9]), 2)
    with pytest.raises(ValueError, match="alpha"):
        label_propagation(indptr, indices, labels, np.array([0]), 2, alpha=1.0)


# ------------------------------------------------------------------ metrics


def test_roc_auc_matches_pairwise_definition():
    rng = np.random.default_rng(4)
    s = rng.integers(0, 6, 80).astype(float)  # many ties
    y = rng.random(80) < 0.4
    pos, neg = s[y], s[~y]
    ref = ((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean()
    assert roc_auc(s, y) == pytest.approx(ref, abs=1e-12)
    with pytest.raises(ValueError):
        roc_auc(s, np.ones(80))


def test_best_threshold_matches_brute_force():
    rng = np.random.default_rng(5)
    s = np.round(rng.standard_normal(60), 1)
    y = (s + rng.standard_normal(60) > 0).astype(int)
    thr, acc = best_threshold(s, y)
    grid = np.r_[s.min() - 1, np.sort(np.unique(s)) + 1e-9]
    brute = max(((s > t) == y).mean() for t in grid)
    assert acc == pytest.approx(brute)
    assert ((s > thr) == y).mean() == pytest.approx(acc)


def test_sample_negatives_are_non_edges():
    a = random_sym(40, 0.3, np.random.default_rng(6))
    indptr, indices = csr_from_dense(a)
    neg = sample_negatives(indptr, indices, 500, np.random.default_rng(0))
    assert neg.shape == (2, 500)
    assert np.all(neg[0] != neg[1]) and np.all(a[neg[0], neg[1]] == 0)
    np.testing.assert_array_equal(neg, sample_negatives(indptr, indices, 500, np.random.default_rng(0)))


# ------------------------------------------------------------------ end to end


def test_mlp_separable_features_near_perfect():
    g = sbm_graph(n=300, c=3, p_in=0.01, p_out=0.01, seed=1)
    x = class_features(g.labels, 3, 16, signal=12.0, seed=1)  # means 12 sd apart: separable
    r = run_baseline(g, x, BaselineConfig(model="mlp", **FAST))
    validate_result(r)
    assert r["accuracy"] >= 0.99
    assert r["num_examples"] == len(g.test) and r["task"] == "nc" and r["method"] == "mlp"
    assert sum(map(sum, r["confusion"])) == len(g.test)


def test_gcn_and_sage_beat_mlp_on_homophilous_graph():
    # ~89% of edges within class, features too noisy for a per-node classifier: neighbourhood
    # averaging over ~8 same-class neighbours is what makes the difference.
    g = sbm_graph(n=600, c=4, p_in=0.05, p_out=0.002, seed=0)
    x = class_features(g.labels, 4, 32, signal=1.2, seed=0)
    acc = {m: run_baseline(g, x, BaselineConfig(model=m, seed=0, **FAST))["accuracy"]
           for m in ("mlp", "gcn", "sage", "gat")}
    # measured on the PyG layers: mlp 0.50, gcn 1.00, sage 0.98, gat 0.99
    assert acc["gcn"] >= acc["mlp"] + 0.2, acc
    assert acc["sage"] >= acc["mlp"] + 0.1, acc
    assert acc["gat"] >= acc["mlp"] + 0.2, acc


def test_nc_deterministic_and_labelprop_on_sbm():
    g = sbm_graph(n=400, c=4, p_in=0.06, p_out=0.003, seed=2)
    x = class_features(g.labels, 4, 16, signal=1.0, seed=2)
    cfg = BaselineConfig(model="sage", seed=7, hidden=32, epochs=30, patience=0, progress=False)
    r1, r2 = run_baseline(g, x, cfg), run_baseline(g, x, cfg)
    assert r1["confusion"] == r2["confusion"] and r1["extra"]["best_epoch"] == r2["extra"]["best_epoch"]
    lp = run_baseline(g, None, BaselineConfig(model="labelprop", progress=False))
    assert lp["accuracy"] > 0.8 and lp["extra"]["converged"] and lp["extra"]["iterations"] > 1


@pytest.mark.parametrize("model, scorer", [("gcn", "dot"), ("sage", "mlp")])
def test_lp_beats_chance_on_sbm(model, scorer):
    g = sbm_graph(n=500, c=5, p_in=0.08, p_out=0.002, seed=3, link=True)
    x = class_features(g.labels, 5, 16, signal=2.0, seed=3)
    r = run_baseline(g, x, BaselineConfig(model=model, task="lp", scorer=scorer, lr=0.01,
                                          **FAST))
    validate_result(r)
    n_test = g.link_split.test_pos.shape[1] + g.link_split.test_neg.shape[1]
    assert r["num_examples"] == n_test and r["class_names"] == ["No", "Yes"]
    # chance is 0.5 for both (balanced test pairs); measured ~0.82-0.85
    assert r["accuracy"] >= 0.75, r["accuracy"]
    assert r["extra"]["auc"] >= 0.8, r["extra"]["auc"]


def test_bad_inputs_are_refused():
    g = sbm_graph(n=60, c=2, seed=4)
    x = np.zeros((60, 4), np.float32)
    with pytest.raises(ValueError, match="link_split"):
        run_baseline(g, x, BaselineConfig(model="gcn", task="lp", progress=False))
    with pytest.raises(ValueError, match="labelprop"):
        run_baseline(g, None, BaselineConfig(model="labelprop", task="lp"))
    with pytest.raises(ValueError, match=r"features: expected shape \[60, D\]"):
        run_baseline(g, x[:50], BaselineConfig(model="mlp", progress=False))
    x[7, 2] = np.nan
    with pytest.raises(ValueError, match="row 7"):
        run_baseline(g, x, BaselineConfig(model="mlp", progress=False))
    with pytest.raises(ValueError, match="model"):
        run_baseline(g, x, BaselineConfig(model="gin"))
    with pytest.raises(ValueError, match="multiple of heads"):
        run_baseline(g, x, BaselineConfig(model="gat", hidden=30, heads=4))


# ------------------------------------------------------------------ real graph


def test_labelprop_on_real_toys_graph(magb_dir):
    from mlaga_fast.data.magb import load_magb

    g = load_magb(magb_dir, "Toys", progress=False)
    r = run_baseline(g, None, BaselineConfig(model="labelprop", progress=False))
    y_tr = g.labels[g.train]
    majority = (g.labels[g.test] == np.bincount(y_tr).argmax()).mean()
    # co-purchase graphs are strongly homophilous: structure alone must clearly beat the prior
    assert r["accuracy"] > majority + 0.2, (r["accuracy"], majority)
    assert r["extra"]["converged"]


# ------------------------------------------------------------------ CLI


class _WordTokens:
    """Deterministic toy tokenizer: crc32 of each word into a 64-id vocabulary, 6 tokens."""

    def __call__(self, texts):
        import zlib

        ids = torch.zeros(len(texts), 6, dtype=torch.int64)
        mask = torch.zeros(len(texts), 6, dtype=torch.bool)
        for i, t in enumerate(texts):
            words = t.split()[:6]
            ids[i, :len(words)] = torch.tensor([zlib.crc32(w.encode()) % 64 for w in words])
            mask[i, :len(words)] = True
        return ids, mask


def _stub_encoder():
    from mlaga_fast.features.encoders import Encoder, TextTower

    class Words(TextTower):
        def __init__(self):
            super().__init__()
            self.tokenize = _WordTokens()
            self.emb = torch.nn.Embedding(64, 8)
            torch.nn.init.normal_(self.emb.weight, generator=torch.Generator().manual_seed(0))

        def forward(self, ids, mask):
            return self.emb(ids)  # [B, 6, 8]

    return Encoder(spec="test-words", image=None, text=Words()).probe()


def _dataset(tmp_path, name, seed):
    """Saved SBM dataset whose texts name the class (plus noise words), with a link split and a
    stored feature array 'x'; returns (dir, graph)."""
    from mlaga_fast.data import save

    g = sbm_graph(n=200, c=3, p_in=0.08, p_out=0.005, seed=seed, link=True, name=name)
    rng = np.random.default_rng(seed)
    texts = [f"kind{y} w{rng.integers(9)} w{rng.integers(9)}" for y in g.labels]
    x = class_features(g.labels, 3, 8, signal=2.0, seed=seed)
    g2 = MultimodalGraph(name, g.indptr, g.indices, texts=texts, labels=g.labels,
                         class_names=g.class_names, train=g.train, val=g.val, test=g.test,
                         link_split=g.link_split, features={"x": x})
    d = tmp_path / name
    save(g2, d)
    return d, g2


def test_cli_baseline_end_to_end(tmp_path):
    import json

    from click.testing import CliRunner

    from mlaga_fast.cli.main import cli
    from mlaga_fast.data import load
    from mlaga_fast.eval.report import read_result_json
    from mlaga_fast.features.extract import FeatureConfig, extract_features, graph_fingerprint

    da, ga = _dataset(tmp_path, "a", 0)
    db, _ = _dataset(tmp_path, "b", 1)
    for d in (da, db):
        extract_features(load(d), d / "features", FeatureConfig(encoder="tiny", device="cpu"),
                         graph_fp=graph_fingerprint(load(d), d), encoder=_stub_encoder(),
                         progress=False)
    run = CliRunner().invoke
    common = ["--no-progress", "--num-threads", "1", "--epochs", "60", "--hidden", "32"]
    out = tmp_path / "res" / "gcn.json"
    r = run(cli, ["baseline", "--data", str(da), "--model", "gcn", "--out", str(out),
                  "--confusion", str(tmp_path / "c.png"), *common])
    assert r.exit_code == 0, r.output
    res = read_result_json(out)
    assert json.loads(r.output.strip().splitlines()[-1])["accuracy"] == res["accuracy"]
    assert res["dataset"] == "a" and res["num_examples"] == len(ga.test)
    assert res["extra"]["encoder"] == "test-words" and res["extra"]["feature_dim"] == 8
    assert res["extra"]["graph_fingerprint"] == graph_fingerprint(load(da), da)
    assert res["accuracy"] > 0.9  # texts name the class: the pooled token embedding separates them
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"

    r = run(cli, ["baseline", "--data", str(da), "--model", "sage", "--task", "lp",
                  "--features", "graph:x", "--out", str(tmp_path / "lp.json"), *common])
    assert r.exit_code == 0, r.output
    lp = read_result_json(tmp_path / "lp.json")
    assert lp["task"] == "lp" and lp["extra"]["auc"] > 0.7 and lp["extra"]["features"] == "graph:x"

    r = run(cli, ["baseline", "--data", str(da), "--model", "gat", "--heads", "2", "--features", "graph:x",
                  "--out", str(tmp_path / "gat.json"), *common])
    assert r.exit_code == 0, r.output
    gat = read_result_json(tmp_path / "gat.json")
    assert gat["method"] == "gat" and gat["extra"]["config"]["heads"] == 2 and gat["accuracy"] > 0.8

    # features of another graph (same node count) are refused, naming both fingerprints
    r = run(cli, ["baseline", "--data", str(da), "--features", str(db / "features"), *common])
    assert r.exit_code != 0 and "extracted from graph" in r.output
    r = run(cli, ["baseline", "--data", str(da), "--features", "graph:nope", *common])
    assert r.exit_code != 0 and "no stored array 'nope'" in r.output
    r = run(cli, ["baseline", "--data", str(da), "--model", "labelprop", "--task", "lp"])
    assert r.exit_code != 0 and "labelprop" in r.output

    r = run(cli, ["results-table", str(out), str(tmp_path / "lp.json")])
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[0] == "| method | NC | LP |"
    assert r.output.splitlines()[2] == f"| gcn | {100 * res['accuracy']:.2f} | - |"
    assert r.output.splitlines()[3] == f"| sage | - | {100 * lp['accuracy']:.2f} |"

"""Stage 1 models and losses: masks, modality handling, the cross-attention schedule, the InfoNCE and the
released MLaGA objective against loop-by-loop float64 references, the released aligner structure
(arch mlaga) against a plain float64 forward written from its description, and the positive sampler."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mlaga_fast.models.aligner import Aligner, _SelfAttention
from mlaga_fast.models.contrastive import (contrastive_stats, embedding_spread, graph_infonce, mlaga_objective,
                                           sample_positives)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _batch(B=3, Li=5, Di=12, Lt=7, Dt=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    text_mask = torch.ones(B, Lt, dtype=torch.bool)
    text_mask[0, 4:] = False
    text_mask[1, :] = False  # an empty text
    return {
        "image": torch.randn(B, Li, Di, generator=g).half(),
        "image_mask": torch.ones(B, Li, dtype=torch.bool),
        "text": torch.randn(B, Lt, Dt, generator=g).half(),
        "text_mask": text_mask,
    }


def _model(**kw):
    torch.manual_seed(0)
    args = dict(image_dim=12, text_dim=10, d=16, num_layers=3, num_heads=2, num_queries=4, cross_attention_every=2)
    args.update(kw)
    return Aligner(**args).eval()


def test_shapes_and_pooling():
    m = _model()
    tokens, pooled = m(_batch())
    assert tokens.shape == (3, 4, 16) and pooled.shape == (3, 16)
    assert torch.isfinite(tokens).all()
    torch.testing.assert_close(pooled, tokens.mean(dim=1))
    # queries cross-attend at layers 0 and 2 of 3 (every 2nd, starting at the first)
    assert [layer.cross for layer in m.layers] == [True, False, True]


def test_padding_is_ignored_and_token_order_is_irrelevant():
    m = _model()
    b = _batch()
    t0, _ = m(b)
    b2 = {k: v.clone() for k, v in b.items()}
    b2["text"][0, 4:] = 1000.0  # garbage in padded positions
    b2["text"][1] = -7.0  # the whole empty text
    t1, _ = m(b2)
    torch.testing.assert_close(t0, t1)
    # no positional embedding: permuting tokens within a modality (with their masks) changes nothing
    perm = torch.tensor([3, 0, 6, 1, 5, 2, 4])
    b3 = dict(b, text=b["text"][:, perm], text_mask=b["text_mask"][:, perm])
    t3, _ = m(b3)
    torch.testing.assert_close(t0, t3, atol=1e-5, rtol=1e-5)
    # but a real text token does matter
    b4 = {k: v.clone() for k, v in b.items()}
    b4["text"][0, 0] += 1.0
    assert not torch.allclose(m(b4)[0][0], t0[0])


def test_single_modality_and_dims_checked():
    m = _model(image_dim=0)
    b = _batch()
    tokens, _ = m({k: v for k, v in b.items() if k.startswith("text")})
    assert tokens.shape == (3, 4, 16) and torch.isfinite(tokens).all()  # row 1 has no valid token at all
    with pytest.raises(ValueError, match="needs at least one modality"):
        Aligner(image_dim=0, text_dim=0)
    with pytest.raises(ValueError, match="divisible"):
        Aligner(image_dim=4, text_dim=4, d=10, num_heads=4)
    with pytest.raises(ValueError, match="image dim"):
        _model()(dict(b, image=b["image"][..., :5]))


def test_input_standardisation():
    m = _model()
    b = _batch()
    ref, _ = m(b)
    g = torch.Generator().manual_seed(5)
    # features shifted and scaled per dimension, with the stats shifted and scaled alike: same output
    a_i, c_i = torch.rand(12, generator=g) + 0.5, torch.randn(12, generator=g)
    a_t, c_t = torch.rand(10, generator=g) + 0.5, torch.randn(10, generator=g)
    m.set_input_stats(image_mean=c_i, image_std=a_i, text_mean=c_t, text_std=a_t)
    b2 = dict(b, image=b["image"].float() * a_i + c_i, text=b["text"].float() * a_t + c_t)
    torch.testing.assert_close(m(b2)[0], ref, atol=2e-4, rtol=2e-4)
    with pytest.raises(ValueError, match="text_std"):
        m.set_input_stats(text_std=torch.ones(3))


class _Store:
    """In-memory stand-in with FeatureStore.get's layout."""

    def __init__(self, b):
        self.b, self.num_nodes = b, b["image"].shape[0]
        self.image_dim, self.text_dim = b["image"].shape[-1], b["text"].shape[-1]

    def get(self, idx):
        idx = torch.as_tensor(idx)
        return {k: v[idx] for k, v in self.b.items()}


def test_input_stats_against_numpy():
    from mlaga_fast.models.aligner import input_stats

    b = _batch(B=9)
    st = input_stats(_Store(b), batch_size=4)
    txt = b["text"].float().numpy()[b["text_mask"].numpy()]  # valid tokens only
    np.testing.assert_allclose(st["text_mean"].numpy(), txt.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(st["text_std"].numpy(), txt.std(0), rtol=1e-4, atol=1e-5)
    img = b["image"].float().numpy().reshape(-1, 12)
    np.testing.assert_allclose(st["image_mean"].numpy(), img.mean(0), rtol=1e-5, atol=1e-5)


def test_cross_attention_backends_agree():
    b = _batch()
    outs = [_model(attn_backend=be)(b)[0] for be in ("reference", "sdpa")]
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-5)


def test_self_attention_against_naive_softmax():
    torch.manual_seed(1)
    sa = _SelfAttention(8, 2, 0.0)
    x = torch.randn(2, 5, 8)
    mask = torch.tensor([[1, 1, 0, 1, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    out = sa(x, mask)
    with torch.no_grad():
        sa.q_bias.normal_(), sa.v_bias.normal_()
    out = sa(x, mask)
    bias = torch.cat([sa.q_bias, torch.zeros(8), sa.v_bias])
    q, k, v = (x @ sa.qkv.weight.T + bias).view(2, 5, 3, 2, 4).permute(2, 0, 3, 1, 4)
    s = q @ k.transpose(-1, -2) / 2.0  # dh = 4 -> scale 1/2
    s = s.masked_fill(~mask[:, None, None, :], -math.inf)
    ref = sa.out((s.softmax(-1) @ v).transpose(1, 2).reshape(2, 5, 8))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def _infonce_reference(a, p, aid, pid, tau, mode):
    """Loop-by-loop float64 InfoNCE, straight from the definition."""
    a, p = a.double().numpy(), p.double().numpy()
    aid, pid = aid.numpy(), pid.numpy()
    cos = lambda x, y: float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))  # noqa: E731
    tp = tau if mode == "both" else 1.0
    losses = []
    for i in range(a.shape[0]):
        negs = [cos(a[i], a[n]) / tau for n in range(a.shape[0]) if aid[n] != aid[i] and aid[n] not in pid[i]]
        for j in range(p.shape[1]):
            sp = cos(a[i], p[i, j]) / tp
            losses.append(-sp + math.log(math.exp(sp) + sum(math.exp(s) for s in negs)))
    return float(np.mean(losses))


@pytest.mark.parametrize("mode", ["both", "negatives_only"])
def test_infonce_matches_reference(mode):
    torch.manual_seed(2)
    B, k, d = 6, 3, 5
    a, p = torch.randn(B, d), torch.randn(B, k, d)
    aid = torch.tensor([10, 11, 12, 13, 14, 15])
    pid = torch.tensor([[11, 20, 21], [30, 31, 32], [12, 40, 41], [14, 15, 50], [60, 61, 62], [70, 70, 70]])
    loss = graph_infonce(a, p, aid, pid, tau=0.3, tau_mode=mode)
    assert loss.item() == pytest.approx(_infonce_reference(a, p, aid, pid, 0.3, mode), rel=1e-5)
    stats = contrastive_stats(a, p, aid, a, aid)
    cos_pos = F.cosine_similarity(a[:, None], p, dim=-1).mean().item()
    cos_neg = np.mean([F.cosine_similarity(a[i], a[j], dim=0).item() for i in range(B) for j in range(B) if i != j])
    assert stats["pos_sim"].item() == pytest.approx(cos_pos, rel=1e-5)
    assert stats["neg_sim"].item() == pytest.approx(cos_neg, rel=1e-5)
    assert stats["gap"].item() == pytest.approx(stats["pos_sim"].item() - stats["neg_sim"].item())


def _mlaga_reference(a, p, g, tau):
    """The released objective, loop by loop in float64: for anchor i,
    L_i = -log sum_k exp(cos(a_i, p_ik)) + log sum_j exp(cos(a_i, g_j) / tau), j over every pooled anchor."""
    a, p, g = a.double().numpy(), p.double().numpy(), g.double().numpy()
    cos = lambda x, y: float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))  # noqa: E731
    out = []
    for i in range(a.shape[0]):
        pos = sum(math.exp(cos(a[i], p[i, k])) for k in range(p.shape[1]))
        neg = sum(math.exp(cos(a[i], g[j]) / tau) for j in range(g.shape[0]))
        out.append(-math.log(pos) + math.log(neg))
    return float(np.mean(out))


@pytest.mark.parametrize("tau", [0.5, 0.07])
def test_mlaga_objective_matches_float64_loop(tau):
    torch.manual_seed(3)
    B, k, d = 7, 5, 6
    a, p = torch.randn(B, d, requires_grad=True), torch.randn(B, k, d)
    loss = mlaga_objective(a, p, tau=tau)
    assert loss.item() == pytest.approx(_mlaga_reference(a.detach(), p, a.detach(), tau), rel=1e-6)
    # the negatives' pool of a multi-rank batch: this rank's anchors are rows 2..8 of 10
    g = torch.cat([torch.randn(2, d), a.detach(), torch.randn(1, d)])
    assert mlaga_objective(a, p, tau=tau, all_anchor=g).item() == pytest.approx(_mlaga_reference(a.detach(), p, g, tau),
                                                                                  rel=1e-6)
    # its gradient against a float64 autograd of the same formula
    a64 = a.detach().double().requires_grad_()
    an, pn = F.normalize(a64, dim=-1), F.normalize(p.double(), dim=-1)
    ref = (torch.logsumexp(an @ an.T / tau, -1) - torch.logsumexp((an[:, None] * pn).sum(-1), -1)).mean()
    ref.backward()
    loss.backward()
    torch.testing.assert_close(a.grad.double(), a64.grad, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="tau"):
        mlaga_objective(a, p, tau=0.0)
    with pytest.raises(ValueError, match="positives"):
        mlaga_objective(a, p[:3], tau=0.5)


def test_infonce_gradient_and_edge_cases():
    a = torch.randn(1, 4, requires_grad=True)
    p = torch.randn(1, 2, 4)
    loss = graph_infonce(a, p, torch.tensor([0]), torch.tensor([[1, 2]]), tau=0.1)
    loss.backward()  # no negatives at all: loss 0, finite gradient
    assert loss.item() == pytest.approx(0.0, abs=1e-6) and torch.isfinite(a.grad).all()
    with pytest.raises(ValueError, match="tau"):
        graph_infonce(a, p, torch.tensor([0]), torch.tensor([[1, 2]]), tau=0.0)
    with pytest.raises(ValueError, match="tau_mode"):
        graph_infonce(a, p, torch.tensor([0]), torch.tensor([[1, 2]]), tau_mode="pos")


def test_embedding_spread():
    assert embedding_spread(torch.ones(5, 3) * 2).item() == pytest.approx(0.0, abs=1e-6)
    assert embedding_spread(torch.eye(4)).item() == pytest.approx(math.sqrt(1 - 1 / 4), rel=1e-6)


def _csr(n, edges):
    adj = [set() for _ in range(n)]
    for u, v in edges:
        adj[u].add(v), adj[v].add(u)
    indptr = np.zeros(n + 1, np.int64)
    indptr[1:] = np.cumsum([len(s) for s in adj])
    return indptr, np.array([v for s in adj for v in sorted(s)], np.int64), adj


def test_sample_positives_rules():
    # node 0: 6 neighbours, node 1: 2 neighbours (0 and 7), node 8: isolated
    indptr, indices, adj = _csr(9, [(0, i) for i in range(2, 8)] + [(0, 1), (1, 7)])
    nodes = np.array([0, 1, 8, 0])
    out = sample_positives(indptr, indices, nodes, 5, np.random.default_rng(0))
    assert out.shape == (4, 5) and out.dtype == np.int64
    for row, n in zip(out, nodes):
        if n == 8:
            assert (row == 8).all()
        else:
            assert set(row.tolist()) <= adj[n]
    assert len(set(out[0].tolist())) == 5 and len(set(out[3].tolist())) == 5  # enough neighbours: distinct
    same = sample_positives(indptr, indices, nodes, 5, np.random.default_rng(0))
    np.testing.assert_array_equal(out, same)
    # with replacement for node 1: over many draws both neighbours appear, nothing else
    many = sample_positives(indptr, indices, np.full(200, 1), 5, np.random.default_rng(1))
    assert set(np.unique(many).tolist()) == {0, 7}
    with pytest.raises(ValueError, match="nodes: id 9 at index 1"):
        sample_positives(indptr, indices, np.array([0, 9]), 5, np.random.default_rng(0))

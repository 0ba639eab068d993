"""The released aligner structure (arch mlaga) against a plain float64 forward written from its
description (docs/paper_model.md), at tiny sizes; plus its schedule, masks and gradients."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mlaga_fast.models.aligner_mlaga import MLaGAAligner

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _batch(B=3, Li=4, Di=6, Lt=5, Dt=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    text_mask = torch.ones(B, Lt, dtype=torch.bool)
    text_mask[0, 3:] = False
    text_mask[2, 1:] = False
    return {"image": torch.randn(B, Li, Di, generator=g).half(), "image_mask": torch.ones(B, Li, dtype=torch.bool),
            "text": torch.randn(B, Lt, Dt, generator=g).half(), "text_mask": text_mask}


def _W(lin):
    return lin.weight.detach().double().numpy(), lin.bias.detach().double().numpy()


def _reference(model: MLaGAAligner, batch, heads: int) -> np.ndarray:
    """Node by node, loop by loop: the structure as the issue and docs describe it."""
    def linear(lin, x):
        w, b = _W(lin)
        return x @ w.T + b

    def attend(qkv, q_in, kv_in, valid):
        q, k, v = linear(qkv.q, q_in), linear(qkv.k, kv_in), linear(qkv.v, kv_in)
        d = q.shape[-1]
        dh = d // heads
        out = np.zeros_like(q)
        for h in range(heads):
            sl = slice(h * dh, (h + 1) * dh)
            for i in range(q.shape[0]):
                s = np.array([q[i, sl] @ k[j, sl] / math.sqrt(dh) if valid[j] else -np.inf for j in range(k.shape[0])])
                w = np.exp(s - s.max())
                w /= w.sum()
                out[i, sl] = w @ v[:, sl]
        return out  # no output projection

    def ffn(f, x):
        h = linear(f.fc1, x)
        h = 0.5 * h * (1 + np.vectorize(math.erf)(h / math.sqrt(2)))  # exact GELU
        y = linear(f.fc2, h)
        mu, var = y.mean(-1, keepdims=True), y.var(-1, keepdims=True)
        gamma, beta = f.norm.weight.detach().double().numpy(), f.norm.bias.detach().double().numpy()
        return (y - mu) / np.sqrt(var + 1e-12) * gamma + beta  # post-norm, no residual

    out = []
    for n in range(batch["image"].shape[0]):
        img = linear(model.image_proj, batch["image"][n].double().numpy())
        txt = linear(model.text_proj, batch["text"][n].double().numpy())
        im_ok = batch["image_mask"][n].numpy()
        tx_ok = batch["text_mask"][n].numpy()
        tx_keys = tx_ok if tx_ok.any() else np.ones_like(tx_ok)  # a node without text attends to all
        q = model.queries.detach().double().numpy()
        for i, layer in enumerate(model.layers):
            a_img = attend(layer.sa, img, img, im_ok)
            a_txt = attend(layer.sa, txt, txt, tx_keys)
            if (i + 1) % model.arch["cross_attention_every"] == 0:
                kv = np.concatenate([a_img, a_txt])
                q = ffn(layer.ffn, attend(layer.cross, q, kv, np.concatenate([im_ok, tx_ok])))
            img, txt = ffn(layer.ffn, a_img), ffn(layer.ffn, a_txt)
        out.append(q)
    return np.stack(out)


@pytest.mark.parametrize("every,layers", [(2, 4), (1, 2)])
def test_mlaga_aligner_matches_float64_reference(every, layers):
    torch.manual_seed(0)
    m = MLaGAAligner(image_dim=6, text_dim=7, d=8, num_layers=layers, num_heads=2, num_queries=3,
                     cross_attention_every=every, dropout=0.0, attn_backend="reference").double().eval()
    b = _batch()
    tokens, pooled = m({k: (v.double() if v.is_floating_point() else v) for k, v in b.items()})
    ref = _reference(m, b, heads=2)
    np.testing.assert_allclose(tokens.detach().numpy(), ref, atol=1e-9, rtol=1e-9)
    np.testing.assert_allclose(pooled.detach().numpy(), ref.mean(1), atol=1e-9, rtol=1e-9)


def test_mlaga_aligner_structure_and_gradients():
    torch.manual_seed(1)
    m = MLaGAAligner(image_dim=8, text_dim=5, d=8, num_layers=6, num_heads=2, num_queries=4, cross_attention_every=2)
    assert [layer.cross is not None for layer in m.layers] == [False, True, False, True, False, True]
    assert isinstance(m.image_proj, torch.nn.Identity)  # image tokens already at width d: used as they are
    assert not any("out" in n for n, _ in m.named_parameters())  # no attention output projections
    b = _batch(Di=8, Dt=5)
    tokens, pooled = m(b)
    assert tokens.shape == (3, 4, 8) and pooled.shape == (3, 8)
    pooled.square().sum().backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing  # every weight trains, gradients are finite (empty texts included)
    # padded text positions do not change the output
    b2 = {k: v.clone() for k, v in b.items()}
    b2["text"][0, 3:] = 100.0
    m.eval()
    torch.testing.assert_close(m(b)[0], m(b2)[0])
    with pytest.raises(ValueError, match="multiple of"):
        MLaGAAligner(image_dim=8, text_dim=5, d=8, num_layers=3, num_heads=2, cross_attention_every=2)

"""LP pairs grouped as the release groups them (`lp_grouping: paired`): the pair's tokens form one 2*nq sequence
in one graph slot, cross-task attention runs over it, and both pictures share one image slot. Checked against a
float64 loop of the release's formula, written here from its definition (not from our module)."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

WORDS = [f"w{i}" for i in range(40)]
TEXTS = [" ".join(WORDS[(5 * i + j) % 40] for j in range(12)) for i in range(12)]
CLASSES = ["Puzzles", "Dolls"]
NQ, D, DP, H = 3, 8, 5, 16


@pytest.fixture(scope="module")
def llm(tmp_path_factory):
    from helpers.tiny_llm import build_tiny_llm
    from mlaga_fast.llm import load_llm

    folder = build_tiny_llm(tmp_path_factory.mktemp("llm"), WORDS + CLASSES, hidden=H)
    model, tok, _ = load_llm(str(folder))
    return model, tok


def _projectors(cross: bool):
    from mlaga_fast.models.projector import ProjectorConfig, Projectors

    torch.manual_seed(3)
    proj = Projectors(ProjectorConfig(graph_dim=D, out_dim=H, kind="modality", image_dim=DP, cross_task=cross,
                                      cross_heads=4))
    with torch.no_grad():  # non-trivial norms and biases, so that every term of the formula matters
        for p in proj.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return proj.eval()


def _builder(tok, grouping: str, template_set: str):
    from mlaga_fast.prompts import PromptBuilder, TruncationPolicy

    return PromptBuilder(tok, NQ, TEXTS, CLASSES, TruncationPolicy(512, 4, 4), template_set=template_set,
                         image_tokens=1, lp_grouping=grouping)


def _inputs():
    from mlaga_fast.prompts.batch import NodeInputs

    rng = np.random.default_rng(0)
    return [NodeInputs(rng.normal(size=(12, NQ, D)).astype(np.float16), rng.normal(size=(12, DP)).astype(np.float32))]


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def _mlp(seq: torch.nn.Sequential, x: np.ndarray) -> np.ndarray:
    """Linear, GELU (erf), Linear, row by row in float64."""
    w1, b1, w2, b2 = _np(seq[0].weight), _np(seq[0].bias), _np(seq[2].weight), _np(seq[2].bias)
    out = []
    for row in x:
        h = w1 @ row + b1
        h = np.array([0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0))) for v in h])
        out.append(w2 @ h + b2)
    return np.array(out)


def _layer_norm(x: np.ndarray, ln: torch.nn.LayerNorm) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + ln.eps) * _np(ln.weight) + _np(ln.bias)


def release_pair_projection(proj, tokens_a: np.ndarray, tokens_b: np.ndarray) -> np.ndarray:
    """[2*nq, H]: the release's LP input for one pair. x = cat(tokens_a, tokens_b); lp = MLP_lp(x), nc = MLP_nc(x);
    one cross-task layer with lp as queries and nc as keys/values over the whole 2*nq sequence, both normed by
    the same LayerNorm; attention output projected, added to lp; then FFN(LayerNorm(.)) added (dropout off)."""
    x = np.concatenate([tokens_a, tokens_b]).astype(np.float64)  # [2nq, d]
    lp, nc = _mlp(proj.graph_mlp["lp"], x), _mlp(proj.graph_mlp["nc"], x)  # [2nq, H]
    c = proj.cross
    qn, kvn = _layer_norm(lp, c.norm1), _layer_norm(nc, c.norm1)
    q = qn @ _np(c.q.weight).T + _np(c.q.bias)
    k = kvn @ _np(c.k.weight).T + _np(c.k.bias)
    v = kvn @ _np(c.v.weight).T + _np(c.v.bias)
    n, dh = x.shape[0], H // c.h
    attn = np.zeros((n, H))
    for head in range(c.h):
        sl = slice(head * dh, (head + 1) * dh)
        for i in range(n):
            logits = np.array([q[i, sl] @ k[j, sl] / math.sqrt(dh) for j in range(n)])
            w = np.exp(logits - logits.max())
            attn[i, sl] = (w / w.sum()) @ v[:, sl]
    h = lp + attn @ _np(c.out.weight).T + _np(c.out.bias)
    return h + _mlp(torch.nn.Sequential(c.ffn[0], c.ffn[1], c.ffn[2]), _layer_norm(h, c.norm2))


@pytest.mark.parametrize("template_set", ["paper", "compact"])
def test_paired_pair_is_one_graph_slot_and_one_image_slot(llm, template_set):
    from mlaga_fast.llm.splice import GRAPH_TOKEN_ID, IMAGE_TOKEN_ID
    from mlaga_fast.prompts.builder import GRAPH_SLOT, IMAGE_SLOT

    _, tok = llm
    paired = _builder(tok, "paired", template_set).lp(3, 7, (1, 2, True), label=1)
    separate = _builder(tok, "separate", template_set).lp(3, 7, (1, 2, True), label=1)
    # the query pair and the demonstration pair: each shown in slots that hold both of its nodes
    assert {v for k, v in paired.slots if k == GRAPH_SLOT} == {(1, 2), (3, 7)}
    assert {v for k, v in paired.slots if k == IMAGE_SLOT} == {(1, 2), (3, 7)}
    assert {v for k, v in separate.slots} == {1, 2, 3, 7}
    assert len(separate.slots) == 2 * len(paired.slots)
    for ex in (paired, separate):  # the same number of node tokens, only grouped differently
        assert ex.prompt_ids.count(GRAPH_TOKEN_ID) == NQ * sum(len(v) if isinstance(v, tuple) else 1
                                                              for k, v in ex.slots if k == GRAPH_SLOT)
        assert ex.prompt_ids.count(IMAGE_TOKEN_ID) == sum(len(v) if isinstance(v, tuple) else 1
                                                          for k, v in ex.slots if k == IMAGE_SLOT)
    assert paired.prompt_ids.count(GRAPH_TOKEN_ID) == separate.prompt_ids.count(GRAPH_TOKEN_ID)
    ids = paired.prompt_ids  # each pair's 2*nq graph placeholders are contiguous
    runs = [len(r) for r in "".join("G" if i == GRAPH_TOKEN_ID else "." for i in ids).split(".") if r]
    assert set(runs) == {2 * NQ}
    with pytest.raises(ValueError, match="lp_grouping"):
        _builder(tok, "grouped", template_set)


def test_paired_projection_matches_a_float64_loop_of_the_release_formula(llm):
    """The spliced LLM input at the pair's graph slot equals the release's formula for cat(tokens_a, tokens_b),
    and the image slot holds both pictures' projections in order."""
    from mlaga_fast.llm.splice import GRAPH_TOKEN_ID, IMAGE_TOKEN_ID
    from mlaga_fast.models.graph_llm import GraphLLM
    from mlaga_fast.prompts.batch import collate
    from mlaga_fast.runtime.precision import Precision

    model, tok = llm
    proj = _projectors(cross=True).double()
    inputs = _inputs()
    gl = GraphLLM(model.double(), tok, proj, Precision("fp32", "float64", None), "cpu")
    try:
        exs = [_builder(tok, "paired", "paper").lp(a, b, None, label=-1) for a, b in ((3, 7), (0, 11))]
        batch = collate(exs, tok.pad_token_id, inputs, with_answer=False, use_prefix=False)
        with torch.no_grad():
            emb = gl.embed(batch)  # [B, T, H]
        toks = inputs[0].tokens.astype(np.float64)
        for row, (a, b) in enumerate(((3, 7), (0, 11))):
            ids = batch.input_ids[row]
            got = _np(emb[row][ids == GRAPH_TOKEN_ID])  # [2nq, H]
            ref = release_pair_projection(proj, toks[a], toks[b])
            np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)
            img = _np(emb[row][ids == IMAGE_TOKEN_ID])  # [2, H]
            ref_img = _mlp(proj.image_mlp, inputs[0].image[[a, b]].astype(np.float64))
            np.testing.assert_allclose(img, ref_img, rtol=1e-10, atol=1e-12)
            # each node's tokens attend to the other's: changing b changes a's half
            other = release_pair_projection(proj, toks[a], toks[(b + 1) % 12])
            assert not np.allclose(other[:NQ], ref[:NQ])
    finally:
        model.float()


def test_without_cross_task_attention_the_groupings_project_alike(llm):
    """The projectors are token-wise MLPs, so paired and separate slots carry the same vectors, in the same
    order (a's, then b's); only where the slots sit in the prompt differs."""
    from mlaga_fast.llm.splice import GRAPH_TOKEN_ID, IMAGE_TOKEN_ID
    from mlaga_fast.models.graph_llm import GraphLLM
    from mlaga_fast.prompts.batch import collate
    from mlaga_fast.runtime.precision import Precision

    model, tok = llm
    proj, inputs = _projectors(cross=False), _inputs()
    gl = GraphLLM(model, tok, proj, Precision("fp32", "float32", None), "cpu")
    got = {}
    for grouping in ("paired", "separate"):
        ex = _builder(tok, grouping, "paper").lp(4, 9, None, label=1)
        batch = collate([ex], tok.pad_token_id, inputs, with_answer=True, use_prefix=False)
        with torch.no_grad():
            emb = gl.embed(batch)[0]
        ids = batch.input_ids[0]
        got[grouping] = (emb[ids == GRAPH_TOKEN_ID], emb[ids == IMAGE_TOKEN_ID])
        assert torch.isfinite(gl.loss(batch))
    torch.testing.assert_close(got["paired"][0], got["separate"][0])
    torch.testing.assert_close(got["paired"][1], got["separate"][1])


def test_paper_preset_groups_lp_pairs_as_the_release_and_the_run_reads_it_back():
    from mlaga_fast.train.instruct_config import PRESETS, InstructConfig, build_config

    assert PRESETS["paper"]["lp_grouping"] == "paired"
    assert InstructConfig().lp_grouping == "separate"
    cfg = build_config({"data": ["x"], "align": "y"}, preset="paper")
    assert cfg.lp_grouping == "paired" and cfg.cross_task_attention

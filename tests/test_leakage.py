"""Leakage: evaluation prompts never show a val/test node's label, NC demonstrations are labelled
training nodes, and LP demonstrations never use a held-out (val/test) pair; for both template sets
(compact, and paper where demonstrations carry their own text, image and graph tokens)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

CANARY = "Zzcanary"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from helpers.tiny_llm import build_tiny_llm
    from mlaga_fast.data.synth import make_catalogue
    from mlaga_fast.llm import load_tokenizer, resolve_llm

    g = make_catalogue(None, nodes=300, classes=4, homophily=0.8, image_mismatch=0.0, text_mismatch=0.0, seed=3)
    folder = build_tiny_llm(tmp_path_factory.mktemp("llm"), list(g.texts) + list(g.class_names) + [CANARY])
    tok = load_tokenizer(resolve_llm(str(folder)))
    return g, tok, tmp_path_factory.mktemp("cache")


def _canary_graph(g):
    """Same graph, but every val/test node carries a label whose name appears nowhere else."""
    from mlaga_fast.data import MultimodalGraph

    labels = np.asarray(g.labels).copy()
    held = np.concatenate([np.asarray(g.val), np.asarray(g.test)])
    labels[held] = len(g.class_names)
    return MultimodalGraph(g.name, g.indptr, g.indices, texts=g.texts, labels=labels,
                           class_names=list(g.class_names) + [CANARY], train=g.train, val=g.val, test=g.test,
                           link_split=g.link_split)


@pytest.mark.parametrize("template_set", ["compact", "paper"])
@pytest.mark.parametrize("mode", ["ppr", "random"])
def test_nc_eval_prompts_show_no_held_out_label(setup, mode, template_set):
    from mlaga_fast.prompts import PromptBuilder
    from mlaga_fast.prompts.demos import NCDemos, ppr_demo_table
    from mlaga_fast.prompts.examples import nc_examples

    g0, tok, cache = setup
    g = _canary_graph(g0)
    train = set(np.asarray(g.train).tolist())
    b = PromptBuilder(tok, 2, g.texts, g.class_names, template_set=template_set, image_tokens=1)
    table = ppr_demo_table(g, k=8, cache_dir=cache, progress=False) if mode == "ppr" else None
    demos = NCDemos(g, mode, 3, seed=0, table=table)
    canary_id = tok(" " + CANARY, add_special_tokens=False).input_ids
    assert len(canary_id) == 1
    for split in ("val", "test"):
        nodes = np.asarray(getattr(g, split))
        exs = nc_examples(g, b, nodes, demos, with_label=False)
        for v, ex in zip(nodes.tolist(), exs):
            assert ex.answer_ids == []
            assert v not in ex.demos and set(ex.demos) <= train, (v, ex.demos)
            assert len(ex.demos) == 3
            # The canary class name appears once: in the candidate list, never as a demo's label.
            assert ex.prompt_ids.count(canary_id[0]) == 1
            # compact shows the demonstrations' categories only; paper also their tokens, after the target's
            assert ex.nodes == ([v] if template_set == "compact" else [v] + ex.demos)


def test_ppr_demos_are_training_nodes_ranked_by_ppr(setup):
    from mlaga_fast.ppr import ppr_topk
    from mlaga_fast.prompts.demos import ppr_demo_table, train_label_pool

    g, _, cache = setup
    table = ppr_demo_table(g, k=8, cache_dir=cache, progress=False)
    pool = set(train_label_pool(g).tolist())
    assert all(d in pool for d in table[table >= 0].tolist())
    # Independent reference: the PPR API on the training graph with a training-node mask.
    ip, ix = g.train_graph()
    mask = np.zeros(g.num_nodes, bool)
    mask[list(pool)] = True
    src = np.asarray(g.test[:20])
    ref, _ = ppr_topk(ip, ix, src, k=8, candidates=mask, exclude_source=True)
    np.testing.assert_array_equal(table[src], np.asarray(ref))
    # cached: a second call reads the file instead of recomputing
    assert list(Path(cache).glob("ppr_demos-k8.npz"))
    np.testing.assert_array_equal(ppr_demo_table(g, k=8, cache_dir=cache, progress=False), table)


@pytest.mark.parametrize("template_set", ["compact", "paper"])
def test_lp_demos_never_use_held_out_pairs(setup, template_set):
    from mlaga_fast.prompts import PromptBuilder
    from mlaga_fast.prompts.demos import LinkPairs
    from mlaga_fast.prompts.examples import lp_examples

    g, tok, _ = setup
    ls = g.link_split
    n = g.num_nodes
    key = lambda u, v: (min(u, v), max(u, v))  # noqa: E731
    held = {key(int(u), int(v)) for arr in (ls.val_pos, ls.val_neg, ls.test_pos, ls.test_neg) for u, v in arr.T}
    train_pos = {key(int(u), int(v)) for u, v in ls.train_pos.T}
    all_edges = {key(u, int(v)) for u in range(n) for v in g.indices[g.indptr[u]:g.indptr[u + 1]]}
    links = LinkPairs(g, seed=0)
    b = PromptBuilder(tok, 2, g.texts, g.class_names, template_set=template_set, image_tokens=1)
    seen_yes = seen_no = 0
    for split in ("val", "test"):
        pairs, y = links.eval_pairs(split)
        for ex in lp_examples(b, pairs, y, links, with_label=False):
            (u, v, yes), = ex.demos
            k = key(u, v)
            assert k not in held, (ex.query, ex.demos)
            assert k != key(*ex.query)
            if yes:
                assert k in train_pos
                seen_yes += 1
            else:
                assert k not in all_edges
                seen_no += 1
    assert seen_yes > 10 and seen_no > 10  # both kinds were exercised
    # Training pairs: positives from train_pos, negatives non-edges, none held out.
    pairs, y = links.train_pairs(400, np.random.default_rng(0))
    for (u, v), t in zip(pairs.T.tolist(), y.tolist()):
        assert key(u, v) not in held
        assert (key(u, v) in train_pos) if t else (key(u, v) not in all_edges)


def test_ppr_runs_on_training_graph_without_held_out_edges(setup):
    g, _, _ = setup
    ip, ix = g.train_graph()
    ls = g.link_split
    present = {(u, int(v)) for u in range(g.num_nodes) for v in ix[ip[u]:ip[u + 1]]}
    for arr in (ls.val_pos, ls.test_pos):
        for u, v in arr.T.tolist():
            assert (u, v) not in present and (v, u) not in present

"""Prompt building: template rendering, node placeholders, answer-only labels, truncation policy."""
from __future__ import annotations

import re
import string
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

WORDS = [f"w{i}" for i in range(60)]
TEXTS = [" ".join(WORDS[(3 * i + j) % 60] for j in range(30)) for i in range(10)]
CLASSES = ["Puzzles", "Board Games", "Dolls"]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from helpers.tiny_llm import build_tiny_llm
    from mlaga_fast.llm import load_tokenizer, resolve_llm

    folder = build_tiny_llm(tmp_path_factory.mktemp("llm"), WORDS + CLASSES)
    return load_tokenizer(resolve_llm(str(folder)))


def _words(s: str) -> list[str]:
    return re.findall(r"\w+|[^\w\s]+", s)


def _render(template: str, **kw) -> str:
    return template.format(**kw)


def _decode(tok, ids):
    # Placeholder positions are shown as NODE so the reference can be written as text.
    from mlaga_fast.llm.splice import NODE_TOKEN_ID

    return [("NODE" if i == NODE_TOKEN_ID else tok.convert_ids_to_tokens(i)) for i in ids]


def test_templates_hold_all_prompt_text_and_known_slots():
    from mlaga_fast.prompts import load_templates

    t = load_templates()
    allowed = {"text", "text_a", "text_b", "node", "node_a", "node_b", "label", "classes", "answer"}
    for sec in ("nc", "lp"):
        for k, v in t[sec].items():
            names = {n for _, n, _, _ in string.Formatter().parse(v) if n}
            assert names <= allowed, (sec, k, names)
    # No prompt wording is hard-coded in the builder: its string literals are only slot names.
    src = Path(__file__).resolve().parents[1] / "mlaga_fast" / "prompts" / "builder.py"
    code = src.read_text()
    for phrase in ("Category", "Answer", "bought together", "Related items"):
        assert phrase not in code


def test_nc_prompt_matches_template_and_labels_are_answer_only(tok):
    from mlaga_fast.llm.splice import IGNORE_INDEX, NODE_TOKEN_ID
    from mlaga_fast.prompts import PromptBuilder, TruncationPolicy, load_templates

    t = load_templates()["nc"]
    nq = 3
    b = PromptBuilder(tok, nq, TEXTS, CLASSES, TruncationPolicy(max_length=1000, target_text_tokens=5,
                                                                demo_text_tokens=2))
    ex = b.nc(0, [4, 7], [1, 2], label=2)
    node = " ".join(["NODE"] * nq)
    cut = lambda i, n: " " + " ".join(TEXTS[i].split()[:n])  # noqa: E731
    ref = (_render(t["target"], text=cut(0, 5), node=node) + t["demos_header"]
           + _render(t["demo"], text=cut(4, 2), node=node, label=CLASSES[1])
           + _render(t["demo"], text=cut(7, 2), node=node, label=CLASSES[2])
           + _render(t["question"], classes=t["class_sep"].join(CLASSES)))
    assert _decode(tok, ex.prompt_ids) == _words(ref)
    assert ex.nodes == [0, 4, 7] and ex.prompt_ids.count(NODE_TOKEN_ID) == 3 * nq
    assert _decode(tok, ex.answer_ids) == _words(_render(t["answer"], label="Dolls")) + ["</s>"]
    ids, labels = ex.train_arrays()
    assert ids == ex.prompt_ids + ex.answer_ids
    assert labels[:len(ex.prompt_ids)] == [IGNORE_INDEX] * len(ex.prompt_ids)
    assert labels[len(ex.prompt_ids):] == ex.answer_ids


def test_lp_prompt_matches_template(tok):
    from mlaga_fast.prompts import PromptBuilder, TruncationPolicy, load_templates

    t = load_templates()["lp"]
    b = PromptBuilder(tok, 1, TEXTS, CLASSES, TruncationPolicy(1000, 3, 1))
    ex = b.lp(1, 2, (3, 5, False), label=1)
    cut = lambda i, n: " " + " ".join(TEXTS[i].split()[:n])  # noqa: E731
    ref = (_render(t["demo"], text_a=cut(3, 1), node_a="NODE", text_b=cut(5, 1), node_b="NODE", answer=t["no"])
           + _render(t["node_a"], text=cut(1, 3), node="NODE") + _render(t["node_b"], text=cut(2, 3), node="NODE")
           + t["question"])
    assert _decode(tok, ex.prompt_ids) == _words(ref)
    assert ex.nodes == [3, 5, 1, 2]
    assert _decode(tok, ex.answer_ids) == _words(_render(t["answer"], answer=t["yes"])) + ["</s>"]


def test_truncation_never_cuts_node_tokens_or_answer(tok):
    from mlaga_fast.llm.splice import NODE_TOKEN_ID
    from mlaga_fast.prompts import PromptBuilder, TruncationPolicy

    nq = 4
    full = PromptBuilder(tok, nq, TEXTS, CLASSES, TruncationPolicy(10_000, 20, 10)).nc(0, [1, 2, 3], [0, 1, 2], 1)
    no_text = PromptBuilder(tok, nq, [""] * 10, CLASSES, TruncationPolicy(10_000, 20, 10)).nc(0, [], [], 1)
    floor = len(no_text.prompt_ids) + len(no_text.answer_ids)  # target node + scaffold + answer
    for max_len in range(floor, len(full.prompt_ids) + len(full.answer_ids) + 1, 7):
        b = PromptBuilder(tok, nq, TEXTS, CLASSES, TruncationPolicy(max_len, 20, 10))
        ex = b.nc(0, [1, 2, 3], [0, 1, 2], label=1)
        assert len(ex.prompt_ids) + len(ex.answer_ids) <= max_len
        assert ex.answer_ids == full.answer_ids
        assert ex.prompt_ids.count(NODE_TOKEN_ID) == nq * len(ex.nodes)
        assert ex.nodes == [0] + ex.demos and ex.demos == [1, 2, 3][:len(ex.demos)]  # least relevant dropped
    with pytest.raises(ValueError, match="max_length"):
        PromptBuilder(tok, nq, TEXTS, CLASSES, TruncationPolicy(floor - 1, 20, 10)).nc(0, [1], [0], 1)


def test_truncation_order_demo_text_then_demos_then_target_text(tok):
    from mlaga_fast.prompts import PromptBuilder, TruncationPolicy

    b_full = PromptBuilder(tok, 1, TEXTS, CLASSES, TruncationPolicy(10_000, 8, 8))
    ex_full = b_full.nc(0, [1, 2], [0, 1], 0)
    n_full = len(ex_full.prompt_ids) + len(ex_full.answer_ids)
    # 1 token short: demo texts shrink first, both demos and the whole target text stay.
    ex = PromptBuilder(tok, 1, TEXTS, CLASSES, TruncationPolicy(n_full - 1, 8, 8)).nc(0, [1, 2], [0, 1], 0)
    assert ex.demos == [1, 2]
    target_words = TEXTS[0].split()[:8]
    assert _decode(tok, ex.prompt_ids)[:20].count(target_words[-1]) >= 1


def test_eval_prompt_reserves_room_for_longest_candidate(tok):
    from mlaga_fast.prompts import PromptBuilder, TruncationPolicy

    b = PromptBuilder(tok, 2, TEXTS, CLASSES, TruncationPolicy(60, 20, 10))
    ex = b.nc(0, [1, 2], [0, 1], label=-1)
    assert ex.answer_ids == []
    assert len(ex.prompt_ids) + max(len(a) for a in b.nc_answers) <= 60

"""Prompt building: template rendering for both template sets, node placeholders (graph and image),
answer-only labels with and without a chat template, the truncation policy, `ask` prompts."""
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
SLOTS = {"text", "text_a", "text_b", "node", "node_a", "node_b", "image", "image_a", "image_b", "graph", "graph_a",
         "graph_b", "label", "classes", "num_classes", "num_demos", "i", "domain", "answer", "question"}


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from helpers.tiny_llm import build_tiny_llm
    from mlaga_fast.llm import load_tokenizer, resolve_llm

    folder = build_tiny_llm(tmp_path_factory.mktemp("llm"), WORDS + CLASSES + ["catalogue"])
    return load_tokenizer(resolve_llm(str(folder)))


@pytest.fixture(scope="module")
def chat_tok(tmp_path_factory):
    from helpers.tiny_llm import CHATML, build_tiny_llm
    from mlaga_fast.llm import load_tokenizer, resolve_llm

    folder = build_tiny_llm(tmp_path_factory.mktemp("chat"), WORDS + CLASSES + ["user", "assistant"],
                            chat_template=CHATML)
    return load_tokenizer(resolve_llm(str(folder)))


def _words(s: str) -> list[str]:
    return re.findall(r"\w+|[^\w\s]+", s)


def _decode(tok, ids):
    # Placeholder positions are shown as GRAPH / IMAGE so the reference can be written as text.
    from mlaga_fast.llm.splice import GRAPH_TOKEN_ID, IMAGE_TOKEN_ID

    names = {GRAPH_TOKEN_ID: "GRAPH", IMAGE_TOKEN_ID: "IMAGE"}
    return [names.get(i) or tok.convert_ids_to_tokens(i) for i in ids]


def _fill(template: str, nq: int, image: bool, **kw) -> str:
    """Render a template the way the builder should: node slots as placeholder words."""
    def node(kind):
        parts = (["IMAGE"] if image and kind in ("node", "image") else []) + (["GRAPH"] * nq if kind != "image" else [])
        return " " + " ".join(parts) + " "

    vals = {}
    for _, name, _, _ in string.Formatter().parse(template):
        if name and name.split("_")[0] in ("node", "image", "graph"):
            vals[name] = node(name.split("_")[0])
    return template.format(**{**vals, **kw})


def _cut(i, n):
    return " " + " ".join(TEXTS[i].split()[:n])


def test_templates_hold_all_prompt_text_and_known_slots():
    from mlaga_fast.prompts import load_templates

    t = load_templates()
    for name in ("compact", "paper"):
        for sec in ("nc", "lp", "ask"):
            for k, v in t[name][sec].items():
                names = {n for _, n, _, _ in string.Formatter().parse(v) if n}
                assert names <= SLOTS, (name, sec, k, names)
    # No prompt wording is hard-coded in the builder: its string literals are only slot names.
    code = (Path(__file__).resolve().parents[1] / "mlaga_fast" / "prompts" / "builder.py").read_text()
    for phrase in ("Category", "Categories", "Together", "Related", "product", "catalogue"):
        assert phrase not in code


def test_compact_nc_prompt_matches_template_and_labels_are_answer_only(tok):
    from mlaga_fast.llm.splice import GRAPH_TOKEN_ID, IGNORE_INDEX
    from mlaga_fast.prompts import PromptBuilder, TruncationPolicy, load_templates

    t = load_templates()["compact"]["nc"]
    b = PromptBuilder(tok, 3, TEXTS, CLASSES, TruncationPolicy(1000, 5, 2), image_tokens=1)
    ex = b.nc(0, [4, 7], [1, 2], label=2)
    classes = t["class_sep"].join(CLASSES)
    ref = (t["intro"].format(classes=classes) + t["demos_header"] + t["demo"].format(label=CLASSES[1])
           + t["demo"].format(label=CLASSES[2]) + _fill(t["question"], 3, True, text=_cut(0, 5)))
    assert _decode(tok, ex.prompt_ids) == _decode(tok, b.head) + _words(ref)
    assert ex.nodes == [0] and ex.prompt_ids.count(GRAPH_TOKEN_ID) == 3  # demos shown by category only
    assert _decode(tok, ex.answer_ids) == _words(t["answer"].format(label="Dolls")) + ["</s>"]
    ids, labels = ex.train_arrays()
    assert ids == ex.prompt_ids + ex.answer_ids
    assert labels[:len(ex.prompt_ids)] == [IGNORE_INDEX] * len(ex.prompt_ids)
    assert labels[len(ex.prompt_ids):] == ex.answer_ids
    none = b.nc(0, [], [], label=2)  # without demonstrations the header disappears too
    assert _decode(tok, none.prompt_ids) == _decode(tok, b.head) + _words(t["intro"].format(classes=classes)
                                                              + _fill(t["question"], 3, True, text=_cut(0, 5)))


def test_paper_nc_prompt_carries_text_image_and_graph_of_target_and_demos(tok):
    from mlaga_fast.prompts import PromptBuilder, TruncationPolicy, load_templates
    from mlaga_fast.prompts.builder import GRAPH_SLOT, IMAGE_SLOT

    t = load_templates()["paper"]["nc"]
    b = PromptBuilder(tok, 2, TEXTS, CLASSES, TruncationPolicy(2000, 6, 3), template_set="paper", image_tokens=1,
                      domain="catalogue")
    ex = b.nc(1, [3, 5, 2], [0, 1, 2], label=0)
    kw = dict(classes=", ".join(CLASSES), num_classes=3, num_demos=3, domain="catalogue")
    ref = _fill(t["intro"], 2, True, text=_cut(1, 6), **kw) + t["demos_header"].format(**kw)
    for i, (d, y) in enumerate(zip([3, 5, 2], [0, 1, 2])):
        ref += _fill(t["demo"], 2, True, text=_cut(d, 3), label=CLASSES[y], i=i + 1)
    ref += t["question"]
    assert _decode(tok, ex.prompt_ids) == _decode(tok, b.head) + _words(ref)
    assert ex.slots == [(IMAGE_SLOT, 1), (GRAPH_SLOT, 1), (IMAGE_SLOT, 3), (GRAPH_SLOT, 3), (IMAGE_SLOT, 5),
                        (GRAPH_SLOT, 5), (IMAGE_SLOT, 2), (GRAPH_SLOT, 2)]
    assert "3" in _decode(tok, ex.prompt_ids)  # the true number of classes is stated


@pytest.mark.parametrize("template_set", ["compact", "paper"])
def test_lp_prompt_matches_template(tok, template_set):
    from mlaga_fast.prompts import PromptBuilder, TruncationPolicy, load_templates

    t = load_templates()[template_set]["lp"]
    b = PromptBuilder(tok, 1, TEXTS, CLASSES, TruncationPolicy(1000, 3, 1), template_set=template_set,
                      domain="catalogue")
    ex = b.lp(1, 2, (3, 5, False), label=1)
    own = dict(text_a=_cut(1, 3), text_b=_cut(2, 3), domain="catalogue", num_demos=1)
    ref = (_fill(t["intro"], 1, False, **own) + t["demos_header"].format(num_demos=1)
           + _fill(t["demo"], 1, False, text_a=_cut(3, 1), text_b=_cut(5, 1), answer=t["no"], i=1)
           + _fill(t["question"], 1, False, **own))
    assert _decode(tok, ex.prompt_ids) == _decode(tok, b.head) + _words(ref)
    want = [3, 5, 1, 2] if template_set == "compact" else [1, 2, 3, 5]
    assert ex.nodes == want
    assert _decode(tok, ex.answer_ids) == _words(t["answer"].format(answer=t["yes"])) + ["</s>"]


def test_chat_template_wraps_the_prompt_and_keeps_answer_only_labels(chat_tok):
    from mlaga_fast.llm.splice import IGNORE_INDEX
    from mlaga_fast.prompts import PromptBuilder, TruncationPolicy, load_templates
    from mlaga_fast.prompts.builder import chat_wrapper

    t = load_templates()["compact"]["nc"]
    plain = PromptBuilder(chat_tok, 2, TEXTS, CLASSES, TruncationPolicy(1000, 0, 0))
    chat = PromptBuilder(chat_tok, 2, TEXTS, CLASSES, TruncationPolicy(1000, 0, 0), chat=True)
    before, after = chat_wrapper(chat_tok)
    assert before.startswith("<|im_start|>user") and after.endswith("assistant\n")
    a, c = plain.nc(0, [1], [1], label=1), chat.nc(0, [1], [1], label=1)
    head = chat_tok(before, add_special_tokens=False).input_ids
    tail = chat_tok(after, add_special_tokens=False).input_ids
    body = a.prompt_ids[len(plain.head):]
    assert c.prompt_ids == head + body + tail
    assert chat_tok.convert_ids_to_tokens(head[0]) == "<|im_start|>"
    # "assistant\n" + "Board Games": the template answer's leading space is dropped, the end token kept
    assert c.answer_ids == chat_tok(t["answer"].format(label="Board Games").lstrip(), add_special_tokens=False
                                    ).input_ids + [chat_tok.eos_token_id]
    ids, labels = c.train_arrays()
    assert labels == [IGNORE_INDEX] * len(c.prompt_ids) + c.answer_ids


def test_vicuna_alias_gets_the_v1_conversation_format():
    from mlaga_fast.llm.loading import VICUNA_V1_TEMPLATE
    from jinja2 import Template

    text = Template(VICUNA_V1_TEMPLATE).render(messages=[{"role": "user", "content": "MSG"}], bos_token="<s>",
                                               eos_token="</s>", add_generation_prompt=True)
    assert text.startswith("<s>A chat between a curious user and an artificial intelligence assistant.")
    assert text.endswith(" USER: MSG ASSISTANT:")


def test_truncation_never_cuts_node_tokens_or_answer(tok):
    from mlaga_fast.llm.splice import GRAPH_TOKEN_ID
    from mlaga_fast.prompts import PromptBuilder, TruncationPolicy

    nq = 4

    def build(max_len, texts=TEXTS, demos=(1, 2, 3)):
        b = PromptBuilder(tok, nq, texts, CLASSES, TruncationPolicy(max_len, 20, 10), template_set="paper",
                          image_tokens=1)
        return b.nc(0, list(demos), [0, 1, 2][:len(demos)], label=1)

    full = build(10_000)
    bare = build(10_000, texts=[""] * 10, demos=())
    floor = len(bare.prompt_ids) + len(bare.answer_ids)  # target node + scaffold + answer
    for max_len in range(floor, len(full.prompt_ids) + len(full.answer_ids) + 1, 7):
        ex = build(max_len)
        assert len(ex.prompt_ids) + len(ex.answer_ids) <= max_len
        assert ex.answer_ids == full.answer_ids
        assert ex.prompt_ids.count(GRAPH_TOKEN_ID) == nq * len(ex.nodes)
        assert ex.nodes == [0] + ex.demos and ex.demos == [1, 2, 3][:len(ex.demos)]  # least relevant dropped
    with pytest.raises(ValueError, match="max_length"):
        build(floor - 1, demos=(1,))


def test_truncation_order_demo_text_then_demos_then_target_text(tok):
    from mlaga_fast.prompts import PromptBuilder, TruncationPolicy

    def b(n):
        return PromptBuilder(tok, 1, TEXTS, CLASSES, TruncationPolicy(n, 8, 8), template_set="paper")

    ex_full = b(10_000).nc(0, [1, 2], [0, 1], 0)
    n_full = len(ex_full.prompt_ids) + len(ex_full.answer_ids)
    # 1 token short: demo texts shrink first, both demos and the whole target text stay.
    ex = b(n_full - 1).nc(0, [1, 2], [0, 1], 0)
    assert ex.demos == [1, 2]
    words = _decode(tok, ex.prompt_ids)
    assert all(w in words for w in TEXTS[0].split()[:8])


def test_eval_prompt_reserves_room_for_longest_candidate(tok):
    from mlaga_fast.prompts import PromptBuilder, TruncationPolicy

    b = PromptBuilder(tok, 2, TEXTS, CLASSES, TruncationPolicy(40, 20, 10))
    ex = b.nc(0, [1, 2], [0, 1], label=-1)
    assert ex.answer_ids == []
    assert len(ex.prompt_ids) + max(len(a) for a in b.nc_answers) <= 40


def test_ask_prompt_puts_the_users_question_after_the_node(tok):
    from mlaga_fast.prompts import PromptBuilder, TruncationPolicy, load_templates

    t = load_templates()["compact"]
    b = PromptBuilder(tok, 2, TEXTS, CLASSES, TruncationPolicy(1000, 4, 0))
    ex = b.ask([3], "w1 w2 w3", demos=[5], demo_labels=[2])
    ref = (t["nc"]["intro"].format(classes=", ".join(CLASSES)) + t["nc"]["demos_header"]
           + t["nc"]["demo"].format(label="Dolls") + _fill(t["ask"]["node"], 2, False, text=_cut(3, 4)) + "w1 w2 w3")
    assert _decode(tok, ex.prompt_ids) == _decode(tok, b.head) + _words(ref)
    assert ex.answer_ids == [] and ex.nodes == [3]
    pair = b.ask([3, 4], "w5")
    assert pair.nodes == [3, 4] and pair.task == "lp"
    with pytest.raises(ValueError, match="one node or a pair"):
        b.ask([1, 2, 3], "w1")

"""Build tokenized NC and LP prompts from the templates in templates.toml.

An Example holds the prompt's token ids, with placeholder ids wherever a node's tokens go (nq copies of
GRAPH_TOKEN_ID for its graph tokens, one IMAGE_TOKEN_ID for its image token when the run has an image
projector), the (kind, node) of every placeholder group in order of appearance (so the trainer can
splice the projected tokens in), and the answer's token ids (the answer followed by the end token).
Loss is taken on the answer ids only.

With a chat template, the rendered prompt is the user's message and the answer the assistant's: the
ids are [chat header | message | assistant header] + answer + end token, so answer-only labels hold.

Truncation policy (applied per prompt, in this order, until prompt + answer fits ``max_length``):
  1. every node text is first capped at its own budget: ``target_text_tokens`` for the target
     node(s) of a question, ``demo_text_tokens`` for demonstration nodes (the tail is cut);
  2. demonstration text budgets are halved repeatedly, down to zero;
  3. demonstrations are dropped, least relevant (last) first;
  4. target text budgets are halved repeatedly, down to zero;
  5. if it still does not fit, ValueError (max_length is too small for the node tokens + scaffold).
Node tokens, template text, the class list and the answer are never cut. For evaluation the answer
length used is that of the longest candidate, so every candidate's score sees the same prompt.
"""
from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

from mlaga_fast.llm.splice import GRAPH_TOKEN_ID, IGNORE_INDEX, IMAGE_TOKEN_ID
from mlaga_fast.utils.toml import loads as toml_loads

TEMPLATE_SETS = ("compact", "paper")
# How an LP prompt holds its pair: "separate" slots per node, or "paired": one graph slot of the pair's
# 2*nq tokens (node a's, then b's) and one image slot of both pictures, at node a's place (the release's).
LP_GROUPINGS = ("separate", "paired")
_REQUIRED = {
    "nc": ["intro", "demos_header", "demo", "question", "answer", "class_sep"],
    "lp": ["intro", "demos_header", "demo", "question", "answer", "yes", "no"],
    "ask": ["node", "pair", "question"],
}
IMAGE_SLOT, GRAPH_SLOT = 0, 1  # kinds of placeholder groups in Example.slots
TITLE_WORDS = 8  # a node description's title: at most this many words of the text's first clause
WORDING_LISTS = ("nc_train", "nc_held_out", "lp_train", "lp_held_out", "describe_train", "describe_held_out")
_SENTINEL = "\x00MLAGA_MESSAGE\x00"  # stands for the user's message when the chat template is rendered


def load_templates(path: str | Path | None = None) -> dict:
    """Read and check the template file (the packaged templates.toml by default)."""
    if path is None:
        text = resources.files("mlaga_fast.prompts").joinpath("templates.toml").read_text("utf-8")
        where = "mlaga_fast/prompts/templates.toml"
    else:
        text, where = Path(path).read_text("utf-8"), str(path)
    t = toml_loads(text)
    for name in TEMPLATE_SETS:
        for sec, keys in _REQUIRED.items():
            if sec not in t.get(name, {}):
                raise ValueError(f"templates {where}: missing section [{name}.{sec}]")
            for k in keys:
                if not isinstance(t[name][sec].get(k), str):
                    raise ValueError(f"templates {where}: missing string {name}.{sec}.{k}")
    w = t.get("wordings", {})
    for k in WORDING_LISTS:
        if not (isinstance(w.get(k), list) and w[k] and all(isinstance(q, str) and q.strip() for q in w[k])):
            raise ValueError(f"templates {where}: wordings.{k} must be a non-empty list of questions")
    for task in ("nc", "lp", "describe"):
        both = set(w[f"{task}_train"]) & set(w[f"{task}_held_out"])
        if both:
            raise ValueError(f"templates {where}: wordings {sorted(both)} are both trained on and held out ({task})")
    if not isinstance(w.get("description"), str) or "{label}" not in w["description"]:
        raise ValueError(f"templates {where}: wordings.description must be a string with {{label}}")
    return t


@dataclass
class TruncationPolicy:
    max_length: int = 384  # prompt + answer tokens, node tokens included
    target_text_tokens: int = 0
    demo_text_tokens: int = 0


@dataclass
class Example:
    task: str  # "nc" | "lp"
    prompt_ids: list[int]  # GRAPH_TOKEN_ID / IMAGE_TOKEN_ID at node slots
    slots: list[tuple[int, Any]]  # (IMAGE_SLOT | GRAPH_SLOT, node id, or (a, b) for a paired LP slot), in order
    target: int  # NC: class index; LP: 1 = Yes (edge), 0 = No
    answer_ids: list[int] = field(default_factory=list)  # answer + end token; empty for unlabelled eval
    query: tuple = ()  # (v,) for NC, (u, v) for LP
    demos: list = field(default_factory=list)  # NC: demo node ids; LP: [(u, v, yes)]
    dataset: int = 0  # index of the dataset in a multi-dataset run

    @property
    def nodes(self) -> list[int]:
        """Node (or paired LP pair) of every graph-token group, in order of appearance."""
        return [v for kind, v in self.slots if kind == GRAPH_SLOT]

    def train_arrays(self) -> tuple[list[int], list[int]]:
        """(input_ids, labels): the answer appended, labels IGNORE_INDEX outside the answer."""
        ids = self.prompt_ids + self.answer_ids
        return ids, [IGNORE_INDEX] * len(self.prompt_ids) + list(self.answer_ids)


def chat_wrapper(tokenizer) -> tuple[str, str] | None:
    """(text before, text after) the user's message in the tokenizer's chat template, or None."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    # enable_thinking=False: reasoning models (Qwen3) answer at once, after an empty reasoning block, as
    # their template renders a finished assistant turn; templates without the switch ignore it.
    from jinja2 import TemplateError

    try:
        full = tokenizer.apply_chat_template([{"role": "user", "content": _SENTINEL}], tokenize=False,
                                             add_generation_prompt=True, enable_thinking=False)
    except TemplateError as e:  # the template's raise_exception(...), or a broken template
        raise ValueError(f"llm: the tokenizer's chat template refuses a conversation of one user turn ({e}); "
                         f"use --chat-template none or give the tokenizer another template") from None
    if full.count(_SENTINEL) != 1:
        raise ValueError("llm: the tokenizer's chat template does not place the user's message once")
    before, after = full.split(_SENTINEL)
    return before, after


class PromptBuilder:
    """Turns (node ids, texts, labels) into Examples. texts: a sequence indexable by node id."""

    def __init__(self, tokenizer, nq: int, texts: Sequence[str] | None, class_names: Sequence[str],
                 policy: TruncationPolicy | None = None, templates: dict | None = None, *,
                 template_set: str = "compact", image_tokens: int = 0, chat: bool = False, domain: str = "",
                 lp_grouping: str = "separate") -> None:
        if nq < 1:
            raise ValueError(f"nq: must be >= 1, got {nq}")
        if template_set not in TEMPLATE_SETS:
            raise ValueError(f"template_set: {template_set!r} is not one of {list(TEMPLATE_SETS)}")
        if image_tokens not in (0, 1):
            raise ValueError(f"image_tokens: must be 0 or 1, got {image_tokens}")
        if lp_grouping not in LP_GROUPINGS:
            raise ValueError(f"lp_grouping: {lp_grouping!r} is not one of {list(LP_GROUPINGS)}")
        self.lp_grouping = lp_grouping
        self.tok = tokenizer
        self.nq, self.image_tokens = nq, image_tokens
        self.texts = texts
        self.class_names = [str(c) for c in class_names]
        self.policy = policy or TruncationPolicy()
        loaded = templates or load_templates()
        self.t, self.wordings = loaded[template_set], loaded.get("wordings", {})
        self.domain = domain
        self._text_ids: dict[int, list[int]] = {}
        self._lit = lru_cache(maxsize=4096)(self._encode)
        self.eos = tokenizer.eos_token_id
        wrap = chat_wrapper(tokenizer) if chat else None
        if wrap is not None:
            self.head, self.tail = list(self._encode(wrap[0])), list(self._encode(wrap[1]))
            self._strip_answer = wrap[1][-1:].isspace()  # "assistant\n" + "Yes", but "ASSISTANT:" + " Yes"
        else:
            probe = tokenizer("a").input_ids
            bos = tokenizer.bos_token_id
            self.head = [bos] if bos is not None and probe and probe[0] == bos else []
            self.tail, self._strip_answer = [], False
        self._classes = self.t["nc"]["class_sep"].join(self.class_names)
        self.nc_answers = [self.answer_ids("nc", c) for c in self.class_names]  # per class
        self.lp_answers = [self.answer_ids("lp", self.t["lp"]["no"]), self.answer_ids("lp", self.t["lp"]["yes"])]

    # -- tokens ---------------------------------------------------------------------------------
    def _encode(self, s: str) -> tuple[int, ...]:
        return tuple(self.tok(s, add_special_tokens=False).input_ids) if s else ()

    def text_ids(self, node: int) -> list[int]:
        """The node's text tokens, capped at the largest budget (cut later per role)."""
        ids = self._text_ids.get(node)
        if ids is None:
            cap = max(self.policy.target_text_tokens, self.policy.demo_text_tokens)
            raw = "" if self.texts is None or cap == 0 else str(self.texts[node] or "")
            raw = " ".join(raw.split())  # collapse newlines/tabs: prompts stay one item per line
            # Truncate the string first (a generous 8 chars/token), so huge texts tokenize fast.
            ids = list(self._encode(" " + raw[: cap * 8]))[:cap] if raw else []
            self._text_ids[node] = ids
        return ids

    def answer_ids(self, task: str, value: str) -> list[int]:
        key = "label" if task == "nc" else "answer"
        text = self.t[task]["answer"].format(**{key: value})
        return list(self._encode(text.lstrip() if self._strip_answer else text)) + [self.eos]

    def _render(self, template: str, texts: dict, nodes: dict, subs: dict, out: list, slots: list) -> None:
        """Append the template's tokens to out; node slots become placeholders (recorded in slots)."""
        for literal, name, _, _ in string.Formatter().parse(template):
            if literal:
                out.extend(self._lit(literal))
            if name is None:
                continue
            kind, _, which = name.partition("_")
            if kind in ("node", "image", "graph") and name.replace(kind, "node", 1) in nodes:
                v, width = nodes[name.replace(kind, "node", 1)], 1
                if self.lp_grouping == "paired" and which in ("a", "b") and {"node_a", "node_b"} <= set(nodes):
                    if which == "b":
                        continue  # the pair's tokens all sit at its first node's slots
                    v, width = (nodes["node_a"], nodes["node_b"]), 2
                if kind in ("node", "image") and self.image_tokens:
                    out.extend([IMAGE_TOKEN_ID] * (self.image_tokens * width))
                    slots.append((IMAGE_SLOT, v))
                if kind in ("node", "graph"):
                    out.extend([GRAPH_TOKEN_ID] * (self.nq * width))
                    slots.append((GRAPH_SLOT, v))
            elif name in texts:
                out.extend(texts[name])
            elif name in subs:
                out.extend(self._lit(str(subs[name])))
            else:
                raise ValueError(f"template slot {{{name}}} has no value (template: {template!r})")

    def _subs(self, **kw) -> dict:
        return {"classes": self._classes, "num_classes": len(self.class_names), "domain": self.domain, **kw}

    # -- NC ---------------------------------------------------------------------------------------
    def nc(self, target: int, demos: Sequence[int], demo_labels: Sequence[int], label: int = -1,
           dataset: int = 0) -> Example:
        """demo_labels: class index of each demo (training nodes only; the caller guarantees it)."""
        t = self.t["nc"]
        ans = self.nc_answers[label] if label >= 0 else []
        ans_len = len(ans) if ans else max(len(a) for a in self.nc_answers)
        tcap, dcap, m = self.policy.target_text_tokens, self.policy.demo_text_tokens, len(demos)
        while True:
            ids, slots = list(self.head), []
            own = {"text": self.text_ids(target)[:tcap]}
            self._render(t["intro"], own, {"node": target}, self._subs(num_demos=m), ids, slots)
            if m:
                self._render(t["demos_header"], {}, {}, self._subs(num_demos=m), ids, slots)
                for i, (d, y) in enumerate(zip(demos[:m], demo_labels[:m])):
                    self._render(t["demo"], {"text": self.text_ids(d)[:dcap]}, {"node": d},
                                 self._subs(label=self.class_names[y], i=i + 1, num_demos=m), ids, slots)
            self._render(t["question"], own, {"node": target}, self._subs(num_demos=m), ids, slots)
            ids.extend(self.tail)
            if len(ids) + ans_len <= self.policy.max_length:
                return Example("nc", ids, slots, int(label), list(ans), (int(target),),
                               [int(d) for d in demos[:m]], dataset)
            tcap, dcap, m = self._shrink(tcap, dcap, m, len(ids) + ans_len, f"nc target {target}")

    # -- LP ---------------------------------------------------------------------------------------
    def lp(self, a: int, b: int, demo: tuple | None, label: int = -1, dataset: int = 0) -> Example:
        """demo: (u, v, yes: bool) drawn from training edges / training non-edges, or None."""
        t = self.t["lp"]
        ans = self.lp_answers[label] if label >= 0 else []
        ans_len = len(ans) if ans else max(len(x) for x in self.lp_answers)
        tcap, dcap, m = self.policy.target_text_tokens, self.policy.demo_text_tokens, int(demo is not None)
        while True:
            ids, slots = list(self.head), []
            own_t = {"text_a": self.text_ids(a)[:tcap], "text_b": self.text_ids(b)[:tcap]}
            own_n = {"node_a": a, "node_b": b}
            self._render(t["intro"], own_t, own_n, self._subs(num_demos=m), ids, slots)
            if m:
                u, v, yes = demo
                self._render(t["demos_header"], {}, {}, self._subs(num_demos=m), ids, slots)
                self._render(t["demo"], {"text_a": self.text_ids(u)[:dcap], "text_b": self.text_ids(v)[:dcap]},
                             {"node_a": u, "node_b": v},
                             self._subs(answer=t["yes"] if yes else t["no"], i=1, num_demos=m), ids, slots)
            self._render(t["question"], own_t, own_n, self._subs(num_demos=m), ids, slots)
            ids.extend(self.tail)
            if len(ids) + ans_len <= self.policy.max_length:
                demos = [(int(demo[0]), int(demo[1]), bool(demo[2]))] if m else []
                return Example("lp", ids, slots, int(label), list(ans), (int(a), int(b)), demos, dataset)
            tcap, dcap, m = self._shrink(tcap, dcap, m, len(ids) + ans_len, f"lp pair ({a}, {b})")

    # -- free questions (``mlaga-fast ask``) --------------------------------------------------------
    def ask(self, nodes: Sequence[int], question: str, demos: Sequence[int] = (), demo_labels: Sequence[int] = (),
            *, answer: Sequence[int] = (), target: int = -1, dataset: int = 0) -> Example:
        """One node (with its NC intro and optional demonstrations) or a pair (LP intro), then the user's
        question. ``answer``: the answer's token ids (end token included) for a training prompt, else empty
        (free generation); ``target``: the class (NC) or 1/0 (LP) it stands for, -1 when none."""
        if len(nodes) not in (1, 2):
            raise ValueError(f"ask: one node or a pair, got {len(nodes)} nodes")
        task = "nc" if len(nodes) == 1 else "lp"
        t, a = self.t[task], self.t["ask"]
        tcap, dcap = self.policy.target_text_tokens, self.policy.demo_text_tokens
        if task == "nc":
            own_t, own_n = {"text": self.text_ids(nodes[0])[:tcap]}, {"node": nodes[0]}
        else:
            own_t = {"text_a": self.text_ids(nodes[0])[:tcap], "text_b": self.text_ids(nodes[1])[:tcap]}
            own_n = {"node_a": nodes[0], "node_b": nodes[1]}
        m = len(demos) if task == "nc" else 0
        ids, slots = list(self.head), []
        self._render(t["intro"], own_t, own_n, self._subs(num_demos=m), ids, slots)
        if m:
            self._render(t["demos_header"], {}, {}, self._subs(num_demos=m), ids, slots)
            for i, (d, y) in enumerate(zip(demos, demo_labels)):
                self._render(t["demo"], {"text": self.text_ids(d)[:dcap]}, {"node": d},
                             self._subs(label=self.class_names[y], i=i + 1, num_demos=m), ids, slots)
        self._render(a["node" if task == "nc" else "pair"], own_t, own_n, self._subs(num_demos=m), ids, slots)
        self._render(a["question"], {}, {}, self._subs(question=" ".join(question.split())), ids, slots)
        ids.extend(self.tail)
        if len(ids) + len(answer) > self.policy.max_length:
            raise ValueError(f"ask: the prompt needs {len(ids) + len(answer)} tokens, more than max_length "
                             f"{self.policy.max_length}; shorten the question")
        return Example(task, ids, slots, int(target), list(answer), tuple(int(v) for v in nodes),
                       [int(d) for d in demos], dataset)

    def description_ids(self, node: int, label: int) -> list[int]:
        """The answer of a node-description prompt: ``wordings.description`` (its category and title) + end."""
        raw = " ".join(str(self.texts[node] or "").split()) if self.texts is not None else ""
        title = " ".join(re.split(r"[.,;:!?]", raw, maxsplit=1)[0].split()[:TITLE_WORDS])
        text = self.wordings["description"].format(label=self.class_names[label], title=title).rstrip(": ")
        return self.answer_text_ids(text)

    def answer_text_ids(self, text: str) -> list[int]:
        """A free answer's token ids as the LLM must produce them after the prompt, end token included."""
        return list(self._encode(text if self._strip_answer else " " + text)) + [self.eos]

    def _shrink(self, tcap: int, dcap: int, m: int, length: int, what: str) -> tuple[int, int, int]:
        if dcap > 0 and m > 0:
            return tcap, dcap // 2, m
        if m > 0:
            return tcap, dcap, m - 1
        if tcap > 0:
            return tcap // 2, dcap, m
        raise ValueError(
            f"max_length={self.policy.max_length}: {what} needs {length} tokens even with no text and no "
            f"demonstrations (node tokens, template and answer are never cut); raise max_length"
        )

"""Build tokenized NC and LP prompts from the templates in templates.toml.

An Example holds the prompt's token ids, with nq copies of NODE_TOKEN_ID wherever a node appears,
the node ids in order of appearance (so the trainer can splice their projected tokens in), and the
answer's token ids (the answer string followed by eos). Loss is taken on the answer ids only.

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

import string
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Sequence

from mlaga_fast.llm.splice import IGNORE_INDEX, NODE_TOKEN_ID

_REQUIRED = {
    "nc": ["target", "demos_header", "demo", "question", "answer", "class_sep"],
    "lp": ["node_a", "node_b", "demo", "question", "answer", "yes", "no"],
}


def load_templates(path: str | Path | None = None) -> dict:
    """Read and check the template file (the packaged templates.toml by default)."""
    if path is None:
        text = resources.files("mlaga_fast.prompts").joinpath("templates.toml").read_text("utf-8")
        where = "mlaga_fast/prompts/templates.toml"
    else:
        text, where = Path(path).read_text("utf-8"), str(path)
    t = tomllib.loads(text)
    for sec, keys in _REQUIRED.items():
        if sec not in t:
            raise ValueError(f"templates {where}: missing section [{sec}]")
        for k in keys:
            if not isinstance(t[sec].get(k), str):
                raise ValueError(f"templates {where}: missing string {sec}.{k}")
    return t


@dataclass
class TruncationPolicy:
    max_length: int = 384  # prompt + answer tokens, node tokens included
    target_text_tokens: int = 24
    demo_text_tokens: int = 12


@dataclass
class Example:
    task: str  # "nc" | "lp"
    prompt_ids: list[int]  # NODE_TOKEN_ID at node slots
    nodes: list[int]  # node ids in order of appearance (nq slots each)
    target: int  # NC: class index; LP: 1 = Yes (edge), 0 = No
    answer_ids: list[int] = field(default_factory=list)  # answer + eos; empty for unlabelled eval
    query: tuple = ()  # (v,) for NC, (u, v) for LP
    demos: list = field(default_factory=list)  # NC: demo node ids; LP: [(u, v, yes)]
    dataset: int = 0  # index of the dataset in a multi-dataset run

    def train_arrays(self) -> tuple[list[int], list[int]]:
        """(input_ids, labels): the answer appended, labels IGNORE_INDEX outside the answer."""
        ids = self.prompt_ids + self.answer_ids
        return ids, [IGNORE_INDEX] * len(self.prompt_ids) + list(self.answer_ids)


class PromptBuilder:
    """Turns (node ids, texts, labels) into Examples. texts: a sequence indexable by node id."""

    def __init__(self, tokenizer, nq: int, texts: Sequence[str] | None, class_names: Sequence[str],
                 policy: TruncationPolicy | None = None, templates: dict | None = None) -> None:
        if nq < 1:
            raise ValueError(f"nq: must be >= 1, got {nq}")
        self.tok = tokenizer
        self.nq = nq
        self.texts = texts
        self.class_names = [str(c) for c in class_names]
        self.policy = policy or TruncationPolicy()
        self.t = templates or load_templates()
        self._text_ids: dict[int, list[int]] = {}
        self._lit = lru_cache(maxsize=4096)(self._encode)
        probe = tokenizer("a").input_ids
        bos = tokenizer.bos_token_id
        self.prefix = [bos] if bos is not None and probe and probe[0] == bos else []
        self.eos = tokenizer.eos_token_id
        cls_list = self.t["nc"]["class_sep"].join(self.class_names)
        self._classes = cls_list
        self.nc_answers = [self.answer_ids("nc", c) for c in self.class_names]  # per class
        self.lp_answers = [self.answer_ids("lp", self.t["lp"]["no"]), self.answer_ids("lp", self.t["lp"]["yes"])]

    # -- tokens ---------------------------------------------------------------------------------
    def _encode(self, s: str) -> tuple[int, ...]:
        return tuple(self.tok(s, add_special_tokens=False).input_ids) if s else ()

    def text_ids(self, node: int) -> list[int]:
        """The node's text tokens, capped at the largest budget (cut later per role)."""
        ids = self._text_ids.get(node)
        if ids is None:
            raw = "" if self.texts is None else str(self.texts[node] or "")
            raw = " ".join(raw.split())  # collapse newlines/tabs: prompts stay one item per line
            cap = max(self.policy.target_text_tokens, self.policy.demo_text_tokens)
            # Truncate the string first (a generous 8 chars/token), so huge texts tokenize fast.
            ids = list(self._encode(" " + raw[: cap * 8]))[:cap] if raw else []
            self._text_ids[node] = ids
        return ids

    def answer_ids(self, task: str, value: str) -> list[int]:
        key = "label" if task == "nc" else "answer"
        return list(self._encode(self.t[task]["answer"].format(**{key: value}))) + [self.eos]

    def _render(self, template: str, texts: dict, nodes: dict, subs: dict, out: list, order: list) -> None:
        """Append the template's tokens to out; node slots become nq placeholders (ids in order)."""
        for literal, name, _, _ in string.Formatter().parse(template):
            if literal:
                out.extend(self._lit(literal))
            if name is None:
                continue
            if name in nodes:
                out.extend([NODE_TOKEN_ID] * self.nq)
                order.append(nodes[name])
            elif name in texts:
                out.extend(texts[name])
            elif name in subs:
                out.extend(self._lit(subs[name]))
            else:
                raise ValueError(f"template slot {{{name}}} has no value (template: {template!r})")

    # -- NC ---------------------------------------------------------------------------------------
    def nc(self, target: int, demos: Sequence[int], demo_labels: Sequence[int], label: int = -1,
           dataset: int = 0) -> Example:
        """demo_labels: class index of each demo (training nodes only; the caller guarantees it)."""
        t = self.t["nc"]
        ans = self.nc_answers[label] if label >= 0 else []
        ans_len = len(ans) if ans else max(len(a) for a in self.nc_answers)
        tcap, dcap, m = self.policy.target_text_tokens, self.policy.demo_text_tokens, len(demos)
        while True:
            ids, order = list(self.prefix), []
            self._render(t["target"], {"text": self.text_ids(target)[:tcap]}, {"node": target}, {}, ids, order)
            if m:
                ids.extend(self._lit(t["demos_header"]))
                for d, y in zip(demos[:m], demo_labels[:m]):
                    self._render(t["demo"], {"text": self.text_ids(d)[:dcap]}, {"node": d},
                                 {"label": self.class_names[y]}, ids, order)
            self._render(t["question"], {}, {}, {"classes": self._classes}, ids, order)
            if len(ids) + ans_len <= self.policy.max_length:
                return Example("nc", ids, order, int(label), list(ans), (int(target),),
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
            ids, order = list(self.prefix), []
            if m:
                u, v, yes = demo
                self._render(t["demo"], {"text_a": self.text_ids(u)[:dcap], "text_b": self.text_ids(v)[:dcap]},
                             {"node_a": u, "node_b": v}, {"answer": t["yes"] if yes else t["no"]}, ids, order)
            self._render(t["node_a"], {"text": self.text_ids(a)[:tcap]}, {"node": a}, {}, ids, order)
            self._render(t["node_b"], {"text": self.text_ids(b)[:tcap]}, {"node": b}, {}, ids, order)
            self._render(t["question"], {}, {}, {}, ids, order)
            if len(ids) + ans_len <= self.policy.max_length:
                demos = [(int(demo[0]), int(demo[1]), bool(demo[2]))] if m else []
                return Example("lp", ids, order, int(label), list(ans), (int(a), int(b)), demos, dataset)
            tcap, dcap, m = self._shrink(tcap, dcap, m, len(ids) + ans_len, f"lp pair ({a}, {b})")

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

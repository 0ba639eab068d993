"""Stage 2 examples: the prompt builder of a run's settings, and NC / LP prompts built with it.

Training (``mlaga_fast.train.instruct_examples``), evaluation and the assistant all build their prompts
here, so a run is read with exactly the prompts it was trained on.
"""
from __future__ import annotations

from dataclasses import is_dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from mlaga_fast.config import config_to_dict
from mlaga_fast.prompts.builder import Example, PromptBuilder, TruncationPolicy, load_templates
from mlaga_fast.prompts.demos import LinkPairs, NCDemos
from mlaga_fast.utils.io import fingerprint

__all__ = ["builder_for", "templates_fingerprint", "nc_examples", "lp_examples", "asked_nc_examples",
           "asked_lp_examples", "description_examples", "cycle_wordings"]


def templates_fingerprint(template_set: str = "compact") -> str:
    """What a run records of its prompt templates; loading refuses a run whose templates changed since."""
    return fingerprint(load_templates()[template_set])


def builder_for(settings: Mapping[str, Any] | Any, tokenizer, graph, nq: int, image_tokens: int, *,
                warmup: bool = False) -> PromptBuilder:
    """The prompt builder of a run's settings (an InstructConfig or a run's saved config dict). The
    warm-up builder keeps the node's tokens and the question only (no node texts)."""
    c = config_to_dict(settings) if is_dataclass(settings) else settings
    policy = (TruncationPolicy(c["max_length"], 0, 0) if warmup
              else TruncationPolicy(c["max_length"], c["target_text_tokens"], c["demo_text_tokens"]))
    meta = getattr(graph, "meta", None) or {}
    return PromptBuilder(tokenizer, nq, graph.texts, graph.class_names, policy, template_set=c["template_set"],
                         image_tokens=image_tokens, chat=c["chat_template"] == "auto",
                         domain=str(meta.get("domain") or graph.name),
                         lp_grouping=c.get("lp_grouping", "separate"))  # runs made before the option: separate


def nc_examples(graph, builder: PromptBuilder, targets: np.ndarray, demos: NCDemos, *,
                with_label: bool, dataset: int = 0, drop_demos: np.ndarray | None = None,
                relabel: dict[int, np.ndarray] | None = None) -> list[Example]:
    """NC prompts for ``targets``; ``drop_demos`` [len(targets)] bool shows those prompts no demonstrations.
    Each example keeps its node's label as ``target`` (-1 when unlabelled); with_label puts it after the
    prompt as the answer to train on. ``relabel`` {j: perm [C]} names class c "perm[c]" in the j-th prompt's
    demonstrations and answer (training only; its ``target`` is then the renamed class, the one it answers)."""
    labels = np.asarray(graph.labels)
    out = []
    for j, v in enumerate(np.asarray(targets, dtype=np.int64).tolist()):
        d, dy = ([], []) if drop_demos is not None and drop_demos[j] else demos(v)
        y = int(labels[v]) if labels.size else -1
        if with_label and y < 0:
            raise ValueError(f"nc target node {v} has no label (-1)")
        if relabel is not None and j in relabel:
            perm = relabel[j]
            dy, y = [int(perm[c]) for c in dy], int(perm[y])
        out.append(builder.nc(v, d, dy, label=y if with_label else -1, dataset=dataset))
        out[-1].target = y  # eval keeps the truth for scoring; it is never in the prompt ids
    return out


def lp_examples(builder: PromptBuilder, pairs: np.ndarray, labels: np.ndarray, links: LinkPairs | None, *,
                with_label: bool, dataset: int = 0, demo_key: int = 0) -> list[Example]:
    out = []
    for j in range(pairs.shape[1]):
        a, b, y = int(pairs[0, j]), int(pairs[1, j]), int(labels[j])
        demo = links.demo(a, b, demo_key) if links is not None else None
        out.append(builder.lp(a, b, demo, label=y if with_label else -1, dataset=dataset))
        out[-1].target = y
    return out


def cycle_wordings(questions: Sequence[str], n: int, rng: np.random.Generator | None = None) -> list[str]:
    """n questions: drawn at random (training, seeded) or, without ``rng``, cycled in order (evaluation, so
    that each wording is asked of every len(questions)-th example)."""
    if rng is not None:
        return [questions[i] for i in rng.integers(0, len(questions), n)]
    return [questions[i % len(questions)] for i in range(n)]


def asked_nc_examples(graph, builder: PromptBuilder, targets: np.ndarray, demos: NCDemos, questions: Sequence[str],
                      *, with_label: bool, dataset: int = 0) -> list[Example]:
    """NC asked in ``ask``'s layout with free wordings (``questions``: one per target); the answer is the class
    name, as in ``nc_examples``, so constrained scoring reads them alike."""
    labels = np.asarray(graph.labels)
    out = []
    for v, q in zip(np.asarray(targets, dtype=np.int64).tolist(), questions):
        y = int(labels[v]) if labels.size else -1
        if with_label and y < 0:
            raise ValueError(f"nc target node {v} has no label (-1)")
        d, dy = demos(v)
        out.append(builder.ask([v], q, d, dy, answer=builder.nc_answers[y] if with_label else (), target=y,
                               dataset=dataset))
    return out


def asked_lp_examples(builder: PromptBuilder, pairs: np.ndarray, labels: np.ndarray, questions: Sequence[str], *,
                      with_label: bool, dataset: int = 0) -> list[Example]:
    """LP asked in ``ask``'s layout with free wordings; pairs [2, n], labels [n] (1 = linked)."""
    return [builder.ask([int(pairs[0, j]), int(pairs[1, j])], questions[j],
                        answer=builder.lp_answers[int(labels[j])] if with_label else (), target=int(labels[j]),
                        dataset=dataset) for j in range(pairs.shape[1])]


def description_examples(graph, builder: PromptBuilder, targets: np.ndarray, questions: Sequence[str], *,
                         with_label: bool, dataset: int = 0) -> list[Example]:
    """Node-description prompts (LLaGA's task): ``ask``'s layout, answered with the node's category and title
    (``PromptBuilder.description_ids``); ``target`` keeps the class, which scoring looks for in the answer."""
    labels = np.asarray(graph.labels)
    out = []
    for v, q in zip(np.asarray(targets, dtype=np.int64).tolist(), questions):
        y = int(labels[v])
        if y < 0:
            raise ValueError(f"description target node {v} has no label (-1)")
        out.append(builder.ask([v], q, answer=builder.description_ids(v, y) if with_label else (), target=y,
                               dataset=dataset))
    return out


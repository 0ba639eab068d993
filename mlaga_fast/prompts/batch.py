"""Stage 2 batches: length-bucketed batch plans and collation around a shared prefix, with the node
inputs each prompt's placeholders read gathered into the batch (``mlaga_fast.models.graph_llm`` projects
and splices them, then runs the LLM).

A batch holds prompts of one (dataset, task). Their longest common token prefix (up to the first
node placeholder) runs once through the LLM (``mlaga_fast.llm.forward``); the rest of each row is
left-padded, so every answer ends at the last column and the LM head is evaluated only there. Batches
are cut from length-sorted windows of the shuffled examples, so rows of one batch have similar
lengths and little padding; the order of the batches is shuffled again, all from (seed, epoch).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from mlaga_fast.llm.splice import IGNORE_INDEX
from mlaga_fast.prompts.builder import GRAPH_SLOT, IMAGE_SLOT, Example

__all__ = ["Batch", "NodeInputs", "collate", "plan_batches", "shared_prefix", "answer_token_count", "BUCKET_WINDOW"]

BUCKET_WINDOW = 16  # batches per length-sorted window: enough to match lengths, little enough to mix


def plan_batches(examples: Sequence[Example], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Index lists of one epoch's batches: per (dataset, task) group a seeded shuffle, length-sorted within
    windows of BUCKET_WINDOW batches, cut into batches; then the batches are shuffled across groups."""
    groups: dict[tuple[int, str], list[int]] = {}
    for i, ex in enumerate(examples):
        groups.setdefault((ex.dataset, ex.task), []).append(i)
    rng = np.random.default_rng([seed, epoch, 11])
    batches: list[list[int]] = []
    for key in sorted(groups):
        idx = np.asarray(groups[key])[rng.permutation(len(groups[key]))]
        win = BUCKET_WINDOW * batch_size
        for lo in range(0, idx.size, win):
            chunk = idx[lo:lo + win]
            lengths = np.array([len(examples[i].prompt_ids) + len(examples[i].answer_ids) for i in chunk])
            chunk = chunk[np.argsort(lengths, kind="stable")]
            batches += [chunk[b:b + batch_size].tolist() for b in range(0, chunk.size, batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


@dataclass
class NodeInputs:
    """What the projectors read for one dataset's nodes."""
    tokens: np.ndarray  # [N, nq, d] graph tokens (fp16 memmap)
    image: np.ndarray | None = None  # [N, Dp] pooled image vectors (modality projectors only)


@dataclass
class Batch:
    """One (dataset, task) batch: a shared prefix, left-padded rows, answer targets at the end."""
    task: str
    prefix: list[int]  # token ids every row starts with (run once)
    input_ids: torch.Tensor  # [B, T] the rest of each row, left-padded; placeholders kept
    mask: torch.Tensor  # [B, T] 1 on real tokens
    keep: int  # logits needed at the last `keep` positions
    labels: torch.Tensor | None  # [B, keep] answer tokens right-aligned, IGNORE_INDEX elsewhere
    examples: list[Example] = field(default_factory=list)
    graph: torch.Tensor | None = None  # [K, nq, d] float32: the graph tokens of the K graph slots, in order
    image: torch.Tensor | None = None  # [M, Dp] float32: the image vectors of the M image slots, in order


def shared_prefix(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the longest common prefix of ``seqs`` that holds no placeholder (negative id) and leaves
    every sequence at least one token."""
    n = min(len(s) for s in seqs) - 1
    first = seqs[0]
    p = 0
    while p < n and first[p] >= 0 and all(s[p] == first[p] for s in seqs):
        p += 1
    return p


def _gather(examples: Sequence[Example], inputs: Sequence[NodeInputs], kind: int) -> torch.Tensor | None:
    """Graph slots: [K, nq, d], or [K, 2 * nq, d] for paired LP slots (node a's tokens, then b's). Image
    slots: [M, Dp], or [M, 2, Dp] for paired ones."""
    rows = [(ex.dataset, v) for ex in examples for k, v in ex.slots if k == kind]
    if not rows:
        return None
    src = [(inp.tokens if kind == GRAPH_SLOT else inp.image) for inp in inputs]

    def one(d: int, v) -> np.ndarray:
        if not isinstance(v, tuple):
            return np.asarray(src[d][v], dtype=np.float32)
        parts = [np.asarray(src[d][u], dtype=np.float32) for u in v]
        return np.concatenate(parts) if kind == GRAPH_SLOT else np.stack(parts)

    return torch.from_numpy(np.stack([one(d, v) for d, v in rows]))


def collate(examples: Sequence[Example], pad_id: int, inputs: Sequence[NodeInputs] = (), *, with_answer: bool,
            use_prefix: bool = True) -> Batch:
    """with_answer: rows are prompt + answer[:-1] and labels the answer (training); else the prompt alone.
    ``inputs``: one NodeInputs per dataset index of the examples; their slots' rows are gathered here."""
    if not examples:
        raise ValueError("collate: empty batch")
    tasks = {ex.task for ex in examples}
    if len(tasks) != 1:
        raise ValueError(f"collate: a batch holds one task, got {sorted(tasks)}")
    if with_answer and any(not ex.answer_ids for ex in examples):
        raise ValueError("collate: with_answer needs labelled examples (answer_ids empty)")
    seqs = [list(ex.prompt_ids) + (list(ex.answer_ids[:-1]) if with_answer else []) for ex in examples]
    P = shared_prefix([ex.prompt_ids for ex in examples]) if use_prefix else 0
    rest = [s[P:] for s in seqs]
    B, T = len(rest), max(len(r) for r in rest)
    input_ids = torch.full((B, T), pad_id, dtype=torch.long)
    mask = torch.zeros((B, T), dtype=torch.long)
    for i, r in enumerate(rest):
        input_ids[i, T - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[i, T - len(r):] = 1
    keep, labels = 1, None
    if with_answer:
        keep = max(len(ex.answer_ids) for ex in examples)
        labels = torch.full((B, keep), IGNORE_INDEX, dtype=torch.long)
        for i, ex in enumerate(examples):
            labels[i, keep - len(ex.answer_ids):] = torch.tensor(ex.answer_ids, dtype=torch.long)
    graph = _gather(examples, inputs, GRAPH_SLOT) if inputs else None  # [K, nq, d]
    image = _gather(examples, inputs, IMAGE_SLOT) if inputs else None  # [M, Dp]
    return Batch(examples[0].task, seqs[0][:P], input_ids, mask, keep, labels, list(examples), graph, image)


def answer_token_count(batch: Batch) -> int:
    """Number of answer tokens in a collated batch (the labels that are not IGNORE_INDEX)."""
    return 0 if batch.labels is None else int((batch.labels != IGNORE_INDEX).sum())

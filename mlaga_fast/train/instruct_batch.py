"""Stage 2 batches: examples from a dataset, left-padded collation, node-token splicing, answer loss.

Batches are left-padded so every sequence ends at the last column: the answer tokens then sit in
the last few columns of every row, and the LM head is only evaluated there (``logits_to_keep``),
which on CPU with a 49k vocabulary saves most of the head's cost. Position ids are computed from
the attention mask so left padding does not shift positions.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from mlaga_fast.llm.splice import IGNORE_INDEX, splice_node_embeds
from mlaga_fast.prompts.builder import Example, PromptBuilder, TruncationPolicy
from mlaga_fast.prompts.demos import LinkPairs, NCDemos


def make_builder(tokenizer, graph, nq: int, policy: TruncationPolicy) -> PromptBuilder:
    return PromptBuilder(tokenizer, nq, graph.texts, graph.class_names, policy)


def nc_examples(graph, builder: PromptBuilder, targets: np.ndarray, demos: NCDemos, *,
                with_label: bool, dataset: int = 0) -> list[Example]:
    labels = np.asarray(graph.labels)
    out = []
    for v in np.asarray(targets, dtype=np.int64).tolist():
        d, dy = demos(v)
        y = int(labels[v])
        if y < 0:
            raise ValueError(f"nc target node {v} has no label (-1)")
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


def collate(examples: Sequence[Example], pad_id: int, *, with_answer: bool) -> dict:
    """Left-padded input_ids/attention_mask/position_ids [B, T] and labels [B, T] (answer only)."""
    seqs, labs = [], []
    for ex in examples:
        if with_answer:
            ids, lab = ex.train_arrays()
        else:
            ids, lab = list(ex.prompt_ids), [IGNORE_INDEX] * len(ex.prompt_ids)
        seqs.append(ids)
        labs.append(lab)
    T = max(len(s) for s in seqs)
    B = len(seqs)
    input_ids = torch.full((B, T), pad_id, dtype=torch.long)
    labels = torch.full((B, T), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((B, T), dtype=torch.long)
    for i, (s, lab) in enumerate(zip(seqs, labs)):
        input_ids[i, T - len(s):] = torch.tensor(s, dtype=torch.long)
        labels[i, T - len(s):] = torch.tensor(lab, dtype=torch.long)
        mask[i, T - len(s):] = 1
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    ans = max((len(ex.answer_ids) for ex in examples), default=0) if with_answer else 0
    return {"input_ids": input_ids, "attention_mask": mask, "position_ids": pos, "labels": labels,
            "answer_len": ans}


def gather_node_tokens(examples: Sequence[Example], tokens: Sequence[np.ndarray]) -> torch.Tensor:
    """[K, nq, d] float32: the node tokens of every placeholder, in order of appearance."""
    parts = [np.asarray(tokens[ex.dataset][np.asarray(ex.nodes, dtype=np.int64)]) for ex in examples if ex.nodes]
    if not parts:
        d = tokens[0].shape
        return torch.zeros((0, d[1], d[2]))
    return torch.from_numpy(np.concatenate(parts).astype(np.float32))


def embed_inputs(model, projector, batch: dict, node_tokens: torch.Tensor, device) -> torch.Tensor:
    """inputs_embeds [B, T, H] with projected node tokens spliced in (grad flows to the projector)."""
    emb = model.get_input_embeddings()
    proj = projector(node_tokens.to(device))  # [K, nq, H]
    return splice_node_embeds(emb, batch["input_ids"].to(device), proj.to(emb.weight.dtype))


def answer_token_count(batch: dict) -> int:
    """Number of answer tokens in a collated batch (the labels that are not IGNORE_INDEX)."""
    return int((batch["labels"] != IGNORE_INDEX).sum())


def answer_loss(model, projector, batch: dict, node_tokens: torch.Tensor, device, *,
                reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy over answer tokens only: their mean, or their sum with reduction="sum" (the
    trainer sums, so that several processes can divide by the answer-token count of all of them)."""
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction: {reduction!r} is not one of ['mean', 'sum']")
    if batch["answer_len"] < 1:
        raise ValueError("answer_loss: the batch has no answer tokens (collate with with_answer=True)")
    embeds = embed_inputs(model, projector, batch, node_tokens, device)
    keep = batch["answer_len"] + 1  # logits at the last keep columns predict the answer tokens
    out = model(inputs_embeds=embeds, attention_mask=batch["attention_mask"].to(device),
                position_ids=batch["position_ids"].to(device), logits_to_keep=keep, use_cache=False)
    logits = out.logits[:, :-1].float()  # [B, keep-1, V]: predictions for the last keep-1 columns
    target = batch["labels"][:, -(keep - 1):].to(device)  # [B, keep-1]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                             ignore_index=IGNORE_INDEX, reduction=reduction)

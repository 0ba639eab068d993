"""Splice projected node tokens into a prompt's embeddings.

A prompt is tokenized with every node placeholder expanded to placeholder ids outside every
vocabulary: nq copies of GRAPH_TOKEN_ID for the node's graph (aligner) tokens and, when the run has
an image projector, one IMAGE_TOKEN_ID for its image token. No tokenizer or embedding table has to
change. Here the text positions are embedded with the LLM's own table and each kind of placeholder
is filled, in row-major order, with its projected tokens. masked_scatter keeps the result
differentiable with respect to those tokens (the projectors' outputs), which is what Stage 2 trains.
"""
from __future__ import annotations

import torch

GRAPH_TOKEN_ID = -7  # placeholder id of a graph token; never a real token id
IMAGE_TOKEN_ID = -8  # placeholder id of an image token
NODE_TOKEN_ID = GRAPH_TOKEN_ID  # the name earlier releases used
IGNORE_INDEX = -100  # label value for positions without loss (prompt, padding)
_PLACEHOLDERS = (GRAPH_TOKEN_ID, IMAGE_TOKEN_ID)


def _fill(text: torch.Tensor, slot: torch.Tensor, embeds: torch.Tensor | None, what: str) -> torch.Tensor:
    n_slots = int(slot.sum())
    n_given = 0 if embeds is None or embeds.numel() == 0 else embeds.shape[0] * embeds.shape[1]
    if n_slots != n_given:
        raise ValueError(f"{what}: prompt has {n_slots} placeholder positions but {n_given} tokens were given")
    if n_slots == 0:
        return text
    src = embeds.reshape(-1, embeds.shape[-1]).to(text.dtype)  # [K * per_node, H]
    return text.masked_scatter(slot.unsqueeze(-1), src)


def splice_node_embeds(embed: torch.nn.Module, input_ids: torch.Tensor, node_embeds: torch.Tensor | None,
                       image_embeds: torch.Tensor | None = None) -> torch.Tensor:
    """input_ids [B, T] with placeholders; node_embeds [K, nq, H] for the graph placeholders and
    image_embeds [M, 1, H] for the image placeholders, each in order of appearance -> [B, T, H]."""
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids: expected [B, T], got shape {tuple(input_ids.shape)}")
    bad = (input_ids < 0) & ~torch.isin(input_ids, torch.tensor(_PLACEHOLDERS, device=input_ids.device))
    if bad.any():
        b, t = (int(x) for x in bad.nonzero()[0])
        raise ValueError(f"input_ids: negative id {int(input_ids[b, t])} at [{b}, {t}] is not a placeholder")
    x = embed(input_ids.clamp(min=0))  # [B, T, H]; placeholder rows are overwritten below
    x = _fill(x, input_ids == GRAPH_TOKEN_ID, node_embeds, "node_embeds")
    return _fill(x, input_ids == IMAGE_TOKEN_ID, image_embeds, "image_embeds")

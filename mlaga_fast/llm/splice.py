"""Splice projected node tokens into a prompt's embeddings.

A prompt is tokenized with every node placeholder expanded to nq copies of NODE_TOKEN_ID, a negative
id outside every vocabulary, so no tokenizer or embedding table has to be changed. Here the text
positions are embedded with the LLM's own table and the placeholder positions are filled, in
row-major order, with the nodes' projected tokens. masked_scatter keeps the result differentiable
with respect to the node tokens (the projector's output), which is what Stage 2 trains.
"""
from __future__ import annotations

import torch

NODE_TOKEN_ID = -7  # placeholder id in input_ids; never a real token id
IGNORE_INDEX = -100  # label value for positions without loss (prompt, padding)


def splice_node_embeds(
    embed: torch.nn.Module, input_ids: torch.Tensor, node_embeds: torch.Tensor
) -> torch.Tensor:
    """input_ids [B, T] (NODE_TOKEN_ID at placeholders), node_embeds [K, nq, H] in order of appearance
    -> inputs_embeds [B, T, H]."""
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids: expected [B, T], got shape {tuple(input_ids.shape)}")
    slot = input_ids == NODE_TOKEN_ID  # [B, T]
    bad = (input_ids < 0) & ~slot
    if bad.any():
        b, t = (int(x) for x in bad.nonzero()[0])
        raise ValueError(f"input_ids: negative id {int(input_ids[b, t])} at [{b}, {t}] is not a placeholder")
    n_slots = int(slot.sum())
    n_given = node_embeds.shape[0] * node_embeds.shape[1] if node_embeds.numel() else 0
    if n_slots != n_given:
        raise ValueError(
            f"node_embeds: prompt has {n_slots} placeholder positions but {n_given} node tokens were given"
        )
    text = embed(input_ids.clamp(min=0))  # [B, T, H]; placeholder rows are overwritten below
    if n_slots == 0:
        return text
    src = node_embeds.reshape(-1, node_embeds.shape[-1]).to(text.dtype)  # [K*nq, H]
    return text.masked_scatter(slot.unsqueeze(-1), src)

"""Answer scoring for a frozen LLM with spliced node tokens: constrained log-likelihood and greedy
generation, both from one forward pass over each prompt batch.

Constrained scoring: the prompt batch runs once with a KV cache; the cache is repeated once per
candidate answer (batch_repeat_interleave) and all C candidates of all B prompts run as one
[B*C, Lc] batch. score(c) = sum of log p(answer token | prompt, earlier answer tokens), answer
tokens ending with eos, so one candidate that is a prefix of another is not favoured. The argmax
is always a valid class: this way of reading the LLM can never fail to parse.

Generation: greedy decoding from the same prompt cache, up to the longest answer + 2 tokens,
stopped at eos; the decoded text, stripped, must equal a class name exactly (strict match, as
the paper reports); anything else is an invalid prediction (-1).
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch

from mlaga_fast.train.instruct_batch import collate, embed_inputs, gather_node_tokens


@torch.inference_mode()
def score_batch(model, projector, examples, tokens, candidates: Sequence[Sequence[int]], pad_id: int,
                eos_id: int, device, *, generate: bool = True, max_new_tokens: int | None = None):
    """Returns (scores [B, C] float32 CPU, generated token lists per example or None)."""
    batch = collate(examples, pad_id, with_answer=False)
    mask = batch["attention_mask"].to(device)  # [B, T]
    embeds = embed_inputs(model, projector, batch, gather_node_tokens(examples, tokens), device)
    out = model(inputs_embeds=embeds, attention_mask=mask, position_ids=batch["position_ids"].to(device),
                use_cache=True, logits_to_keep=1)
    cache = out.past_key_values
    first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # [B, V]
    B, C = first.shape[0], len(candidates)
    plen = mask.sum(1)  # [B] real prompt lengths

    gen = None
    if generate:
        gen = _greedy(model, copy.deepcopy(cache), first, mask, plen, eos_id,
                      max_new_tokens or max(len(c) for c in candidates) + 2)

    Lc = max(len(c) for c in candidates)
    cand = torch.full((C, Lc), pad_id, dtype=torch.long)
    cmask = torch.zeros((C, Lc), dtype=torch.long)
    for i, c in enumerate(candidates):
        cand[i, :len(c)] = torch.tensor(list(c), dtype=torch.long)
        cmask[i, :len(c)] = 1
    cand, cmask = cand.to(device), cmask.to(device)
    scores = first[:, cand[:, 0]]  # [B, C]: log p(first answer token | prompt)
    if Lc > 1:
        cache.batch_repeat_interleave(C)  # row b*C + c continues prompt b with candidate c
        ids = cand.repeat(B, 1)  # [B*C, Lc]
        att = torch.cat([mask.repeat_interleave(C, 0), cmask.repeat(B, 1)], dim=1)  # [B*C, T+Lc]
        pos = plen.repeat_interleave(C)[:, None] + torch.arange(Lc, device=device)[None]  # [B*C, Lc]
        emb = model.get_input_embeddings()(ids)
        logits = model(inputs_embeds=emb, attention_mask=att, position_ids=pos, past_key_values=cache,
                       use_cache=True).logits.float()  # [B*C, Lc, V]
        lp = torch.log_softmax(logits[:, :-1], dim=-1)  # predictions of answer tokens 1..Lc-1
        tok_lp = lp.gather(-1, ids[:, 1:, None]).squeeze(-1) * cmask.repeat(B, 1)[:, 1:]  # [B*C, Lc-1]
        scores = scores + tok_lp.sum(1).view(B, C)
    return scores.cpu(), gen


def _greedy(model, cache, first_logp, mask, plen, eos_id: int, steps: int) -> list[list[int]]:
    B = first_logp.shape[0]
    device = first_logp.device
    nxt = first_logp.argmax(-1)  # [B]
    outs = [[] for _ in range(B)]
    done = torch.zeros(B, dtype=torch.bool, device=device)
    att = mask
    for s in range(steps):
        for b in range(B):
            if not done[b]:
                outs[b].append(int(nxt[b]))
        done |= nxt == eos_id
        if bool(done.all()) or s == steps - 1:
            break
        att = torch.cat([att, torch.ones((B, 1), dtype=att.dtype, device=device)], dim=1)
        emb = model.get_input_embeddings()(nxt[:, None])  # [B, 1, H]
        o = model(inputs_embeds=emb, attention_mask=att, position_ids=(plen + s)[:, None],
                  past_key_values=cache, use_cache=True)
        nxt = o.logits[:, -1].argmax(-1)
    return outs


def match_generation(tokenizer, gen_ids: list[int], names: Sequence[str], eos_id: int) -> int:
    """Index of the class whose name equals the decoded answer exactly (after strip), else -1."""
    if eos_id in gen_ids:
        gen_ids = gen_ids[:gen_ids.index(eos_id)]
    text = tokenizer.decode(gen_ids, skip_special_tokens=True).strip()
    for i, n in enumerate(names):
        if text == n.strip():
            return i
    return -1

"""Answer scoring for a frozen LLM with spliced node tokens: constrained log-likelihood and free
generation (greedy, or sampled and seeded), both from one forward pass over each prompt batch.

Constrained scoring: the prompt batch runs once (its shared prefix once, ``mlaga_fast.llm.forward``)
with a KV cache. The candidate answers (each ending with the end token) form a trie; a candidate's
score is the sum of log p(token | prompt, earlier tokens) over its *branch points*, the positions where
candidates that agree so far continue differently. Tokens after a candidate is the only one left are
forced and add nothing, so they need no forward pass: for class names with distinct first tokens the
score is log p(first token), read from the prompt's own last logits. Shared prefixes (e.g. "Dolls" and
"Dolls & Accessories", split by the end token) run once per prompt, grouped by length. The argmax is
always a valid class: this way of reading the LLM can never fail to parse.

Generation: decoding from the same prompt cache, up to the longest answer + 2 tokens (or
``max_new_tokens``), stopped at the end token; greedy at temperature 0, else sampled from
softmax(logits / T) with a seeded generator.
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch

from mlaga_fast.llm.forward import forward_hidden, logits_at_end
from mlaga_fast.train.instruct_batch import collate, embed_batch

__all__ = ["score_batch", "branch_points", "answer_text", "match_generation", "match_paper_protocol"]


@torch.inference_mode()
def score_batch(parts, projectors, examples, inputs, candidates: Sequence[Sequence[int]] | None, pad_id: int,
                eos_id: int, device, *, prefix=None, precision=None, generate: bool = False,
                max_new_tokens: int | None = None, temperature: float = 0.0,
                generator: torch.Generator | None = None):
    """Returns (scores [B, C] float32 CPU or None without candidates, generated token lists or None)."""
    ctx = precision.context(device.type) if precision is not None else torch.autocast(device.type, enabled=False)
    with ctx:
        batch = collate(examples, pad_id, with_answer=False)
        mask = batch.mask.to(device)  # [B, T]
        embeds = embed_batch(parts.embed, projectors, batch, inputs, device)
        hidden, cache = forward_hidden(parts, embeds, mask, batch.prefix, prefix, use_cache=True)
        first = torch.log_softmax(logits_at_end(parts, hidden, 1)[:, 0], dim=-1)  # [B, V]
        P = len(batch.prefix)
        full_mask = torch.cat([torch.ones(mask.shape[0], P, dtype=mask.dtype, device=device), mask], dim=1)
        plen = P + mask.sum(1)  # [B] positions of the first answer token

        gen = None
        if generate:
            steps = max_new_tokens or (max(len(c) for c in candidates) + 2 if candidates else 32)
            gen = _decode(parts, copy.deepcopy(cache) if candidates else cache, first, full_mask, plen, eos_id,
                          steps, temperature, generator)
        if not candidates:
            return None, gen

        scores = _candidate_scores(parts, cache, first, full_mask, plen, candidates, device)
    return scores.float().cpu(), gen


def branch_points(candidates: Sequence[Sequence[int]]) -> list[list[int]]:
    """For each candidate, the positions j where the candidates that share its first j tokens continue
    with two or more different tokens: the only places where the LLM's choice tells them apart."""
    out = []
    for c in candidates:
        pts = []
        for j in range(len(c)):
            nxt = {d[j] for d in candidates if len(d) > j and tuple(d[:j]) == tuple(c[:j])}
            if len(nxt) > 1:
                pts.append(j)
        out.append(pts)
    return out


def _candidate_scores(parts, cache, first: torch.Tensor, mask: torch.Tensor, plen: torch.Tensor,
                      candidates: Sequence[Sequence[int]], device) -> torch.Tensor:
    """[B, C]: for each candidate, the summed log-probs of its tokens at its branch points (see
    ``branch_points``); tokens no other candidate competes with add nothing. Branch points after the
    first token need the shared prefix run once per prompt (grouped by length, cache repeated)."""
    B, C = first.shape[0], len(candidates)
    points = branch_points(candidates)
    scores = torch.zeros(B, C, dtype=first.dtype, device=device)
    needed: dict[tuple[int, ...], list[tuple[int, int]]] = {}  # prefix -> [(candidate, its next token)]
    for i, (c, pts) in enumerate(zip(candidates, points)):
        for j in pts:
            if j == 0:
                scores[:, i] += first[:, c[0]]
            else:
                needed.setdefault(tuple(c[:j]), []).append((i, c[j]))
    by_len: dict[int, list[tuple[int, ...]]] = {}
    for pre in needed:
        by_len.setdefault(len(pre), []).append(pre)
    for L, pres in sorted(by_len.items()):
        n = len(pres)
        group = copy.deepcopy(cache)
        group.batch_repeat_interleave(n)  # row b*n + k continues prompt b with prefix pres[k]
        rows = torch.tensor(pres, dtype=torch.long, device=device).repeat(B, 1)  # [B*n, L]
        att = torch.cat([mask.repeat_interleave(n, 0), torch.ones(B * n, L, dtype=mask.dtype, device=device)], 1)
        pos = plen.repeat_interleave(n)[:, None] + torch.arange(L, device=device)[None]  # [B*n, L]
        out = parts.decoder(inputs_embeds=parts.embed(rows), attention_mask=att, position_ids=pos,
                            use_cache=True, **{parts.cache_kw: group})
        lp = torch.log_softmax(logits_at_end(parts, out.last_hidden_state, 1)[:, 0], dim=-1).view(B, n, -1)
        for k, pre in enumerate(pres):
            for i, tok in needed[pre]:
                scores[:, i] += lp[:, k, tok]
    return scores


def _decode(parts, cache, first_logp: torch.Tensor, mask: torch.Tensor, plen: torch.Tensor, eos_id: int,
            steps: int, temperature: float, generator: torch.Generator | None) -> list[list[int]]:
    B = first_logp.shape[0]
    device = first_logp.device

    def pick(logp: torch.Tensor) -> torch.Tensor:  # [B, V] -> [B]
        if temperature <= 0:
            return logp.argmax(-1)
        probs = torch.softmax(logp.float() / temperature, dim=-1)
        return torch.multinomial(probs.cpu(), 1, generator=generator).view(-1).to(device)

    nxt = pick(first_logp)
    outs: list[list[int]] = [[] for _ in range(B)]
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
        out = parts.decoder(inputs_embeds=parts.embed(nxt[:, None]), attention_mask=att,
                            position_ids=(plen + s)[:, None], use_cache=True, **{parts.cache_kw: cache})
        nxt = pick(torch.log_softmax(logits_at_end(parts, out.last_hidden_state, 1)[:, 0], dim=-1))
    return outs


def answer_text(tokenizer, gen_ids: list[int], eos_id: int) -> str:
    if eos_id in gen_ids:
        gen_ids = gen_ids[:gen_ids.index(eos_id)]
    return tokenizer.decode(gen_ids, skip_special_tokens=True).strip()


def match_generation(tokenizer, gen_ids: list[int], names: Sequence[str], eos_id: int) -> int:
    """Index of the class whose name equals the decoded answer exactly (after strip), else -1."""
    text = answer_text(tokenizer, gen_ids, eos_id)
    for i, n in enumerate(names):
        if text == n.strip():
            return i
    return -1


def match_paper_protocol(tokenizer, gen_ids: list[int], names: Sequence[str], eos_id: int, task: str) -> int:
    """The released evaluation's matching: NC = lower-cased exact match of a class name (else -1);
    LP = "Yes" (index 1) when the answer contains "Yes", else "No" (0)."""
    text = answer_text(tokenizer, gen_ids, eos_id)
    if task == "lp":
        return int("Yes" in text)
    low = text.lower()
    for i, n in enumerate(names):
        if low == n.strip().lower():
            return i
    return -1

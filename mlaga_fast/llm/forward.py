"""One forward of the frozen LLM for Stage 2 training, scoring and generation, done cheaply.

Three things make it cheap, all exact:

1. **The shared prompt prefix runs once.** Every prompt of a batch starts with the same tokens (chat
   header, task sentence, class list) up to its first node or node text. Those tokens have no
   trainable input, so their keys and values are computed once (batch 1) and broadcast to the
   batch; with a frozen LLM they are even reused across steps (``PrefixKV`` caches them by token
   ids). Under LoRA they depend on trainable weights and are recomputed, with gradient, per batch.
2. **Logits only where a loss or a score is read.** The LM head (49k x 576 for SmolLM2) runs on the
   last ``keep`` positions, flattened to 2-D: ``lm_head`` on a sliced 3-D view would broadcast its
   weight into a batched matmul, measured 0.68 s per call on 2 CPU cores, 48% of a training step.
3. **Rows are left-padded after the prefix**, so every answer ends at the last column and the
   position ids skip the padding (prefix positions 0..P-1, then each row's real tokens P, P+1, ...).

A full forward over [prefix | row] gives the same logits (tests compare both, and gradients).
"""
from __future__ import annotations

import inspect
from typing import Any, Sequence

import torch

__all__ = ["LLMParts", "llm_parts", "PrefixKV", "forward_hidden", "logits_at_end"]


class LLMParts:
    """The pieces of a causal LM we call directly: embedding table, decoder stack, LM head."""

    def __init__(self, model: Any):
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft wraps the model
        self.model = model
        self.embed = inner.get_input_embeddings()
        self.decoder = inner.get_decoder() if hasattr(inner, "get_decoder") else inner.model
        self.head = inner.get_output_embeddings()
        params = inspect.signature(self.decoder.forward).parameters
        # transformers >= 5 names the KV-cache argument `cache`; earlier releases `past_key_values`.
        self.cache_kw = "cache" if "cache" in params else "past_key_values"
        self.trainable = any(p.requires_grad for p in model.parameters())  # LoRA adapters

    @property
    def hidden(self) -> int:
        return int(self.embed.weight.shape[1])


def llm_parts(model: Any) -> LLMParts:
    return LLMParts(model)


def _out_cache(out: Any) -> Any:
    """The KV cache of a decoder output (``cache`` in transformers >= 5, ``past_key_values`` before)."""
    if "cache" in getattr(out, "keys", lambda: ())():
        return out["cache"]
    return out.get("past_key_values") if hasattr(out, "get") else getattr(out, "past_key_values", None)


def _kv_tensors(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """[(keys [1, kvh, P, dh], values)] per layer, from the DynamicCache of any transformers release."""
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache))


class PrefixKV:
    """Keys/values of shared prompt prefixes, computed once per distinct prefix (or per call under LoRA)."""

    def __init__(self, parts: LLMParts, max_entries: int = 64):
        self.parts = parts
        self.max_entries = max_entries
        self._memo: dict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def _compute(self, ids: Sequence[int], device) -> list[tuple[torch.Tensor, torch.Tensor]]:
        x = torch.tensor([list(ids)], dtype=torch.long, device=device)
        out = self.parts.decoder(input_ids=x, use_cache=True)
        return _kv_tensors(_out_cache(out))

    def cache_for(self, ids: Sequence[int], batch: int, device) -> Any:
        """A fresh DynamicCache holding the prefix ``ids`` for ``batch`` rows (expanded, not copied)."""
        from transformers import DynamicCache

        key = tuple(int(i) for i in ids)
        if self.parts.trainable and torch.is_grad_enabled():
            kv = self._compute(key, device)  # LoRA: depends on trainable weights, keep the graph
        else:
            kv = self._memo.get(key)
            if kv is None:
                with torch.no_grad():
                    kv = self._compute(key, device)
                if len(self._memo) >= self.max_entries:
                    self._memo.pop(next(iter(self._memo)))
                self._memo[key] = kv
        cache = DynamicCache()
        for layer, (k, v) in enumerate(kv):
            cache.update(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1), layer)
        return cache

    def clear(self) -> None:
        """Forget memoised prefixes (call after the LLM's weights change, e.g. LoRA loaded)."""
        self._memo.clear()


def forward_hidden(parts: LLMParts, embeds: torch.Tensor, mask: torch.Tensor, prefix_ids: Sequence[int],
                   prefix: PrefixKV | None, *, use_cache: bool = False) -> tuple[torch.Tensor, Any]:
    """Decoder hidden states [B, T, H] of rows ``embeds`` [B, T, H] (left-padded, ``mask`` [B, T] with 1 on
    real tokens) that all continue the token prefix ``prefix_ids`` (length P, possibly 0).

    Returns (hidden, cache): the cache holds prefix + rows when ``use_cache`` (for scoring/generation).
    """
    B, T, _ = embeds.shape
    P = len(prefix_ids)
    kw: dict[str, Any] = {}
    if P:
        kv = prefix if prefix is not None else PrefixKV(parts)
        kw[parts.cache_kw] = kv.cache_for(prefix_ids, B, embeds.device)
        att = torch.cat([torch.ones(B, P, dtype=mask.dtype, device=mask.device), mask], dim=1)  # [B, P + T]
    else:
        att = mask
    pos = P + (mask.cumsum(1) - 1).clamp(min=0)  # [B, T]: padding does not shift positions
    out = parts.decoder(inputs_embeds=embeds, attention_mask=att, position_ids=pos, use_cache=use_cache or bool(P),
                        **kw)
    return out.last_hidden_state, _out_cache(out)


def logits_at_end(parts: LLMParts, hidden: torch.Tensor, keep: int) -> torch.Tensor:
    """LM-head logits [B, keep, V] (float32) of the last ``keep`` positions of hidden [B, T, H]."""
    B, _, H = hidden.shape
    h = hidden[:, -keep:].reshape(B * keep, H)  # 2-D: one plain matmul with the head's weight
    return parts.head(h).float().view(B, keep, -1)

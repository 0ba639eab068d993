"""One forward of the frozen LLM for Stage 2 training, scoring and generation, done cheaply.

Three things make it cheap, all exact:

1. **The shared prompt prefix runs once.** Every prompt of a batch starts with the same tokens (chat
   header, task sentence, class list) up to its first node or node text. Those tokens have no
   trainable input, so their keys and values are computed once (batch 1) and broadcast to the
   batch; with a frozen LLM they are even reused across steps (``PrefixKV`` caches them by token
   ids). Under LoRA they depend on trainable weights and are recomputed, with gradient, per batch:
   then the prefix is *packed* with the rows into one sequence [prefix | row 0 | row 1 | ...] and the
   decoder runs once, so every linear layer sees one tall matrix instead of a 15-38-row one for the
   prefix and another for the rows; a registered attention function splits attention back per row
   (``_packed_attention``: the prefix causal on itself, each row on the prefix and, causally, on its own
   tokens). Measured 1.15x a training step in bf16 and 1.24x in fp32 on 2 CPU cores
   (docs/bench_bf16.md). Models with sliding windows, or whose attention is not sdpa/eager through
   transformers' ``AttentionInterface``, keep the two calls (``LLMParts.packed_prefix``).
2. **Logits only where a loss or a score is read.** The LM head (49k x 576 for SmolLM2) runs on the
   last ``keep`` positions, flattened to 2-D: ``lm_head`` on a sliced 3-D view would broadcast its
   weight into a batched matmul, measured 0.68 s per call on 2 CPU cores, 48% of a training step.
3. **Rows are left-padded after the prefix**, so every answer ends at the last column and the
   position ids skip the padding (prefix positions 0..P-1, then each row's real tokens P, P+1, ...).

A full forward over [prefix | row] gives the same logits (tests compare both, and gradients, for every
model family in tests/test_llm_families.py).

What makes the prefix cache exact for every family:

- **Every layer keeps every key.** The caches are plain ``DynamicCache()`` objects (one full-length layer
  per decoder layer), also for models with sliding-window layers. A model's own default cache
  (``DynamicCache(config=...)``) keeps only the last ``window - 1`` keys of a sliding layer; copied into a
  fresh cache next to the full layers, its lengths disagreed with the mask the model then built (Gemma 2:
  a 25-token prefix plus 44 tokens gave keys of length 69 against a mask of 51).
- **Sliding windows count positions, not columns.** transformers applies a sliding window to column
  indices (``q - kv < window``). A left-padded row has padding columns between the prefix and its own
  tokens, so once prefix + row is longer than the window, the window would hold fewer real tokens than
  in the row's own unpadded forward. For such batches ``Decoder`` passes masks of its own, built with
  transformers' mask functions: causal and padding as usual, and the window applied to position ids.
- **Logits as the model makes them.** Some heads post-process their logits (Gemma 2's final soft-capping,
  Cohere's scale, Granite's divisor); ``logits_at_end`` applies the same step.

Models whose cache holds anything but per-token keys and values (recurrent or linear-attention layers,
chunked attention, layers that share another layer's cache) cannot be prefilled this way: for them
``forward_hidden`` runs each row's prefix as ordinary input (``LLMParts.prefix_cache`` is False), which is
exact and only slower.
"""
from __future__ import annotations

import contextvars
import inspect
from typing import Any, Sequence

import torch

__all__ = ["LLMParts", "llm_parts", "Decoder", "PrefixKV", "forward_hidden", "logits_at_end", "new_cache"]

_KV_LAYER_TYPES = ("full_attention", "sliding_attention")  # cache layers that hold one key/value per token


def new_cache() -> Any:
    """An empty KV cache whose every layer keeps every token (see the module docstring)."""
    from transformers import DynamicCache

    return DynamicCache()


class Decoder:
    """The decoder stack, called as the module itself is (``inputs_embeds``/``input_ids``, a 2-D
    ``attention_mask`` [B, K] over cache + new tokens, ``position_ids`` [B, q], the cache), with masks made
    position-exact for sliding-window layers when padding would shift the window (module docstring).
    Any other attribute is the module's."""

    def __init__(self, module: torch.nn.Module, config: Any):
        self.module = module
        self.config = config
        params = inspect.signature(module.forward).parameters
        # transformers >= 5 names the KV-cache argument `cache`; earlier releases `past_key_values`.
        self.cache_kw = "cache" if "cache" in params else "past_key_values"
        types = list(getattr(config, "layer_types", None) or [])
        window = getattr(config, "sliding_window", None)
        if types:
            self.window = int(window) if window and "sliding_attention" in types else None
            self.hybrid = True  # the model takes a {layer type: mask} mapping
        else:
            self.window = int(window) if window else None  # Mistral, Phi-3: every layer slides
            self.hybrid = False
        self.kv_layers_only = all(t in _KV_LAYER_TYPES for t in types)

    def __getattr__(self, name: str) -> Any:
        if name == "module":  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.module, name)

    def __call__(self, *, attention_mask: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                 **kw) -> Any:
        if (self.window is not None and self.kv_layers_only and attention_mask is not None
                and attention_mask.dim() == 2 and attention_mask.shape[1] > self.window
                and not bool(attention_mask.all())
                and self.config._attn_implementation != "flash_attention_2"):
            # flash-attention removes padding before it applies its window: exact already
            attention_mask = self._exact_masks(attention_mask, position_ids, kw)
        return self.module(attention_mask=attention_mask, position_ids=position_ids, **kw)

    def _exact_masks(self, att: torch.Tensor, pos: torch.Tensor, kw: dict) -> Any:
        """Prepared masks for att [B, K] (cache + new tokens) and the new tokens' positions pos [B, q]."""
        try:
            from transformers.masking_utils import create_causal_mask
        except ImportError:  # transformers < 4.53
            raise ValueError("llm: sliding-window attention over padded prompts needs transformers >= 4.53 "
                             "(transformers.masking_utils)") from None
        embeds = kw.get("inputs_embeds")
        if embeds is None:
            embeds = self.module.get_input_embeddings()(kw["input_ids"])
        att = att.to(embeds.device)
        kv_pos = att.long().cumsum(1) - 1  # [B, K]: our layouts number real tokens 0, 1, ... in order
        window = self.window

        def in_window(b, h, q, kv):  # q, kv: column indices of the query and the key
            return kv_pos[b, q] - kv_pos[b, kv] < window

        args = {"config": self.config, "inputs_embeds": embeds, "attention_mask": att,
                self.cache_kw: kw.get(self.cache_kw), "position_ids": pos}
        sliding = create_causal_mask(**args, and_mask_function=in_window)
        if not self.hybrid:
            return sliding
        return {"full_attention": create_causal_mask(**args), "sliding_attention": sliding}


class LLMParts:
    """The pieces of a causal LM we call directly: embedding table, decoder stack, LM head."""

    def __init__(self, model: Any):
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft wraps the model
        self.model = model
        # The model's own input embedding module: Gemma's scales by sqrt(hidden) inside it, so text
        # positions get exactly the model's embeddings. Spliced node tokens are the projectors' outputs,
        # used as they are in training, scoring and generation alike (the projector learns their scale).
        self.embed = inner.get_input_embeddings()
        module = inner.get_decoder() if hasattr(inner, "get_decoder") else inner.model
        self.config = inner.config.get_text_config() if hasattr(inner.config, "get_text_config") else inner.config
        self.decoder = Decoder(module, self.config)
        self.head = inner.get_output_embeddings()
        self.cache_kw = self.decoder.cache_kw
        self.prefix_cache = self.decoder.kv_layers_only  # False: run prefixes as input (module docstring)
        # training under LoRA: prefix and rows in one decoder call (module docstring, item 1). Not with gradient
        # checkpointing: its backward re-runs the layers after the packed call has ended.
        self.packed_prefix = (self.prefix_cache and self.decoder.window is None
                              and getattr(self.config, "_attn_implementation", None) in _PACKABLE
                              and not _checkpointing(inner)
                              and _register_packed_attention())
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


class CannotPrefill(Exception):
    """The model's cache does not hold one key and value per prefix token in every layer."""


class PrefixKV:
    """Keys/values of shared prompt prefixes, computed once per distinct prefix (or per call under LoRA)."""

    def __init__(self, parts: LLMParts, max_entries: int = 64):
        self.parts = parts
        self.max_entries = max_entries
        self._memo: dict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def _compute(self, ids: Sequence[int], device) -> list[tuple[torch.Tensor, torch.Tensor]]:
        x = torch.tensor([list(ids)], dtype=torch.long, device=device)
        out = self.parts.decoder(input_ids=x, use_cache=True, **{self.parts.cache_kw: new_cache()})
        kv = _kv_tensors(_out_cache(out))
        if len(kv) != self.parts.config.num_hidden_layers or any(k is None or k.shape[-2] != len(ids) for k, _ in kv):
            raise CannotPrefill(type(self.parts.model).__name__)
        return kv

    def cache_for(self, ids: Sequence[int], batch: int, device) -> Any:
        """A fresh cache holding the prefix ``ids`` for ``batch`` rows (expanded, not copied)."""
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
        cache = new_cache()
        for layer, (k, v) in enumerate(kv):
            cache.update(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1), layer)
        return cache

    def clear(self) -> None:
        """Forget memoised prefixes (call after the LLM's weights change, e.g. LoRA loaded)."""
        self._memo.clear()


_PACKED = "mlaga_packed_prefix"  # the attention implementation's registered name
_PACKABLE = ("sdpa", "eager")  # the implementations whose masks _packed_masks builds
_packed_layout: contextvars.ContextVar = contextvars.ContextVar("mlaga_packed_layout", default=None)


def _checkpointing(model: Any) -> bool:
    """Whether activation (gradient) checkpointing is on: transformers >= 5 names the property
    ``is_activation_checkpointing`` (its old name warns), earlier releases ``is_gradient_checkpointing``."""
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):
        if hasattr(type(model), name):
            return bool(getattr(model, name))
    return False


class CannotPack(Exception):
    """The decoder did not route every layer's attention through the packed attention function."""


def _register_packed_attention() -> bool:
    """Register ``_packed_attention`` with transformers (>= 4.48 has ``AttentionInterface``); False without it."""
    try:
        from transformers.modeling_utils import AttentionInterface
    except ImportError:
        return False
    AttentionInterface.register(_PACKED, _packed_attention)
    return True


def _packed_masks(mask: torch.Tensor, P: int, inner: str, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The prefix's mask [1, 1, P, P] (causal) and the rows' [B, 1, T, P + T] (all of the prefix, then causal
    over the row's real tokens) for rows ``mask`` [B, T]: booleans for sdpa (True = attend), additive floats
    for eager (0 or the dtype's minimum), as transformers' own masks are."""
    B, T = mask.shape
    dev = mask.device
    causal = torch.ones(T, T, dtype=torch.bool, device=dev).tril()  # [T, T]
    rows = torch.cat([torch.ones(B, T, P, dtype=torch.bool, device=dev),
                      causal & mask.bool()[:, None, :]], dim=2)[:, None]  # [B, 1, T, P + T]
    pre = torch.ones(P, P, dtype=torch.bool, device=dev).tril()[None, None]  # [1, 1, P, P]
    if inner == "sdpa":
        return pre, rows
    low = torch.finfo(dtype).min
    return tuple(torch.zeros(m.shape, dtype=dtype, device=dev).masked_fill_(~m, low) for m in (pre, rows))


def _packed_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: Any, **kw) -> tuple[torch.Tensor, None]:
    """Attention of the packed sequence [prefix | row 0 | ... | row B-1] (P + B*T tokens), split back: the
    prefix attends causally to itself, each row to the prefix and causally to its own tokens, through the
    model's own implementation. query [1, h, P + B*T, dh], key/value [1, kvh, P + B*T, dh] ->
    [1, P + B*T, h, dh]. Reference: ``forward_hidden``'s unpacked path (prefix cache, then the rows)."""
    layout = _packed_layout.get()
    P, B, T, (pre_mask, row_mask), attend = layout["shape"]
    layout["calls"] += 1

    def rows(x: torch.Tensor) -> torch.Tensor:  # [1, n, P + B*T, dh] -> [B, n, T, dh]
        return x[0, :, P:].unflatten(1, (B, T)).transpose(0, 1)

    kp, vp = key[:, :, :P], value[:, :, :P]  # [1, kvh, P, dh]
    out_p, _ = attend(module, query[:, :, :P], kp, vp, pre_mask, **kw)  # [1, P, h, dh]
    out_r, _ = attend(module, rows(query), torch.cat([kp.expand(B, -1, -1, -1), rows(key)], dim=2),
                      torch.cat([vp.expand(B, -1, -1, -1), rows(value)], dim=2), row_mask, **kw)  # [B, T, h, dh]
    return torch.cat([out_p, out_r.reshape(1, B * T, *out_r.shape[2:])], dim=1), None


def _packed_hidden(parts: LLMParts, embeds: torch.Tensor, mask: torch.Tensor, prefix_ids: Sequence[int],
                   row_pos: torch.Tensor) -> torch.Tensor:
    """forward_hidden's hidden states [B, T, H] for training under LoRA, from one decoder call over the packed
    sequence (module docstring, item 1); ``row_pos`` [B, T] are the rows' position ids. Raises CannotPack if a
    layer's attention did not go through ``_packed_attention`` (its output is then not the model's)."""
    B, T, H = embeds.shape
    P, dev = len(prefix_ids), embeds.device
    pre = parts.embed(torch.tensor([list(prefix_ids)], dtype=torch.long, device=dev)).to(embeds.dtype)  # [1, P, H]
    pos = torch.cat([torch.arange(P, device=dev), row_pos.reshape(-1)])[None]  # [1, P + B*T]
    cfg = parts.config
    inner = cfg._attn_implementation
    if inner == "eager":  # not in transformers' mapping: the modeling module's own eager function
        attend = getattr(inspect.getmodule(type(parts.decoder.module)), "eager_attention_forward", None)
        if attend is None:
            raise CannotPack(type(parts.model).__name__)
    else:
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        attend = ALL_ATTENTION_FUNCTIONS[inner]
    layout = {"shape": (P, B, T, _packed_masks(mask, P, inner, embeds.dtype), attend), "calls": 0}
    token = _packed_layout.set(layout)
    cfg._attn_implementation = _PACKED
    try:
        out = parts.decoder.module(inputs_embeds=torch.cat([pre, embeds.reshape(1, B * T, H)], dim=1),
                                   position_ids=pos, use_cache=False)
    finally:
        cfg._attn_implementation = inner
        _packed_layout.reset(token)
    if layout["calls"] != parts.config.num_hidden_layers:
        raise CannotPack(type(parts.model).__name__)
    return out.last_hidden_state[:, P:].reshape(B, T, H)


def forward_hidden(parts: LLMParts, embeds: torch.Tensor, mask: torch.Tensor, prefix_ids: Sequence[int],
                   prefix: PrefixKV | None, *, use_cache: bool = False) -> tuple[torch.Tensor, Any]:
    """Decoder hidden states [B, T, H] of rows ``embeds`` [B, T, H] (left-padded, ``mask`` [B, T] with 1 on
    real tokens) that all continue the token prefix ``prefix_ids`` (length P, possibly 0).

    Returns (hidden, cache): the cache holds prefix + rows when ``use_cache`` (for scoring/generation).
    """
    B, T, _ = embeds.shape
    P = len(prefix_ids)
    pos = P + (mask.cumsum(1) - 1).clamp(min=0)  # [B, T]: padding does not shift positions
    if P and parts.packed_prefix and parts.trainable and torch.is_grad_enabled() and not use_cache:
        try:
            return _packed_hidden(parts, embeds, mask, prefix_ids, pos), None
        except CannotPack:
            parts.packed_prefix = False  # learnt once per model: two decoder calls from now on
    att = torch.cat([torch.ones(B, P, dtype=mask.dtype, device=mask.device), mask], dim=1)  # [B, P + T]
    cache = None
    if P and parts.prefix_cache:
        kv = prefix if prefix is not None else PrefixKV(parts)
        try:
            cache = kv.cache_for(prefix_ids, B, embeds.device)
        except CannotPrefill:
            # learnt once per model: run prefixes as input, in the model's own kind of cache, from now on
            parts.prefix_cache = parts.decoder.kv_layers_only = False
    if P and not parts.prefix_cache:
        # The prefix runs with each row: [prefix | padding | row], positions 0..P-1 then as above.
        ids = torch.tensor([list(prefix_ids)], dtype=torch.long, device=embeds.device)
        pre = parts.embed(ids).to(embeds.dtype).expand(B, -1, -1)  # [B, P, H]
        pos = torch.cat([torch.arange(P, device=pos.device).expand(B, -1), pos], dim=1)  # [B, P + T]
        # Our full-length cache where the model's layers hold keys and values, else the model's own kind.
        own = {parts.cache_kw: new_cache()} if use_cache and parts.decoder.kv_layers_only else {}
        out = parts.decoder(inputs_embeds=torch.cat([pre, embeds], dim=1), attention_mask=att, position_ids=pos,
                            use_cache=use_cache, **own)
        return out.last_hidden_state[:, P:], _out_cache(out)
    if cache is None and use_cache and parts.decoder.kv_layers_only:
        cache = new_cache()  # full-length layers, also for sliding ones: later calls extend it (scoring)
    out = parts.decoder(inputs_embeds=embeds, attention_mask=att, position_ids=pos, use_cache=use_cache or bool(P),
                        **({parts.cache_kw: cache} if cache is not None else {}))
    return out.last_hidden_state, _out_cache(out)


def logits_at_end(parts: LLMParts, hidden: torch.Tensor, keep: int) -> torch.Tensor:
    """LM-head logits [B, keep, V] (float32) of the last ``keep`` positions of hidden [B, T, H], post-processed
    as the model's own forward does (Gemma 2 soft-capping, Cohere's scale, Granite's divisor)."""
    B, _, H = hidden.shape
    h = hidden[:, -keep:].reshape(B * keep, H)  # 2-D: one plain matmul with the head's weight
    logits = parts.head(h).float()
    cfg = parts.config
    if getattr(cfg, "logit_scale", None):  # Cohere multiplies
        logits = logits * cfg.logit_scale
    if getattr(cfg, "logits_scaling", None):  # Granite divides
        logits = logits / cfg.logits_scaling
    cap = getattr(cfg, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits.view(B, keep, -1)

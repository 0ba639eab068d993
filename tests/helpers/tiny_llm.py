"""A tiny random Llama and an offline word-level tokenizer, saved as a local HF folder.

Tests load it through the same path as real models (mlaga_fast.llm.load_llm(folder)), so the local
folder code path is exercised. The vocabulary covers the prompt templates, the given texts, class
names and Yes/No; anything else maps to [UNK].
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

_WORD = re.compile(r"\w+|[^\w\s]+")


# A ChatML-style template (as SmolLM2-Instruct ships), for tests of the chat-template path.
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def build_tiny_llm(folder: str | Path, extra_texts: Iterable[str] = (), *, hidden: int = 64,
                   layers: int = 2, heads: int = 4, seed: int = 0,
                   init_std: float = 0.02, chat_template: str | None = None) -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from mlaga_fast.prompts import load_templates

    folder = Path(folder)
    words: dict[str, None] = {}
    t = load_templates()
    for name in ("compact", "paper"):
        for sec in t[name].values():
            for v in sec.values():
                if isinstance(v, str):
                    for w in _WORD.findall(v.replace("{", " ").replace("}", " ")):
                        words.setdefault(w)
    for d in range(10):  # counts in the templates ({num_classes}, {i}, ...)
        words.setdefault(str(d))
    for s in extra_texts:
        for w in _WORD.findall(str(s)):
            words.setdefault(w)
    specials = ["[PAD]", "[UNK]", "<s>", "</s>"] + (["<|im_start|>", "<|im_end|>"] if chat_template else [])
    vocab = {w: i for i, w in enumerate(specials + [w for w in words if w not in specials])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>",
                                  pad_token="[PAD]", unk_token="[UNK]")
    if chat_template:
        tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
        tok.chat_template = chat_template
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                      max_position_embeddings=2048, bos_token_id=2, eos_token_id=3, pad_token_id=0,
                      tie_word_embeddings=False, initializer_range=init_std)
    model = LlamaForCausalLM(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder

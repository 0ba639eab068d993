"""The ``--precision`` policy of both stages, in one place.

``auto`` picks bf16 on CUDA devices that support it (else fp16) and fp32 on every CPU. bf16 autocast was
slower than fp32 on both CPUs measured: on an AVX2-only one, where bf16 matmuls are emulated, a SmolLM2
training step ran 17x slower; on one with AVX512-BF16 and AMX (2 cores) the demo's Stage 1 took 86 s in
bf16 against 58 s in fp32, its Stage 2 317 s against 249 s (the GGUF cached in both), and
benchmarks/bench_instruct.py ran the warm-up prompts at 0.84x (not profiled; autocast casting the frozen
fp32 weights again at every call is one likely cost). ``--precision bf16`` stays available on CPU; it is
checked against fp32 on real prompts (``mlaga_fast.models.graph_llm.bf16_agreement``, used by
tests/test_instruct_units.py and benchmarks/bench_instruct.py).
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Precision", "resolve_precision", "cpu_has_native_bf16"]


@dataclass(frozen=True)
class Precision:
    name: str  # fp32 | bf16 | fp16: what the run computes in
    weights: str  # dtype of the frozen LLM's weights: float32 | bfloat16 | float16
    autocast: str | None  # autocast dtype around forward passes, or None

    def context(self, device_type: str):
        import torch

        if self.autocast is None:
            return torch.autocast(device_type, enabled=False)
        return torch.autocast(device_type, dtype=getattr(torch, self.autocast))

    def to_dict(self) -> dict:
        return {"name": self.name, "weights": self.weights, "autocast": self.autocast}


def cpu_has_native_bf16() -> bool:
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, p, lambda: False)()) for p in probes)


def resolve_precision(precision: str, device_type: str, *, frozen_weights: bool) -> Precision:
    """frozen_weights: the model's weights do not train (Stage 2's LLM), so they may be stored in bf16/fp16
    on CUDA; trainable weights (Stage 1) stay fp32 under autocast."""
    import torch

    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise ValueError(f"precision: {precision!r} is not one of ['auto', 'fp32', 'bf16', 'fp16']")
    cuda = device_type == "cuda"
    if precision == "auto":
        if cuda:
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "fp32"  # bf16 autocast measured slower on CPUs, native bf16 or not (above)
    if precision == "fp32":
        return Precision("fp32", "float32", None)
    if precision == "fp16" and not cuda:
        raise ValueError("precision 'fp16' needs a CUDA device; use fp32 (or bf16) on CPU")
    dtype = "bfloat16" if precision == "bf16" else "float16"
    if cuda and frozen_weights:
        return Precision(precision, dtype, None)  # frozen weights stored in half precision: no autocast needed
    return Precision(precision, "float32", dtype)

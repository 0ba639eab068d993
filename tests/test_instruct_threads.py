"""Stage 2 on 1 and 2 CPU threads, at SmolLM2-135M's width (hidden 576). The demo runs its Stage 2 on one
core beside the raw-feature ablation (mlaga_fast.demo.lanes); this bounds how far that moves it from a run
on both cores. The threads split sums in another order, so the runs differ in the last bits, and Adam
compounds that over the steps. Measured: on an AVX2 CPU (fp32) the warm-up was bit-identical and every step
agreed within 1e-6; on an AVX-512/AMX CPU the first step agreed within 2e-7 and the sixth within 5e-4 in
fp32, 4e-3 in bf16 (--precision bf16). So the first step must agree to rounding and the
rest within a few times what was measured; a thread-dependent data order or seed would be off by far more."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

pytestmark = pytest.mark.skipif(importlib.util.find_spec("peft") is None, reason="needs peft (LoRA)")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """The Stage-2 inputs at SmolLM2-135M's width, shared by both precisions (each trains into its own tmp_path)."""
    from helpers.instruct_inputs import build_instruct_inputs

    return build_instruct_inputs(tmp_path_factory.mktemp("threads"), hidden=576, heads=9, init_std=0.05)


@pytest.mark.parametrize("precision,rtol", [("fp32", 2e-3), ("bf16", 2e-2)])
def test_stage2_barely_depends_on_the_thread_count(inputs, tmp_path, precision, rtol):
    from mlaga_fast.train.instruct import train_instruct
    from mlaga_fast.train.instruct_config import InstructConfig
    from mlaga_fast.train.metrics import read_jsonl
    from mlaga_fast.runtime.precision import cpu_has_native_bf16

    if precision == "bf16" and not cpu_has_native_bf16():
        pytest.skip("this CPU has no native bf16 (emulated bf16 is slow, and not what --precision bf16 is for)")

    before = torch.get_num_threads()
    runs = {}
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            cfg = InstructConfig(data=[str(inputs / "data")], align=str(inputs / "align"),
                                 llm=str(inputs / "llm"), tasks=["nc", "lp"], warmup_examples=16,
                                 nc_per_dataset=16, lp_per_dataset=16, batch_size=8, lora=True, lr=1e-2,
                                 warmup_lr=1e-2, log_every=1, device="cpu", seed=0, precision=precision)
            runs[threads] = tmp_path / f"run{threads}"
            train_instruct(cfg, runs[threads], progress=False)
    finally:
        torch.set_num_threads(before)

    one, two = (read_jsonl(runs[t] / "metrics.jsonl") for t in (1, 2))
    assert len(one) == 6 and [r["phase"] for r in one] == [0, 0, 1, 1, 1, 1]  # warm-up, then LoRA
    for key in ("loss", "grad_norm"):
        a, b = (torch.tensor([r[key] for r in run], dtype=torch.float64) for run in (one, two))
        torch.testing.assert_close(b[:1], a[:1], rtol=1e-5, atol=0)  # the same parameters and batch
        torch.testing.assert_close(b, a, rtol=rtol, atol=0)

"""Stage 2 on 1 and 2 CPU threads, at SmolLM2-135M's width (hidden 576): the warm-up (projectors only) is
bit-identical; with LoRA the runs differ in the last bits (the adapters' weight gradients sum over tokens,
which MKL may split across threads), and the losses and gradient norms agree within 1e-6. The demo runs
its Stage 2 on one core beside the raw-feature ablation (mlaga_fast.demo.lanes); this bounds how far that
moves it from a run on both cores."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

pytestmark = pytest.mark.skipif(importlib.util.find_spec("peft") is None, reason="needs peft (LoRA)")


def test_stage2_barely_depends_on_the_thread_count(tmp_path):
    from helpers.instruct_inputs import build_instruct_inputs
    from mlaga_fast.train.instruct import InstructConfig, train_instruct
    from mlaga_fast.train.metrics import read_jsonl

    build_instruct_inputs(tmp_path, hidden=576, heads=9, init_std=0.05)

    before = torch.get_num_threads()
    runs = {}
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            cfg = InstructConfig(data=[str(tmp_path / "data")], align=str(tmp_path / "align"),
                                 llm=str(tmp_path / "llm"), tasks=["nc", "lp"], warmup_examples=16,
                                 nc_per_dataset=16, lp_per_dataset=16, batch_size=8, lora=True, lr=1e-2,
                                 warmup_lr=1e-2, log_every=1, device="cpu", seed=0)
            runs[threads] = tmp_path / f"run{threads}"
            train_instruct(cfg, runs[threads], progress=False)
    finally:
        torch.set_num_threads(before)

    one, two = (read_jsonl(runs[t] / "metrics.jsonl") for t in (1, 2))
    assert len(one) == 6 and [r["phase"] for r in one] == [0, 0, 1, 1, 1, 1]  # warm-up, then LoRA
    warm = [(r["loss"], r["grad_norm"]) for r in one if r["phase"] == 0]
    assert warm == [(r["loss"], r["grad_norm"]) for r in two if r["phase"] == 0]
    for key in ("loss", "grad_norm"):
        torch.testing.assert_close(torch.tensor([r[key] for r in two], dtype=torch.float64),
                                   torch.tensor([r[key] for r in one], dtype=torch.float64), rtol=1e-6, atol=0)

"""Stage 2: instruction tuning of the projectors (and optional LoRA adapters) into a frozen causal LLM.

    mlaga-fast train instruct --data DIR --align RUN1 --out RUN2 [--preset paper] [--config FILE] [--resume]

The entry point; the settings are in ``instruct_config``, the training prompts in ``instruct_examples``,
the steps and the artifacts in ``instruct_stage``, the model in ``mlaga_fast.models.graph_llm``.
Two phases, one run, one loop (``mlaga_fast.train.loop``):

1. **warm-up** (feature alignment, as LLaVA's first stage): ``warmup_examples`` short NC prompts, the
   target node's tokens and the question only (no demonstrations, no text); only the projectors train.
   It teaches the projectors to put node tokens where the frozen LLM reads them as their category.
2. **instruct**: the task prompts (NC with PPR demonstrations, LP pairs), mixed by batch; the projectors
   and, with ``--lora``, LoRA adapters train (LoRA starts here, so the warm-up is projector-only).
   When the LP graph projector is task-specific it starts as a copy of the warmed-up NC one.

RUN2/ holds config.json (resolved InstructConfig), manifest.json (stage "instruct": aligner identity,
per-dataset graph/feature records, LLM, projector config, template-set fingerprint, truncation policy,
precision, and a "train" record), metrics.jsonl (the loss of every step), checkpoints/step_*.pt,
projectors.safetensors and, with LoRA, lora/ (a peft adapter folder).

Batches: one (dataset, task) per global batch of world * batch_size prompts, cut from length-sorted
windows (``mlaga_fast.prompts.batch.plan_batches``); rank r takes the r-th slice. Each rank sums its answer-token
losses and divides by the answer tokens of all ranks, and gradients are averaged over ranks, so a step
equals one process with the whole global batch.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch.distributed as tdist

from mlaga_fast.config import check_resume_config
from mlaga_fast.runs.manifest import MANIFEST_NAME
from mlaga_fast.train import distributed as dist
from mlaga_fast.train.checkpoint import find_latest
from mlaga_fast.train.instruct_config import RESUMABLE_CHANGES, InstructConfig, check_config
from mlaga_fast.train.instruct_stage import run_instruct
from mlaga_fast.train.loop import finished_run

__all__ = ["train_instruct"]


def train_instruct(cfg: InstructConfig, out: str | Path, *, resume: bool = False, progress: bool = True,
                   on_step: Callable[[int, int, dict], None] | None = None) -> dict:
    """Run Stage 2; returns a summary (run dir, steps, final loss, seconds, whether it was already complete).
    Safe to interrupt: --resume continues from the last checkpoint, exactly. ``on_step(step, total, rec)`` runs
    after every optimizer step.

    Under torchrun with W processes and per-process batch B, every step takes the same W*B prompts and
    the same gradient (the mean over all their answer tokens) as one process with batch W*B; only rank 0
    writes files (the run dir and the datasets' node-token and PPR caches).
    """
    check_config(cfg)
    out = Path(out)
    t0 = time.perf_counter()
    latest = find_latest(out / "checkpoints") if resume else None
    if resume:
        check_resume_config(cfg, out, RESUMABLE_CHANGES)
        done = finished_run(out)
        if done is not None:
            return {"out": str(out), "steps": done["train"]["steps"], "complete": True, "already_complete": True,
                    "final": done["train"].get("final", {}), "seconds": 0.0}
    if not resume and ((out / MANIFEST_NAME).exists() or latest is not None or find_latest(out / "checkpoints")):
        raise ValueError(f"out: {out} already holds a Stage-2 run; pass --resume or choose another --out")
    owns_group = not (tdist.is_available() and tdist.is_initialized())
    info = dist.init_distributed(cfg.device)
    try:
        summary = run_instruct(cfg, out, info, latest, progress, on_step)
    finally:
        if owns_group:
            dist.cleanup_distributed()
    return {"out": str(out), **summary, "already_complete": False, "seconds": round(time.perf_counter() - t0, 1)}

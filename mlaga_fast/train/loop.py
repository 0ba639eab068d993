"""The one training loop both stages run: resume, seeding, optimizer steps, clipping, logging,
checkpoints and the finished-run check. A stage supplies only what differs (``Stage``): the
trainable state, the learning rate at each step, and one optimizer step's forward and backward.

Both stages' configs inherit ``LoopConfig``, so the options are spelt the same in both
(``--lr``, ``--warmup-steps``/``--warmup-ratio``, ``--checkpoint-every``, ``--keep-checkpoints``,
``--precision``, ``--log-every``, ``--report-to`` ...).

Exactness: a checkpoint holds the trainable state, optimizer, scheduler, grad scaler and every RNG,
taken after step s; a stage's ``step(s)`` must depend only on (seed, s) and that state, so a resumed
run repeats the uninterrupted one bit for bit (tests kill runs and compare). The last logged record
travels in the checkpoint, so a run killed after its last step but before its final artifacts are
written still reports its final metrics when resumed.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

__all__ = ["LoopConfig", "Stage", "run_loop", "warmup_steps_for", "LOOP_RUNTIME_FIELDS", "REPORT_TO",
           "finished_run"]

REPORT_TO = ("none", "tensorboard", "wandb")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class LoopConfig:
    """Fields every training stage has (a stage's config inherits them and may change the defaults)."""
    epochs: int = field(default=1, metadata={"help": "passes over the training data (max_steps overrides)"})
    max_steps: int = field(default=0, metadata={"help": "optimizer steps (0 = epochs decide)"})
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate (AdamW)"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    warmup_steps: int = field(default=0, metadata={"help": "linear LR warmup steps (0 = warmup_ratio decides)"})
    warmup_ratio: float = field(default=0.0, metadata={"help": "linear LR warmup as a fraction of the steps"})
    min_lr_ratio: float = field(default=0.0, metadata={"help": "final LR of the cosine decay, as a fraction of the peak"})
    grad_clip: float = field(default=1.0, metadata={"help": "max global grad norm (0 = off)"})
    precision: str = field(default="auto", metadata={
        "help": "compute precision: auto = bf16 on CUDA devices that support it (else fp16); on a CPU, bf16 where "
                "it has native bf16 and a timed step of the stage runs >= 1.2x faster in it, else fp32",
        "choices": list(PRECISIONS)})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N"})
    seed: int = field(default=0, metadata={"help": "seed for init, data order and sampling"})
    log_every: int = field(default=1, metadata={"help": "steps between metrics.jsonl records"})
    checkpoint_every: int = field(default=500, metadata={"help": "steps between checkpoints (one at the end too)"})
    keep_checkpoints: int = field(default=2, metadata={"help": "newest checkpoints kept"})
    report_to: str = field(default="none", metadata={
        "help": "also log to tensorboard (RUN/tensorboard) or wandb; metrics.jsonl is always written",
        "choices": list(REPORT_TO)})


# Loop fields that may differ on --resume: where the same computation runs and what it logs.
LOOP_RUNTIME_FIELDS = ("device", "log_every", "checkpoint_every", "keep_checkpoints", "report_to")


def validate_loop(cfg: LoopConfig) -> None:
    for name in ("epochs", "log_every", "checkpoint_every", "keep_checkpoints"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"config field {name!r} must be >= 1, got {getattr(cfg, name)}")
    for name in ("max_steps", "warmup_steps", "weight_decay", "grad_clip"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"config field {name!r} must be >= 0, got {getattr(cfg, name)}")
    if not (math.isfinite(cfg.lr) and 0 < cfg.lr <= 10):
        raise ValueError(f"config field 'lr' must be in (0, 10], got {cfg.lr}")
    if not 0 <= cfg.warmup_ratio < 1 or not 0 <= cfg.min_lr_ratio <= 1:
        raise ValueError("config fields 'warmup_ratio' must be in [0, 1) and 'min_lr_ratio' in [0, 1]")
    if cfg.precision not in PRECISIONS:
        raise ValueError(f"config field 'precision': {cfg.precision!r} is not one of {list(PRECISIONS)}")
    if cfg.report_to not in REPORT_TO:
        raise ValueError(f"config field 'report_to': {cfg.report_to!r} is not one of {list(REPORT_TO)}")


def warmup_steps_for(cfg: LoopConfig, total: int) -> int:
    """The LR warmup of a run of ``total`` steps: warmup_steps when set, else round(warmup_ratio * total)."""
    return cfg.warmup_steps if cfg.warmup_steps > 0 else int(round(cfg.warmup_ratio * total))


class Stage(Protocol):
    """What a training stage gives the loop."""

    total_steps: int

    def state_dict(self) -> dict: ...  # the trainable state (checkpointed)

    def load_state_dict(self, state: dict) -> None: ...

    def param_groups(self) -> list[dict]: ...  # for AdamW; each group's "lr" is a multiplier of lr_at

    def lr_at(self, step: int) -> float: ...  # absolute learning rate of optimizer step `step` (a stage with
    # several param groups may instead define lr_lambdas() -> one such function per group)

    def step(self, step: int) -> dict[str, float]: ...  # forward + backward of step `step`; "loss" required

    def clip_params(self) -> list: ...  # parameters whose global grad norm is clipped


def finished_run(run: Path) -> dict | None:
    """The manifest of a run that completed all its steps (train.steps == train.total_steps), else None."""
    import json

    man = run / "manifest.json"
    if not man.is_file():
        return None
    try:
        m = json.loads(man.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    train = m.get("train", {}) if isinstance(m, dict) else {}
    return m if "steps" in train and train.get("steps") == train.get("total_steps") else None


def run_loop(stage: Stage, cfg: LoopConfig, run: Path, info, *, resume_from: Path | None, show_progress: bool,
             desc: str, betas: tuple[float, float] = (0.9, 0.999),
             on_step: Callable[[int, int, dict], None] | None = None) -> dict[str, Any]:
    """Train ``stage`` from step 0 (or the checkpoint ``resume_from``) to ``stage.total_steps``.

    Writes RUN/checkpoints/step_*.pt (main rank), RUN/metrics.jsonl and the ``report_to`` logs.
    Returns the last logged record (loss, lr, grad_norm and the stage's metrics). ``on_step(step, total, rec)``
    runs after every optimizer step (``step`` counts the steps done).
    """
    import torch

    from mlaga_fast.train import distributed as D
    from mlaga_fast.train.checkpoint import load_checkpoint, save_checkpoint
    from mlaga_fast.train.metrics import MetricsLogger
    from mlaga_fast.utils.progress import progress

    total = stage.total_steps
    # Each group's "lr" is a multiplier; LambdaLR sets it to multiplier * stage.lr_at(step).
    opt = torch.optim.AdamW(stage.param_groups(), betas=betas, weight_decay=cfg.weight_decay,
                            foreach=info.device.type == "cuda")
    lambdas = stage.lr_lambdas() if hasattr(stage, "lr_lambdas") else stage.lr_at
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambdas)
    scaler = getattr(stage, "scaler", None)  # fp16 on CUDA only
    step, last = 0, {}
    if resume_from is not None:
        state = load_checkpoint(resume_from, model=stage, optimizer=opt, scheduler=sched, scaler=scaler,
                                map_location=info.device)
        step, last = int(state["step"]), dict(state["extra"].get("last", {}))
    start = step
    logger = MetricsLogger(run, report_to=cfg.report_to, enabled=info.is_main,
                           resume_step=step if resume_from is not None else None)
    bar = progress(total=total, initial=step, desc=desc, enabled=info.is_main and show_progress)
    ckpt_dir = run / "checkpoints"

    def checkpoint(at: int) -> None:
        if info.is_main:
            save_checkpoint(ckpt_dir, at, model=stage, optimizer=opt, scheduler=sched, scaler=scaler,
                            extra={"last": last, "total_steps": total}, keep=cfg.keep_checkpoints)
        D.barrier()

    t0 = time.perf_counter()
    try:
        while step < total:
            rec = stage.step(step)
            loss = float(rec["loss"])
            if not math.isfinite(loss):  # the same value on every rank (stages reduce it), so all stop
                raise ValueError(f"{desc}: loss is {loss} at step {step + 1}; lower --lr or use --precision fp32")
            if scaler is not None:
                scaler.unscale_(opt)
            gnorm = torch.nn.utils.clip_grad_norm_(stage.clip_params(),
                                                   cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
            lr = opt.param_groups[0]["lr"]
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            rec = {**rec, "lr": lr, "grad_norm": float(gnorm), "step_s": time.perf_counter() - t0}
            t0 = time.perf_counter()
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            if on_step is not None:
                on_step(step, total, rec)
            if step % cfg.log_every == 0 or step == total:
                last = {k: float(v) for k, v in rec.items() if isinstance(v, (int, float))}
                logger.log(last, step=step)
            if step % cfg.checkpoint_every == 0 and step < total:
                checkpoint(step)
    finally:
        bar.close()
        logger.close()
    # The last step's checkpoint, unless the run resumed from it. Decided from what every rank knows alike: a
    # listing of the folder would race with rank 0's writes, and a rank that skipped checkpoint()'s barrier
    # would pair every later collective with the wrong one.
    if resume_from is None or step != start:
        checkpoint(step)
    return last

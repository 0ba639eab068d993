"""Learning-rate schedule: linear warmup, then cosine decay to ``min_lr_ratio`` of the peak."""
from __future__ import annotations

import math

import torch

__all__ = ["cosine_warmup_factor", "cosine_with_warmup"]


def cosine_warmup_factor(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0) -> float:
    """Multiplier of the peak LR for optimizer step ``step`` (0-based).

    Warmup is (step + 1) / warmup_steps so the very first update is not wasted at LR 0. After
    warmup the factor follows half a cosine from 1 down to ``min_lr_ratio`` at ``total_steps`` and
    stays there if training runs longer.
    """
    if warmup_steps < 0 or total_steps < 1:
        raise ValueError(f"warmup_steps must be >= 0 and total_steps >= 1, got {warmup_steps}, {total_steps}")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def cosine_with_warmup(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0
) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR over ``cosine_warmup_factor``; call ``scheduler.step()`` once per optimizer step."""
    cosine_warmup_factor(0, warmup_steps, total_steps, min_lr_ratio)  # validate eagerly
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: cosine_warmup_factor(s, warmup_steps, total_steps, min_lr_ratio)
    )

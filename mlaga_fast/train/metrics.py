"""Metrics: one JSON object per line in ``metrics.jsonl`` (always), optionally mirrored to TensorBoard
or Weights & Biases (``--report-to``, as the Hugging Face Trainer spells it), and a tqdm bar that shows
the loss.

On resume the logger drops lines whose step is past the checkpoint's step, so the file of a resumed
run reads like the file of an uninterrupted one (no duplicated steps).
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from mlaga_fast.utils.io import atomic_write_text

__all__ = ["JsonlLogger", "MetricsLogger", "read_jsonl"]


def _clean(v: Any) -> Any:
    # JSON has no NaN/inf; write them as strings so the file stays parseable by strict readers.
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if hasattr(v, "item") and callable(v.item):
        try:
            return _clean(v.item())
        except (ValueError, RuntimeError):
            return str(v)
    return v


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All complete records; a torn last line (crash mid-write) is skipped."""
    p = Path(path)
    if not p.exists():
        return []
    out = []
    for line in p.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


class JsonlLogger:
    """Append-only JSONL metrics. ``enabled=False`` (non-main ranks) makes every call a no-op.

    ``resume_step``: keep only records with ``step <= resume_step`` (rewritten atomically); None
    starts a fresh file.
    """

    def __init__(self, path: str | os.PathLike, *, enabled: bool = True, resume_step: int | None = None):
        self.path = Path(path)
        self.enabled = enabled
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            atomic_write_text(self.path, "")
        else:
            kept = [r for r in read_jsonl(self.path) if "step" not in r or r["step"] <= resume_step]
            atomic_write_text(self.path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))

    def log(self, record: dict[str, Any], step: int | None = None) -> None:
        if not self.enabled:
            return
        rec = {k: _clean(v) for k, v in record.items()}
        if step is not None:
            rec["step"] = int(step)
        rec.setdefault("time", time.time())
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec, sort_keys=True) + "\n")
            f.flush()


class MetricsLogger:
    """metrics.jsonl in RUN, plus RUN/tensorboard event files or a wandb run when ``report_to`` asks.

    wandb honours its own environment (WANDB_MODE=offline writes RUN/wandb without a network); the run
    is resumed by id on --resume. Non-numeric values only go to metrics.jsonl.
    """

    def __init__(self, run: str | os.PathLike, *, report_to: str = "none", enabled: bool = True,
                 resume_step: int | None = None):
        self.run = Path(run)
        self.jsonl = JsonlLogger(self.run / "metrics.jsonl", enabled=enabled, resume_step=resume_step)
        self._tb = self._wandb = None
        if not enabled or report_to == "none":
            return
        if report_to == "tensorboard":
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ValueError("report_to tensorboard needs the tensorboard package "
                                 "(pip install 'mlaga-fast[tensorboard]')") from None
            self._tb = SummaryWriter(log_dir=str(self.run / "tensorboard"), purge_step=resume_step)
        elif report_to == "wandb":
            try:
                import wandb
            except ImportError:
                raise ValueError("report_to wandb needs the wandb package (pip install wandb)") from None
            self._wandb = wandb.init(dir=str(self.run), id=_run_id(self.run), resume="allow",
                                     name=self.run.name, reinit=True)
        else:
            raise ValueError(f"report_to: {report_to!r} is not one of ['none', 'tensorboard', 'wandb']")

    def log(self, record: dict[str, Any], step: int) -> None:
        self.jsonl.log(record, step=step)
        nums = {k: float(v) for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self._tb is not None:
            for k, v in nums.items():
                self._tb.add_scalar(f"train/{k}", v, global_step=step)
        if self._wandb is not None:
            self._wandb.log({f"train/{k}": v for k, v in nums.items()}, step=step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None


def _run_id(run: Path) -> str:
    import hashlib

    return hashlib.sha1(str(run.resolve()).encode()).hexdigest()[:16]

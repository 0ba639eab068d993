"""--report-to: metrics.jsonl always, TensorBoard event files (train/loss at every step) and wandb in offline
mode, on a tiny Stage-1 run (the loop is the same for Stage 2)."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_train_align import TINY  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard not installed")
def test_tensorboard_event_files_hold_the_loss(align_inputs, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from mlaga_fast.train.align import train_align

    from mlaga_fast.train.align_config import AlignConfig

    data, feat = align_inputs
    run = tmp_path / "run"
    train_align(AlignConfig(**dict(TINY, report_to="tensorboard")), data, feat, run, show_progress=False)
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    losses = [e.value for e in acc.Scalars("train/loss")]
    jsonl = [json.loads(x)["loss"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e.step for e in acc.Scalars("train/loss")] == list(range(1, 7))
    assert losses == pytest.approx(jsonl, rel=1e-6)


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb not installed")
def test_wandb_offline_run_is_written(align_inputs, tmp_path, monkeypatch):
    from mlaga_fast.train.align import train_align
    from mlaga_fast.train.align_config import AlignConfig

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    data, feat = align_inputs
    run = tmp_path / "run"
    train_align(AlignConfig(**dict(TINY, report_to="wandb")), data, feat, run, show_progress=False)
    runs = list((run / "wandb").glob("offline-run-*"))
    assert runs and any(p.suffix == ".wandb" for p in runs[0].iterdir())

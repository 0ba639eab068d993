"""Shared training utilities: checkpoint/RNG round trip, schedule math, JSONL logger, manifest checks,
and the differentiable all_gather (2 gloo processes)."""
from __future__ import annotations

import json
import math
import os
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers.gloo import run_ranks  # noqa: E402
from mlaga_fast.train.checkpoint import find_latest, list_checkpoints, load_checkpoint, save_checkpoint
from mlaga_fast.runs.manifest import (
    check_features_match,
    read_stage_manifest,
    require_match,
    write_stage_manifest,
)
from mlaga_fast.train.metrics import JsonlLogger, read_jsonl
from mlaga_fast.train.schedule import cosine_warmup_factor, cosine_with_warmup


def _train_steps(model, opt, sched, n):
    for _ in range(n):
        x = torch.randn(4, 3)  # consumes the global torch RNG: resume must restore it
        noise = np.random.rand()  # and numpy's
        jitter = random.random()  # and python's
        loss = (model(x) ** 2).mean() * (1 + noise + jitter)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


def _fresh(seed=0):
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = cosine_with_warmup(opt, 2, 10)
    return model, opt, sched


def test_checkpoint_resume_is_exact(tmp_path):
    m1, o1, s1 = _fresh()
    _train_steps(m1, o1, s1, 6)

    m2, o2, s2 = _fresh()
    _train_steps(m2, o2, s2, 3)
    save_checkpoint(tmp_path, 3, model=m2, optimizer=o2, scheduler=s2, extra={"epoch": 1})
    # scramble everything, as a new process would have
    torch.manual_seed(123), np.random.seed(123), random.seed(123)
    m3, o3, s3 = _fresh(seed=99)
    state = load_checkpoint(find_latest(tmp_path), model=m3, optimizer=o3, scheduler=s3)
    assert state["step"] == 3 and state["extra"] == {"epoch": 1}
    _train_steps(m3, o3, s3, 3)
    for a, b in zip(m1.parameters(), m3.parameters()):
        assert torch.equal(a, b)
    assert s1.get_last_lr() == s3.get_last_lr()


def test_checkpoint_pruning_and_errors(tmp_path):
    m, o, s = _fresh()
    for step in (1, 2, 3, 4):
        save_checkpoint(tmp_path, step, model=m, optimizer=o, keep=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [3, 4]
    (tmp_path / ".step_000000005.pt.abc.tmp").write_bytes(b"partial")  # an interrupted write is ignored
    assert find_latest(tmp_path).name == "step_000000004.pt"
    assert find_latest(tmp_path / "nope") is None
    bad = tmp_path / "step_000000009.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot be read"):
        load_checkpoint(bad, model=m)
    with pytest.raises(ValueError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_schedule_values():
    # hand-computed: warmup 4 -> 0.25, 0.5, 0.75, 1.0; then cosine over 8 steps down to 0.1
    w = [cosine_warmup_factor(s, 4, 12, 0.1) for s in range(4)]
    assert w == [0.25, 0.5, 0.75, 1.0]
    assert cosine_warmup_factor(4, 4, 12, 0.1) == pytest.approx(1.0)
    assert cosine_warmup_factor(8, 4, 12, 0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert cosine_warmup_factor(12, 4, 12, 0.1) == pytest.approx(0.1)
    assert cosine_warmup_factor(50, 4, 12, 0.1) == pytest.approx(0.1)
    assert cosine_warmup_factor(5, 0, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    with pytest.raises(ValueError):
        cosine_warmup_factor(0, -1, 10)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    sch = cosine_with_warmup(opt, 4, 12, 0.1)
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sch.step()
    assert lrs == pytest.approx([2 * cosine_warmup_factor(s, 4, 12, 0.1) for s in range(6)])


def test_jsonl_logger_resume(tmp_path):
    p = tmp_path / "m.jsonl"
    log = JsonlLogger(p)
    for s in range(1, 6):
        log.log({"loss": 1.0 / s, "bad": float("nan"), "t": torch.tensor(2.5)}, step=s)
    with open(p, "a") as f:
        f.write('{"step": 6, "loss"')  # torn write
    recs = read_jsonl(p)
    assert [r["step"] for r in recs] == [1, 2, 3, 4, 5]
    assert recs[0]["bad"] == "nan" and recs[0]["t"] == 2.5
    JsonlLogger(p, resume_step=3)
    assert [r["step"] for r in read_jsonl(p)] == [1, 2, 3]
    JsonlLogger(p, enabled=False).log({"x": 1}, step=9)
    assert [r["step"] for r in read_jsonl(p)] == [1, 2, 3]
    JsonlLogger(p)
    assert read_jsonl(p) == []


class _FakeStore:
    path = "/feat"
    manifest = {"encoder": "tiny", "graph_fingerprint": "g1"}
    fingerprint = "f1"
    num_nodes = 10
    image_len, image_dim, text_len, text_dim = 5, 32, 7, 32


def test_manifest_checks(tmp_path):
    from mlaga_fast.runs.manifest import features_record

    store = _FakeStore()
    man = write_stage_manifest(tmp_path, "align", config={"d": 8}, inputs={"features": features_record(store)},
                               dims={"d": 8})
    assert read_stage_manifest(tmp_path, "align") == json.loads((tmp_path / "manifest.json").read_text())
    assert man["mlaga_fast_version"]
    check_features_match(man, store)
    other = _FakeStore()
    other.image_dim = 64
    with pytest.raises(ValueError, match="image_dim: run was trained on 32, these features have 64"):
        check_features_match(man, other)
    other = _FakeStore()
    other.fingerprint = "f2"
    with pytest.raises(ValueError, match="fingerprint"):
        check_features_match(man, other)
    with pytest.raises(ValueError, match="expected a 'instruct' run"):
        read_stage_manifest(tmp_path, "instruct")
    with pytest.raises(ValueError, match="no manifest.json"):
        read_stage_manifest(tmp_path / "x")
    bad = dict(man, mlaga_fast_version="99.0.0")
    (tmp_path / "manifest.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="major.minor"):
        read_stage_manifest(tmp_path)
    with pytest.raises(ValueError, match=r"dims.d: expected 8, got 16"):
        require_match({"dims": {"d": 8}}, {"dims": {"d": 16}}, what="aligner")


def _gather_worker(rank, out_dir):
    from mlaga_fast.train.distributed import all_gather_with_grad, cleanup_distributed, init_distributed

    info = init_distributed("cpu", timeout_s=60)  # the group from torchrun's variables
    torch.manual_seed(0)
    full = torch.randn(5, 3)  # rank 0 owns rows 0..1, rank 1 rows 2..4 (uneven on purpose)
    sl = slice(0, 2) if rank == 0 else slice(2, 5)
    x = full[sl].clone().requires_grad_(True)
    g = all_gather_with_grad(x)
    # a loss that reads every rank's rows, weighted by rank so the cross-rank terms matter
    w = torch.arange(15, dtype=torch.float32).reshape(5, 3) * (rank + 1)
    (g * w).sum().backward()
    torch.save({"gathered": g.detach(), "grad": x.grad}, os.path.join(out_dir, f"r{info.rank}.pt"))
    cleanup_distributed()


def test_all_gather_with_grad_two_processes(tmp_path):
    run_ranks(_gather_worker, str(tmp_path), timeout=60, init_group=False)
    torch.manual_seed(0)
    full = torch.randn(5, 3)
    w = torch.arange(15, dtype=torch.float32).reshape(5, 3)
    # the gradient of sum_r loss_r wrt my rows = sum over ranks of their weights at my rows = w * (1 + 2)
    for r, sl in ((0, slice(0, 2)), (1, slice(2, 5))):
        res = torch.load(tmp_path / f"r{r}.pt")
        assert torch.equal(res["gathered"], full)
        assert torch.allclose(res["grad"], 3 * w[sl])

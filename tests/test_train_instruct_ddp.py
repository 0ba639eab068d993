"""Stage 2 under two gloo processes on the CPU: per-process batch B reproduces one process with batch
2B step for step (same losses, gradient norms and final weights), although the ranks' batches hold
different numbers of answer tokens (NC class names and LP Yes/No differ in length) and the epoch ends
with a rank that has no batch left. Also: only rank 0 writes, and a 2-process resume is exact."""
from __future__ import annotations

import importlib.util
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers.gloo import free_port, rank_env  # noqa: E402
from mlaga_fast.train.instruct import InstructConfig, train_instruct  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

B = 2  # prompts per process and step; the single-process reference uses 2 * B
# 13 prompts: 4 steps per epoch at a global batch of 4, the last with 1 prompt (rank 1 has none)
CFG = dict(tasks=["nc", "lp"], nc_per_dataset=7, lp_per_dataset=6, num_demos=2, epochs=2, lr=1e-2,
           max_length=160, target_text_tokens=12, demo_text_tokens=6, log_every=1, save_every=4,
           device="cpu", seed=0)
STEPS = 8
HAS_PEFT = importlib.util.find_spec("peft") is not None


def _cfg(root: Path, batch_size: int, **kw) -> InstructConfig:
    return InstructConfig(data=[str(root / "data")], align=str(root / "align"), llm=str(root / "llm"),
                          batch_size=batch_size, **CFG, **kw)


def _cut_back(src: Path, dst: Path, step: int) -> None:
    """dst = src as a crash after the checkpoint of `step` would leave it (later lines in metrics.jsonl)."""
    shutil.copytree(src, dst)
    for p in (dst / "checkpoints").glob("step_*.pt"):
        if int(p.stem.split("_")[1]) > step:
            p.unlink()
    for name in ("projector.safetensors", "manifest.json"):
        (dst / name).unlink()
    shutil.rmtree(dst / "lora", ignore_errors=True)


def _worker(rank: int, world: int, port: int, root: str, lora: bool) -> None:
    import torch.distributed as tdist

    rank_env(rank, world, port)
    root = Path(root)
    # One group for all three runs (train_instruct leaves a group it did not create alone).
    tdist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        # Rank 1 gets its own out dir: it must not write anything, so that dir must never appear.
        train_instruct(_cfg(root, B), root / ("ddp" if rank == 0 else "ddp_rank1"), progress=False)
        if rank == 0:
            _cut_back(root / "ddp", root / "resumed", step=STEPS // 2)
        tdist.barrier()
        train_instruct(_cfg(root, B), root / "resumed", resume=True, progress=False)
        if lora:
            train_instruct(_cfg(root, B, lora=True), root / "ddp_lora", progress=False)
    finally:
        tdist.destroy_process_group()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The 2-process runs (started first, so rank 0 meets cold node-token and PPR caches), then the
    1-process references with batch 2B."""
    import torch.multiprocessing as mp

    from helpers.tiny_llm import build_tiny_llm
    from mlaga_fast.data.synth import make_catalogue
    from mlaga_fast.features import FeatureConfig, extract_features
    from mlaga_fast.features.extract import graph_fingerprint
    from mlaga_fast.train.align import AlignConfig, train_align

    root = tmp_path_factory.mktemp("instruct_ddp")
    g = make_catalogue(root / "data", nodes=120, classes=3, mean_degree=4, seed=0, image_size=32)
    extract_features(g, root / "data" / "features", FeatureConfig(encoder="tiny", device="cpu", batch_size=64),
                     graph_fp=graph_fingerprint(g, root / "data"), progress=False)
    train_align(AlignConfig(dim=16, num_layers=1, num_heads=2, num_queries=2, batch_size=32, max_steps=2,
                            warmup_steps=1, device="cpu"),
                root / "data", root / "data" / "features", root / "align", show_progress=False)
    build_tiny_llm(root / "llm", list(g.texts) + list(g.class_names), init_std=0.2)

    mp.spawn(_worker, args=(2, free_port(), str(root), HAS_PEFT), nprocs=2, join=True)
    train_instruct(_cfg(root, 2 * B), root / "single", progress=False)
    if HAS_PEFT:
        train_instruct(_cfg(root, 2 * B, lora=True), root / "single_lora", progress=False)
    return root


def _metrics(run: Path) -> list[dict]:
    from mlaga_fast.train.metrics import read_jsonl

    return read_jsonl(run / "metrics.jsonl")


def _assert_same_curves(one: list[dict], two: list[dict]) -> None:
    assert [r["step"] for r in one] == [r["step"] for r in two] == list(range(1, STEPS + 1))
    for key in ("loss", "grad_norm", "lr"):
        np.testing.assert_allclose([r[key] for r in two], [r[key] for r in one], rtol=1e-4, atol=1e-6,
                                   err_msg=key)


def _assert_same_tensors(a_file: Path, b_file: Path) -> dict:
    from safetensors.torch import load_file

    a, b = load_file(str(a_file)), load_file(str(b_file))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=lambda m: f"{k}: {m}")
    return a


def _rank_token_counts(root: Path) -> list[list[int]]:
    """[step][rank] answer tokens as the trainer splits the prompts (0 for a rank with no batch left):
    shows that the ranks' token counts differ, so a mean of per-rank means would not match."""
    from mlaga_fast.llm.loading import load_tokenizer, resolve_llm
    from mlaga_fast.train.instruct import build_training_examples
    from mlaga_fast.train.instruct_data import load_dataset_inputs

    cfg = _cfg(root, B)
    ds = load_dataset_inputs(cfg.data[0], None, source="aligner", align_dir=cfg.align, allow_unseen=False,
                             progress=False)
    examples = build_training_examples(cfg, [ds], load_tokenizer(resolve_llm(cfg.llm)), ds.tokens.shape[1],
                                       progress=False)
    per_epoch = math.ceil(len(examples) / (2 * B))
    counts = []
    for step in range(STEPS):
        epoch, pos = divmod(step, per_epoch)
        order = np.random.default_rng([cfg.seed, epoch, 11]).permutation(len(examples))
        counts.append([sum(len(examples[i].answer_ids) for i in order[(2 * pos + r) * B:(2 * pos + r + 1) * B])
                       for r in range(2)])
    return counts


def test_two_processes_match_one_with_twice_the_batch(runs):
    counts = _rank_token_counts(runs)
    assert any(a != b and b > 0 for a, b in counts), counts  # token counts differ across ranks
    assert counts[STEPS // 2 - 1][1] == 0  # the epoch's last step leaves rank 1 without a batch

    one, two = _metrics(runs / "single"), _metrics(runs / "ddp")
    _assert_same_curves(one, two)
    losses = [r["loss"] for r in one]
    assert max(losses) - min(losses) > 1e-2  # the loss moved, so the match is not "both constant"
    _assert_same_tensors(runs / "single" / "projector.safetensors", runs / "ddp" / "projector.safetensors")

    m1 = json.loads((runs / "single" / "manifest.json").read_text())
    m2 = json.loads((runs / "ddp" / "manifest.json").read_text())
    assert m1["train"] == {"steps": STEPS, "world_size": 1, "global_batch_size": 2 * B}
    assert m2["train"] == {"steps": STEPS, "world_size": 2, "global_batch_size": 2 * B}


def test_only_rank_0_writes(runs):
    assert not (runs / "ddp_rank1").exists()
    names = {p.relative_to(runs / "ddp") for p in (runs / "ddp").rglob("*")}
    assert names == {p.relative_to(runs / "single") for p in (runs / "single").rglob("*")}
    assert not [p for p in runs.rglob("*") if p.name.endswith(".tmp")]  # no leftover partial writes


def test_resume_under_two_processes_is_exact(runs):
    _assert_same_curves(_metrics(runs / "ddp"), _metrics(runs / "resumed"))
    _assert_same_tensors(runs / "ddp" / "projector.safetensors", runs / "resumed" / "projector.safetensors")
    assert json.loads((runs / "resumed" / "manifest.json").read_text())["train"]["world_size"] == 2


def test_lora_two_processes_match_one(runs):
    pytest.importorskip("peft")
    _assert_same_curves(_metrics(runs / "single_lora"), _metrics(runs / "ddp_lora"))
    _assert_same_tensors(runs / "single_lora" / "projector.safetensors",
                         runs / "ddp_lora" / "projector.safetensors")
    lora = _assert_same_tensors(runs / "single_lora" / "lora" / "adapter_model.safetensors",
                                runs / "ddp_lora" / "lora" / "adapter_model.safetensors")
    trained = [k for k in lora if "lora_B" in k]  # peft starts B at zero: nonzero means the adapters trained
    assert trained and all(lora[k].abs().max() > 0 for k in trained)

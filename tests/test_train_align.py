"""Stage 1 end to end on a tiny synthetic catalogue with "tiny" CLIP features: exact resume after a
crash, the run manifest and its checks, export, probe and the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mlaga_fast.train.align import train_align
from mlaga_fast.train.align_config import AlignConfig, build_config

TINY = dict(dim=16, num_layers=2, num_heads=2, num_queries=2, cross_attention_every=2, num_positives=3,
            batch_size=16, max_steps=6, warmup_steps=2, checkpoint_every=3, log_every=1, dropout=0.1,
            device="cpu", lr=3e-3)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def inputs(align_inputs):
    return align_inputs  # conftest.py: built once per session


def _weights(run: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run / "model.safetensors"))


def _losses(run: Path) -> list[float]:
    from mlaga_fast.train.metrics import read_jsonl

    return [r["loss"] for r in read_jsonl(run / "metrics.jsonl")]


def test_resume_after_crash_is_exact(inputs, tmp_path, monkeypatch):
    data, feat = inputs
    cfg = AlignConfig(**TINY)
    full = train_align(cfg, data, feat, tmp_path / "full", show_progress=False)
    assert full["steps"] == 6

    import mlaga_fast.train.checkpoint as ck

    real_save = ck.save_checkpoint

    def crash_after_first(*a, **kw):
        real_save(*a, **kw)
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(ck, "save_checkpoint", crash_after_first)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_align(cfg, data, feat, tmp_path / "resumed", show_progress=False)
    monkeypatch.setattr(ck, "save_checkpoint", real_save)
    assert not (tmp_path / "resumed" / "manifest.json").exists()
    with pytest.raises(ValueError, match="--resume"):
        train_align(cfg, data, feat, tmp_path / "resumed", show_progress=False)
    with pytest.raises(ValueError, match="different config: lr"):
        train_align(AlignConfig(**dict(TINY, lr=1.0)), data, feat, tmp_path / "resumed", resume=True)
    res = train_align(cfg, data, feat, tmp_path / "resumed", resume=True, show_progress=False)
    assert res["steps"] == 6
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "resumed")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0)
    la, lb = _losses(tmp_path / "full"), _losses(tmp_path / "resumed")
    assert len(la) == len(lb) == 6  # the resumed log has no duplicated steps
    np.testing.assert_allclose(la, lb, rtol=1e-6)
    # training did something: weights moved away from the seeded initialisation
    from mlaga_fast.models.aligner import Aligner

    torch.manual_seed(0)
    init = Aligner(image_dim=32, text_dim=32, **cfg.model_kwargs()).state_dict()
    assert any(not torch.allclose(init[k], a[k]) for k in a)


def test_manifest_load_embed_probe(inputs, tmp_path):
    from mlaga_fast.features import FeatureStore
    from mlaga_fast.models.aligner import load_aligner
    from mlaga_fast.runs.manifest import check_features_match
    from mlaga_fast.models.embeddings import export_embeddings, load_embeddings

    data, feat = inputs
    run = tmp_path / "run"
    # a threshold above any possible spread (<= 1) must raise the collapse warning and flag the records
    with pytest.warns(RuntimeWarning, match="collapsing"):
        train_align(AlignConfig(**dict(TINY, max_steps=2, collapse_threshold=1.01)), data, feat, run,
                    show_progress=False)
    from mlaga_fast.train.metrics import read_jsonl

    recs = read_jsonl(run / "metrics.jsonl")
    assert all(r["collapse"] for r in recs) and all(0 < r["spread"] <= 1 for r in recs)
    assert all(abs(r["gap"] - (r["pos_sim"] - r["neg_sim"])) < 1e-5 for r in recs)
    model, man = load_aligner(run)
    assert man["stage"] == "align" and man["dims"]["d"] == 16 and man["dims"]["num_queries"] == 2
    assert man["inputs"]["features"]["encoder"].startswith("tiny") and man["config"]["lr"] == TINY["lr"]
    assert json.loads((run / "config.json").read_text())["dim"] == 16
    store = FeatureStore(feat)
    check_features_match(man, store)
    bad = json.loads(json.dumps(man))
    bad["inputs"]["features"]["text_dim"] = 768
    with pytest.raises(ValueError, match="text_dim: run was trained on 768, these features have 32"):
        check_features_match(bad, store)

    emb = tmp_path / "emb"
    export_embeddings(run, emb, batch_size=40, device="cpu", progress=False)
    tokens, pooled, em = load_embeddings(emb)
    assert tokens.shape == (96, 2, 16) and pooled.shape == (96, 16) and tokens.dtype == np.float16
    assert em["features_fingerprint"] == store.fingerprint
    # export matches a direct forward pass of the loaded model (fp16 storage tolerance)
    ids = np.array([0, 17, 95])
    with torch.no_grad():
        t_ref, p_ref = model(store.get(ids))
    np.testing.assert_allclose(np.asarray(tokens[ids], np.float32), t_ref.numpy(), atol=2e-3, rtol=2e-3)
    np.testing.assert_allclose(np.asarray(pooled[ids], np.float32), p_ref.numpy(), atol=2e-3, rtol=2e-3)

    from mlaga_fast.eval.probe import probe_run

    res = probe_run(run, emb_dir=emb, device="cpu", progress=False)
    for key in ("raw", "aligned"):
        assert 0.0 <= res[key]["test"] <= 1.0
    assert res["aligned"]["dim"] == 16 and res["raw"]["dim"] == 64

    (run / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="no model.safetensors"):
        load_aligner(run)
    with pytest.raises(ValueError, match="no manifest.json"):
        load_aligner(tmp_path)


def test_cli_train_and_embed(inputs, tmp_path):
    from mlaga_fast.cli.main import cli

    data, feat = inputs
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("dim: 16\nnum_heads: 2\nnum_queries: 2\nnum_layers: 1\nbatch_size: 32\n")
    run = tmp_path / "run"
    r = CliRunner().invoke(cli, ["train", "align", "--data", str(data), "--features", str(feat), "--out", str(run),
                                 "--config", str(cfg_file), "--max-steps", "2", "--device", "cpu", "--no-progress",
                                 "--tau-mode", "negatives_only"])
    assert r.exit_code == 0, r.output
    saved = json.loads((run / "config.json").read_text())
    assert saved["dim"] == 16 and saved["max_steps"] == 2 and saved["tau_mode"] == "negatives_only"
    # --resume alone continues with the run's saved config (not the defaults); a changed setting is refused
    base = ["train", "align", "--data", str(data), "--features", str(feat), "--out", str(run), "--resume", "--no-progress"]
    r = CliRunner().invoke(cli, base + ["--device", "cpu"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, base + ["--lr", "1.0"])
    assert r.exit_code != 0 and "different config" in r.output and "lr:" in r.output
    r = CliRunner().invoke(cli, ["embed", "--run", str(run), "--out", str(tmp_path / "emb"), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "emb" / "tokens.npy").is_file()
    r = CliRunner().invoke(cli, ["probe", "--run", str(run), "--emb", str(tmp_path / "emb"), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    assert set(res) >= {"raw", "aligned"} and 0 <= res["aligned"]["test"] <= 1
    png = tmp_path / "emb.png"
    r = CliRunner().invoke(cli, ["plot", "embeddings", "--run", str(run), "--out", str(png), "--device", "cpu",
                                 "--max-nodes", "60"])
    assert r.exit_code == 0, r.output
    import matplotlib.image

    img = matplotlib.image.imread(png)
    assert img.shape[1] > img.shape[0] > 100  # two panels side by side
    assert json.loads(r.output)["nodes"] == 60
    r = CliRunner().invoke(cli, ["train", "align", "--data", str(data), "--features", str(feat), "--out",
                                 str(tmp_path / "r2"), "--num-heads", "3", "--device", "cpu"])
    assert r.exit_code != 0 and "divisible" in r.output


def test_presets_and_validation():
    cfg = build_config({}, preset="paper")
    assert (cfg.dim, cfg.num_layers, cfg.num_heads, cfg.num_queries, cfg.cross_attention_every) == (1024, 6, 8, 32, 2)
    assert build_config({"dim": 256}, preset="paper").dim == 256  # the CLI overrides the preset
    with pytest.raises(ValueError, match="num_positives"):
        build_config({"num_positives": 0})


def test_grad_accumulation_counts_micro_batches(inputs, tmp_path):
    from mlaga_fast.train.metrics import read_jsonl

    data, feat = inputs
    cfg = AlignConfig(**dict(TINY, max_steps=3, grad_accum=2, batch_size=8, checkpoint_every=100))
    res = train_align(cfg, data, feat, tmp_path / "run", show_progress=False)
    recs = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert res["steps"] == 3 and [r["step"] for r in recs] == [1, 2, 3]
    # 96 nodes / 8 = 12 micro-batches per epoch; 3 steps x 2 micro-batches stay in epoch 0
    assert all(r["epoch"] == 0 for r in recs)
    # the first step's LR is the warmup's first value: lr * 1 / warmup_steps
    assert recs[0]["lr"] == pytest.approx(TINY["lr"] / TINY["warmup_steps"])


@pytest.mark.parametrize("arch,objective", [("prenorm", "infonce"), ("mlaga", "mlaga")])
def test_killed_before_the_manifest_resumes_with_its_final_metrics(inputs, tmp_path, arch, objective):
    """A run killed after its last checkpoint, before model.safetensors/manifest.json: --resume has no
    step left to train, and still writes the final metrics (they travel in the checkpoint)."""
    data, feat = inputs
    cfg = AlignConfig(**dict(TINY, arch=arch, objective=objective, tau=0.5 if objective == "mlaga" else 0.1))
    full = train_align(cfg, data, feat, tmp_path / "run", show_progress=False)
    done = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert done["dims"]["arch"] == arch and done["config"]["objective"] == objective
    (tmp_path / "run" / "manifest.json").unlink()
    (tmp_path / "run" / "model.safetensors").unlink()
    again = train_align(cfg, data, feat, tmp_path / "run", resume=True, show_progress=False)
    man = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert man["train"]["final"] == done["train"]["final"] == full["final"] and man["train"]["final"]["loss"] > 0
    assert again["steps"] == 6
    # and a finished run's --resume is a no-op that says so
    assert train_align(cfg, data, feat, tmp_path / "run", resume=True, show_progress=False)["already_complete"]


def test_non_finite_loss_is_a_one_line_error(inputs, tmp_path, monkeypatch):
    import mlaga_fast.train.align as trainer  # the objectives as the trainer calls them

    data, feat = inputs
    for name, objective in (("graph_infonce", "infonce"), ("mlaga_objective", "mlaga")):
        real = getattr(trainer, name)
        monkeypatch.setattr(trainer, name, lambda *a, _real=real, **k: _real(*a, **k) * float("nan"))
        with pytest.raises(ValueError, match="loss is nan at step 1"):
            train_align(AlignConfig(**dict(TINY, objective=objective)), data, feat, tmp_path / objective,
                        show_progress=False)
    with pytest.raises(ValueError, match="'lr' must be in"):
        build_config({"lr": 1e12})

"""End-to-end tiny pipeline through the CLI: synth -> features -> align -> train instruct -> eval
(NC and LP), plus transfer to an unseen dataset, resume, and the Stage-1 mismatch refusal.

The data make the NC margin certain: 4 classes, edge homophily 0.95, no modality mismatch, so a
node's own tokens and its PPR demonstrations both name its class; chance is 25%. The LLM is a tiny
random Llama (frozen; init std 0.2 so signals pass through it); only the projector trains.

They make the LP margin certain too: 90% of the test edges join two nodes of one class and 82% of the
test non-edges join two classes, so "same class?" alone scores 86% on the balanced pairs (the test
checks this on the data), and the node tokens separate the classes (NC above). Comparing two nodes'
tokens needs an attention pattern that a frozen *random* LLM lacks (projector-only LP measured at
47-55%), so the LP run also trains LoRA adapters (--lora), on a slightly wider tiny Llama. This run's
settings scored 72-79% over training seeds 0-2 (75% at seed 0, the one used), and 73-85% over six seeds
with NC prompts mixed in; chance is 50%, and the test asserts 62%.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

pytestmark = pytest.mark.slow


def _cli(args):
    from click.testing import CliRunner

    from mlaga_fast.cli.main import cli

    r = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return r


def _dataset(root: Path, seed: int) -> Path:
    from mlaga_fast.data.synth import make_catalogue
    from mlaga_fast.features.extract import FeatureConfig, extract_features, graph_fingerprint

    d = root / f"ds{seed}"
    g = make_catalogue(d, nodes=240, classes=4, homophily=0.95, image_mismatch=0.0, text_mismatch=0.0,
                       seed=seed, image_size=32, mean_degree=6.0)
    extract_features(g, d / "features", FeatureConfig(encoder="tiny", device="cpu", batch_size=128),
                     graph_fp=graph_fingerprint(g, d), progress=False)
    return d


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    import torch

    from helpers.tiny_llm import build_tiny_llm
    from mlaga_fast.data import load
    from mlaga_fast.train.align import train_align
    from mlaga_fast.train.align_config import AlignConfig

    torch.set_num_threads(1)  # tiny tensors: threads only add overhead on a shared machine
    root = tmp_path_factory.mktemp("pipe")
    a, b = _dataset(root, 1), _dataset(root, 2)
    cfg = AlignConfig(dim=32, num_heads=2, num_queries=2, num_layers=1, batch_size=64, max_steps=30, warmup_steps=3, lr=3e-3,
                      device="cpu", attn_backend="sdpa")
    train_align(cfg, a, a / "features", root / "align", show_progress=False)
    ga, gb = load(a), load(b)
    llm = build_tiny_llm(root / "llm", list(ga.texts) + list(gb.texts) + list(ga.class_names), init_std=0.2)
    run = root / "run2"
    r = _cli(["train", "instruct", "--data", a, "--align", root / "align", "--llm", llm, "--tasks", "nc,lp",
              "--out", run, "--epochs", 10, "--batch-size", 16, "--lr", "1e-2", "--device", "cpu",
              "--checkpoint-every", 20, "--no-progress"])
    assert r.exit_code == 0, r.output
    return root, a, b, run


@pytest.fixture(scope="module")
def lp_run(pipeline):
    from helpers.tiny_llm import build_tiny_llm
    from mlaga_fast.data import load

    root, a, _, _ = pipeline
    ga = load(a)
    llm = build_tiny_llm(root / "llm_lp", list(ga.texts) + list(ga.class_names), hidden=128, init_std=0.1)
    run = root / "run_lp"
    r = _cli(["train", "instruct", "--data", a, "--align", root / "align", "--llm", llm, "--tasks", "lp",
              "--lora", "--lp-per-dataset", 1000, "--epochs", 4, "--batch-size", 16, "--lr", "1e-2",
              "--device", "cpu", "--no-progress", "--out", run])
    assert r.exit_code == 0, r.output
    return run


def _eval(run, data, task, out, *extra):
    r = _cli(["eval", "--run", run, "--data", data, "--task", task, "--device", "cpu", "--out", out,
              "--no-progress", *extra])
    assert r.exit_code == 0, r.output
    text = r.output[r.output.rindex('{"method"'):]  # progress bars of transformers may precede it
    return json.loads(text), json.loads(Path(out).read_text())


def test_run_artifacts(pipeline):
    from mlaga_fast.runs.manifest import read_stage_manifest

    root, a, _, run = pipeline
    m = read_stage_manifest(run, "instruct")
    assert m["dims"]["nq"] == 2 and m["dims"]["d"] == 32 and m["dims"]["hidden"] == 64
    assert m["inputs"]["datasets"][0]["dir"] == str(a)
    assert (run / "projectors.safetensors").is_file() and (run / "config.json").is_file()
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    first, last = lines[0]["loss"], lines[-1]["loss"]
    assert last < first  # the projector learns
    # node tokens were cached once, keyed by aligner + features
    assert len(list((a / "features" / "node_tokens").glob("*.npy"))) == 1


def test_nc_accuracy_well_above_chance(pipeline, tmp_path):
    root, a, _, run = pipeline
    summary, res = _eval(run, a, "nc", tmp_path / "nc.json", "--generate")
    assert res["task"] == "nc" and res["num_examples"] == summary["num_examples"] > 30
    chance = res["extra"]["chance"]
    assert chance <= 0.4
    assert res["accuracy"] >= chance + 0.3, res
    assert 0.0 <= res["extra"]["generation"]["accuracy"] <= 1.0
    for suffix in (".png", ".gen.png", ".md", ".gen.jsonl"):
        assert (tmp_path / f"nc{suffix}").stat().st_size > 0
    assert sum(map(sum, res["confusion"])) == res["num_examples"]


def test_lp_eval_is_balanced_and_scored(pipeline, tmp_path):
    root, a, _, run = pipeline
    summary, res = _eval(run, a, "lp", tmp_path / "lp.json")
    conf = np.asarray(res["confusion"])
    assert conf.sum(1)[0] == conf.sum(1)[1] > 0  # balanced positives / negatives
    assert res["extra"]["chance"] == pytest.approx(0.5)
    assert res["class_names"] == ["No", "Yes"]
    assert res["num_invalid"] == 0  # constrained scoring always answers


def test_lp_accuracy_well_above_chance(pipeline, lp_run, tmp_path):
    from mlaga_fast.data import load

    _, a, _, _ = pipeline
    g = load(a)
    y, ls = np.asarray(g.labels), g.link_split
    pos, neg = np.asarray(ls.test_pos), np.asarray(ls.test_neg)
    same_class_rule = ((y[pos[0]] == y[pos[1]]).mean() + (y[neg[0]] != y[neg[1]]).mean()) / 2
    assert same_class_rule >= 0.8  # the data carry the signal the margin below relies on
    assert (lp_run / "lora" / "adapter_config.json").is_file()
    summary, res = _eval(lp_run, a, "lp", tmp_path / "lp.json")
    assert res["num_examples"] == pos.shape[1] + neg.shape[1]  # every balanced test pair
    assert res["accuracy"] >= res["extra"]["chance"] + 0.12, res


def test_transfer_to_unseen_dataset_without_tuning(pipeline, tmp_path):
    root, _, b, run = pipeline
    summary, res = _eval(run, b, "nc", tmp_path / "t.json")
    assert res["extra"]["transfer"] is True and res["dataset"]
    assert res["accuracy"] >= res["extra"]["chance"] + 0.15, res


def test_ablation_flags(pipeline, tmp_path):
    root, a, _, run = pipeline
    s_none, r_none = _eval(run, a, "nc", tmp_path / "none.json", "--demos", "none")
    s_rand, r_rand = _eval(run, a, "nc", tmp_path / "rand.json", "--demos", "random")
    assert r_none["extra"]["demos"] == "none" and "none-demos" in r_none["method"]
    assert r_rand["extra"]["demos"] == "random"
    assert r_none["extra"]["generation"] is None


def test_resume_and_stage1_mismatch(pipeline, tmp_path):
    root, a, b, run = pipeline
    # a finished run refuses to be overwritten without --resume
    r = _cli(["train", "instruct", "--data", a, "--align", root / "align", "--llm", root / "llm", "--out", run,
              "--device", "cpu", "--no-progress"])
    assert r.exit_code != 0 and "--resume" in r.output
    # the aligner was trained on dataset a's features: training on b's is refused, naming the mismatch
    r = _cli(["train", "instruct", "--data", b, "--align", root / "align", "--llm", root / "llm",
              "--out", tmp_path / "x", "--device", "cpu", "--no-progress"])
    assert r.exit_code != 0 and "do not match" in r.output
    # --resume of the finished run has nothing left to do
    r = _cli(["train", "instruct", "--out", run, "--resume", "--no-progress"])
    assert r.exit_code == 0 and "already complete" in r.output, r.output
    # resuming with another learning rate would not continue the same run: refused, naming the field
    r = _cli(["train", "instruct", "--out", run, "--resume", "--lr", "5e-3", "--no-progress"])
    assert r.exit_code != 0 and "different config" in r.output and "lr: run has 0.01, now 0.005" in r.output
    # where it runs and how often it logs may change; the saved config supplies everything else
    r = _cli(["train", "instruct", "--out", run, "--resume", "--device", "cpu", "--log-every", "5", "--no-progress"])
    assert r.exit_code == 0, r.output


def test_resume_reproduces_uninterrupted_training(pipeline, tmp_path):
    """Kill-and-resume equivalence: drop the last checkpoint and outputs, resume, same weights."""
    import shutil

    from safetensors.torch import load_file

    root, a, _, _ = pipeline
    # 3 warm-up steps (12 prompts at batch 4), then 6 instruct steps with LoRA; checkpoints every 2 steps
    args = ["train", "instruct", "--data", a, "--align", root / "align", "--llm", root / "llm", "--tasks", "nc,lp",
            "--warmup-examples", 12, "--max-steps", 6, "--checkpoint-every", 2, "--keep-checkpoints", 10,
            "--batch-size", 4, "--lr", "1e-2", "--lora", "--device", "cpu", "--no-progress"]
    r = _cli(args + ["--out", tmp_path / "full"])
    assert r.exit_code == 0, r.output
    ref = load_file(str(tmp_path / "full" / "projectors.safetensors"))
    ref_lora = load_file(str(tmp_path / "full" / "lora" / "adapter_model.safetensors"))
    phases = [json.loads(x)["phase"] for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert phases == [0, 0, 0] + [1] * 6
    for keep in (2, 4):  # a checkpoint inside the warm-up, and one in the instruct phase
        part = tmp_path / f"part{keep}"
        shutil.copytree(tmp_path / "full", part)
        for p in (part / "checkpoints").glob("step_*.pt"):
            if int(p.stem.split("_")[1]) > keep:
                p.unlink()
        for name in ("projectors.safetensors", "manifest.json"):
            (part / name).unlink()
        shutil.rmtree(part / "lora")
        r = _cli(["train", "instruct", "--out", part, "--resume", "--no-progress"])
        assert r.exit_code == 0, r.output
        got = load_file(str(part / "projectors.safetensors"))
        got_lora = load_file(str(part / "lora" / "adapter_model.safetensors"))
        for want, have in ((ref, got), (ref_lora, got_lora)):
            for k in want:
                np.testing.assert_allclose(have[k].numpy(), want[k].numpy(), rtol=1e-5, atol=1e-6, err_msg=k)
        steps = [json.loads(x)["step"] for x in (part / "metrics.jsonl").read_text().splitlines()]
        assert steps == list(range(1, 10))  # no duplicated steps after resume
    # --resume of a finished run says so and stops
    r = _cli(["train", "instruct", "--out", tmp_path / "full", "--resume", "--no-progress"])
    assert r.exit_code == 0 and "already complete" in r.output


def test_raw_feature_ablation_trains_its_own_projector(pipeline, tmp_path):
    from mlaga_fast.features import FeatureStore
    from mlaga_fast.runs.manifest import read_stage_manifest

    root, a, b, _ = pipeline
    run = tmp_path / "raw"
    # two datasets in one run: batches mix them (and their tasks); no aligner involved
    r = _cli(["train", "instruct", "--data", f"{a},{b}", "--node-source", "raw", "--llm", root / "llm", "--tasks", "nc",
              "--epochs", 3, "--batch-size", 16, "--lr", "1e-2", "--device", "cpu", "--out", run, "--no-progress"])
    assert r.exit_code == 0, r.output
    m = read_stage_manifest(run, "instruct")
    fs = FeatureStore(a / "features")
    assert m["dims"]["nq"] == 1 and m["dims"]["d"] == fs.image_dim + fs.text_dim
    assert m["inputs"]["align"] is None
    assert [d["dir"] for d in m["inputs"]["datasets"]] == [str(a), str(b)]
    summary, res = _eval(run, a, "nc", tmp_path / "raw.json")
    assert "raw-features" in res["method"] and res["extra"]["node_source"] == "raw"
    assert res["accuracy"] >= res["extra"]["chance"] + 0.2, res


def test_stage2_on_online_features(pipeline, tmp_path, monkeypatch):
    """`--features online:tiny` (encoders per batch, nothing stored) for Stage 2 and its evaluation: the node
    tokens equal those from the stored folder, and their cache goes to the dataset's cache folder."""
    import numpy as np

    from mlaga_fast.features import FeatureStore
    from mlaga_fast.models.node_inputs import load_dataset_inputs

    root, a, _, _ = pipeline
    monkeypatch.chdir(tmp_path)  # a cache written to a relative "online:tiny" folder would land here
    online = load_dataset_inputs(a, "online:tiny", source="aligner", align_dir=root / "align", allow_unseen=False,
                                 progress=False, images=True)
    stored = load_dataset_inputs(a, None, source="aligner", align_dir=root / "align", allow_unseen=False,
                                 progress=False, images=True)
    np.testing.assert_allclose(np.asarray(online.tokens, np.float32), np.asarray(stored.tokens, np.float32),
                               rtol=1e-2, atol=1e-2)
    np.testing.assert_allclose(online.image, FeatureStore(a / "features").pooled()[:, :online.image.shape[1]],
                               rtol=2 ** -9, atol=2 ** -12)
    assert list((a / "cache" / "node_tokens").glob("*.npy")) and not list(tmp_path.iterdir())
    run = tmp_path / "online_run"
    r = _cli(["train", "instruct", "--data", a, "--features", "online:tiny", "--align", root / "align", "--llm",
              root / "llm", "--tasks", "nc", "--epochs", 1, "--batch-size", 16, "--device", "cpu", "--out", run,
              "--no-progress"])
    assert r.exit_code == 0, r.output
    _, res = _eval(run, a, "nc", tmp_path / "online.json", "--features", "online:tiny", "--max-examples", 16)
    assert res["num_examples"] == 16


def test_predict_matches_eval_and_resumes_to_the_same_file(pipeline, tmp_path, monkeypatch):
    from mlaga_fast.assistant import MLaGA
    from mlaga_fast.eval import predict as P
    from mlaga_fast.eval.instruct_eval import EvalOptions, eval_examples

    root, a, _, run = pipeline
    # NC: predict's classes are eval's constrained choices on the same nodes
    r = _cli(["predict", "--run", run, "--data", a, "--task", "nc", "--nodes", "test", "--device", "cpu",
              "--out", tmp_path / "nc.csv", "--no-progress"])
    assert r.exit_code == 0, r.output
    import csv

    rows = list(csv.DictReader((tmp_path / "nc.csv").open()))
    m = MLaGA.from_pretrained(run, device="cpu", progress=False)
    ds = m.dataset(a)
    exs = eval_examples(m, ds, EvalOptions(task="nc", split="test"))
    scores, _ = m.score(ds, exs)
    assert [int(x["node"]) for x in rows] == [e.query[0] for e in exs]
    assert [int(x["class_index"]) for x in rows] == scores.argmax(1).tolist()
    # LP: P(Yes) is a probability for every test pair
    r = _cli(["predict", "--run", run, "--data", a, "--task", "lp", "--device", "cpu", "--out", tmp_path / "lp.jsonl",
              "--no-progress"])
    assert r.exit_code == 0, r.output
    lp = [json.loads(x) for x in (tmp_path / "lp.jsonl").read_text().splitlines()]
    assert lp and all(0.0 <= x["p_yes"] <= 1.0 for x in lp)
    assert {x["prediction"] for x in lp} <= {"Yes", "No"}
    # an interruption after the first chunk, then the same command: the same file
    monkeypatch.setattr(P, "CHUNK", 16)
    calls = {"n": 0}
    real = MLaGA.predict_nc

    def flaky(self, *args, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self, *args, **kw)

    monkeypatch.setattr(MLaGA, "predict_nc", flaky)
    with pytest.raises(KeyboardInterrupt):
        P.run_predict(run, a, "nc", tmp_path / "again.csv", device="cpu", progress=False)
    assert not (tmp_path / "again.csv").exists() and len(list((tmp_path / "again.csv.partial").glob("chunk_*"))) == 1
    P.run_predict(run, a, "nc", tmp_path / "again.csv", device="cpu", progress=False)
    assert calls["n"] > 2 and not (tmp_path / "again.csv.partial").exists()
    assert (tmp_path / "again.csv").read_text() == (tmp_path / "nc.csv").read_text()


def test_ask_is_seeded_free_generation(pipeline):
    root, a, _, run = pipeline
    args = ["ask", "--run", run, "--data", a, "--node", 3, "--device", "cpu", "--demos", "ppr", "--seed", 1,
            "--temperature", 0.7, "What is this item?"]
    r1, r2 = _cli(args), _cli(args)
    assert r1.exit_code == 0, r1.output
    assert r1.output == r2.output and r1.output.strip()  # same seed, same sampled answer
    r = _cli(["ask", "--run", run, "--data", a, "--node", 3, "--node", 4, "--device", "cpu", "Bought together?"])
    assert r.exit_code == 0, r.output
    r = _cli(["ask", "--run", run, "--data", a, "--node", 10**6, "--device", "cpu", "What?"])
    assert r.exit_code != 0 and "outside" in r.output


def test_python_api_is_documented():
    import inspect

    from mlaga_fast import MLaGA
    from mlaga_fast.models.aligner import Aligner

    for fn in (MLaGA.from_pretrained, MLaGA.predict_nc, MLaGA.predict_lp, MLaGA.ask, Aligner.from_pretrained,
               Aligner.encode):
        assert inspect.getdoc(fn), fn
    for fn in (MLaGA.predict_nc, MLaGA.predict_lp, Aligner.encode):  # array in, arrays out: shapes stated
        assert "[n" in inspect.getdoc(fn), fn


def test_paper_preset_runs_end_to_end_with_a_chat_template(pipeline, tmp_path):
    """--preset paper at tiny sizes: the paper's templates, chat format, modality-aware projectors with
    cross-task attention, one LP demonstration; eval --protocol paper is seeded (same result twice)."""
    from helpers.tiny_llm import CHATML, build_tiny_llm
    from mlaga_fast.data import load
    from mlaga_fast.runs.manifest import read_stage_manifest

    root, a, _, _ = pipeline
    ga = load(a)
    llm = build_tiny_llm(tmp_path / "chat_llm", list(ga.texts) + list(ga.class_names) + ["synthetic", "catalogue"],
                         init_std=0.2, chat_template=CHATML)
    run = tmp_path / "paper"
    r = _cli(["train", "instruct", "--preset", "paper", "--data", a, "--align", root / "align", "--llm", llm,
              "--nc-per-dataset", 24, "--lp-per-dataset", 24, "--epochs", 1, "--max-length", 512, "--device", "cpu",
              "--out", run, "--no-progress"])
    assert r.exit_code == 0, r.output
    m = read_stage_manifest(run, "instruct")
    assert m["templates"]["set"] == "paper" and m["templates"]["chat_template"] == "auto"
    assert m["projector"]["kind"] == "modality" and m["projector"]["cross_task"] is True
    assert m["config"]["lr"] == 2e-5 and m["config"]["batch_size"] == 8 and m["config"]["lp_demo"] is True
    outs = [_eval(run, a, "nc", tmp_path / f"p{i}.json", "--protocol", "paper", "--max-examples", 24)[1]
            for i in range(2)]
    assert outs[0]["extra"]["protocol"] == "paper" and outs[0]["confusion"] == outs[1]["confusion"]
    assert (tmp_path / "p0.gen.jsonl").is_file()
    _, lp = _eval(run, a, "lp", tmp_path / "plp.json", "--protocol", "paper", "--max-examples", 16)
    assert lp["num_invalid"] == 0  # LP's rule ("Yes" in the answer) always decides


def test_export_loads_elsewhere_with_its_model_card(pipeline, tmp_path):
    import shutil

    from mlaga_fast.assistant import MLaGA

    root, a, _, run = pipeline
    r = _cli(["export", "--run", run, "--out", tmp_path / "exp"])
    assert r.exit_code == 0, r.output
    exp = tmp_path / "exp"
    for name in ("projectors.safetensors", "config.json", "manifest.json", "model_card.md", "aligner/model.safetensors",
                 "aligner/manifest.json"):
        assert (exp / name).is_file(), name
    card = (exp / "model_card.md").read_text()
    assert "## Training data" in card and "## Intended use" in card
    assert json.loads((exp / "manifest.json").read_text())["inputs"]["align"]["run"] == "aligner"
    # "another machine": the export alone, after the original aligner run is gone
    moved = tmp_path / "moved"
    shutil.copytree(exp, moved)
    nodes = [0, 5, 9]
    want = MLaGA.from_pretrained(run, device="cpu").predict_nc(a, nodes).scores
    hidden = root / "align_hidden"
    (root / "align").rename(hidden)
    try:
        got = MLaGA.from_pretrained(moved, device="cpu").predict_nc(a, nodes).scores
        np.testing.assert_allclose(got, want, rtol=1e-5)
    finally:
        hidden.rename(root / "align")
    r = _cli(["export", "--run", run, "--out", tmp_path / "exp"])
    assert r.exit_code != 0 and "already exists" in r.output


def test_readme_python_example_runs(pipeline, capsys):
    """The README's five-line API example, as written, on the tiny run and dataset."""
    import re

    root, a, _, run = pipeline
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = re.search(r"From Python.*?```python\n(.*?)```", readme, re.S).group(1)
    assert len([x for x in code.splitlines() if x.strip()]) == 5
    exec(code.replace('"runs/instruct"', repr(str(run))).replace('"data/toys"', repr(str(a))), {})
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[0].startswith("[")


def test_ask_never_answers_with_an_empty_line(pipeline, monkeypatch):
    """When the LLM ends its answer at once, `ask` says so and gives the run's constrained reading: the class it
    scores highest for a node (the same as predict_nc), Yes/No with P(Yes) for a pair (as predict_lp)."""
    from mlaga_fast import MLaGA

    root, a, _, run = pipeline
    m = MLaGA.from_pretrained(run, device="cpu", progress=False)
    eos = m.tokenizer.eos_token_id
    real = m.model.read
    monkeypatch.setattr(m.model, "read", lambda batch, cands=None, **kw: real(batch, cands, **kw) if cands
                        else (None, [[eos]] * len(batch.examples)))  # the LLM stops at once, every time
    pred = m.predict_nc(a, [3])
    got = m.ask(a, 3, "Tell me about it")
    assert got == f"{pred.class_names[int(pred.labels[0])]} [no free answer to this wording; the category this run " \
                  "scores highest]"
    lp = m.predict_lp(a, [[3, 4]])
    got = m.ask(a, [3, 4], "Related?")
    assert got.startswith(("Yes [", "No [")) and f"P(Yes) = {float(lp.p_yes[0]):.2f}" in got
    assert got.startswith("Yes") == bool(lp.labels[0] == 1)

"""Varied wordings and node descriptions (the assistant's tasks beyond one wording per task): held-out wordings
never reach a training prompt, varied wordings only replace prompts, descriptions answer with the node's category
and title, and evaluation scores unseen wordings and descriptions on test nodes."""
from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny catalogue with features and an aligner, its Stage-2 inputs and tokenizer, and a Stage-2 run trained
    with varied wordings and descriptions."""
    from helpers.instruct_inputs import build_instruct_inputs
    from mlaga_fast.llm.loading import load_tokenizer, resolve_llm
    from mlaga_fast.models.node_inputs import load_dataset_inputs
    from mlaga_fast.train.instruct import train_instruct
    from mlaga_fast.train.instruct_config import InstructConfig

    from mlaga_fast.prompts import load_templates

    words = load_templates()["wordings"]  # in the tiny tokenizer's vocabulary, so that prompts decode to text
    texts = [q for k, v in words.items() if isinstance(v, list) for q in v] + [words["description"]]
    root = build_instruct_inputs(tmp_path_factory.mktemp("wordings"), vocab_texts=texts, hidden=32, layers=1)
    cfg = InstructConfig(data=[str(root / "data")], align=str(root / "align"), llm=str(root / "llm"),
                         tasks=["nc", "lp"], paraphrase_ratio=0.5, describe_per_dataset=12, nc_per_dataset=24,
                         lp_per_dataset=24, batch_size=8, max_steps=3, device="cpu", seed=0)
    calls = []
    train_instruct(cfg, root / "run", progress=False, on_step=lambda step, total, rec: calls.append((step, total, rec)))
    (root / "on_step.json").write_text(json.dumps([[s, t, float(r["loss"])] for s, t, r in calls]))
    ds = load_dataset_inputs(cfg.data[0], None, source="aligner", align_dir=cfg.align, allow_unseen=False,
                             progress=False, images=True)
    return root, cfg, ds, load_tokenizer(resolve_llm(cfg.llm))


def _asks(tok, ex, questions) -> bool:
    """Whether the prompt holds one of ``questions``' token sequences (as the builder encodes its literals)."""
    ids = ex.prompt_ids
    for q in questions:
        seq = tok(q, add_special_tokens=False).input_ids
        if any(ids[i:i + len(seq)] == seq for i in range(len(ids) - len(seq) + 1)):
            return True
    return False


def test_held_out_wordings_never_reach_a_training_prompt(world):
    from mlaga_fast.prompts import load_templates
    from mlaga_fast.train.instruct_examples import build_phase_examples

    _, cfg, ds, tok = world
    words = load_templates()["wordings"]
    warm, instruct = build_phase_examples(cfg, [ds], tok, ds.tokens.shape[1], 1, progress=False)
    held_out = [q for k in ("nc", "lp", "describe") for q in words[f"{k}_held_out"]]
    assert not [ex for ex in warm + instruct if _asks(tok, ex, held_out)]
    for kind in ("nc", "lp", "describe"):  # every kind of varied prompt is there, in its trained wordings
        assert any(_asks(tok, ex, words[f"{kind}_train"]) for ex in instruct), kind
    described = [ex for ex in instruct if _asks(tok, ex, words["describe_train"])]
    assert len(described) == cfg.describe_per_dataset


def test_varied_wordings_replace_prompts_and_leave_the_others_as_they_were(world):
    """With paraphrase_ratio 0 and no descriptions the prompts are those of a run without the feature; with them,
    the prompts that are not asked in a varied wording are exactly those prompts, in order."""
    from mlaga_fast.train.instruct_examples import build_phase_examples

    _, cfg, ds, tok = world
    plain = replace(cfg, paraphrase_ratio=0.0, describe_per_dataset=0)
    _, base = build_phase_examples(plain, [ds], tok, ds.tokens.shape[1], 1, progress=False)
    _, mixed = build_phase_examples(cfg, [ds], tok, ds.tokens.shape[1], 1, progress=False)
    key = lambda ex: (ex.task, tuple(ex.prompt_ids), tuple(ex.answer_ids), ex.query, tuple(ex.slots))  # noqa: E731
    kept = {key(ex) for ex in base}
    same = [key(ex) for ex in mixed if key(ex) in kept]
    assert same == [key(ex) for ex in base if key(ex) in set(same)]  # the same prompts, in the same order
    assert 0.3 * len(base) < len(same) < 0.8 * len(base)  # about half were asked in another wording
    assert len(mixed) == len(base) + cfg.describe_per_dataset


def test_a_description_answers_with_the_category_and_the_title(world):
    from mlaga_fast.prompts.examples import builder_for

    root, cfg, ds, tok = world
    b = builder_for(cfg, tok, ds.graph, ds.tokens.shape[1], 1)
    v = int(np.asarray(ds.graph.train)[0])
    y = int(ds.graph.labels[v])
    title = " ".join(ds.graph.texts[v].replace(",", ".").split(".")[0].split()[:8])
    want = tok(f" {ds.graph.class_names[y]}: {title}", add_special_tokens=False).input_ids + [tok.eos_token_id]
    assert b.description_ids(v, y) == want and title


def test_unseen_wordings_and_descriptions_are_evaluated_on_test_nodes(world, monkeypatch):
    from mlaga_fast import MLaGA
    from mlaga_fast.eval.instruct_eval import EvalOptions, evaluate
    from mlaga_fast.prompts import load_templates

    root, cfg, ds, tok = world
    run = root / "run"
    man = json.loads((run / "manifest.json").read_text())
    words = load_templates()["wordings"]
    assert man["wordings"]["trained"] == {k: words[f"{k}_train"] for k in ("nc", "lp", "describe")}
    m = MLaGA.from_pretrained(run, device="cpu", progress=False)
    test = set(np.asarray(ds.graph.test).tolist())
    for task in ("nc", "lp"):
        res = evaluate(run, cfg.data[0], EvalOptions(task=task, wording="held-out", device="cpu", max_examples=10),
                       loaded=m, progress=False)
        assert res["method"].endswith("(unseen wordings)") and 0.0 <= res["accuracy"] <= 1.0
        assert res["extra"]["options"]["wording"] == "held-out"
    # descriptions: the test nodes, scored by whether the answer names the node's category
    names = list(ds.graph.class_names)
    real = m.model.read

    def describe_some(batch, cands=None, **kw):  # the LLM names the category of every other node
        if cands:
            return real(batch, cands, **kw)
        return None, [tok(f" {names[ex.target]} thing" if ex.query[0] % 2 == 0 else " a thing",
                          add_special_tokens=False).input_ids + [tok.eos_token_id] for ex in batch.examples]

    monkeypatch.setattr(m.model, "read", describe_some)
    res = evaluate(run, cfg.data[0], EvalOptions(task="describe", wording="held-out", device="cpu", max_examples=20),
                   loaded=m, progress=False)
    answers = res["extra"]["answers"]
    assert {a["node"] for a in answers} <= test and len(answers) == res["num_examples"] > 0
    want = np.mean([a["node"] % 2 == 0 for a in answers])
    assert res["accuracy"] == pytest.approx(want)
    assert all(_asks(tok, ex, words["describe_held_out"])
               for ex in m.description_examples(ds, [0], m.questions("describe", "held-out", 1)))


def test_held_out_wordings_that_a_run_trained_on_are_refused(world, tmp_path):
    import shutil

    from mlaga_fast import MLaGA
    from mlaga_fast.prompts import load_templates

    root, cfg, ds, tok = world
    run = tmp_path / "run"
    shutil.copytree(root / "run", run)
    man = json.loads((run / "manifest.json").read_text())
    man["wordings"]["trained"]["nc"].append(load_templates()["wordings"]["nc_held_out"][0])
    (run / "manifest.json").write_text(json.dumps(man))
    m = MLaGA.from_pretrained(run, device="cpu", progress=False)
    with pytest.raises(ValueError, match="cannot measure unseen wordings"):
        m.questions("nc", "held-out", 3)
    assert m.questions("lp", "held-out", 6)[5] == load_templates()["wordings"]["lp_held_out"][0]  # cycled


def test_wording_options_are_checked():
    from mlaga_fast.eval.instruct_eval import EvalOptions
    from mlaga_fast.train.instruct_config import build_config

    with pytest.raises(ValueError, match="wording"):
        EvalOptions(wording="fancy").validate()
    with pytest.raises(ValueError, match="paraphrase_ratio"):
        build_config({"data": ["x"], "align": "y", "paraphrase_ratio": 1.5})
    with pytest.raises(ValueError, match="describe_per_dataset"):
        build_config({"data": ["x"], "align": "y", "tasks": ["lp"], "describe_per_dataset": 4})


def test_on_step_sees_every_optimizer_step_with_its_logged_loss(world):
    """``train_instruct(on_step=...)`` (the demo's hand-over of the cores) is called once per step, in order, with
    the run's step count and the loss that metrics.jsonl records for that step."""
    root, cfg, _, _ = world
    calls = json.loads((root / "on_step.json").read_text())
    assert [c[0] for c in calls] == list(range(1, cfg.max_steps + 1))
    assert {c[1] for c in calls} == {cfg.max_steps}
    logged = {r["step"]: r["loss"] for r in map(json.loads, (root / "run" / "metrics.jsonl").read_text().splitlines())}
    for step, _, loss in calls:
        if step in logged:
            assert loss == pytest.approx(logged[step], rel=1e-6)
    assert logged, "metrics.jsonl logged no step"

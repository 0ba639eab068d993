"""``nc_relabel``: NC training prompts whose category names are permuted, the same way for the demonstrations and
the answer. Checked against the prompts built without it: every other prompt is unchanged, and each changed
prompt is the builder's own prompt for its node and demonstrations under one consistent renaming of the classes."""
from __future__ import annotations

import itertools
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from helpers.instruct_inputs import build_instruct_inputs
    from mlaga_fast.llm.loading import load_tokenizer, resolve_llm
    from mlaga_fast.models.node_inputs import load_dataset_inputs
    from mlaga_fast.train.instruct_config import InstructConfig

    root = build_instruct_inputs(tmp_path_factory.mktemp("relabel"), hidden=32, layers=1)
    cfg = InstructConfig(data=[str(root / "data")], align=str(root / "align"), llm=str(root / "llm"),
                         tasks=["nc", "lp"], nc_per_dataset=60, lp_per_dataset=16, nc_demo_dropout=0.3,
                         batch_size=8, device="cpu", seed=0)
    ds = load_dataset_inputs(cfg.data[0], None, source="aligner", align_dir=cfg.align, allow_unseen=False,
                             progress=False, images=True)
    return cfg, ds, load_tokenizer(resolve_llm(cfg.llm))


def test_relabelled_prompts_are_the_same_prompts_under_one_renaming_of_the_classes(world):
    from mlaga_fast.prompts.examples import builder_for
    from mlaga_fast.train.instruct_examples import build_phase_examples

    cfg, ds, tok = world
    nq = ds.tokens.shape[1]
    warm0, base = build_phase_examples(cfg, [ds], tok, nq, 1, progress=False)
    warm1, mixed = build_phase_examples(replace(cfg, nc_relabel=1.0), [ds], tok, nq, 1, progress=False)
    key = lambda ex: (ex.task, tuple(ex.prompt_ids), tuple(ex.answer_ids), ex.query, tuple(ex.demos))  # noqa: E731
    assert [key(e) for e in warm0] == [key(e) for e in warm1] and len(base) == len(mixed)
    labels = np.asarray(ds.graph.labels)
    classes = len(ds.graph.class_names)
    b = builder_for(cfg, tok, ds.graph, nq, 1)
    shown = changed = 0
    for e0, e1 in zip(base, mixed):
        assert (e0.task, e0.query, e0.demos) == (e1.task, e1.query, e1.demos)
        if e0.task != "nc" or not e0.demos:  # LP, and NC prompts without demonstrations: never renamed
            assert key(e0) == key(e1)
            continue
        shown += 1
        if key(e0) == key(e1):
            continue
        changed += 1
        v, y = e1.query[0], int(labels[e1.query[0]])
        dy = [int(labels[d]) for d in e1.demos]
        # the renamings that give this prompt and answer, out of every permutation of the classes
        built = {p: b.nc(v, e1.demos, [p[c] for c in dy], label=p[y]) for p in itertools.permutations(range(classes))}
        fits = [p for p, r in built.items() if (r.prompt_ids, r.answer_ids) == (e1.prompt_ids, e1.answer_ids)]
        assert fits, f"prompt of node {v}: no renaming of the classes gives it"
        assert all(p[y] == e1.target for p in fits)  # it answers (and records) the renamed class
    # every prompt with demonstrations was renamed; a draw that keeps its classes' names leaves it as it was
    # (with 3 classes, 1 in 6 draws keeps all names, and 1 in 3 the one class of a homophilous prompt)
    assert shown >= 20 and 0.5 * shown < changed <= shown


def test_nc_relabel_must_be_a_fraction(world):
    from mlaga_fast.train.instruct_config import check_config

    cfg, _, _ = world
    with pytest.raises(ValueError, match="nc_relabel"):
        check_config(replace(cfg, nc_relabel=1.5))

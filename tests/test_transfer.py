"""Transfer: catalogues of other categories and another shop, real graphs dressed by a shop, the Stage-2
mix (which datasets feed NC and LP, and in what proportions), and the transfer rows of a tuned run on
catalogues it never saw, with zero-shot prompts that carry no target label."""
from __future__ import annotations

import re
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mlaga_fast.data import vocab, vocab_grocery
from mlaga_fast.data.shops import get_shop, parse_categories
from mlaga_fast.data.synth import dress_graph, make_catalogue


def _cli(args):
    from click.testing import CliRunner

    from mlaga_fast.cli.main import cli

    return CliRunner().invoke(cli, [str(a) for a in args])


# ---- catalogues of chosen categories and of another shop -------------------------------------------

def test_parse_categories_numbers_ranges_and_names():
    toys = get_shop("toys")
    assert parse_categories("9-16", toys) == tuple(range(8, 16))
    assert parse_categories("1,3,5-6", toys) == (0, 2, 4, 5)
    assert parse_categories("card games, Puzzles", toys) == (13, 1)
    for bad, why in (("0-3", "outside"), ("19-21", "outside"), ("Kites", "neither"), ("2,2", "twice"), ("", "empty")):
        with pytest.raises(ValueError, match=why):
            parse_categories(bad, toys)
    with pytest.raises(ValueError, match="shop"):
        get_shop("hardware")


def test_catalogues_of_other_seeds_categories_and_shops_share_no_text():
    kw = dict(nodes=400, link_split=False)
    cats = {"toys 1-8 seed 0": make_catalogue(**kw), "toys 1-8 seed 1": make_catalogue(seed=1, **kw),
            "toys 9-16 seed 0": make_catalogue(categories="9-16", **kw),
            "grocery 1-8 seed 0": make_catalogue(shop="grocery", **kw)}
    names = list(cats)
    for i, a in enumerate(names):
        assert len(set(cats[a].texts)) == 400, a  # no repeats inside one either
        for b in names[i + 1:]:
            assert not set(cats[a].texts) & set(cats[b].texts), (a, b)
    assert cats["toys 9-16 seed 0"].class_names == [c.name for c in vocab.CATEGORIES[8:16]]
    assert cats["grocery 1-8 seed 0"].class_names == [c.name for c in vocab_grocery.CATEGORIES[:8]]
    # each text names a product of its own class (text mismatch aside): the grocery nouns, not the toys'
    g = cats["grocery 1-8 seed 0"]
    flags = np.asarray(g.features["synth_text_mismatch"])
    for i in np.flatnonzero(~flags)[:100]:
        nouns = vocab_grocery.CATEGORIES[int(g.labels[i])].nouns
        assert any(nn.lower() in g.texts[i].lower() for nn in nouns), g.texts[i]
    toy_words = {w for c in vocab.CATEGORIES for w in c.nouns} | set(vocab.BRANDS)
    assert not any(w in t for t in g.texts for w in toy_words)


def test_default_selection_is_the_default_catalogue():
    a = make_catalogue(nodes=300, link_split=False)
    b = make_catalogue(nodes=300, link_split=False, shop="toys", categories="1-8")
    assert a.texts == b.texts and a.class_names == b.class_names
    assert np.array_equal(a.indices, b.indices) and np.array_equal(a.labels, b.labels)
    assert a.images.identity() == b.images.identity()
    assert np.array_equal(a.images.get_array(7), b.images.get_array(7))


def test_other_looks_render_and_survive_save_and_load(tmp_path):
    from mlaga_fast.data import load

    g = make_catalogue(tmp_path / "g", nodes=300, shop="grocery", categories="5-12", link_split=False)
    back = load(tmp_path / "g")
    assert back.class_names == [c.name for c in vocab_grocery.CATEGORIES[4:12]]
    ic = np.asarray(g.features["synth_image_class"])
    for i in (0, 5, 17):
        assert np.array_equal(g.images.get_array(i), back.images.get_array(i))
    # class k shows grocery category 4+k's look: the same picture as a renderer told that look directly
    from mlaga_fast.data.synth_images import render_array

    i = 3
    want = render_array(0, i, int(ic[i]), 64, tuple(c.look for c in vocab_grocery.CATEGORIES[4:12]))
    toy = render_array(0, i, int(ic[i]), 64, tuple(c.look for c in vocab.CATEGORIES[:8]))
    assert not np.array_equal(want, toy)
    assert np.array_equal(back.images.get_array(i), want)


def test_synth_cli_shop_categories_and_errors(tmp_path):
    r = _cli(["data", "synth", "--out", tmp_path / "g", "--nodes", 300, "--shop", "grocery", "--categories",
              "Bakery,Beverages,Canned Goods", "--no-link-split"])
    assert r.exit_code == 0, r.output
    assert "3 classes" in r.output
    r = _cli(["data", "synth", "--out", tmp_path / "h", "--nodes", 300, "--shop", "grocery", "--classes", 15])
    assert r.exit_code == 2 and r.output.startswith("Error:") and "grocery" in r.output
    r = _cli(["data", "synth", "--out", tmp_path / "h", "--categories", "17-25"])
    assert r.exit_code == 2 and "outside 1-20" in r.output


# ---- a real graph dressed by a shop -------------------------------------------------------------------

def test_dress_real_graph_keeps_topology_and_labels(magb_dir, tmp_path):
    from mlaga_fast.data import load
    from mlaga_fast.data.dgl_format import read_dgl_graph

    path = magb_dir / "ToysGraph.pt"
    dg = read_dgl_graph(path)
    raw = np.asarray(dg.ndata["label"]).reshape(-1)
    g = dress_graph(path, tmp_path / "toys", shop="toys", link_split=False)
    assert g.num_nodes == dg.num_nodes == 20695
    assert np.array_equal(g.labels, raw)  # 18 classes <= the toy store's 20: one category per class
    assert g.class_names == [c.name for c in vocab.CATEGORIES[: int(raw.max()) + 1]]
    keys = {(min(u, v), max(u, v)) for u, v in zip(dg.src.tolist(), dg.dst.tolist()) if u != v}
    assert g.num_edges == len(keys)
    assert not list((tmp_path / "toys").glob("*.pt"))  # read in place, never copied
    assert load(tmp_path / "toys").texts[:50] == g.texts[:50]
    grocery = dress_graph(magb_dir / "GroceryGraph.pt", shop="grocery", link_split=False)
    gl = np.asarray(read_dgl_graph(magb_dir / "GroceryGraph.pt").ndata["label"]).reshape(-1)
    k = len(vocab_grocery.CATEGORIES)
    assert np.array_equal(grocery.labels, gl % k)  # 20 classes on 12 categories: l and l+12 merge
    assert grocery.meta["dressed"]["graph_classes"] == 20 and grocery.meta["dressed"]["classes"] == k


# ---- the mix -------------------------------------------------------------------------------------------

def _llm(root: Path, texts) -> Path:
    from helpers.tiny_llm import build_tiny_llm

    return build_tiny_llm(root / "llm", texts)


def test_mix_counts_follow_the_weights_and_keep_each_graph_apart(tmp_path):
    from transformers import AutoTokenizer

    from mlaga_fast.data import load
    from mlaga_fast.prompts.demos import train_label_pool
    from mlaga_fast.train.instruct_config import InstructConfig, check_config
    from mlaga_fast.train.instruct_examples import build_phase_examples, example_counts

    dirs = []
    for i, (n, spec) in enumerate(((200, {}), (300, {"categories": "9-12"}), (260, {"shop": "grocery"}))):
        make_catalogue(tmp_path / f"d{i}", nodes=n, classes=4, mean_degree=4, seed=i, **spec)
        dirs.append(str(tmp_path / f"d{i}"))
    graphs = [load(d) for d in dirs]
    tok = AutoTokenizer.from_pretrained(_llm(tmp_path, [t for g in graphs for t in g.texts]
                                              + [c for g in graphs for c in g.class_names]))
    datasets = [SimpleNamespace(graph=g, name=g.name, dir=Path(d)) for g, d in zip(graphs, dirs)]
    cfg = InstructConfig(data=dirs, nc_data=dirs[:2], lp_data=dirs[1:], data_weights=[1.0, 3.0, 2.0],
                         nc_per_dataset=300, lp_per_dataset=250, node_source="raw", num_demos=2, ppr_k=4,
                         max_length=512, seed=3)
    check_config(cfg)
    warm, instruct = build_phase_examples(cfg, datasets, tok, nq=2, image_tokens=1, progress=False)
    counts = example_counts(datasets, warm, instruct)
    assert counts[0]["lp"] == 0 and counts[2]["nc"] == 0  # d0 feeds NC only, d2 LP only
    for task, idx, total in (("nc", (0, 1), 600), ("lp", (1, 2), 500)):
        got = np.array([counts[i][task] for i in idx])
        w = np.array([cfg.data_weights[i] for i in idx])
        p = w / w.sum()
        assert got.sum() == total
        sd = np.sqrt(total * p * (1 - p))
        assert np.all(np.abs(got - total * p) <= 4 * sd), (task, got, total * p)
    for ex in instruct:  # every node, demonstration and pair comes from the example's own graph
        g = graphs[ex.dataset]
        assert all(0 <= v < g.num_nodes for v in ex.query)
        if ex.task == "nc":
            assert set(ex.demos) <= set(train_label_pool(g).tolist())
    # no weights: each feeding dataset gives nc_per_dataset / lp_per_dataset, as before the mix
    plain = InstructConfig(data=dirs, nc_data=dirs[:2], lp_data=dirs[1:], nc_per_dataset=40, lp_per_dataset=30,
                           node_source="raw", demos="random", num_demos=2, max_length=512)
    counts = example_counts(datasets, *build_phase_examples(plain, datasets, tok, 2, 1, progress=False))
    assert [(c["nc"], c["lp"]) for c in counts] == [(40, 0), (40, 30), (0, 30)]


def test_mix_config_errors(tmp_path):
    from mlaga_fast.train.instruct_config import InstructConfig, check_config

    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    base = dict(data=[a, b], node_source="raw")
    for kw, msg in ((dict(nc_data=[str(tmp_path / "c")]), "not one of the --data"),
                    (dict(nc_data=[a], lp_data=[a]), "feeds no task"),
                    (dict(data_weights=[1.0]), "2 datasets"),
                    (dict(data_weights=[1.0, 0.0], nc_per_dataset=5, lp_per_dataset=5), "positive"),
                    (dict(data_weights=[1.0, 2.0]), "nc_per_dataset > 0"),
                    (dict(tasks=["nc"], lp_data=[a]), "task lp")):
        with pytest.raises(ValueError, match=msg):
            check_config(InstructConfig(**{**base, **kw}))


# ---- transfer rows of a tuned run --------------------------------------------------------------------

@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """A tiny run tuned on toys 1-3 (NC + LP), and two targets it never saw: toys 4-6 and grocery 1-3."""
    import torch

    from mlaga_fast.features.extract import FeatureConfig, extract_features, graph_fingerprint
    from mlaga_fast.train.align import train_align
    from mlaga_fast.train.align_config import AlignConfig
    from mlaga_fast.train.instruct import train_instruct
    from mlaga_fast.train.instruct_config import InstructConfig

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("transfer")
    made = {}
    for name, spec in (("src", {"categories": "1-3"}), ("toys-4-6", {"categories": "4-6", "seed": 5}),
                       ("grocery-1-3", {"shop": "grocery", "categories": "1-3", "seed": 6})):
        g = make_catalogue(root / name, nodes=150, mean_degree=4, image_size=32, name=name, **spec)
        extract_features(g, root / name / "features", FeatureConfig(encoder="tiny", device="cpu", batch_size=64),
                         graph_fp=graph_fingerprint(g, root / name), progress=False)
        made[name] = g
    train_align(AlignConfig(dim=16, num_layers=1, num_heads=2, num_queries=2, batch_size=32, max_steps=2,
                            warmup_steps=1, device="cpu"),
                root / "src", root / "src" / "features", root / "align", show_progress=False)
    llm = _llm(root, [t for g in made.values() for t in list(g.texts) + list(g.class_names)])
    cfg = InstructConfig(data=[str(root / "src")], align=str(root / "align"), llm=str(llm), epochs=1,
                         nc_per_dataset=16, lp_per_dataset=16, batch_size=8, device="cpu", checkpoint_every=1000)
    train_instruct(cfg, root / "run", progress=False)
    targets = [(n, root / n, root / n / "features") for n in ("toys-4-6", "grocery-1-3")]
    return root, made, targets


def test_transfer_rows_are_marked_and_the_table_shows_them(tuned):
    from mlaga_fast.demo.transfer import IN_CONTEXT, ZERO_SHOT, transfer_results
    from mlaga_fast.eval.report import results_table_markdown

    root, made, targets = tuned
    rows = transfer_results(root / "run", root / "src", root / "src" / "features", targets, eval_nc=12, eval_lp=12,
                            baseline_epochs=3)
    names = {n for n, _, _ in targets}
    assert {r["dataset"] for r in rows} == names
    for r in rows:
        assert bool(r["extra"].get("transfer")) is (r["method"] != "Chance"), r["method"]
    got = {(r["dataset"], r["method"], r["task"]) for r in rows}
    cal_zs, cal_ic = ZERO_SHOT + " (calibrated)", IN_CONTEXT + " (calibrated)"
    for n in names:
        assert {(n, ZERO_SHOT, "lp"), (n, ZERO_SHOT, "nc"), (n, IN_CONTEXT, "nc"), (n, cal_zs, "nc"), (n, cal_ic, "nc"),
                (n, "GCN", "lp"), (n, "MLP", "lp"), (n, "Chance", "nc"),
                (n, "Chance", "lp")} == {x for x in got if x[0] == n}
    zs = next(r for r in rows if r["method"] == ZERO_SHOT and r["task"] == "nc")
    assert zs["extra"]["demos"] == "none" and zs["class_names"] == made[zs["dataset"]].class_names
    for raw_name in (ZERO_SHOT, IN_CONTEXT):  # a calibrated row re-reads its raw row's nodes, no other
        for n in names:
            raw = next(r for r in rows if (r["dataset"], r["method"], r["task"]) == (n, raw_name, "nc"))
            cal = next(r for r in rows if (r["dataset"], r["method"], r["task"]) == (n, raw_name + " (calibrated)", "nc"))
            assert cal["num_examples"] == raw["num_examples"] and cal["extra"]["calibration"] == "mean"
            assert (np.asarray(cal["confusion"]).sum(1) == np.asarray(raw["confusion"]).sum(1)).all()
    table = results_table_markdown(rows).splitlines()
    header = [c.strip() for c in table[0].strip("|").split("|")]
    gcn = next(line for line in table if line.startswith("| GCN (transfer) |"))
    cells = [c.strip() for c in gcn.strip("|").split("|")]
    for col, cell in zip(header, cells):
        assert (cell == "-") == col.endswith("/ NC"), (col, cell)  # no shared label set: no NC cell
    assert any(line.startswith(f"| {ZERO_SHOT} (transfer) |") for line in table)


def test_zero_shot_prompts_carry_no_target_label(tuned):
    from mlaga_fast.assistant import MLaGA
    from mlaga_fast.prompts.demos import train_label_pool

    root, _, targets = tuned
    m = MLaGA.from_pretrained(root / "run", device="cpu", progress=False)
    tok = m.tokenizer
    for name, data_dir, feat_dir in targets:
        ds = m.dataset(data_dir, feat_dir)
        g = ds.graph
        # precondition of the count below: no node text names a class of its own catalogue
        assert not any(re.search(rf"\b{re.escape(c)}\b", t) for c in g.class_names for t in g.texts)
        nodes = np.asarray(g.test)[:20]
        zero, shown = m.nc_examples(ds, nodes, "none"), m.nc_examples(ds, nodes, "ppr")
        pool = set(train_label_pool(g).tolist())

        def count(ex, c):
            text = tok.decode([i for i in ex.prompt_ids if i >= 0])
            return len(re.findall(rf"(?<!\w){re.escape(c)}(?!\w)", text))

        for z, s in zip(zero, shown):
            assert z.demos == [] and len(s.demos) > 0
            assert set(s.demos) <= pool  # in-context labels come from the target's training nodes only
            for k, c in enumerate(g.class_names):
                labels_shown = sum(int(g.labels[d]) == k for d in s.demos)
                assert count(z, c) >= 1  # the options list: the question's only mention of a class
                assert count(z, c) == count(s, c) - labels_shown, (name, c)


def test_manifest_records_each_datasets_prompts(tuned):
    from mlaga_fast.data import load
    from mlaga_fast.runs.manifest import read_stage_manifest

    root, _, _ = tuned
    per = read_stage_manifest(root / "run", "instruct")["num_examples"]["per_dataset"]
    assert per == [{"name": per[0]["name"], "graph_fingerprint": load(root / "src").fingerprint, "warmup": 0,
                    "nc": 16, "lp": 16}]


def test_calibrated_nc_reads_the_same_scores_relative_to_their_means(tuned):
    """eval --calibrate mean: the calibrated accuracy is the argmax of each option's score minus its mean over
    the evaluated nodes (a float64 loop over the scores the run gives those prompts), beside the plain one."""
    from mlaga_fast.assistant import MLaGA
    from mlaga_fast.eval.instruct_eval import (
        EvalOptions,
        calibrate_scores,
        eval_examples,
        evaluate,
    )

    root, _, targets = tuned
    _, data_dir, feat_dir = targets[0]
    m = MLaGA.from_pretrained(root / "run", device="cpu", progress=False)
    opts = EvalOptions(task="nc", features=str(feat_dir), demos="none", max_examples=12, device="cpu",
                       calibrate="mean")
    res = evaluate(root / "run", data_dir, opts, loaded=m, progress=False)
    ds = m.dataset(data_dir, feat_dir, progress=False)
    examples = eval_examples(m, ds, opts)
    scores, _ = m.score(ds, examples, batch_size=8, progress=False)
    s = np.asarray(scores, dtype=np.float64).tolist()
    n, c = len(s), len(s[0])
    means = [sum(s[i][k] for i in range(n)) / n for k in range(c)]
    ref = [max(range(c), key=lambda k: s[i][k] - means[k]) for i in range(n)]
    y = [ex.target for ex in examples]
    assert res["extra"]["calibrated"]["accuracy"] == pytest.approx(sum(p == t for p, t in zip(ref, y)) / n)
    assert res["accuracy"] == pytest.approx(float((np.asarray(scores).argmax(1) == np.asarray(y)).mean()))
    assert np.allclose(calibrate_scores(scores), np.asarray(s) - np.asarray(means)[None])
    with pytest.raises(ValueError, match="at least 2 nodes"):
        calibrate_scores(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="only NC"):
        EvalOptions(task="lp", calibrate="mean").validate()

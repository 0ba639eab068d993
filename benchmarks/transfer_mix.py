"""Transfer after Stage 2 on a mix of toy-store catalogues: the experiment behind docs/transfer.md's mix rows.

    python benchmarks/transfer_mix.py SOURCE TARGETS OUT [--text-tokens 32] [--rename 0.0] [--mix-aligner] [--seed 0]

SOURCE is a finished demo's output (``demo_out``: its ``data``, features and ``runs/align``), TARGETS the
folder where ``mlaga-fast demo --transfer`` put its targets (``demo_out/transfer``: toys 9-16 and grocery 1-8).

1. Four 1,000-node toy-store catalogues that never use categories 9-16 (17-20; 1,3,5,7,17,19;
   2,4,6,8,18,20; 17,1,18,2,19,3,20,4), the demo's homophily and mismatch, seeds of their own, features with
   the demo's encoder (kept in OUT/mix and reused).
2. Stage 2 on the source and the four (``--data-weights 2,1,1,1,1``), the demo's prompt budget spread over
   the five datasets, Stage 1 being the source's aligner (``--allow-unseen-features``), with
   ``--text-tokens`` tokens of the question node's text in every prompt. With ``--mix-aligner``, Stage 1 is
   first trained again on all five datasets (``train_align`` with several datasets, the source run's Stage-1
   config, OUT/align), and Stage 2 reads that aligner instead.
3. The transfer rows (``mlaga_fast.demo.transfer.transfer_results``: zero-shot LP and NC, in-context NC, both
   NC rows calibrated, GCN/MLP, chance) and the source's own NC with and without demonstrations, plain and
   calibrated (``eval --calibrate mean``), printed as one table and written to OUT/rows.json.

``--rename R`` is an experiment, not a product option ("symbol tuning", Wei et al. 2023, arXiv 2305.08298):
in a share R of the NC training prompts that show demonstrations, the category names are replaced by stand-in
words drawn per prompt (listed alphabetically, so their place in the list tells nothing either), so that only
the related items' labels say which answer is right.
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from mlaga_fast.config import load_config
from mlaga_fast.data.synth import make_catalogue
from mlaga_fast.demo.config import DemoConfig
from mlaga_fast.demo.pipeline import demo_features
from mlaga_fast.demo.transfer import TARGETS, transfer_results
from mlaga_fast.eval.instruct_eval import EvalOptions, evaluate
from mlaga_fast.eval.report import results_table_markdown
from mlaga_fast.train import instruct_examples
from mlaga_fast.train.align import train_align
from mlaga_fast.train.align_config import AlignConfig
from mlaga_fast.train.instruct import train_instruct
from mlaga_fast.train.instruct_config import check_config

MIX = (("toys-17-20", "17-20"), ("toys-odd", "1,3,5,7,17,19"), ("toys-even", "2,4,6,8,18,20"),
       ("toys-mixed", "17,1,18,2,19,3,20,4"))
STANDINS = ("Amber", "Birch", "Cobalt", "Delta", "Ember", "Fjord", "Garnet", "Harbor", "Indigo", "Jasper",
            "Kestrel", "Lagoon", "Meadow", "Nimbus", "Onyx", "Pebble", "Quartz", "Raven", "Saffron", "Tundra",
            "Umber", "Violet", "Willow", "Xenon", "Yarrow", "Zephyr", "Alder", "Basalt", "Cedar", "Dune", "Falcon",
            "Granite")  # no category word of either shop


def renaming(share: float):
    """nc_examples, with a share of the prompts that show demonstrations renamed (see the module docstring)."""
    plain = instruct_examples.nc_examples

    def nc_examples(graph, builder, targets, demos, *, with_label, dataset=0, drop_demos=None):
        out = plain(graph, builder, targets, demos, with_label=with_label, dataset=dataset, drop_demos=drop_demos)
        if not with_label:
            return out
        rng = np.random.default_rng([dataset, len(targets), 99])
        labels = np.asarray(graph.labels)
        sep = builder.t["nc"]["class_sep"]
        for j, ex in enumerate(out):
            if not ex.demos or rng.random() >= share:
                continue
            names = [str(x) for x in rng.choice(STANDINS, len(builder.class_names), replace=False)]
            b = copy.copy(builder)  # shares the tokenizer caches; only the names differ
            b.class_names, b._classes = names, sep.join(sorted(names))
            b.nc_answers = [b.answer_ids("nc", c) for c in names]
            v = ex.query[0]
            out[j] = b.nc(v, ex.demos, [int(labels[x]) for x in ex.demos], label=int(labels[v]), dataset=dataset)
            out[j].target = ex.target
        return out

    return nc_examples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", type=Path, help="a finished demo's output folder (demo_out)")
    ap.add_argument("targets", type=Path, help="the targets of `demo --transfer` (demo_out/transfer)")
    ap.add_argument("out", type=Path)
    ap.add_argument("--text-tokens", type=int, default=32, help="question-node text tokens in every prompt")
    ap.add_argument("--rename", type=float, default=0.0, help="share of NC prompts with renamed categories")
    ap.add_argument("--mix-aligner", action="store_true", help="train Stage 1 on the five datasets too")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not 0 <= args.rename <= 1:
        raise SystemExit(f"--rename must be in [0, 1], got {args.rename}")
    src, t0 = args.source, time.time()
    for need in (src / "data", src / "runs" / "align", *(args.targets / n for n, _ in TARGETS)):
        if not need.is_dir():
            raise SystemExit(f"{need}: not found (run `mlaga-fast demo --transfer --out {src}` first)")
    cfg = replace(DemoConfig(), seed=args.seed)
    dirs = []
    for i, (name, cats) in enumerate(MIX):
        d = args.out / "mix" / name
        if not (d / "features" / "manifest.json").exists():
            g = make_catalogue(d, nodes=1000, homophily=cfg.homophily, image_mismatch=cfg.image_mismatch,
                               text_mismatch=cfg.text_mismatch, seed=cfg.seed + 301 + i, name=name, shop="toys",
                               categories=cats)
            demo_features(cfg, g, d / "features", [])
        dirs.append(d)
    data = [src / "data", *dirs]
    n = len(data)
    align = src / "runs" / "align"
    if args.mix_aligner:  # one aligner on all five, each node's positives from its own graph
        align_cfg = replace(load_config(AlignConfig, align / "config.json"), seed=args.seed)
        if not (args.out / "align" / "manifest.json").exists():
            train_align(align_cfg, data, [d / "features" for d in data], args.out / "align", show_progress=True)
        align = args.out / "align"
    icfg = replace(cfg.instruct, data=[str(d) for d in data], features=[str(d / "features") for d in data],
                   align=str(align), node_source="aligner", tasks=["nc", "lp"], seed=args.seed,
                   allow_unseen_features=True, data_weights=[2.0] + [1.0] * (n - 1),
                   nc_per_dataset=cfg.instruct.nc_per_dataset // n, lp_per_dataset=cfg.instruct.lp_per_dataset // n,
                   describe_per_dataset=cfg.instruct.describe_per_dataset // n, target_text_tokens=args.text_tokens)
    check_config(icfg)
    run = args.out / "instruct"
    if not (run / "manifest.json").exists():
        if args.rename > 0:
            instruct_examples.nc_examples = renaming(args.rename)
        train_instruct(icfg, run, progress=True)
    targets = [(name, args.targets / name, args.targets / name / "features") for name, _ in TARGETS]
    rows = transfer_results(run, src / "data", src / "data" / "features", targets, seed=args.seed)
    for demos, method in (("none", "MLaGA w/o demonstrations"), ("ppr", "MLaGA")):  # the source, in-domain
        res = evaluate(run, src / "data", EvalOptions(task="nc", demos=demos, max_examples=200, device="cpu",
                                                     seed=args.seed, method=method, batch_size=32,
                                                     calibrate="mean"), progress=False)
        rows += [res, res["extra"]["calibrated"]]
    (args.out / "rows.json").write_text(json.dumps(rows, default=str))
    print(results_table_markdown(rows))
    print(f"total {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()

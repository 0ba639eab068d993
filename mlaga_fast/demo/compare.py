"""`mlaga-fast compare`: MLaGA as its authors built it beside our variants, on the demo catalogue.

For every seed: one catalogue and its features (the seed's data), then for each aligner structure
(``mlaga`` = the released one, ``prenorm`` = ours) and each Stage-1 objective (``mlaga`` = the released
loss, tau 0.5; ``infonce`` = ours, tau 0.1) a Stage-1 run and its linear probe, and on top of each
aligner a Stage-2 run per projector variant (``modality`` = the paper's modality-aware projectors,
``single`` = one graph projector; with ``--projectors`` also ``cross-separate`` and ``cross-paired``: the
modality-aware projectors with cross-task attention, LP pairs in separate slots (ours) or grouped as one
sequence (the release's, ``lp_grouping: paired``)). Reported: the Stage-1 probe, NC (PPR demonstrations) and LP test
accuracy, mean +- std over the seeds. Sizes are the demo's except where COMPARE_DEFAULTS makes them
smaller (so that 4 aligners x 2 projector kinds x 3 seeds fit in about two hours on 2 cores); every
variant gets the same budget.
"""
from __future__ import annotations

import itertools
import json
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable

import click
import numpy as np

from mlaga_fast.assistant import MLaGA
from mlaga_fast.data.synth import make_catalogue
from mlaga_fast.demo.config import DemoConfig, check_demo_config
from mlaga_fast.demo.pipeline import demo_features, train_stage1, train_stage2
from mlaga_fast.eval.instruct_eval import EvalOptions, evaluate
from mlaga_fast.eval.probe import probe_run
from mlaga_fast.utils.io import atomic_write_json, atomic_write_text

ARCHS = ("mlaga", "prenorm")
OBJECTIVES = ("mlaga", "infonce")
# Stage-2 fields per projector variant; PROJECTORS run by default.
PROJECTOR_FIELDS = {"modality": {"projector": "modality"}, "single": {"projector": "single"},
                    "cross-separate": {"projector": "modality", "cross_task_attention": True, "lp_grouping": "separate"},
                    "cross-paired": {"projector": "modality", "cross_task_attention": True, "lp_grouping": "paired"}}
PROJECTORS = ("modality", "single")
# Per structure / objective: the released settings, or ours (the demo's).
ARCH_FIELDS = {"mlaga": {"arch": "mlaga", "num_layers": 2, "cross_attention_every": 2, "dropout": 0.1},
               "prenorm": {"arch": "prenorm"}}
OBJECTIVE_FIELDS = {"mlaga": {"objective": "mlaga", "tau": 0.5}, "infonce": {"objective": "infonce", "tau": 0.1}}
COMPARE_DEFAULTS = {"instruct": {"warmup_examples": 500, "nc_per_dataset": 300, "lp_per_dataset": 500},
                    "align": {"epochs": 2, "num_positives": 5}}


def _stage2(cfg: DemoConfig, data_dir: Path, feat_dir: Path, align: Path, out: Path, projector: str) -> dict:
    train_stage2(cfg, data_dir, feat_dir, align, out, **PROJECTOR_FIELDS[projector])
    m = MLaGA.from_pretrained(out, device="cpu", progress=False)
    acc = {}
    for task, n in (("nc", cfg.eval_nc), ("lp", cfg.eval_lp)):
        res = evaluate(out, data_dir, EvalOptions(task=task, max_examples=n, device="cpu", seed=cfg.seed, batch_size=32),
                       progress=False, loaded=m)
        acc[task] = res["accuracy"]
    return acc


def run_compare(cfg: DemoConfig, seeds: list[int], out: str | Path, *, projectors: tuple[str, ...] = PROJECTORS,
                echo: Callable[[str], None] = click.echo) -> dict:
    """Run every variant for every seed into OUT; returns {"rows": [...], "table": markdown}."""
    import torch

    check_demo_config(cfg)
    unknown = [p for p in projectors if p not in PROJECTOR_FIELDS]
    if unknown or not projectors:
        raise ValueError(f"projectors: {unknown[0] if unknown else 'none given'!r} is not one of "
                         f"{list(PROJECTOR_FIELDS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    records = []
    t0 = time.perf_counter()
    for seed in seeds:
        scfg = replace(cfg, seed=seed)
        root = out / f"seed{seed}"
        data_dir, feat_dir = root / "data", root / "data" / "features"
        if not (feat_dir / "manifest.json").is_file():
            g = make_catalogue(data_dir, nodes=cfg.nodes, classes=cfg.classes, homophily=cfg.homophily,
                               image_mismatch=cfg.image_mismatch, text_mismatch=cfg.text_mismatch, seed=seed,
                               progress=False)
            demo_features(scfg, g, feat_dir, [])
        for arch, objective in itertools.product(ARCHS, OBJECTIVES):
            align = root / f"align_{arch}_{objective}"
            if not (align / "manifest.json").is_file():
                train_stage1(scfg, data_dir, feat_dir, align, progress=False, **ARCH_FIELDS[arch],
                             **OBJECTIVE_FIELDS[objective])
            probe = probe_run(align, data_dir=data_dir, device="cpu", progress=False)["aligned"]["test"]
            for projector in projectors:
                run = root / f"instruct_{arch}_{objective}_{projector}"
                done = root / f"{run.name}.json"
                if done.is_file():
                    rec = json.loads(done.read_text())
                else:
                    shutil.rmtree(run, ignore_errors=True)
                    acc = _stage2(scfg, data_dir, feat_dir, align, run, projector)
                    rec = {"seed": seed, "arch": arch, "objective": objective, "projector": projector,
                           "probe": probe, **acc}
                    atomic_write_json(done, rec)
                records.append(rec)
                echo(f"seed {seed} aligner {arch:<7} objective {objective:<7} projectors {projector:<14} "
                     f"probe {100 * rec['probe']:.1f}  NC {100 * rec['nc']:.1f}  LP {100 * rec['lp']:.1f}  "
                     f"({time.perf_counter() - t0:.0f} s)")
    table = comparison_table(records)
    atomic_write_json(out / "compare.json", {"config": asdict(cfg), "seeds": seeds, "records": records})
    atomic_write_text(out / "compare.md", table + "\n")
    echo("\n" + table)
    return {"records": records, "table": table}


def comparison_table(records: list[dict]) -> str:
    """Markdown: one row per (aligner, objective, projectors), mean +- std over seeds of probe, NC, LP."""
    def cell(vals: list[float]) -> str:
        v = 100 * np.asarray(vals)
        return f"{v.mean():.1f} ± {v.std(ddof=1):.1f}" if v.size > 1 else f"{v.mean():.1f}"

    names = {"mlaga": "paper", "prenorm": "ours", "infonce": "ours", "modality": "modality-aware", "single": "single",
             "cross-separate": "modality-aware + cross-task, LP separate",
             "cross-paired": "modality-aware + cross-task, LP paired (release)"}
    lines = ["| aligner | objective | projectors | Stage-1 probe | NC | LP | seeds |", "|---|---|---|---:|---:|---:|---:|"]
    for arch, objective, projector in itertools.product(ARCHS, OBJECTIVES, PROJECTOR_FIELDS):
        rs = [r for r in records if (r["arch"], r["objective"], r["projector"]) == (arch, objective, projector)]
        if rs:
            lines.append(f"| {names[arch]} ({arch}) | {names.get(objective, 'paper')} ({objective}) | "
                         f"{names[projector]} | {cell([r['probe'] for r in rs])} | {cell([r['nc'] for r in rs])} | "
                         f"{cell([r['lp'] for r in rs])} | {len(rs)} |")
    return "\n".join(lines)

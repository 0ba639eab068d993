"""Transfer: the demo's MLaGA, tuned on the default catalogue (the toy store's categories 1-8), applied
without any tuning to catalogues it never saw: the toy store's categories 9-16 and a second shop.

Rows per target (``mlaga-fast demo --transfer`` prints them beside the in-domain rows):
* MLaGA zero-shot, LP: the target's balanced test pairs (no demonstration pair).
* MLaGA zero-shot, NC: test nodes asked among the target's own, never seen, category names; no
  demonstrations, so no target label is in any prompt (the options list is the only place a class
  name appears).
* MLaGA in-context, NC: the same nodes with PPR demonstrations drawn from the target's labelled
  *training* nodes (the target's labels are shown, nothing is tuned on them).
* Both NC rows again, "(calibrated)": the same scores with each category's score taken relative to its mean
  over the evaluated nodes (``mlaga_fast.eval.instruct_eval.calibrate_scores``; no label used).
* GCN and MLP trained on the source (its LP task) and applied to the target's test pairs with the
  source's threshold. Their NC heads predict the source's 8 classes; no target shares that label set,
  so their NC cells stay "-".
* Chance: the majority class of the NC evaluation nodes; 0.5 for the balanced LP pairs.

Every target row is marked ``extra.transfer``, so ``results-table`` shows it as "METHOD (transfer)".
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from collections.abc import Callable

import click

from mlaga_fast.data.synth import make_catalogue
from mlaga_fast.demo.config import DemoConfig
from mlaga_fast.demo.pipeline import demo_features

__all__ = ["TARGETS", "make_targets", "run_transfer", "transfer_results"]

# (dataset name, make_catalogue keywords): a target shares no category with the source (toys 1-8)
TARGETS: tuple[tuple[str, dict], ...] = (
    ("toys-categories-9-16", {"shop": "toys", "categories": "9-16"}),
    ("grocery-categories-1-8", {"shop": "grocery", "categories": "1-8"}),
)

ZERO_SHOT, IN_CONTEXT = "MLaGA zero-shot", "MLaGA in-context (PPR demonstrations)"


def make_targets(cfg: DemoConfig, root: Path, encoder: str, notes: list[str]) -> list[tuple[str, Path, Path]]:
    """Synthesise each target catalogue (the source's size, homophily and mismatch; a seed of its own so no
    target repeats the source's graph) and extract its features with the source's encoder:
    [(name, data dir, features dir)]."""
    out = []
    for i, (name, spec) in enumerate(TARGETS):
        d = root / name
        g = make_catalogue(d, nodes=cfg.nodes, homophily=cfg.homophily, image_mismatch=cfg.image_mismatch,
                           text_mismatch=cfg.text_mismatch, seed=cfg.seed + 101 + i, name=name, **spec)
        _, used = demo_features(replace(cfg, encoder=encoder), g, d / "features", notes)
        if used != encoder:
            raise click.ClickException(f"target {name}: features came from {used!r}, the source's from {encoder!r}")
        out.append((name, d, d / "features"))
    return out


def transfer_results(run_dir: Path, source_dir: Path, source_features: Path,
                     targets: list[tuple[str, Path, Path]], *, seed: int = 0, eval_nc: int = 200, eval_lp: int = 200,
                     baseline_epochs: int = 100, loaded=None, progress: bool = False) -> list[dict]:
    """The transfer rows of a finished Stage-2 run ``run_dir`` (trained on ``source_dir``) on each target."""
    from mlaga_fast.assistant import MLaGA
    from mlaga_fast.baselines.config import BaselineConfig
    from mlaga_fast.baselines.train import run_baseline
    from mlaga_fast.data import load
    from mlaga_fast.eval.instruct_eval import EvalOptions, evaluate
    from mlaga_fast.features.store import FeatureStore

    m = loaded if loaded is not None else MLaGA.from_pretrained(run_dir, device="cpu", progress=progress)
    results: list[dict] = []
    for name, data_dir, feat_dir in targets:
        cell = {}
        for method, task, demos in ((ZERO_SHOT, "lp", "none"), (ZERO_SHOT, "nc", "none"), (IN_CONTEXT, "nc", "ppr")):
            opts = EvalOptions(task=task, split="test", features=str(feat_dir), demos=demos,
                               max_examples=eval_nc if task == "nc" else eval_lp, device="cpu", seed=seed,
                               method=method, batch_size=32, calibrate="mean" if task == "nc" else "none")
            res = evaluate(run_dir, data_dir, opts, loaded=m, progress=progress)
            if not res["extra"]["transfer"]:
                raise ValueError(f"{data_dir}: the run was trained on this target; it is no transfer")
            cell[method, task] = res
            results.append(res)
            if task == "nc":  # the same scores, each category's read relative to its mean (no label used)
                results.append(res["extra"]["calibrated"])
        zero = cell[ZERO_SHOT, "nc"]
        results += [_chance(zero, "nc", zero["extra"]["chance"], "majority class"),
                    _chance(cell[ZERO_SHOT, "lp"], "lp", 0.5, "balanced pairs")]
    source, pooled = load(source_dir), FeatureStore(source_features).pooled()
    tgt = [(load(d), FeatureStore(f).pooled()) for _, d, f in targets]
    for model, label in (("gcn", "GCN"), ("mlp", "MLP")):
        res = run_baseline(source, pooled, BaselineConfig(model=model, task="lp", seed=seed, epochs=baseline_epochs,
                                                           patience=20, progress=False, num_threads=0),
                           targets=tuple(tgt))
        for r in res["extra"].pop("targets"):
            r["method"] = label
            results.append(r)
    return results


def _chance(ref: dict, task: str, acc: float, rule: str) -> dict:
    return {**ref, "task": task, "method": "Chance", "accuracy": float(acc),
            "extra": {"rule": rule, "graph_fingerprint": ref["extra"].get("graph_fingerprint")}}


def run_transfer(cfg: DemoConfig, out: str | Path, metrics: dict, *,
                 echo: Callable[[str], None] = click.echo) -> dict:
    """After ``run_demo(cfg, out)`` (whose metrics are ``metrics``): make the targets, evaluate the demo's
    MLaGA and baselines on them, print the table (in-domain rows first) and write OUT/report/transfer.md
    and transfer.json. Returns {"results", "table", "seconds"}."""
    import torch

    from mlaga_fast.eval.report import results_table_markdown, write_result_json
    from mlaga_fast.utils.io import atomic_write_json, atomic_write_text

    out = Path(out)
    t0 = time.perf_counter()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    notes: list[str] = []
    echo(click.style("[transfer] synthesise the targets and extract their features", bold=True))
    targets = make_targets(cfg, out / "transfer", metrics["encoder"], notes)
    echo(click.style("[transfer] evaluate MLaGA zero-shot / in-context and the baselines on them", bold=True))
    rows = transfer_results(out / "runs" / "instruct", out / "data", out / "data" / "features", targets,
                            seed=cfg.seed, eval_nc=cfg.eval_nc, eval_lp=cfg.eval_lp,
                            baseline_epochs=cfg.baseline_epochs)
    eval_dir = out / "report" / "eval"
    for r in rows:
        slug = f"transfer_{r['dataset']}_{r['method']}_{r['task']}".lower()
        write_result_json(eval_dir / ("".join(ch if ch.isalnum() else "_" for ch in slug) + ".json"), r)
    keep = {"MLaGA", "GCN", "MLP", "Chance"}
    in_domain = [r for r in metrics["results"] if r["method"] in keep]
    table = results_table_markdown(in_domain + rows)
    seconds = round(time.perf_counter() - t0, 1)
    atomic_write_text(out / "report" / "transfer.md",
                      "# Transfer: tuned on toys 1-8, applied untuned to unseen categories and a second shop\n\n"
                      + table + f"\nTransfer wall time: {seconds} s (the demo before it: {metrics['wall_seconds']} s)."
                      + "".join(f"\n- {n}" for n in notes) + "\n")
    atomic_write_json(out / "report" / "transfer.json", {"results": rows, "seconds": seconds, "notes": notes})
    echo("\n" + table)
    echo(f"transfer: {out / 'report' / 'transfer.md'}  (wall {seconds:.0f} s after the demo's "
         f"{metrics['wall_seconds']:.0f} s)")
    return {"results": rows, "table": table, "seconds": seconds}

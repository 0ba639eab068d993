"""The demo pipeline: synthesise -> features -> Stage 1 -> Stage 2 (PPR demos) -> eval -> report; after Stage 1,
a second process runs beside the MLaGA Stage 2: the raw-feature Stage 2 ablation, its evaluation, the
baselines, the aligner's node embeddings with the linear probes, and the t-SNE map; then it scores a share of
the MLaGA evaluations while this process scores the rest.
Every stage is the library's own entry point, called exactly as the CLI calls it, so the demo is a
faithful tour of the tool rather than a separate code path."""
from __future__ import annotations

import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable

import click

from mlaga_fast.demo.config import DemoConfig, check_demo_config
from mlaga_fast.demo.lanes import SideLane, new_gate, split_threads

__all__ = ["run_demo", "demo_features", "train_stage1", "train_stage2"]

# The share of the MLaGA Stage 2's steps after which it waits for the second process to be free and then trains
# on every core. The second process starts when Stage 1 is done, beside Stage 2; on the Zen 4 machine its jobs
# took 180 s, as Stage 2 passed about 65% of its steps on one core (docs/benchmarks.md, stage times). From then
# on, Stage 2 gets the core that would otherwise idle.
HANDOFF = 0.65


class _Steps:
    """Numbered progress lines with wall time per stage (recorded in metrics.json)."""

    def __init__(self, total: int, echo: Callable[[str], None]):
        self.total, self.echo, self.times, self.i = total, echo, {}, 0

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        self.i += 1
        self.echo(click.style(f"[{self.i}/{self.total}] {name}", bold=True))
        t0 = time.perf_counter()
        out = fn()
        self.times[name] = round(time.perf_counter() - t0, 2)
        self.echo(f"      done in {self.times[name]:.1f} s")
        return out


def demo_features(cfg: DemoConfig, graph, feat_dir: Path, notes: list[str]):
    """The catalogue's features with ``cfg.encoder`` (the random tiny CLIP when its weights are missing, noted
    in ``notes``): (FeatureStore, the encoder used)."""
    from mlaga_fast.features.encoders import EncoderUnavailable
    from mlaga_fast.features.extract import FeatureConfig, extract_features

    try:
        return extract_features(graph, feat_dir, FeatureConfig(encoder=cfg.encoder, device="cpu", batch_size=64),
                                progress=True), cfg.encoder
    except EncoderUnavailable as exc:
        notes.append(f"encoder {cfg.encoder!r} unavailable ({exc}); fell back to the random tiny CLIP")
        click.echo(f"      {notes[-1]}")
        return extract_features(graph, feat_dir, FeatureConfig(encoder="tiny", device="cpu", overwrite=True),
                                progress=True), "tiny"


def train_stage1(cfg: DemoConfig, data_dir: Path, feat_dir: Path, run: Path, *, progress: bool = True,
                 **fields: Any) -> dict:
    """Stage 1 with ``cfg.align`` (``fields`` replace some of it), seeded by ``cfg.seed``."""
    from mlaga_fast.train.align import train_align

    acfg = replace(cfg.align, **{**fields, "seed": cfg.seed})
    acfg.validate()
    return train_align(acfg, data_dir, feat_dir, run, show_progress=progress)


def train_stage2(cfg: DemoConfig, data_dir: Path, feat_dir: Path, align_run: Path | None, out: Path, *,
                 progress: bool = True, on_step: Callable[[int, int, dict], None] | None = None,
                 **fields: Any) -> dict:
    """Stage 2 with ``cfg.instruct`` (``fields`` replace some of it) on the catalogue, seeded by ``cfg.seed``:
    on the aligner's tokens with NC and LP, or without ``align_run`` the raw-feature ablation, which is an
    NC comparison (the same NC schedule, no LP; the demo drops its descriptions)."""
    from mlaga_fast.train.instruct import train_instruct
    from mlaga_fast.train.instruct_config import check_config

    icfg = replace(cfg.instruct, **{
        **fields, "data": [str(data_dir)], "features": [str(feat_dir)], "align": str(align_run) if align_run else "",
        "node_source": "aligner" if align_run else "raw", "tasks": ["nc", "lp"] if align_run else ["nc"],
        "seed": cfg.seed})
    check_config(icfg)
    return train_instruct(icfg, out, progress=progress, on_step=on_step)


def _variants(cfg: DemoConfig) -> list[tuple[str, str, str, str | None, str, str]]:
    """The evaluated (run key, method name, task, demos override, wording, lane) in table order; LP prompts show
    no demonstration here. ``lane`` says where the MLaGA variants are scored when the demo has two processes:
    "side" ones in the second process while this one scores the "here" ones; their times (measured on the Zen 4
    machine, 2 threads: 20 s of the 40 s each) balance the two."""
    variants = [("mlaga", "MLaGA", "nc", None, "trained", "here"), ("mlaga", "MLaGA", "lp", None, "trained", "here"),
                ("mlaga", "MLaGA w/o demonstrations", "nc", "none", "trained", "side"),
                ("mlaga", "MLaGA random demonstrations", "nc", "random", "trained", "side")]
    if cfg.instruct.paraphrase_ratio > 0:  # a run that learnt varied wordings is scored on unseen ones too
        variants += [("mlaga", "MLaGA, unseen wordings", task, None, "held-out", "here") for task in ("nc", "lp")]
    if cfg.instruct.describe_per_dataset:
        variants.append(("mlaga", "MLaGA description names the category (unseen wordings)", "describe", None,
                         "held-out", "side"))
    return variants + [("raw", "MLaGA w/o aligner (raw features)", "nc", None, "trained", "side")]


def _table_order(cfg: DemoConfig, results: list[dict]) -> list[dict]:
    """``results`` of the variants in ``_variants`` order (the table's rows follow it), the others after them."""
    order = {(method, "nc" if task == "describe" else task): i
             for i, (_, method, task, *_rest) in enumerate(_variants(cfg))}
    return sorted(results, key=lambda r: order.get((r["method"], r["task"]), len(order)))


def _evaluate(cfg: DemoConfig, runs: dict[str, Path], data_dir: Path, feat_dir: Path, eval_dir: Path,
              key: str, lane: str | None = None) -> list[dict]:
    """The variants of run ``key`` (those of ``lane`` only, if given); the run's LLM is loaded once for them all."""
    from mlaga_fast.eval.instruct_eval import EvalOptions, evaluate
    from mlaga_fast.eval.report import write_result_json

    from mlaga_fast.assistant import MLaGA

    mine = [v for v in _variants(cfg) if v[0] == key and lane in (None, v[5])]
    if not mine:
        return []
    loaded = MLaGA.from_pretrained(runs[key], device="cpu")
    results = []
    for _, method, task, demos, wording, _lane in mine:
        opts = EvalOptions(task=task, split="test", features=str(feat_dir), demos=demos,
                           max_examples=cfg.eval_lp if task == "lp" else cfg.eval_nc, seed=cfg.seed,
                           generate=cfg.generate and task != "describe", device="cpu", method=method,
                           batch_size=32, wording=wording)
        slug = method.lower().replace(" ", "_").replace("/", "").replace("(", "").replace(")", "").replace(",", "")
        res = evaluate(runs[key], data_dir, opts, loaded=loaded, progress=False)
        write_result_json(eval_dir / f"{slug}_{task}.json", res)  # the report draws the figures it shows
        results.append(res)
    return results


def _side_jobs(cfg: DemoConfig, data_dir: Path, feat_dir: Path, runs: dict[str, Path], eval_dir: Path,
               free: Any = None, stage2_done: Any = None, *, progress: bool = False
               ) -> tuple[list[dict], dict[str, float], dict]:
    """Stage 2 on raw pooled features, its NC evaluation, the baselines, the aligner's node embeddings with the
    linear probes, and the report's t-SNE map: (results, {what: seconds}, the probes). None of them needs the
    MLaGA Stage 2 run, so the demo runs them in a second process beside it, after Stage 1. In that process
    (``stage2_done`` given: an event the caller sets when the MLaGA Stage 2 is trained) the job then sets
    ``free``, waits for ``stage2_done`` and scores the MLaGA variants of the "side" lane."""
    from mlaga_fast.data import load
    from mlaga_fast.demo.report import draw_embedding_map
    from mlaga_fast.eval.probe import probe_run
    from mlaga_fast.models.embeddings import export_embeddings

    probe: dict = {}

    def raw_stage2() -> list:
        # an NC comparison: the MLaGA run's NC prompts, no descriptions (no row scores them for this run)
        train_stage2(cfg, data_dir, feat_dir, None, runs["raw"], progress=progress, describe_per_dataset=0)
        return []

    def embed_and_probe() -> list:
        export_embeddings(runs["align"], runs["align"] / "embed", device="cpu")
        probe.update(probe_run(runs["align"], emb_dir=runs["align"] / "embed", data_dir=data_dir, device="cpu",
                               progress=False))
        return []

    def embedding_map() -> list:
        graph = load(data_dir)
        draw_embedding_map(eval_dir.parent, probe, runs, graph.labels, graph.class_names, cfg.seed)
        return []

    def wait_for_stage2() -> list:
        free.set()  # the caller's Stage 2 may take this process's cores now
        stage2_done.wait()
        return []

    jobs = [("raw-feature Stage 2", raw_stage2),
            ("raw-feature evaluation", lambda: _evaluate(cfg, runs, data_dir, feat_dir, eval_dir, "raw")),
            ("baselines", lambda: _baselines(cfg, data_dir, feat_dir, eval_dir)),
            ("embed all nodes + linear probes", embed_and_probe),
            ("report: t-SNE map", embedding_map)]
    if stage2_done is not None:
        jobs += [("waiting for the MLaGA Stage 2", wait_for_stage2),
                 ("MLaGA evaluation, its share", lambda: _evaluate(cfg, runs, data_dir, feat_dir, eval_dir, "mlaga",
                                                                    lane="side"))]
    times, results = {}, []
    for name, job in jobs:
        t0 = time.perf_counter()
        results += job()
        times[name] = round(time.perf_counter() - t0, 2)
    return results, times, probe


def _baselines(cfg: DemoConfig, data_dir: Path, feat_dir: Path, eval_dir: Path) -> list[dict]:
    from mlaga_fast.baselines.config import BaselineConfig
    from mlaga_fast.baselines.train import run_baseline
    from mlaga_fast.data import load
    from mlaga_fast.eval.report import write_result_json
    from mlaga_fast.features.store import FeatureStore

    graph, pooled = load(data_dir), FeatureStore(feat_dir).pooled()
    names = {"mlp": "MLP", "gcn": "GCN", "sage": "GraphSAGE", "labelprop": "Label propagation"}
    results = []
    for task in ("nc", "lp"):
        for model, label in names.items():
            if model == "labelprop" and task == "lp":
                continue  # label propagation uses labels, not edges: it has no link scorer
            res = run_baseline(graph, pooled, BaselineConfig(
                model=model, task=task, seed=cfg.seed, epochs=cfg.baseline_epochs, patience=20, progress=False,
                num_threads=0))  # torch's current setting: the demo's, or its lane's share
            res["method"] = label
            write_result_json(eval_dir / f"baseline_{model}_{task}.json", res)
            results.append(res)
    return results


def _precisions(feat_dir: Path, runs: dict[str, Path]) -> dict[str, str]:
    """What the feature encoders and each trained stage computed in, as their manifests record it: {step: fp32 |
    bf16 | fp16}. The table depends on it, so the demo prints it beside the table."""
    from mlaga_fast.features.store import read_manifest
    from mlaga_fast.runs.manifest import read_stage_manifest

    names = {"align": "Stage 1", "mlaga": "Stage 2", "raw": "raw-feature Stage 2"}
    return {"features": read_manifest(feat_dir)["precision"],
            **{label: read_stage_manifest(runs[key])["precision"]["name"] for key, label in names.items()}}


def _chance_rows(results: list[dict]) -> list[dict]:
    """Chance per task: majority class of the NC eval set; 0.5 for balanced LP pairs."""
    rows = []
    for task in ("nc", "lp"):
        ref = next((r for r in results if r["task"] == task and "chance" in r.get("extra", {})), None)
        acc = 0.5 if task == "lp" else (ref["extra"]["chance"] if ref else None)
        if acc is not None:
            rows.append({**(ref or results[0]), "task": task, "method": "Chance", "accuracy": float(acc),
                         "extra": {"rule": "majority class" if task == "nc" else "balanced pairs"}})
    return rows


def run_demo(cfg: DemoConfig, out: str | Path, *, echo: Callable[[str], None] = click.echo) -> dict:
    """Run everything into OUT (replacing a previous demo there); returns the metrics dict."""
    import torch

    from mlaga_fast.data.synth import make_catalogue
    from mlaga_fast.demo.report import draw_figures, write_summary
    from mlaga_fast.eval.report import results_table_markdown
    from mlaga_fast.utils.io import atomic_write_json

    check_demo_config(cfg)
    out = Path(out)
    if out.exists():
        if not (out / "demo.json").exists():
            raise click.ClickException(f"{out} exists and is not a demo output folder; choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    atomic_write_json(out / "demo.json", {"config": asdict(cfg)})
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    data_dir, feat_dir = out / "data", out / "data" / "features"
    runs = {"align": out / "runs" / "align", "mlaga": out / "runs" / "instruct",
            "raw": out / "runs" / "instruct_raw"}
    report, eval_dir = out / "report", out / "report" / "eval"
    notes: list[str] = []
    steps = _Steps(7, echo)
    t_start = time.perf_counter()

    graph = steps.run(f"synthesise the catalogue ({cfg.nodes} nodes, {cfg.classes} classes)", lambda: make_catalogue(
        data_dir, nodes=cfg.nodes, classes=cfg.classes, homophily=cfg.homophily, image_mismatch=cfg.image_mismatch,
        text_mismatch=cfg.text_mismatch, seed=cfg.seed, progress=True))
    _, encoder = steps.run(f"extract features ({cfg.encoder})", lambda: demo_features(cfg, graph, feat_dir, notes))
    # A second thread speeds Stages 1 and 2 up by only ~1.5x, and the thread count barely touches their results
    # (the first step agrees to rounding, later ones drift in the last bits: tests/test_instruct_threads.py).
    # Stage 1 has every core to itself (1.7x on two threads, against 1.4x for a Stage-2 step). With 2+ cores, the
    # raw-feature ablation, its evaluation, the baselines, the aligner's embeddings with the linear probes, and
    # the t-SNE map then run in a second process beside the MLaGA Stage 2 (mlaga_fast.demo.lanes), each lane
    # on a fixed share of the cores, so a seed always gives the same table; Stage 2 takes the second process's
    # cores from a fixed step on (HANDOFF), and the two processes share the MLaGA evaluations.
    total = torch.get_num_threads()
    split = split_threads(total)
    side, free, stage2_done = None, None, None
    handed = False

    def handoff(step: int, steps_total: int, rec: dict) -> None:
        """At HANDOFF of Stage 2's steps (a step, never a time, so a seed's table stays the same on every run
        of a machine): wait for the second process to be free, then train on every core."""
        nonlocal handed
        if side is not None and not handed and step >= HANDOFF * steps_total:
            side.wait(free)
            torch.set_num_threads(total)
            handed = True

    try:
        steps.run("Stage 1: train the aligner", lambda: train_stage1(cfg, data_dir, feat_dir, runs["align"]))
        if split:
            echo(f"      the raw-feature ablation, the baselines, the linear probes and the t-SNE map start in a "
                 f"second process ({split[1]} thread{'s' * (split[1] > 1)}); step 4 runs here beside them "
                 f"({split[0]}), and the two share step 5")
            free, stage2_done = new_gate(), new_gate()
            side = SideLane(_side_jobs, cfg, data_dir, feat_dir, runs, eval_dir, free, stage2_done, threads=split[1])
            torch.set_num_threads(split[0])
        steps.run(f"Stage 2: instruction tuning on NC + LP ({cfg.instruct.llm}; PPR demonstrations)",
                  lambda: train_stage2(cfg, data_dir, feat_dir, runs["align"], runs["mlaga"], on_step=handoff))
        if side is not None:
            side.wait(free)  # only if Stage 2 ended before HANDOFF (a short run)
            torch.set_num_threads(split[0])
            stage2_done.set()
        results = steps.run("evaluate MLaGA and its ablations" + (" (a share in the second process)" if side else ""),
                            lambda: _evaluate(cfg, runs, data_dir, feat_dir, eval_dir, "mlaga",
                                              lane="here" if side else None))
        side_results, side_times, probe = steps.run(
            "Stage 2 ablation on raw pooled features, its evaluation, the baselines, the linear probes and the "
            "t-SNE map" + (" (waiting for the second process)" if side else ""),
            lambda: side.result() if side else _side_jobs(cfg, data_dir, feat_dir, runs, eval_dir, progress=True))
    except BaseException:
        if side is not None:
            side.stop()
        raise
    finally:
        torch.set_num_threads(total)
    for name, sec in side_times.items():
        steps.times[name] = sec
        if side:
            echo(f"      {name}: {sec:.1f} s in the second process")
    results = _table_order(cfg, results + side_results)
    results += _chance_rows(results)

    table = results_table_markdown(results)
    metrics = {"config": asdict(cfg), "encoder": encoder, "notes": notes, "probe": probe, "results": results,
               "precision": _precisions(feat_dir, runs)}
    steps.run("report figures and configs", lambda: draw_figures(report, metrics, runs))
    # the wall time covers every stage, the figures included; only the two small files below come after it
    metrics.update(stage_seconds=steps.times, wall_seconds=round(time.perf_counter() - t_start, 1))
    write_summary(report, metrics, table)
    echo("\n" + table)
    echo(f"computed in: {', '.join(f'{k} {v}' for k, v in metrics['precision'].items())}")
    echo(f"report: {report}  (wall {metrics['wall_seconds']:.0f} s)")
    return metrics

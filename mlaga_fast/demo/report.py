"""The demo's report folder: metrics.json, results.md, figures and every stage's resolved config."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from mlaga_fast.plots.png import save_png
from mlaga_fast.utils.io import atomic_write_json, atomic_write_text

__all__ = ["draw_figures", "draw_embedding_map", "write_summary", "plot_loss_curves", "seeds_table"]


def seeds_table(runs: list[dict[str, Any]]) -> str:
    """Markdown: per method, NC and LP test accuracy (%) as mean ± sample std over the demo runs given
    (each a run_demo metrics dict, one per seed), and the Stage-1 probe."""
    cells: dict[tuple[str, str], list[float]] = {}
    order: list[str] = []
    for m in runs:
        for r in m["results"]:
            cells.setdefault((r["method"], r["task"]), []).append(100.0 * r["accuracy"])
            if r["method"] not in order:
                order.append(r["method"])

    def fmt(vals: list[float] | None) -> str:
        if not vals:
            return "-"
        v = np.asarray(vals)
        return f"{v.mean():.2f} ± {v.std(ddof=1):.2f}" if v.size > 1 else f"{v.mean():.2f}"

    lines = [f"| method | NC | LP |  (n = {len(runs)} seeds)", "|---|---:|---:|"]
    lines += [f"| {m} | {fmt(cells.get((m, 'nc')))} | {fmt(cells.get((m, 'lp')))} |" for m in order]
    probe = {k: [100.0 * m["probe"][k]["test"] for m in runs] for k in ("raw", "aligned")}
    lines += ["", f"Linear probe (test): raw {fmt(probe['raw'])}, aligned {fmt(probe['aligned'])}.",
              "Wall time (s): " + fmt([m["wall_seconds"] for m in runs]).replace(".00", "")]
    return "\n".join(lines) + "\n"


def plot_loss_curves(curves: dict[str, list[tuple[int, float]]], path: Path) -> None:
    """One panel per run: training loss against optimizer step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {k: v for k, v in curves.items() if v}
    fig, axes = plt.subplots(1, max(1, len(curves)), figsize=(4.5 * max(1, len(curves)), 3.6), squeeze=False)
    for ax, (name, pts) in zip(axes[0], curves.items()):
        steps, losses = zip(*pts)
        ax.plot(steps, losses, lw=1.5)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_png(fig, path, dpi=110)


def _loss_points(run: Path) -> list[tuple[int, float]]:
    from mlaga_fast.train.metrics import read_jsonl

    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    return [(int(r["step"]), float(r["loss"])) for r in read_jsonl(path) if "step" in r and "loss" in r]


def draw_figures(report: Path, metrics: dict[str, Any], runs: dict[str, Path]) -> None:
    """The report's loss curves, NC confusion matrix and the configs of every stage (``metrics`` needs config
    and results); the t-SNE map is ``draw_embedding_map``, which the demo draws beside Stage 2."""
    from mlaga_fast.eval.report import plot_confusion

    report.mkdir(parents=True, exist_ok=True)
    configs = report / "configs"
    configs.mkdir(exist_ok=True)
    atomic_write_json(configs / "demo.json", metrics["config"])
    for key, run in runs.items():
        if (run / "config.json").exists():
            shutil.copyfile(run / "config.json", configs / f"{key}.json")
    feat_manifest = Path(runs["align"]).parents[1] / "data" / "features" / "manifest.json"
    if feat_manifest.exists():
        shutil.copyfile(feat_manifest, configs / "features.json")

    objective = {"mlaga": "MLaGA contrastive loss", "infonce": "InfoNCE"}
    align_cfg = json.loads((Path(runs["align"]) / "config.json").read_text(encoding="utf-8"))
    plot_loss_curves({f"Stage 1 aligner ({objective[align_cfg['objective']]})": _loss_points(runs["align"]),
                      "Stage 2 MLaGA (answer NLL)": _loss_points(runs["mlaga"]),
                      "Stage 2 raw-feature ablation": _loss_points(runs["raw"])}, report / "loss_curves.png")

    nc = next(r for r in metrics["results"] if r["method"] == "MLaGA" and r["task"] == "nc")
    plot_confusion(nc, report / "confusion_nc.png")


def draw_embedding_map(report: Path, probe: dict[str, Any], runs: dict[str, Path], labels, class_names,
                       seed: int) -> None:
    """embeddings.png: t-SNE maps of the raw pooled features and the aligned vectors, with their probes."""
    from mlaga_fast.features.store import FeatureStore
    from mlaga_fast.plots.embeddings import plot_raw_vs_aligned
    from mlaga_fast.models.embeddings import load_embeddings

    report.mkdir(parents=True, exist_ok=True)
    _, aligned, _ = load_embeddings(runs["align"] / "embed")
    raw = FeatureStore(Path(runs["align"]).parents[1] / "data" / "features").pooled()
    plot_raw_vs_aligned(raw, np.asarray(aligned, np.float32), np.asarray(labels), report / "embeddings.png",
                        class_names=list(class_names), seed=seed,
                        accuracies={"raw": probe["raw"]["test"], "aligned": probe["aligned"]["test"]})


def write_summary(report: Path, metrics: dict[str, Any], table: str) -> None:
    """metrics.json and results.md (written last, once every time is known)."""
    atomic_write_json(report / "metrics.json", metrics)
    cfg, probe = metrics["config"], metrics["probe"]
    lines = [
        "# mlaga-fast demo", "",
        f"Synthetic catalogue: {cfg['nodes']} nodes, {cfg['classes']} classes, homophily {cfg['homophily']}, "
        f"image mismatch {cfg['image_mismatch']}, text mismatch {cfg['text_mismatch']}, seed {cfg['seed']}.",
        f"Encoder: `{metrics['encoder']}`; LLM: `{cfg['instruct']['llm']}` (frozen; the projectors train, and LoRA adapters "
        f"in the instruct phase: {cfg['instruct']['lora']}).", "",
        "Test accuracy (%), NC on test nodes and LP on balanced test pairs:", "", table,
        f"Linear probe (test accuracy) on raw mean-pooled features: {100 * probe['raw']['test']:.2f}%; "
        f"on aligned pooled vectors: {100 * probe['aligned']['test']:.2f}%.", "",
        "Computed in: " + ", ".join(f"{k} {v}" for k, v in metrics["precision"].items()) + ".", "",
        "Stage wall times (s): " + ", ".join(f"{k}: {v}" for k, v in metrics["stage_seconds"].items()),
        f"Total wall time: {metrics['wall_seconds']} s.", "",
        "Figures: `embeddings.png` (raw vs aligned t-SNE), `confusion_nc.png` (MLaGA NC), `loss_curves.png`.",
        "Configs of every stage: `configs/`.",
    ]
    if metrics["notes"]:
        lines += ["", "Notes:"] + [f"- {n}" for n in metrics["notes"]]
    atomic_write_text(report / "results.md", "\n".join(lines) + "\n")

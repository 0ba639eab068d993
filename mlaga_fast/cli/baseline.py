"""`mlaga-fast baseline`: train and evaluate one built-in baseline (MLP, GCN, GraphSAGE, GAT, label
propagation) for NC or LP, writing the shared result JSON (mlaga_fast.eval.report)."""
from __future__ import annotations

import json
from pathlib import Path

import click

from mlaga_fast.baselines.config import BaselineConfig
from mlaga_fast.config import config_options, resolve_config


def _load_features(spec: str | None, data_dir: Path, graph) -> tuple:
    """(float32 [N, D], meta) from a features directory, or from an array stored with the dataset
    ("graph:KEY", e.g. MAGB's precomputed CLIP features)."""
    import numpy as np

    if spec and spec.startswith("graph:"):
        key = spec[len("graph:"):]
        if key not in graph.features:
            raise ValueError(f"features: dataset {data_dir} has no stored array {key!r} "
                             f"(it has: {sorted(graph.features) or 'none'})")
        x = np.asarray(graph.features[key], dtype=np.float32)
        if x.ndim != 2:
            raise ValueError(f"features: stored array {key!r} has shape {x.shape}, expected [N, D]")
        return x, {"features": spec, "feature_dim": int(x.shape[1])}

    from mlaga_fast.features import FeatureStore
    from mlaga_fast.features.extract import graph_fingerprint

    fdir = Path(spec) if spec else data_dir / "features"
    if not (fdir / "manifest.json").is_file():
        raise ValueError(f"features: no features directory at {fdir}; run `mlaga-fast features "
                         f"--data {data_dir}` first, or pass --features DIR")
    store = FeatureStore(fdir)
    want = graph_fingerprint(graph, data_dir)
    have = store.manifest.get("graph_fingerprint")
    if have is not None and have != want:
        raise ValueError(f"features at {fdir} were extracted from graph {have}, but dataset "
                         f"{data_dir} is {want}: re-run `mlaga-fast features` on this dataset")
    if store.num_nodes != graph.num_nodes:
        raise ValueError(f"features at {fdir} have {store.num_nodes} nodes, dataset {data_dir} "
                         f"has {graph.num_nodes}")
    x = store.pooled()
    return x, {"features": str(fdir), "features_fingerprint": store.fingerprint,
               "encoder": store.encoder, "feature_dim": int(x.shape[1])}


@click.command("baseline")
@click.option("--data", "data_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="dataset directory written by mlaga_fast.data.save (holds graph.json)")
@click.option("--features", "features", default=None,
              help="features directory [default: DATA/features], or graph:KEY for an array "
                   "stored with the dataset; not used by labelprop")
@click.option("--out", "out_file", type=click.Path(dir_okay=False), default=None,
              help="write the result JSON here (atomic)")
@click.option("--confusion", "confusion_png", type=click.Path(dir_okay=False), default=None,
              help="also plot the confusion matrix to this PNG")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              default=None, help="YAML/TOML/JSON file with BaselineConfig fields (CLI wins)")
@config_options(BaselineConfig)
def baseline(data_dir: str, features: str | None, out_file: str | None,
             confusion_png: str | None, config_file: str | None, **kw) -> None:
    """Train/evaluate a baseline on the dataset's own splits; prints the result summary as JSON."""
    from mlaga_fast import __version__
    from mlaga_fast.baselines.train import run_baseline
    from mlaga_fast.data import load
    from mlaga_fast.eval.report import plot_confusion, write_result_json
    from mlaga_fast.features.extract import graph_fingerprint

    from mlaga_fast.runtime.device import pick_device

    cfg = resolve_config(BaselineConfig, kw, config_file=config_file).validate()
    cfg.device = str(pick_device(cfg.device))  # the spellings every command accepts (cpu:0, 1 = cuda:1)
    data = Path(data_dir)
    graph = load(data)
    meta = {"data_dir": str(data), "graph_fingerprint": graph_fingerprint(graph, data),
            "mlaga_fast_version": __version__}
    x = None
    if cfg.model != "labelprop":
        x, fmeta = _load_features(features, data, graph)
        meta.update(fmeta)
    result = run_baseline(graph, x, cfg, meta=meta)
    if out_file:
        write_result_json(out_file, result)
    if confusion_png:
        plot_confusion(result, confusion_png)
    summary = {k: result[k] for k in ("task", "method", "dataset", "split", "accuracy",
                                      "num_examples")}
    for k in ("auc", "val_accuracy", "val_auc", "iterations", "best_epoch", "train_seconds"):
        if k in result["extra"]:
            summary[k] = result["extra"][k]
    if out_file:
        summary["out"] = str(out_file)
    click.echo(json.dumps(summary))


@click.command("results-table")
@click.argument("results", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out_file", type=click.Path(dir_okay=False), default=None,
              help="write the markdown here (atomic) instead of printing it")
def results_table(results: tuple, out_file: str | None) -> None:
    """Markdown accuracy table from result JSON files written by `baseline` or `eval`: rows are methods
    (an evaluation on a graph the method was not trained on is its own row, "METHOD (transfer)"),
    columns are dataset / task (just the task when all results share one dataset). Datasets are told
    apart by the graph fingerprint the results record, not by name. Several files for one cell (seeds)
    show mean ± std."""
    from mlaga_fast.eval.report import read_result_json, results_table_markdown
    from mlaga_fast.utils.io import atomic_write_text

    md = results_table_markdown([read_result_json(p) for p in results])
    if out_file:
        atomic_write_text(out_file, md)
    else:
        click.echo(md, nl=False)

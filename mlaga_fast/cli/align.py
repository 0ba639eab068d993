"""Stage 1 commands: `train align`, `embed`, `probe`, `plot embeddings`.

Registered in mlaga_fast/cli/main.py. Heavy imports (torch, sklearn, matplotlib) happen inside the
command bodies; ``mlaga_fast.train.align_config`` is import-light (AlignConfig only needs dataclasses).
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from mlaga_fast.cli.params import DIRS, FEATURES, FEATURES_LIST
from mlaga_fast.config import config_options, preset_overrides
from mlaga_fast.train.align_config import PRESETS, AlignConfig


INPUTS_RECORD = "inputs.json"  # --data/--features of a Stage-1 run, recorded at its start for --resume


def _as_list(value) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _run_inputs(out_dir: str, data_dirs: list[str] | None, feature_dirs: list[str] | None,
                resume: bool) -> tuple[list[str], list[str]]:
    """--data/--features for a run (one entry per dataset): as given, or on --resume the ones the run recorded
    when it started."""
    if resume and (data_dirs is None or feature_dirs is None):
        rec, man = Path(out_dir) / INPUTS_RECORD, Path(out_dir) / "manifest.json"
        try:
            if rec.is_file():
                saved = json.loads(rec.read_text(encoding="utf-8"))
            elif man.is_file():  # a finished run from before inputs.json existed
                inputs = json.loads(man.read_text(encoding="utf-8"))["inputs"]
                saved = {"data": inputs["data_dir"], "features": inputs["features_dir"]}
            else:
                raise ValueError(f"--resume: {out_dir} records no inputs ({INPUTS_RECORD}); pass --data and "
                                 "--features")
            data_dirs = data_dirs or _as_list(saved["data"])
            feature_dirs = feature_dirs or _as_list(saved["features"])
        except (KeyError, TypeError, json.JSONDecodeError) as e:
            raise ValueError(f"--resume: the inputs recorded in {out_dir} are unreadable ({e}); pass --data and "
                             "--features") from None
    if data_dirs is None or feature_dirs is None:
        raise click.UsageError("--data and --features are required for a new run (--resume reads them from the run)")
    if len(data_dirs) != len(feature_dirs):
        raise click.UsageError(f"--data lists {len(data_dirs)} dataset(s) but --features {len(feature_dirs)}: give "
                               "one features source per dataset, in the same order")
    return data_dirs, feature_dirs


def _record_inputs(out_dir: str, data_dirs: list[str], feature_dirs: list[str]) -> None:
    """Record a new run's inputs, unless the folder already holds a run (train_align then refuses it)."""
    from mlaga_fast.features.source import features_arg
    from mlaga_fast.train.checkpoint import find_latest
    from mlaga_fast.utils.io import atomic_write_json

    out = Path(out_dir)
    if not (out / "manifest.json").exists() and find_latest(out / "checkpoints") is None:
        atomic_write_json(out / INPUTS_RECORD, {"data": [str(Path(d).resolve()) for d in data_dirs],
                                                "features": [features_arg(f) for f in feature_dirs]})


@click.command("align")
@click.option("--data", "data_dir", type=DIRS,
              help="dataset directory (mlaga_fast.data.save output), or several, comma-separated: one aligner for "
                   "all of them, each node's positives from its own graph; with --resume, the run's by default")
@click.option("--features", "features_dir", type=FEATURES_LIST,
              help="features directory (`mlaga-fast features` output) or online:ENCODER (encoders run on every "
                   "batch, nothing stored), one per --data entry; with --resume, the run's by default")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="run directory to create")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="YAML/TOML/JSON file of config fields (applied over --preset; CLI options override both)")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default=None,
              help="named field set: 'paper' = dim 1024, 6 layers, 8 heads, 32 queries, cross-attention every 2nd "
                   "layer (the MLaGA reference); 'cpu' = the defaults")
@click.option("--resume", is_flag=True, help="continue from the newest checkpoint in --out, with its saved config "
                                             "and inputs")
@click.option("--no-progress", is_flag=True, help="hide the progress bar")
@config_options(AlignConfig)
def align_cmd(data_dir, features_dir, out_dir, config_file, preset, resume, no_progress, **fields):
    """Stage 1: train the structure-aware aligner with the graph-contrastive loss."""
    from mlaga_fast.config import saved_run_config
    from mlaga_fast.train.align import train_align
    from mlaga_fast.train.align_config import build_config
    from mlaga_fast.utils.lock import exclusive_output

    data_dir, features_dir = _run_inputs(out_dir, data_dir, features_dir, resume)
    # --resume starts from the run's saved config; train_align refuses changed training settings.
    base = saved_run_config(out_dir) if resume else None
    cfg = build_config(fields, config_file=config_file, preset=preset, base=base)
    over = preset_overrides(preset, PRESETS, config_file, fields)
    if over:
        click.echo(f"note: {', '.join(over)} from --config / the command line replace --preset {preset}'s values "
                   "(order: preset < config file < command line)", err=True)
    with exclusive_output(out_dir, "train align"):
        if not resume:
            _record_inputs(out_dir, data_dir, features_dir)
        summary = train_align(cfg, data_dir, features_dir, out_dir, resume=resume, show_progress=not no_progress)
    if summary.get("already_complete") and summary.get("manifest"):
        click.echo(f"{out_dir} is already complete ({summary['steps']} steps); nothing to do.", err=True)
    if summary.get("manifest"):  # main rank only
        click.echo(json.dumps({"run": summary["run"], "steps": summary["steps"], "final": summary["final"]},
                              indent=2, default=str))


@click.command("embed")
@click.option("--run", "run_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="finished `train align` run")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="output directory EMB")
@click.option("--features", "features_dir", type=FEATURES, default=None,
              help="features directory (default: the one the run recorded; must match it)")
@click.option("--batch-size", type=int, default=256, show_default=True, help="nodes per aligner forward pass")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or N (= cuda:N)")
def embed_cmd(run_dir, out_dir, features_dir, batch_size, device):
    """Write aligned tokens [N, nq, d] and pooled vectors [N, d] (fp16, memory-mappable) for all nodes."""
    from mlaga_fast.models.embeddings import export_embeddings

    manifest = export_embeddings(run_dir, out_dir, features_dir=features_dir, batch_size=batch_size, device=device)
    click.echo(json.dumps(manifest, indent=2))


@click.command("probe")
@click.option("--run", "run_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="finished `train align` run")
@click.option("--emb", "emb_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="`mlaga-fast embed` output to reuse (default: encode now)")
@click.option("--data", "data_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="dataset directory (default: the one the run recorded; must be that graph)")
@click.option("--features", "features_dir", type=FEATURES, default=None,
              help="features directory (default: the one the run recorded; must match it)")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or N (= cuda:N)")
def probe_cmd(run_dir, emb_dir, data_dir, features_dir, device):
    """Linear-probe accuracy of raw mean-pooled features vs aligned pooled vectors, as JSON."""
    from mlaga_fast.eval.probe import probe_run

    res = probe_run(run_dir, emb_dir=emb_dir, data_dir=data_dir, features_dir=features_dir, device=device,
                    progress=False)
    click.echo(json.dumps(res, indent=2))


@click.command("embeddings")
@click.option("--run", "run_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="finished `train align` run")
@click.option("--out", "out_png", required=True, type=click.Path(dir_okay=False), help="PNG file to write")
@click.option("--emb", "emb_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="`mlaga-fast embed` output to reuse (default: encode now)")
@click.option("--max-nodes", type=int, default=2000, show_default=True, help="random subset size for t-SNE")
@click.option("--seed", type=int, default=0, show_default=True, help="seed of the subset and of t-SNE")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or N (= cuda:N)")
def plot_embeddings_cmd(run_dir, out_png, emb_dir, max_nodes, seed, device):
    """t-SNE of raw vs aligned pooled embeddings, coloured by class, side by side."""
    from mlaga_fast.data import load
    from mlaga_fast.eval.probe import aligned_pooled, check_run_dataset, linear_probe
    from mlaga_fast.plots.embeddings import plot_raw_vs_aligned

    aligned, store, manifest = aligned_pooled(run_dir, emb_dir=emb_dir, device=device, progress=False)
    graph = load(manifest["inputs"]["data_dir"])
    check_run_dataset(manifest, store, graph, manifest["inputs"]["data_dir"])
    raw = store.pooled()
    labels = graph.labels
    accs = {"raw": linear_probe(raw, labels, graph.train, {"test": graph.test})["test"],
            "aligned": linear_probe(aligned, labels, graph.train, {"test": graph.test})["test"]}
    n = plot_raw_vs_aligned(raw, aligned, labels, out_png, class_names=graph.class_names, max_nodes=max_nodes,
                            seed=seed, title=f"{graph.name}: {store.encoder} features", accuracies=accs)
    click.echo(json.dumps({"out": str(out_png), "nodes": n, "probe_test_acc": accs}))

"""Stage 1 commands: `train align`, `embed`, `probe`, `plot embeddings`.

Registered in mlaga_fast/cli/main.py. Heavy imports (torch, sklearn, matplotlib) happen inside the
command bodies; ``mlaga_fast.train.align`` is import-light (AlignConfig only needs dataclasses).
"""
from __future__ import annotations

import json

import click

from mlaga_fast.config import config_options
from mlaga_fast.train.align import PRESETS, AlignConfig


@click.command("align")
@click.option("--data", "data_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="dataset directory (mlaga_fast.data.save output)")
@click.option("--features", "features_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="features directory (`mlaga-fast features` output)")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="run directory to create")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="YAML/TOML/JSON file of config fields (CLI options override it)")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default=None,
              help="named field set: 'paper' = dim 1024, 6 layers, 8 heads, 32 queries, cross-attention every 2nd "
                   "layer (the MLaGA reference); 'cpu' = the defaults")
@click.option("--resume", is_flag=True, help="continue from the newest checkpoint in --out")
@click.option("--no-progress", is_flag=True, help="hide the progress bar")
@config_options(AlignConfig)
def align_cmd(data_dir, features_dir, out_dir, config_file, preset, resume, no_progress, **fields):
    """Stage 1: train the structure-aware aligner with the graph-contrastive loss."""
    from mlaga_fast.config import saved_run_config
    from mlaga_fast.train.align import build_config, train_align

    try:
        # --resume starts from the run's saved config; train_align refuses changed training settings.
        base = saved_run_config(out_dir) if resume else None
        cfg = build_config(fields, config_file=config_file, preset=preset, base=base)
        summary = train_align(cfg, data_dir, features_dir, out_dir, resume=resume, show_progress=not no_progress)
    except (ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from e
    if summary.get("manifest"):  # main rank only
        click.echo(json.dumps({"run": summary["run"], "steps": summary["steps"], "final": summary["final"]},
                              indent=2, default=str))


@click.command("embed")
@click.option("--run", "run_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="finished `train align` run")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="output directory EMB")
@click.option("--features", "features_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="features directory (default: the one the run recorded; must match it)")
@click.option("--batch-size", type=int, default=256, show_default=True)
@click.option("--device", default="auto", show_default=True)
def embed_cmd(run_dir, out_dir, features_dir, batch_size, device):
    """Write aligned tokens [N, nq, d] and pooled vectors [N, d] (fp16, memory-mappable) for all nodes."""
    from mlaga_fast.train.embed import export_embeddings

    try:
        manifest = export_embeddings(run_dir, out_dir, features_dir=features_dir, batch_size=batch_size,
                                     device=device)
    except (ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from e
    click.echo(json.dumps(manifest, indent=2))


@click.command("probe")
@click.option("--run", "run_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--emb", "emb_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="`mlaga-fast embed` output to reuse (default: encode now)")
@click.option("--data", "data_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="dataset directory (default: the one the run recorded)")
@click.option("--features", "features_dir", type=click.Path(exists=True, file_okay=False), default=None)
@click.option("--device", default="auto", show_default=True)
def probe_cmd(run_dir, emb_dir, data_dir, features_dir, device):
    """Linear-probe accuracy of raw mean-pooled features vs aligned pooled vectors, as JSON."""
    from mlaga_fast.eval.probe import probe_run

    try:
        res = probe_run(run_dir, emb_dir=emb_dir, data_dir=data_dir, features_dir=features_dir, device=device,
                        progress=False)
    except (ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from e
    click.echo(json.dumps(res, indent=2))


@click.command("embeddings")
@click.option("--run", "run_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out_png", required=True, type=click.Path(dir_okay=False), help="PNG file to write")
@click.option("--emb", "emb_dir", type=click.Path(exists=True, file_okay=False), default=None)
@click.option("--max-nodes", type=int, default=2000, show_default=True, help="random subset size for t-SNE")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
def plot_embeddings_cmd(run_dir, out_png, emb_dir, max_nodes, seed, device):
    """t-SNE of raw vs aligned pooled embeddings, coloured by class, side by side."""
    from mlaga_fast.data import load
    from mlaga_fast.eval.probe import aligned_pooled, linear_probe
    from mlaga_fast.plots.embeddings import plot_raw_vs_aligned

    try:
        aligned, store, manifest = aligned_pooled(run_dir, emb_dir=emb_dir, device=device, progress=False)
        graph = load(manifest["inputs"]["data_dir"])
        raw = store.pooled()
        labels = graph.labels
        accs = {"raw": linear_probe(raw, labels, graph.train, {"test": graph.test})["test"],
                "aligned": linear_probe(aligned, labels, graph.train, {"test": graph.test})["test"]}
        n = plot_raw_vs_aligned(raw, aligned, labels, out_png, class_names=graph.class_names, max_nodes=max_nodes,
                                seed=seed, title=f"{graph.name}: {manifest['inputs']['features']['encoder']} "
                                                 f"features", accuracies=accs)
    except (ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from e
    click.echo(json.dumps({"out": str(out_png), "nodes": n, "probe_test_acc": accs}))

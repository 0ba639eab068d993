"""`mlaga-fast features`: run frozen encoders over a dataset and cache token features as fp16 shards."""
from __future__ import annotations

import json
import time
from pathlib import Path

import click

from mlaga_fast.config import config_options, resolve_config
from mlaga_fast.features.extract import FeatureConfig


@click.command("features")
@click.option("--data", "data_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="dataset directory written by mlaga_fast.data.save (holds graph.json)")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="features directory [default: DATA/features]")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="YAML/TOML/JSON file with FeatureConfig fields (CLI options win)")
@click.option("--no-progress", is_flag=True, help="hide the progress bar")
@click.option("--verify", is_flag=True, help="then check every shard against the sha256 recorded at extraction "
              "(reads the whole folder; rerun on a finished folder to check it)")
@config_options(FeatureConfig)
def features(data_dir: str, out_dir: str | None, config_file: str | None, no_progress: bool, verify: bool,
             **kw) -> None:
    """Encode every node's image and text into token features (resumable; rerun to continue)."""
    from mlaga_fast.data import load
    from mlaga_fast.features.extract import extract_features, graph_fingerprint

    cfg = resolve_config(FeatureConfig, kw, config_file=config_file)
    out = Path(out_dir) if out_dir else Path(data_dir) / "features"
    graph = load(data_dir)
    t0 = time.perf_counter()
    store = extract_features(graph, out, cfg, graph_fp=graph_fingerprint(graph, data_dir), progress=not no_progress)
    if verify:
        store.verify()
    dt = time.perf_counter() - t0
    click.echo(json.dumps({
        "out": str(out), "encoder": store.encoder, "encoders": store.manifest.get("encoders"),
        "num_nodes": store.num_nodes,
        "image": [store.image_len, store.image_dim], "text": [store.text_len, store.text_dim],
        "shards": store.num_shards, "seconds": round(dt, 2), "fingerprint": store.fingerprint,
    }))

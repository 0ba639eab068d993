"""`mlaga-fast demo`: the whole pipeline on the embedded synthetic catalogue, offline."""
from __future__ import annotations

import click

from mlaga_fast.config import config_options
from mlaga_fast.demo.config import PRESETS, DemoConfig


@click.command("demo")
@click.option("--out", "out_dir", default="demo_out", show_default=True, type=click.Path(file_okay=False),
              help="output folder (a previous demo there is replaced)")
@click.option("--fast", is_flag=True, help="a small sanity run (about 3 minutes on 2 cores)")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="YAML/TOML/JSON file of demo fields (CLI options override it)")
@config_options(DemoConfig)
def demo_cmd(out_dir, fast, config_file, **fields):
    """Synthesise a catalogue, extract features, train both stages, evaluate, compare with baselines."""
    from mlaga_fast.config import resolve_config
    from mlaga_fast.demo.pipeline import run_demo

    cfg = resolve_config(DemoConfig, fields, config_file=config_file, preset="fast" if fast else "full",
                         presets=PRESETS)
    run_demo(cfg, out_dir)

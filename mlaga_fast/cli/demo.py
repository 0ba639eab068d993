"""`mlaga-fast demo`: the whole pipeline on the embedded synthetic catalogue, offline."""
from __future__ import annotations

import click

from mlaga_fast.config import config_options
from mlaga_fast.demo.config import PRESETS, DemoConfig


@click.command("demo")
@click.option("--out", "out_dir", default="demo_out", show_default=True, type=click.Path(file_okay=False),
              help="output folder (a previous demo there is replaced)")
@click.option("--fast", is_flag=True, help="a small sanity run (about 2 minutes on 2 cores)")
@click.option("--seeds", default=None, help="comma-separated seeds: one demo per seed in OUT/seed<N>, then the "
                                            "mean ± std table over them (overrides --seed)")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="YAML/TOML/JSON file of demo fields (CLI options override it)")
@click.option("--transfer", is_flag=True, help="then apply the tuned MLaGA, untuned, to catalogues it never saw (the "
                                               "toy store's categories 9-16 and a grocery) and print the transfer rows")
@config_options(DemoConfig)
def demo_cmd(out_dir, fast, seeds, config_file, transfer, **fields):
    """Synthesise a catalogue, extract features, train both stages, evaluate, compare with baselines."""
    from dataclasses import replace
    from pathlib import Path

    from mlaga_fast.config import resolve_config
    from mlaga_fast.demo.pipeline import run_demo
    from mlaga_fast.demo.report import seeds_table
    from mlaga_fast.utils.io import atomic_write_text

    cfg = resolve_config(DemoConfig, fields, config_file=config_file, preset="fast" if fast else "full",
                         presets=PRESETS)
    if seeds is None:
        metrics = run_demo(cfg, out_dir)
        if transfer:
            from mlaga_fast.demo.transfer import run_transfer

            run_transfer(cfg, out_dir, metrics)
        return
    if transfer:
        raise click.UsageError("--transfer: run it for one seed (--seed), not with --seeds")
    seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    if not seed_list:
        raise ValueError("--seeds: give at least one seed")
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    runs = [run_demo(replace(cfg, seed=s), Path(out_dir) / f"seed{s}") for s in seed_list]
    table = seeds_table(runs)
    atomic_write_text(Path(out_dir) / "seeds.md", table)
    click.echo(f"\nmean ± std over seeds {seed_list}:\n" + table)


@click.command("compare")
@click.option("--out", "out_dir", default="compare_out", show_default=True, type=click.Path(file_okay=False),
              help="output folder (finished variants there are reused)")
@click.option("--seeds", default="0,1,2", show_default=True, help="comma-separated seeds (data and training)")
@click.option("--projectors", default="modality,single", show_default=True,
              help="comma-separated Stage-2 variants: modality, single, cross-separate, cross-paired (cross-task "
                   "attention with LP pairs in separate slots, or grouped as the release groups them)")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="YAML/TOML/JSON file of demo fields (CLI options override it)")
@config_options(DemoConfig)
def compare_cmd(out_dir, seeds, projectors, config_file, **fields):
    """MLaGA as the paper built it beside our variants: {paper, our} aligner x {paper, our} objective x
    {modality-aware, single} projectors on the demo catalogue, mean ± std over seeds."""
    from mlaga_fast.config import resolve_config
    from mlaga_fast.demo.compare import COMPARE_DEFAULTS, run_compare

    seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    if not seed_list:
        raise ValueError("--seeds: give at least one seed")
    cfg = resolve_config(DemoConfig, fields, config_file=config_file, preset="compare",
                         presets={"compare": COMPARE_DEFAULTS})
    run_compare(cfg, seed_list, out_dir, projectors=tuple(p.strip() for p in projectors.split(",") if p.strip()))

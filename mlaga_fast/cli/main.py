"""The `mlaga-fast` command. Subcommands live in sibling modules, one per area, and import their
heavy dependencies (torch, transformers) inside the command body so `--help` stays instant."""
from __future__ import annotations

import json

import click

from mlaga_fast._version import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mlaga-fast")
def cli() -> None:
    """MLaGA on multimodal graphs: data, features, PPR, aligner (Stage 1), instruction tuning (Stage 2)."""


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def info(as_json: bool) -> None:
    """Report the version, the compiled core (CUDA, OpenMP) and optional packages."""
    from mlaga_fast.info import format_report, report

    rep = report()
    click.echo(json.dumps(rep, indent=2) if as_json else format_report(rep))


@cli.group()
def train() -> None:
    """Train Stage 1 (align) or Stage 2 (instruct)."""


@cli.group()
def plot() -> None:
    """Figures from runs."""


# --- command registrations: one line per module, each owned by that module's author ---
# (keep this block free of logic; a module adds its commands to `cli`, `train` or `plot`)
# --- end of command registrations ---

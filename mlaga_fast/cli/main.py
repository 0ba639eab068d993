"""The `mlaga-fast` command. Subcommands live in sibling modules, one per area, and import their
heavy dependencies (torch, transformers) inside the command body so `--help` stays instant."""
from __future__ import annotations

import json

import click

from mlaga_fast._version import __version__
from mlaga_fast.cli.errors import Group


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mlaga-fast")
def cli() -> None:
    """MLaGA on multimodal graphs: data, features, PPR, aligner (Stage 1), instruction tuning (Stage 2).

    A failure prints one line, "Error: ...", and exits with 2 when the options or input files are
    wrong, 1 when a valid command failed while running (e.g. its output is in use by another process).
    """


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


# --- command registrations: each area's module defines its commands; they are attached here ---
# (subcommand modules never import this module, so any of them can be imported first)
from mlaga_fast.cli.align import align_cmd, embed_cmd, plot_embeddings_cmd, probe_cmd  # noqa: E402
from mlaga_fast.cli.baseline import baseline, results_table  # noqa: E402
from mlaga_fast.cli.data import data  # noqa: E402
from mlaga_fast.cli.demo import compare_cmd, demo_cmd  # noqa: E402
from mlaga_fast.cli.features import features  # noqa: E402
from mlaga_fast.cli.instruct import ask_cmd, eval_cmd, export_cmd, instruct_cmd, predict_cmd  # noqa: E402
from mlaga_fast.cli.ppr import ppr  # noqa: E402
import mlaga_fast.cli.synth  # noqa: E402,F401  (adds `data synth` to the data group)

for _cmd, _name in ((data, "data"), (features, "features"), (ppr, "ppr"), (embed_cmd, "embed"),
                    (probe_cmd, "probe"), (eval_cmd, "eval"), (predict_cmd, "predict"), (ask_cmd, "ask"),
                    (export_cmd, "export"),
                    (baseline, "baseline"),
                    (results_table, "results-table"), (demo_cmd, "demo"), (compare_cmd, "compare")):
    cli.add_command(_cmd, _name)
train.add_command(align_cmd, "align")
train.add_command(instruct_cmd, "instruct")
plot.add_command(plot_embeddings_cmd, "embeddings")

"""`mlaga-fast data ...`: prepare a dataset directory from benchmark files, inspect it, split its links.

Other modules add subcommands to the group object ``data`` (e.g. `data synth`).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import click



@click.group("data")
def data() -> None:
    """Datasets: prepare from MAGB / MM-GRAPH files, inspect, make the link-prediction split."""


@data.command("prepare")
@click.option("--format", "fmt", required=True, type=click.Choice(["magb", "mmgraph"]),
              help="Layout of the source files (see docs/data_format.md).")
@click.option("--root", required=True, type=click.Path(exists=True, file_okay=False),
              help="Folder holding the benchmark files (or a <name>/ sub-folder with them).")
@click.option("--name", required=True, help="Dataset name, e.g. Toys, Grocery, Movies (magb) or books-nc (mmgraph).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Dataset directory to write.")
@click.option("--images", type=click.Path(exists=True), default=None,
              help="Image folder or .tar/.tar.gz with <node id>.jpg [default: looked for beside the graph].")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the 60/20/20 split when none is given.")
@click.option("--edge-split", default="hard", show_default=True, help="mmgraph: which lp-edge-split-<kind>.pt to use.")
@click.option("--verify-images", is_flag=True, help="Decode every image now so corrupt ones are counted.")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
def prepare(fmt: str, root: str, name: str, out_dir: str, images: str | None, seed: int, edge_split: str,
            verify_images: bool, no_progress: bool) -> None:
    """Read benchmark files, clean the graph (symmetrise, merge duplicates, drop self-loops), and
    write a dataset directory (atomically)."""
    from mlaga_fast.data.inspect import format_report, inspect_graph, readiness_notes
    from mlaga_fast.data.store import check_save_target, save

    t0 = time.perf_counter()
    check_save_target(Path(out_dir))  # before the slow load: refuse a directory save would not replace
    if fmt == "magb":
        from mlaga_fast.data.magb import load_magb

        g = load_magb(root, name, images=images, seed=seed, verify_images=verify_images, progress=not no_progress)
    else:
        from mlaga_fast.data.mmgraph import load_mmgraph

        g = load_mmgraph(root, name, edge_split=edge_split, images=images, seed=seed,
                         verify_images=verify_images, progress=not no_progress)
    save(g, out_dir)
    click.echo(format_report(inspect_graph(g)))
    click.echo(f"wrote {out_dir} in {time.perf_counter() - t0:.2f}s")
    for note in readiness_notes(g):
        click.echo(f"note: {note}", err=True)


@data.command("inspect")
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--verify-images", is_flag=True, help="Decode every image and count the corrupt ones.")
def inspect_cmd(data_dir: str, as_json: bool, verify_images: bool) -> None:
    """Report sizes, cleaning counts, homophily, splits and modalities of a dataset directory."""
    from mlaga_fast.data.inspect import format_report, inspect_graph
    from mlaga_fast.data.store import load

    rep = inspect_graph(load(data_dir), verify_images=verify_images, progress=not as_json)
    click.echo(json.dumps(rep, indent=2) if as_json else format_report(rep))


@data.command("split-links")
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--val", default=0.05, show_default=True, type=click.FloatRange(0, 1), help="Fraction of edges for validation.")
@click.option("--test", default=0.1, show_default=True, type=click.FloatRange(0, 1), help="Fraction of edges for test.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the held-out edges and negatives.")
@click.option("--min-train-degree", default=1, show_default=True, type=click.IntRange(min=0),
              help="Hold an edge out only while both ends keep this many training edges (0: no limit).")
def split_links_cmd(data_dir: str, val: float, test: float, seed: int, min_train_degree: int) -> None:
    """Store a link-prediction split (val/test positives with as many negatives) with the dataset;
    the training graph (graph.train_graph()) then excludes the held-out edges. A split the dataset
    already has is replaced (the message says so), and the dataset's fingerprint changes: run it
    before `mlaga-fast features`."""
    from mlaga_fast.data.splits import split_links
    from mlaga_fast.data.store import load, save_link_split

    g = load(data_dir)
    previous = g.link_split
    ls = split_links(g, val=val, test=test, seed=seed, min_train_degree=min_train_degree)
    g = save_link_split(data_dir, ls, params={"val": val, "test": test, "seed": seed,
                                              "min_train_degree": min_train_degree})
    sizes = ", ".join(f"{k} {a.shape[1]:,}" for k, a in ls.arrays().items())
    if previous is not None:
        old = ", ".join(f"{k} {a.shape[1]:,}" for k, a in previous.arrays().items())
        click.echo(f"replaced the link split {data_dir} had ({old})")
    click.echo(f"link split stored in {data_dir}: {sizes} (fingerprint {g.fingerprint[:16]})")

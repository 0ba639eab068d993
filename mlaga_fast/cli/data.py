"""`mlaga-fast data ...`: prepare a dataset directory (from benchmark files, your own tables or a PyG file),
inspect it, split its links.

Other modules add subcommands to the group object ``data`` (e.g. `data synth`).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import click



@click.group("data")
def data() -> None:
    """Datasets: prepare from MAGB / MM-GRAPH files, your own tables or a PyG file; inspect; split links."""


@data.command("prepare")
@click.option("--format", "fmt", required=True, type=click.Choice(["magb", "mmgraph", "table", "pyg"]),
              help="Layout of the source files (see docs/data_format.md): a benchmark's (magb, mmgraph), your own "
                   "tables (table: --nodes and --edges), or a saved torch_geometric Data (pyg: --root FILE.pt).")
@click.option("--root", type=click.Path(exists=True),
              help="magb/mmgraph: folder holding the benchmark files (or a <name>/ sub-folder with them); "
                   "pyg: the torch.save'd Data file.")
@click.option("--name", required=True, help="Dataset name, e.g. Toys, Grocery, Movies (magb) or books-nc (mmgraph).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Dataset directory to write.")
@click.option("--images", type=click.Path(exists=True), default=None,
              help="magb/mmgraph: image folder or .tar/.tar.gz with <node id>.jpg [default: looked for beside the "
                   "graph]; table: the folder the image column's paths are relative to [default: the nodes file's].")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Seed of the 60/20/20 split when none is given (table: also of the link split's negatives).")
@click.option("--edge-split", default="hard", show_default=True, help="mmgraph: which lp-edge-split-<kind>.pt to use.")
@click.option("--verify-images", is_flag=True, help="Decode every image now so corrupt ones are counted.")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
@click.option("--nodes", "nodes_file", type=click.Path(exists=True, dir_okay=False),
              help="table: the nodes file (.csv, .tsv, .parquet or .jsonl), one row per node.")
@click.option("--edges", "edges_file", type=click.Path(exists=True, dir_okay=False),
              help="table: the edges file (.csv, .tsv, .parquet or .jsonl), one row per edge.")
@click.option("--id-col", default="id", show_default=True, help="table: nodes column of the node ids.")
@click.option("--text-cols", default=None,
              help="table: nodes column(s) of the text, comma-separated, joined with a space [default: text, if present].")
@click.option("--image-col", default=None, help="table: nodes column of the image paths [default: image, if present].")
@click.option("--label-col", default=None,
              help="table: nodes column of the labels, class names or ids 0..K-1 [default: label, if present].")
@click.option("--split-col", default=None,
              help="table: nodes column of train/val/test [default: split, if present; else a seeded 60/20/20].")
@click.option("--src-col", default="src", show_default=True, help="table: edges column of the first end.")
@click.option("--dst-col", default="dst", show_default=True, help="table: edges column of the second end.")
@click.option("--edge-split-col", default=None,
              help="table: edges column of train/val/test, the link split's positives [default: split, if present].")
def prepare(fmt: str, root: str | None, name: str, out_dir: str, images: str | None, seed: int, edge_split: str,
            verify_images: bool, no_progress: bool, nodes_file: str | None, edges_file: str | None, id_col: str,
            text_cols: str | None, image_col: str | None, label_col: str | None, split_col: str | None,
            src_col: str, dst_col: str, edge_split_col: str | None) -> None:
    """Read benchmark files or your own tables, clean the graph (symmetrise, merge duplicates, drop
    self-loops), and write a dataset directory (atomically)."""
    from mlaga_fast.data.store import check_save_target

    t0 = time.perf_counter()
    _check_sources(fmt, root, nodes_file, edges_file)
    out = Path(out_dir)
    check_save_target(out)  # before the slow load: refuse a directory save would not replace
    if fmt == "table":
        import tempfile

        from mlaga_fast.data.table import load_table

        out.parent.mkdir(parents=True, exist_ok=True)
        # Texts and string ids stream into files beside the output instead of memory; save copies them in.
        with tempfile.TemporaryDirectory(prefix=f".{out.name}.table-", dir=out.parent) as tmp:
            g = load_table(nodes_file, edges_file, name=name, images=images, id_col=id_col, text_cols=text_cols,
                           image_col=image_col, label_col=label_col, split_col=split_col, src_col=src_col,
                           dst_col=dst_col, edge_split_col=edge_split_col, seed=seed, verify_images=verify_images,
                           text_dir=tmp, warn=lambda m: click.echo(f"warning: {m}", err=True),
                           progress=not no_progress)
            _finish(g, out, t0)
        return
    if fmt == "magb":
        from mlaga_fast.data.magb import load_magb

        g = load_magb(root, name, images=images, seed=seed, verify_images=verify_images, progress=not no_progress)
    elif fmt == "mmgraph":
        from mlaga_fast.data.mmgraph import load_mmgraph

        g = load_mmgraph(root, name, edge_split=edge_split, images=images, seed=seed,
                         verify_images=verify_images, progress=not no_progress)
    else:
        from mlaga_fast.data.pyg import load_pyg_file

        g = load_pyg_file(root, name=name, seed=seed, verify_images=verify_images, progress=not no_progress)
    _finish(g, out, t0)


def _check_sources(fmt: str, root: str | None, nodes_file: str | None, edges_file: str | None) -> None:
    """Each format's source options, as click would check them if they were per-format."""
    table_given = [o for o, v in (("--nodes", nodes_file), ("--edges", edges_file)) if v]
    if fmt == "table":
        missing = [o for o, v in (("--nodes", nodes_file), ("--edges", edges_file)) if not v]
        if missing:
            raise click.UsageError(f"--format table needs {' and '.join(missing)}")
        if root:
            raise click.UsageError("--format table reads --nodes and --edges, not --root")
        return
    if table_given:
        raise click.UsageError(f"{' and '.join(table_given)}: only for --format table")
    if not root:
        raise click.UsageError(f"--format {fmt} needs --root")
    if fmt == "pyg" and not Path(root).is_file():
        raise click.UsageError(f"--root: {root} is a folder; --format pyg reads the file torch.save wrote")
    if fmt in ("magb", "mmgraph") and not Path(root).is_dir():
        raise click.UsageError(f"--root: {root} is a file; --format {fmt} reads a folder")


def _finish(g, out: Path, t0: float) -> None:
    from mlaga_fast.data.inspect import format_report, inspect_graph, readiness_notes
    from mlaga_fast.data.store import save

    save(g, out)
    click.echo(format_report(inspect_graph(g)))
    click.echo(f"wrote {out} in {time.perf_counter() - t0:.2f}s")
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

"""`mlaga-fast data synth`: write a synthetic product-catalogue dataset (the offline default data)."""
from __future__ import annotations

import click

from mlaga_fast.cli.data import data
from mlaga_fast.data.shops import SHOPS


@data.command("synth")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Dataset directory to write.")
@click.option("--as-table", "as_table", type=click.Path(file_okay=False),
              help="Also (or instead of --out) write the catalogue as the tables `data prepare --format table` "
                   "reads: DIR/nodes.csv, DIR/edges.csv, DIR/images/.")
@click.option("--nodes", default=3000, show_default=True, type=click.IntRange(min=8), help="Number of products.")
@click.option("--classes", default=8, show_default=True, type=click.IntRange(2, 20),
              help="Number of categories (the shop's first ones; see --categories).")
@click.option("--homophily", default=0.7, show_default=True, type=click.FloatRange(0, 1),
              help="Fraction of edges that join products of the same category.")
@click.option("--image-mismatch", default=0.15, show_default=True, type=click.FloatRange(0, 1),
              help="Fraction of products whose picture shows another category.")
@click.option("--text-mismatch", default=0.05, show_default=True, type=click.FloatRange(0, 1),
              help="Fraction of products whose text describes another category.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2**32 - 1),
              help="Seed of every random choice (the same seed gives the same bytes).")
@click.option("--mean-degree", default=8.0, show_default=True, type=float, help="Average number of neighbours.")
@click.option("--degree-exponent", default=2.5, show_default=True, type=float,
              help="Power-law exponent of the degree distribution.")
@click.option("--text-noise", default=0.25, show_default=True, type=click.FloatRange(0, 1),
              help="Chance that each feature/use phrase of a text comes from a random category.")
@click.option("--image-size", default=64, show_default=True, type=click.IntRange(8, 1024), help="Picture side in pixels.")
@click.option("--name", default="synthetic-catalogue", show_default=True,
              help="Dataset name shown in reports (results are told apart by fingerprint, not by name).")
@click.option("--modalities", default="text,image", show_default=True,
              type=click.Choice(["text,image", "text", "image"]),
              help="Node modalities to keep: text or image alone makes a one-modality graph.")
@click.option("--no-link-split", is_flag=True, help="Skip the link-prediction edge split.")
@click.option("--preview", type=click.Path(dir_okay=False), default=None,
              help="Also write a PNG contact sheet (8 pictures per class) to this path.")
@click.option("--shop", default="toys", show_default=True, type=click.Choice(sorted(SHOPS)),
              help="Whose vocabulary and looks the texts and pictures come from.")
@click.option("--categories", default=None,
              help="The shop's categories to draw, 1-based numbers and ranges or names: '9-16', 'Bakery,Beverages' "
                   "(sets --classes).")
@click.option("--dress", "dress", default=None, type=click.Path(dir_okay=False),
              help="Dress a real graph instead of drawing one: a DGL file (e.g. MAGB ToysGraph.pt, read in place) "
                   "whose topology and labels are kept, with texts and pictures drawn per label from --shop.")
def synth(out_dir: str | None, as_table: str | None, nodes: int, classes: int, homophily: float,
          image_mismatch: float, text_mismatch: float, seed: int, mean_degree: float, degree_exponent: float,
          text_noise: float, image_size: int, name: str, modalities: str, no_link_split: bool, preview: str | None,
          shop: str, categories: str | None, dress: str | None) -> None:
    """Make a synthetic product-catalogue graph (DC-SBM structure, category texts, rendered pictures,
    controllable modality mismatch). The same seed gives byte-identical arrays."""
    import time

    from mlaga_fast.data.synth import dress_graph, make_catalogue

    if not out_dir and not as_table:
        raise click.UsageError("give --out (a dataset directory), --as-table (tables), or both")
    if as_table:
        from mlaga_fast.data.table import check_table_target

        check_table_target(as_table)  # before the catalogue is made
    t0 = time.perf_counter()
    if dress:
        if categories:
            raise click.UsageError("--categories: a dressed graph keeps its own classes; drop it with --dress")
        g = dress_graph(dress, out_dir, shop=shop, seed=seed, image_mismatch=image_mismatch,
                        text_mismatch=text_mismatch, text_noise=text_noise, image_size=image_size,
                        name=None if name == "synthetic-catalogue" else name, link_split=not no_link_split)
        d = g.meta["dressed"]
        merged = (f"; classes l and l+{d['shop_categories']} share a category" if d["graph_classes"] > d["classes"]
                  else "")
        click.echo(f"dressed {d['graph_classes']} graph classes with {d['classes']} of the {shop} shop's "
                   f"{d['shop_categories']} categories{merged}")
    else:
        g = make_catalogue(out_dir, nodes=nodes, classes=classes, homophily=homophily, image_mismatch=image_mismatch,
                           text_mismatch=text_mismatch, seed=seed, mean_degree=mean_degree,
                           degree_exponent=degree_exponent, text_noise=text_noise, image_size=image_size,
                           name=name, modalities=modalities, link_split=not no_link_split, progress=True, shop=shop,
                           categories=categories)
    s = g.stats
    if as_table:
        from mlaga_fast.data.table import write_tables

        width = len(str(g.num_nodes - 1))
        write_tables(g, as_table, ids=[f"sku-{i:0{width}d}" for i in range(g.num_nodes)])
    where = " and ".join(x for x in (out_dir, as_table and f"{as_table} (nodes.csv, edges.csv, images/)") if x)
    click.echo(f"wrote {where}: {g.num_nodes} nodes, {g.num_edges} edges, {len(g.class_names)} classes, "
               f"homophily {s['realised_homophily']:.3f}, max degree {s['max_degree']}, "
               f"{s['image_mismatched']} image / {s['text_mismatched']} text mismatched "
               f"({time.perf_counter() - t0:.1f}s)")
    if preview:
        from mlaga_fast.data.synth_images import contact_sheet
        from mlaga_fast.utils.io import atomic_write_bytes

        atomic_write_bytes(preview, contact_sheet(g, per_class=8))
        click.echo(f"preview: {preview}")

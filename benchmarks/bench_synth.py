"""Time the synthetic catalogue generator at 10k and 100k nodes (optionally 1M, graph only).

    python benchmarks/bench_synth.py [--sizes 10000,100000] [--render 10000] [--million]

Per size it reports: the graph alone (DC-SBM + CSR), the texts alone, the whole catalogue saved to
disk (graph, texts, splits, link split, atomic save), and the picture rendering rate. Results are
printed and written to benchmarks/results/synth.json.
"""
from __future__ import annotations

import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np


def _timed(fn):
    """(result, wall seconds); the process CPU seconds of the last call land in _timed.cpu, since
    on a shared machine wall time mostly measures the neighbours."""
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    _timed.cpu = time.process_time() - c
    return out, time.perf_counter() - t


@click.command()
@click.option("--sizes", default="10000,100000", show_default=True, help="Comma-separated node counts.")
@click.option("--render", "n_render", default=10000, show_default=True, help="Pictures rendered per size.")
@click.option("--million", is_flag=True, help="Also time the 1M-node graph (structure and texts, no save).")
@click.option("--out", default=str(Path(__file__).parent / "results" / "synth.json"), show_default=True)
def main(sizes: str, n_render: int, million: bool, out: str) -> None:
    from mlaga_fast import __version__
    from mlaga_fast.data import synth
    from mlaga_fast.data.synth_images import SyntheticImages
    from mlaga_fast.utils.io import atomic_write_json

    rows = []
    for n in [int(s) for s in sizes.split(",") if s]:
        cfg = synth.SynthConfig(nodes=n)
        labels = synth.balanced_labels(n, cfg.classes, np.random.default_rng(0))
        (keys, _), t_graph = _timed(lambda: synth.dcsbm_edges(
            labels, cfg.classes, mean_degree=cfg.mean_degree, exponent=cfg.degree_exponent,
            homophily=cfg.homophily, rng=np.random.default_rng(1)))
        _, t_csr = _timed(lambda: synth.keys_to_csr(keys, n))
        _, t_text = _timed(lambda: synth.make_texts(labels, cfg.classes, cfg.text_noise, np.random.default_rng(2)))
        with tempfile.TemporaryDirectory() as tmp:
            g, t_all = _timed(lambda: synth.make_catalogue(Path(tmp) / "d", nodes=n))
            cpu_all = _timed.cpu
            size_mb = sum(p.stat().st_size for p in (Path(tmp) / "d").rglob("*") if p.is_file()) / 2**20
        k = min(n_render, n)
        src = SyntheticImages(np.asarray(g.images.image_class), seed=0, num_classes=cfg.classes)
        _, t_img = _timed(lambda: src.get_batch(np.arange(k)))
        cpu_img = _timed.cpu
        row = {"nodes": n, "edges": g.num_edges, "graph_s": round(t_graph + t_csr, 3), "texts_s": round(t_text, 3),
               "catalogue_saved_s": round(t_all, 3),
               "catalogue_saved_cpu_s": round(cpu_all, 3), "dataset_mb": round(size_mb, 1), "rendered": k,
               "render_s": round(t_img, 3), "render_cpu_s": round(cpu_img, 3),
               "render_cpu_ms_per_image": round(1e3 * cpu_img / k, 3)}
        rows.append(row)
        click.echo(json.dumps(row))
    if million:
        n = 1_000_000
        labels = synth.balanced_labels(n, 8, np.random.default_rng(0))
        (keys, _), t_graph = _timed(lambda: synth.dcsbm_edges(labels, 8, mean_degree=8.0, exponent=2.5,
                                                              homophily=0.7, rng=np.random.default_rng(1)))
        _, t_csr = _timed(lambda: synth.keys_to_csr(keys, n))
        _, t_text = _timed(lambda: synth.make_texts(labels, 8, 0.25, np.random.default_rng(2)))
        row = {"nodes": n, "edges": int(keys.size), "graph_s": round(t_graph + t_csr, 3), "texts_s": round(t_text, 3)}
        rows.append(row)
        click.echo(json.dumps(row))
    atomic_write_json(out, {"bench": "synth", "mlaga_fast_version": __version__, "python": sys.version.split()[0],
                            "machine": platform.machine(), "processor": platform.processor(), "results": rows})
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    main()

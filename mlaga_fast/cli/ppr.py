"""`mlaga-fast ppr`: the top-k PPR table of a dataset (on its training graph), for Stage 2 demonstrations."""
from __future__ import annotations

import json
import time

import click


@click.command("ppr")
@click.option("--data", "data_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="dataset directory written by mlaga_fast.data.save (holds graph.json)")
@click.option("--alpha", type=float, default=0.15, show_default=True, help="teleport probability, in (0, 1)")
@click.option("--eps", type=float, default=1e-4, show_default=True,
              help="push threshold: the error at node v is below eps * degree(v)")
@click.option("--k", "k", type=int, default=32, show_default=True, help="entries per source")
@click.option("--sources", type=click.Choice(["train", "val", "test", "all"]), default="all", show_default=True,
              help="which nodes get a row")
@click.option("--candidates", type=click.Choice(["train", "all"]), default="train", show_default=True,
              help="which nodes may be returned (train = labelled training nodes, for demonstrations)")
@click.option("--include-source", is_flag=True, help="allow a source to appear in its own row")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or N (= cuda:N)")
@click.option("--threads", type=int, default=None, help="CPU threads [default: all OpenMP threads]")
@click.option("--chunk", type=int, default=4096, show_default=True, help="sources per kernel call (progress granularity)")
@click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False), help="output .npz table")
@click.option("--no-progress", is_flag=True, help="hide the progress bar")
def ppr(data_dir: str, alpha: float, eps: float, k: int, sources: str, candidates: str, include_source: bool,
        device: str, threads: int | None, chunk: int, out_file: str, no_progress: bool) -> None:
    """Write the top-k approximate PPR table (forward push; val/test link edges removed first)."""
    from mlaga_fast.data import load
    from mlaga_fast.ppr import compute_table, save_table
    from mlaga_fast.runtime.device import pick_device
    from mlaga_fast.utils.lock import exclusive_output

    dev = pick_device(device)
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"--device: PPR runs on the CPU or a CUDA device, got {device!r}")
    device = "cpu" if dev.type == "cpu" else str(dev)
    graph = load(data_dir)
    with exclusive_output(out_file, "PPR table", is_file=True):
        t0 = time.perf_counter()
        src, idx, val, meta = compute_table(graph, alpha=alpha, eps=eps, k=k, sources=sources,
                                            candidates=candidates, exclude_source=not include_source,
                                            device=device, num_threads=threads, chunk=chunk,
                                            progress=not no_progress)
        seconds = time.perf_counter() - t0
        meta["seconds"] = round(seconds, 3)
        meta["device"] = device
        save_table(out_file, src, idx, val, meta)
    filled = float((idx >= 0).sum()) / max(idx.size, 1)
    click.echo(json.dumps({"out": out_file, "sources": int(src.shape[0]), "k": int(k), "filled": round(filled, 4),
                           "seconds": round(seconds, 3), "graph_fingerprint": meta["graph_fingerprint"]}))

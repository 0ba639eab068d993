"""Feature storage vs online encoding: nodes/s of reading stored shards against encoding each batch.

    python benchmarks/bench_online_features.py                      # tiny and offline@128, 2000 nodes
    python benchmarks/bench_online_features.py --encoders tiny --nodes 1000

Per encoder, on a synthetic catalogue: extract the features once (mlaga_fast.features), then read
the same random batches (--batch nodes, what a Stage-1 step reads) from the stored FeatureStore and
from OnlineFeatures (mlaga_fast.features.online, the encoders run per batch, nothing stored), and
report nodes/s of each, the ratio, the stored bytes per node, and what storing would take at the
paper's token shapes for 1M nodes. Then Stage 1 itself both ways (`train align` with the folder and
with ``online:ENCODER``, the demo's aligner settings, --align-steps steps): seconds per step, since a
step reads its anchors and their sampled positives (up to batch x (1 + positives) nodes).
Writes benchmarks/results/online_features.json (or --out).
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# ViT-L/14 image tokens and CLIP text tokens at width 1024, fp16 (issue 15).
PAPER_BYTES_PER_NODE = (257 + 77) * 1024 * 2


def _rate(read, batches) -> float:
    read(batches[0])  # warm-up: memory maps, encoder caches
    t0 = time.perf_counter()
    for b in batches:
        read(b)
    return sum(len(b) for b in batches) / (time.perf_counter() - t0)


def _align_step_s(tmp: Path, features: str, steps: int) -> float:
    """Mean seconds per Stage-1 step after the first, the demo's aligner settings, on ``features``."""
    import shutil

    from mlaga_fast.train.align import train_align

    from mlaga_fast.train.align_config import AlignConfig
    from mlaga_fast.train.metrics import read_jsonl

    run = tmp / "align_run"
    shutil.rmtree(run, ignore_errors=True)
    cfg = AlignConfig(dim=128, num_queries=4, max_steps=steps, warmup_steps=1, log_every=1,
                      checkpoint_every=10**9, device="cpu")
    train_align(cfg, tmp / "data", features, run, show_progress=False)
    return float(np.mean([r["step_s"] for r in read_jsonl(run / "metrics.jsonl")][1:]))


def main(argv=None) -> int:
    import torch

    from mlaga_fast.data.synth import make_catalogue
    from mlaga_fast.features import FeatureConfig, extract_features
    from mlaga_fast.features.encoders import load_encoder
    from mlaga_fast.features.online import OnlineFeatures
    from mlaga_fast.utils.io import atomic_write_json

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoders", default="tiny,offline@128")
    ap.add_argument("--nodes", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=64, help="nodes per read (a Stage-1 micro-batch of anchors)")
    ap.add_argument("--batches", type=int, default=10)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--align-steps", type=int, default=6, help="Stage-1 steps timed each way")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "online_features.json")
    args = ap.parse_args(argv)
    if args.align_steps < 2:
        ap.error("--align-steps must be >= 2 (the first step, which includes warm-up, is not timed)")
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        graph = make_catalogue(Path(tmp) / "data", nodes=args.nodes)
        rng = np.random.default_rng(0)
        batches = [rng.choice(args.nodes, args.batch, replace=False) for _ in range(args.batches)]
        for spec in [s for s in args.encoders.split(",") if s]:
            enc = load_encoder(spec, "cpu")
            t0 = time.perf_counter()
            store = extract_features(graph, Path(tmp) / f"f_{spec}", FeatureConfig(
                encoder=spec, device="cpu", batch_size=128, cpu_threads=args.threads), encoder=enc,
                graph_fp=graph.fingerprint, progress=False)
            extract_s = time.perf_counter() - t0
            online = OnlineFeatures(graph, enc, device="cpu", graph_fp=graph.fingerprint)
            assert online.fingerprint == store.fingerprint
            stored_rate = _rate(store.get, batches)
            online_rate = _rate(online.get, batches)
            step_s = {how: _align_step_s(Path(tmp), feats, args.align_steps)
                      for how, feats in (("stored", str(store.path)), ("online", f"online:{spec}"))}
            per_node = (store.image_len * store.image_dim + store.text_len * store.text_dim) * 2 + store.text_len
            row = {"encoder": spec, "nodes": args.nodes, "batch": args.batch, "threads": args.threads,
                   "image": [store.image_len, store.image_dim], "text": [store.text_len, store.text_dim],
                   "extract_nodes_per_s": round(args.nodes / extract_s, 1),
                   "stored_read_nodes_per_s": round(stored_rate, 1), "online_nodes_per_s": round(online_rate, 1),
                   "stored_over_online": round(stored_rate / online_rate, 1),
                   "align_step_s_stored": round(step_s["stored"], 3), "align_step_s_online": round(step_s["online"], 3),
                   "stored_bytes_per_node": per_node,
                   "stored_gib_at_1m_nodes": round(per_node * 1e6 / 2**30, 1),
                   "paper_shapes_gib_at_1m_nodes": round(PAPER_BYTES_PER_NODE * 1e6 / 2**30, 1)}
            rows.append(row)
            print(f"{spec:12s} stored read {stored_rate:9.1f} nodes/s | online {online_rate:8.1f} nodes/s | "
                  f"stored/online {row['stored_over_online']}x | {per_node / 1024:.1f} KiB per node stored "
                  f"({row['stored_gib_at_1m_nodes']} GiB at 1M nodes) | Stage-1 step {step_s['stored']:.2f} s "
                  f"stored, {step_s['online']:.2f} s online", flush=True)
    atomic_write_json(args.out, {"benchmark": "online_features", "machine": platform.platform(),
                                 "cpus": len(os.sched_getaffinity(0)), "loadavg": os.getloadavg(), "rows": rows})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Export a finished Stage 1 run's aligned tokens for every node.

    mlaga-fast embed --run RUN --out EMB

EMB/ (built under a temporary name and renamed into place, so it is complete or absent):
  tokens.npy     fp16 [N, nq, d]   aligned node tokens (Stage 2's graph tokens)
  pooled.npy     fp16 [N, d]       their mean (what the contrastive loss compared)
  manifest.json  stage "embed", the run's fingerprint, dims, the features and graph fingerprints

Both arrays are written through ``np.lib.format.open_memmap`` chunk by chunk and read back with
``mmap_mode="r"``: neither the features nor the outputs are ever held in memory whole.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from mlaga_fast._version import __version__
from mlaga_fast.features.source import open_features
from mlaga_fast.models.aligner import load_aligner
from mlaga_fast.models.encode import encode_nodes
from mlaga_fast.runs.manifest import check_features_match, check_version
from mlaga_fast.runtime.device import pick_device
from mlaga_fast.utils.heap import release_free_heap
from mlaga_fast.utils.io import atomic_dir, atomic_write_json, fingerprint

__all__ = ["export_embeddings", "load_embeddings", "open_run_features"]

TRIM_EVERY = 8  # batches between returns of freed heap memory to the OS


def open_run_features(run_manifest: dict[str, Any], features_dir: str | os.PathLike | None = None,
                      device: str = "auto") -> Any:
    """The features a run was trained on (or ``features_dir``: a folder or ``online:ENCODER``), checked
    against the run manifest."""
    inputs = run_manifest.get("inputs", {})
    path = features_dir if features_dir is not None else inputs.get("features_dir")
    if path is None:
        raise ValueError("the run manifest does not record its features directory; pass --features")
    # a Stage-1 run on several datasets lists them: online features are computed on the one they belong to
    data_dir = next((d["data_dir"] for d in inputs.get("datasets", []) if d.get("features_dir") == str(path)),
                    inputs.get("data_dir"))
    store = open_features(path, data_dir=data_dir, device=str(pick_device(device)))
    check_features_match(run_manifest, store)
    return store


def export_embeddings(run_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                      features_dir: str | os.PathLike | None = None, batch_size: int = 256, device: str = "auto",
                      progress: bool = True) -> dict[str, Any]:
    """Write EMB/ for every node of the run's feature store; returns the EMB manifest."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    model, run_manifest = load_aligner(run_dir)
    store = open_run_features(run_manifest, features_dir, device)
    n, nq, d = store.num_nodes, model.num_queries, model.d
    with atomic_dir(out_dir) as tmp:
        tok = np.lib.format.open_memmap(tmp / "tokens.npy", mode="w+", dtype=np.float16, shape=(n, nq, d))
        pool = np.lib.format.open_memmap(tmp / "pooled.npy", mode="w+", dtype=np.float16, shape=(n, d))
        for b, (ids, tokens, pooled) in enumerate(encode_nodes(model, store, batch_size=batch_size,
                                                               device=device, progress=progress)):
            tok[ids[0]:ids[-1] + 1] = tokens.numpy()  # ids are a contiguous ascending range here
            pool[ids[0]:ids[-1] + 1] = pooled.numpy()
            if b % TRIM_EVERY == TRIM_EVERY - 1:
                release_free_heap()  # keeps resident memory flat over millions of nodes (utils/heap.py)
        tok.flush(), pool.flush()
        for f in (tmp / "tokens.npy", tmp / "pooled.npy"):
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        del tok, pool
        manifest = {
            "stage": "embed", "mlaga_fast_version": __version__, "num_nodes": n, "num_queries": nq, "d": d,
            "dtype": "float16", "run_dir": str(Path(run_dir).resolve()), "run_fingerprint": fingerprint(run_manifest),
            "features_fingerprint": store.fingerprint,
            "graph_fingerprint": store.manifest.get("graph_fingerprint")
            or run_manifest.get("inputs", {}).get("graph_fingerprint"),
            "files": {"tokens": "tokens.npy", "pooled": "pooled.npy"},
        }
        atomic_write_json(tmp / "manifest.json", manifest)
    return manifest


def load_embeddings(emb_dir: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(tokens [N, nq, d] fp16 memmap, pooled [N, d] fp16 memmap, manifest)."""
    emb_dir = Path(emb_dir)
    mpath = emb_dir / "manifest.json"
    if not mpath.is_file():
        raise ValueError(f"{emb_dir} has no manifest.json: not an `mlaga-fast embed` output")
    manifest = json.loads(mpath.read_text(encoding="utf-8"))
    if manifest.get("stage") != "embed":
        raise ValueError(f"{emb_dir} manifest stage is {manifest.get('stage')!r}, expected 'embed'")
    check_version(manifest, where=str(emb_dir))
    tokens = np.load(emb_dir / "tokens.npy", mmap_mode="r")
    pooled = np.load(emb_dir / "pooled.npy", mmap_mode="r")
    want = (manifest["num_nodes"], manifest["num_queries"], manifest["d"])
    if tokens.shape != want or pooled.shape != want[::2]:
        raise ValueError(f"{emb_dir}: arrays have shapes {tokens.shape}, {pooled.shape}; manifest says {want}")
    return tokens, pooled, manifest

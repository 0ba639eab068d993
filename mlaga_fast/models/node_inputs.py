"""Per-dataset inputs of Stage 2: graph, features, cached node tokens, prompt builder, demo sources.

Node tokens come from the frozen Stage-1 aligner run over the dataset's features once, cached as
FEATDIR/node_tokens/<key>.npy (fp16 [N, nq, d]) with <key>.json beside it; the key hashes the
aligner run (its weights' sha256 + manifest) and the features' fingerprint, so a retrained aligner
or re-extracted features never reuse stale tokens. The "raw" ablation instead uses the pooled
encoder features as a single token per node (fp16 [N, 1, Di + Dt]).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlaga_fast.data import load
from mlaga_fast.features.extract import graph_fingerprint
from mlaga_fast.features.source import is_online, open_features
from mlaga_fast.models.aligner import load_aligner
from mlaga_fast.models.encode import encode_nodes
from mlaga_fast.runs.manifest import (ALIGNER_INPUT_KEYS, check_features_match, feature_records, features_record,
                                     read_stage_manifest)
from mlaga_fast.utils.io import atomic_np_save, atomic_write_json, fingerprint, sha256_file

NODE_SOURCES = ("aligner", "raw")

def check_aligner_features(align_manifest: dict, store, *, allow_unseen: bool) -> None:
    """Refuse features the aligner cannot read. Features the aligner was trained on always pass;
    other features (transfer to an unseen dataset) pass only with allow_unseen and only when the
    encoder and token dims are the same."""
    recs = feature_records(align_manifest, "aligner run")
    if any(r.get("fingerprint") == store.fingerprint for r in recs):
        return
    if not allow_unseen:
        # Produces the detailed "run was trained on X, these features have Y" message.
        check_features_match({"inputs": {"features": recs[0]}}, store)
        raise ValueError(f"features at {store.path} are not among those the aligner run was trained on")
    actual = features_record(store)
    diffs = [f"{k}: aligner expects {recs[0].get(k)!r}, these features have {actual[k]!r}"
             for k in ALIGNER_INPUT_KEYS if k in recs[0] and recs[0].get(k) != actual[k]]
    if diffs:
        raise ValueError(f"features at {store.path} cannot feed the aligner run: " + "; ".join(diffs))


def aligner_identity(align_dir: str | Path) -> str:
    d = Path(align_dir)
    w = d / "model.safetensors"
    if not w.is_file():
        raise ValueError(f"aligner run {d}: model.safetensors not found (unfinished Stage-1 run?)")
    return fingerprint({"weights": sha256_file(w), "manifest": sha256_file(d / "manifest.json")})


def node_tokens(store, *, source: str = "aligner", align_dir: str | Path | None = None,
                device: str = "cpu", batch_size: int = 256, progress: bool = True,
                cache_root: str | Path | None = None, verify: bool = True) -> np.ndarray:
    """fp16 [N, nq, d] node tokens (cached under cache_root, by default the features folder), or [N, 1, D]
    pooled features for source='raw'.

    The aligner runs through ``mlaga_fast.models.encode.encode_nodes``, the function ``mlaga-fast embed``
    uses, so Stage 2 trains on exactly the tokens that are exported (same precision policy)."""
    if source not in NODE_SOURCES:
        raise ValueError(f"node_source: {source!r} is not one of {list(NODE_SOURCES)}")
    if source == "raw":
        return store.pooled(progress=progress).astype(np.float16)[:, None, :]
    if align_dir is None:
        raise ValueError("node_source='aligner' needs the Stage-1 run (--align)")
    key = fingerprint({"aligner": aligner_identity(align_dir), "features": store.fingerprint})
    cache = Path(cache_root or store.path) / "node_tokens" / f"{key}.npy"
    meta = cache.with_suffix(".json")
    if cache.is_file() and meta.is_file():
        arr = np.load(cache, mmap_mode="r")
        if arr.shape[0] == store.num_nodes:
            return arr
    aligner, _ = load_aligner(align_dir, verify=verify)
    out = np.zeros((store.num_nodes, aligner.num_queries, aligner.d), np.float16)
    for ids, tok, _ in encode_nodes(aligner, store, batch_size=batch_size, device=device, progress=progress,
                                    desc="node tokens"):
        out[ids] = tok.numpy().astype(np.float16)  # [b, nq, d]
    if not np.isfinite(out).all():
        bad = int(np.flatnonzero(~np.isfinite(out).reshape(out.shape[0], -1).all(1))[0])
        raise ValueError(f"aligner produced non-finite tokens for node {bad} (fp16 overflow?)")
    atomic_np_save(cache, out)
    atomic_write_json(meta, {"aligner_run": str(Path(align_dir).resolve()), "features": store.fingerprint,
                             "shape": list(out.shape)})
    return out


def image_vectors(store, progress: bool = False) -> np.ndarray | None:
    """float32 [N, Di]: each node's pooled image vector (the mean of its image tokens, e.g. EfficientNet's
    global-average-pooled feature), cached with the store's pooled features; None without images."""
    if not store.image_dim:
        return None
    return np.ascontiguousarray(store.pooled(progress=progress)[:, :store.image_dim])


@dataclass
class DatasetInputs:
    """Everything Stage 2 needs about one dataset."""
    name: str
    dir: Path
    graph: Any  # MultimodalGraph
    store: Any  # FeatureStore
    tokens: np.ndarray  # fp16 [N, nq, d]
    image: np.ndarray | None = None  # float32 [N, Di] pooled image vectors (modality projectors)

    def record(self) -> dict:
        return {"name": self.name, "dir": str(self.dir), "graph_fingerprint": self.graph.fingerprint,
                "features": features_record(self.store), "class_names": list(self.graph.class_names)}


def load_dataset_inputs(data_dir: str | Path, features_dir: str | Path | None, *, source: str,
                        align_dir: str | Path | None, allow_unseen: bool, device: str = "cpu",
                        progress: bool = True, images: bool = False, verify: bool = True) -> DatasetInputs:
    data_dir = Path(data_dir)
    graph = load(data_dir)
    store = open_features(features_dir or data_dir / "features", data_dir=data_dir, graph=graph, device=device)
    gfp, want = store.manifest.get("graph_fingerprint"), graph_fingerprint(graph, data_dir)
    if gfp is not None and gfp != want:
        raise ValueError(f"features at {store.path} were extracted from another graph "
                         f"(graph fingerprint {gfp}, dataset {data_dir} has {want})")
    if store.num_nodes != graph.num_nodes:
        raise ValueError(f"features at {store.path} have {store.num_nodes} nodes, graph has {graph.num_nodes}")
    if source == "aligner":
        if align_dir is None:
            raise ValueError("node_source='aligner' needs the Stage-1 run (--align)")
        check_aligner_features(read_stage_manifest(align_dir, "align"), store, allow_unseen=allow_unseen)
    # online features have no folder: their node tokens are cached with the dataset's other caches
    tokens = node_tokens(store, source=source, align_dir=align_dir, device=device, progress=progress,
                         cache_root=data_dir / "cache" if is_online(store.path) else None, verify=verify)
    return DatasetInputs(graph.name, data_dir, graph, store, tokens, image_vectors(store) if images else None)


def demo_cache_dir(inputs: DatasetInputs) -> Path:
    return inputs.dir / "cache"



"""Linear probe: does the aligner's pooled vector carry the node's class better than the raw features?

Both probes are the same standardised multinomial logistic regression, fit on the graph's training
nodes and scored on its val and test nodes (unlabelled nodes, label -1, are skipped):

    raw      mean-pooled encoder tokens per modality, concatenated   FeatureStore.pooled()  [N, Di + Dt]
    aligned  the aligner's pooled vector                              [N, d]

    mlaga-fast probe --run RUN [--emb EMB]      -> JSON on stdout
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["linear_probe", "aligned_pooled", "check_run_dataset", "probe_run"]


def linear_probe(x: np.ndarray, labels: np.ndarray, train: np.ndarray, evals: dict[str, np.ndarray], *,
                 c: float = 1.0, max_iter: int = 2000) -> dict[str, float]:
    """Accuracy of logistic regression trained on ``train`` rows, per named eval split."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(x, dtype=np.float32)
    labels = np.asarray(labels)
    tr = np.asarray(train, dtype=np.int64)
    tr = tr[labels[tr] >= 0]
    if tr.size == 0 or np.unique(labels[tr]).size < 2:
        raise ValueError("linear probe needs labelled training nodes from at least 2 classes")
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter))
    clf.fit(x[tr], labels[tr])
    out = {}
    for name, idx in evals.items():
        idx = np.asarray(idx, dtype=np.int64)
        idx = idx[labels[idx] >= 0]
        out[name] = float((clf.predict(x[idx]) == labels[idx]).mean()) if idx.size else float("nan")
    return out


def aligned_pooled(run_dir: str | os.PathLike, *, emb_dir: str | os.PathLike | None = None,
                   features_dir: str | os.PathLike | None = None, device: str = "auto", batch_size: int = 256,
                   progress: bool = True) -> tuple[np.ndarray, Any, dict[str, Any]]:
    """(aligned pooled float32 [N, d], the run's FeatureStore, run manifest); from EMB if given."""
    from mlaga_fast.models.aligner import load_aligner
    from mlaga_fast.models.embeddings import load_embeddings, open_run_features
    from mlaga_fast.models.encode import encode_nodes

    model, manifest = load_aligner(run_dir)
    store = open_run_features(manifest, features_dir, device)
    if emb_dir is not None:
        _, pooled, emb_manifest = load_embeddings(emb_dir)
        if emb_manifest.get("features_fingerprint") != store.fingerprint:
            raise ValueError(f"embeddings at {emb_dir} were made from other features than run {run_dir}")
        return np.asarray(pooled, dtype=np.float32), store, manifest
    out = np.zeros((store.num_nodes, model.d), np.float32)
    for ids, _, pooled in encode_nodes(model, store, batch_size=batch_size, device=device, progress=progress,
                                       desc="probe"):
        out[ids] = pooled.numpy()
    return out, store, manifest


def check_run_dataset(manifest: dict[str, Any], store: Any, graph: Any, data_dir: str | os.PathLike) -> None:
    """Refuse a dataset that is not the graph the run's features were extracted from: a probe or a plot
    pairs each node's features with that node's label, so both must come from one graph. Compared by
    the fingerprints the run manifest and the features record, not by node count."""
    recorded = {store.manifest.get("graph_fingerprint"), manifest.get("inputs", {}).get("graph_fingerprint")}
    recorded.discard(None)
    if graph.fingerprint not in recorded:
        run_data = manifest.get("inputs", {}).get("data_dir", "?")
        raise ValueError(f"dataset {data_dir} (fingerprint {graph.fingerprint[:16]}) is not the graph this run's "
                         f"features were extracted from ({', '.join(sorted(f[:16] for f in recorded)) or 'unknown'}"
                         f"; the run recorded --data {run_data}): its labels would be paired with another graph's "
                         "nodes. Pass the run's dataset, or extract features and train a run on this one")


def probe_run(run_dir: str | os.PathLike, *, emb_dir: str | os.PathLike | None = None,
              data_dir: str | os.PathLike | None = None, features_dir: str | os.PathLike | None = None,
              device: str = "auto", progress: bool = True) -> dict[str, Any]:
    """Both probes on the same split; returns {"raw": {"val", "test"}, "aligned": {...}, ...}."""
    from mlaga_fast.data import load

    aligned, store, manifest = aligned_pooled(run_dir, emb_dir=emb_dir, features_dir=features_dir, device=device,
                                              progress=progress)
    data_dir = data_dir or manifest.get("inputs", {}).get("data_dir")
    if data_dir is None:
        raise ValueError("the run manifest does not record its dataset; pass --data")
    graph = load(data_dir)
    check_run_dataset(manifest, store, graph, data_dir)
    raw = store.pooled(progress=progress)
    evals = {"val": graph.val, "test": graph.test}
    labels = np.asarray(graph.labels)
    return {
        "run": str(Path(run_dir)),
        "num_train": int((labels[graph.train] >= 0).sum()),
        "num_test": int((labels[graph.test] >= 0).sum()),
        "raw": {"dim": int(raw.shape[1]), **linear_probe(raw, labels, graph.train, evals)},
        "aligned": {"dim": int(aligned.shape[1]), **linear_probe(aligned, labels, graph.train, evals)},
    }

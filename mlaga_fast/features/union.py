"""Several graphs' features read as one node range, and their graphs as one block-diagonal CSR: how Stage 1
trains one aligner on a mix of graphs (the released MLaGA trains one aligner for all its datasets).

Dataset ``i``'s node ``j`` is node ``offsets[i] + j`` of the union. The union's adjacency has no edge
between two datasets, so a 1-hop positive is always drawn from the anchor's own graph; the other
anchors of a batch (the negatives) may come from any dataset.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from mlaga_fast.features.store import FeatureReader
from mlaga_fast.runs.manifest import ALIGNER_INPUT_KEYS, features_record
from mlaga_fast.utils.io import fingerprint

__all__ = ["FeatureUnion", "union_csr"]


class FeatureUnion(FeatureReader):
    """Feature sources ``parts`` (FeatureStore / OnlineFeatures, same encoder and token dims) as one store."""

    def __init__(self, parts: Sequence[Any], names: Sequence[str] | None = None):
        if len(parts) < 1:
            raise ValueError("a feature union needs at least one features source")
        self.parts = list(parts)
        names = list(names) if names is not None else [str(getattr(p, "path", i)) for i, p in enumerate(parts)]
        first = features_record(self.parts[0])
        for name, p in zip(names[1:], self.parts[1:]):
            d = features_record(p)
            diffs = [f"{k} {d[k]!r} (the first has {first[k]!r})" for k in ALIGNER_INPUT_KEYS if d[k] != first[k]]
            if diffs:
                raise ValueError(f"features {name} cannot train one aligner with {names[0]}: " + ", ".join(diffs))
        self.offsets = np.cumsum([0] + [int(p.num_nodes) for p in self.parts]).astype(np.int64)  # [k + 1]
        self.num_nodes = int(self.offsets[-1])
        self.image_len, self.image_dim = first["image_len"], first["image_dim"]
        self.text_len, self.text_dim = first["text_len"], first["text_dim"]
        self.manifest = {"encoder": first["encoder"], "graph_fingerprint": None,
                         "fingerprint": fingerprint([p.fingerprint for p in self.parts])}

    def get_numpy(self, idx: Any) -> dict[str, np.ndarray]:
        ids = self._check_idx(idx)  # [n] union ids
        part = np.searchsorted(self.offsets, ids, side="right") - 1  # [n] which source holds each id
        out = self._empty_batch(len(ids))
        for i in np.unique(part):
            rows = np.flatnonzero(part == i)
            got = self.parts[i].get_numpy(ids[rows] - self.offsets[i])
            for k, v in got.items():
                out[k][rows] = v
        return out


def union_csr(graphs: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """The block-diagonal CSR (indptr [N + 1], indices [E]) of CSRs ``graphs`` [(indptr, indices)], node ids
    shifted by the nodes before each graph: no edge joins two graphs."""
    indptr, indices, nodes, edges = [np.zeros(1, np.int64)], [], 0, 0
    for ip, ix in graphs:
        ip, ix = np.asarray(ip, np.int64), np.asarray(ix, np.int64)
        indptr.append(ip[1:] + edges)
        indices.append(ix + nodes)
        nodes, edges = nodes + ip.shape[0] - 1, edges + int(ip[-1])
    return np.concatenate(indptr), np.concatenate(indices) if indices else np.zeros(0, np.int64)

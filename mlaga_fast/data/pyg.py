"""Conversion to and from torch_geometric ``Data`` (only when torch_geometric is installed).

to_pyg: edge_index [2, E] (both directions, as the CSR stores them), y, num_nodes, boolean
train/val/test masks, ``x`` from one named feature array if asked, and the link split as
``{train,val,test}_pos_edge_index`` / ``{val,test}_neg_edge_index``. Texts go to ``data.texts``.
from_pyg: the inverse; an edge_index in any order, directed or not, is symmetrised and its
duplicates and self-loops counted, like every other loader.
"""
from __future__ import annotations

import numpy as np

from mlaga_fast.data.graph import LINK_FIELDS, LinkSplit, MultimodalGraph
from mlaga_fast.utils.arrays import to_numpy

_PYG_LINK = {"train_pos": "train_pos_edge_index", "val_pos": "val_pos_edge_index", "val_neg": "val_neg_edge_index",
             "test_pos": "test_pos_edge_index", "test_neg": "test_neg_edge_index"}


def _require_pyg():
    try:
        import torch_geometric  # noqa: F401
        from torch_geometric.data import Data
    except ImportError as e:
        raise ImportError("torch_geometric is not installed: pip install torch_geometric") from e
    return Data


def to_pyg(graph: MultimodalGraph, x: str | None = None):
    import torch

    Data = _require_pyg()
    n = graph.num_nodes
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(graph.indptr))
    data = Data(edge_index=torch.from_numpy(np.stack([rows, np.asarray(graph.indices)])), num_nodes=n)
    data.y = torch.from_numpy(np.array(graph.labels, dtype=np.int64))
    for f in ("train", "val", "test"):
        mask = torch.zeros(n, dtype=torch.bool)
        mask[torch.from_numpy(np.array(getattr(graph, f)))] = True
        data[f"{f}_mask"] = mask
    if x is not None:
        if x not in graph.features:
            raise ValueError(f"x={x!r} is not a feature of {graph.name} (have {sorted(graph.features)})")
        data.x = torch.from_numpy(np.array(graph.features[x], dtype=np.float32))
    if graph.link_split is not None:
        for f in LINK_FIELDS:
            data[_PYG_LINK[f]] = torch.from_numpy(np.array(getattr(graph.link_split, f)))
    if graph.texts is not None:
        data.texts = list(graph.texts)
    data.class_names = list(graph.class_names)
    data.name = graph.name
    return data


def from_pyg(data, name: str | None = None, texts=None, images=None, class_names=None) -> MultimodalGraph:
    _require_pyg()
    n = int(data.num_nodes)
    ei = to_numpy(data.edge_index, "edge_index")
    y = getattr(data, "y", None)
    labels = None
    if y is not None:
        y = to_numpy(y, "y")
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        labels = y
    splits = {}
    for f in ("train", "val", "test"):
        m = getattr(data, f"{f}_mask", None)
        if m is not None:
            m = to_numpy(m, f"{f}_mask")
            if m.shape != (n,):
                raise ValueError(f"{f}_mask has shape {m.shape}, expected ({n},)")
            splits[f] = np.flatnonzero(m).astype(np.int64)
    feats = {}
    if getattr(data, "x", None) is not None:
        feats["x"] = to_numpy(data.x, "x")
    link = None
    if all(getattr(data, _PYG_LINK[f], None) is not None for f in LINK_FIELDS):
        link = LinkSplit(**{f: to_numpy(getattr(data, _PYG_LINK[f]), _PYG_LINK[f]) for f in LINK_FIELDS})
    if texts is None:
        texts = getattr(data, "texts", None)
    if class_names is None:
        class_names = getattr(data, "class_names", None)
    return MultimodalGraph.from_edges(name or getattr(data, "name", None) or "pyg", ei[0], ei[1], n, texts=texts,
                                      images=images, labels=labels, class_names=class_names, link_split=link,
                                      features=feats, meta={"source_format": "pyg"}, **splits)

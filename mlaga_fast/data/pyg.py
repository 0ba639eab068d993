"""Conversion to and from torch_geometric ``Data`` (only when torch_geometric is installed).

to_pyg: edge_index [2, E] (both directions, as the CSR stores them), y, num_nodes, boolean
train/val/test masks, ``x`` from one named feature array if asked, and the link split as
``{train,val,test}_pos_edge_index`` / ``{val,test}_neg_edge_index``. Texts go to ``data.texts``, class
names to ``data.class_names``, the user's node ids (if any) to ``data.node_ids``; with ``images=True``,
the images too: ``data.image_paths`` (one path per node, "" for none) for a folder source, else
``data.image`` uint8 [N, H, W, 3] with ``data.image_present`` bool [N].
from_pyg: the inverse; an edge_index in any order, directed or not, is symmetrised and its
duplicates and self-loops counted, like every other loader. ``load_pyg_file`` reads a ``torch.save``d
Data (`mlaga-fast data prepare --format pyg`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mlaga_fast.data.graph import LINK_FIELDS, LinkSplit, MultimodalGraph
from mlaga_fast.data.images import ArrayImageSource, FolderImageSource
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


def to_pyg(graph: MultimodalGraph, x: str | None = None, images: bool = False):
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
    if graph.node_ids is not None:
        ids = graph.node_ids
        data.node_ids = torch.from_numpy(np.array(ids)) if isinstance(ids, np.ndarray) else list(ids)
    if images and graph.images is not None:
        _put_images(data, graph)
    return data


def _put_images(data, graph: MultimodalGraph) -> None:
    import torch

    src = graph.images
    if isinstance(src, FolderImageSource):
        data.image_paths = [str(p.resolve()) if p is not None else "" for p in map(src.path, range(len(src)))]
        return
    present = src.availability()  # bool [N]
    shape, arr = None, None
    for i in np.flatnonzero(present).tolist():
        a = np.asarray(graph.load_image(i))  # [H, W, 3] uint8
        if arr is None:
            shape = a.shape
            arr = np.zeros((graph.num_nodes, *shape), np.uint8)  # [N, H, W, 3]
        elif a.shape != shape:
            raise ValueError(f"images: node {i} is {a.shape[1]}x{a.shape[0]} but the first is {shape[1]}x{shape[0]}; "
                             "data.image holds one size (resize them first)")
        arr[i] = a
    data.image = torch.from_numpy(arr if arr is not None else np.zeros((graph.num_nodes, 1, 1, 3), np.uint8))
    data.image_present = torch.from_numpy(present.copy())


def _images_from(data, n: int, base_dir: Path | None):
    """An image source from ``data.image`` [N, H, W, 3|1] / [N, 3, H, W] uint8 (+ ``image_present``) or
    ``data.image_paths`` (relative ones against ``base_dir``); None when there is neither."""
    img = getattr(data, "image", None)
    if img is not None:
        arr = to_numpy(img, "image")
        if arr.ndim == 4 and arr.shape[1] in (1, 3) and arr.shape[-1] not in (1, 3):
            arr = arr.transpose(0, 2, 3, 1)  # channels-first, as torchvision stores images
        if arr.shape[:1] != (n,):
            raise ValueError(f"image has shape {arr.shape}, expected [{n}, H, W, 3]")
        pres = getattr(data, "image_present", None)
        return ArrayImageSource(np.ascontiguousarray(arr), None if pres is None else to_numpy(pres, "image_present"))
    paths = getattr(data, "image_paths", None)
    if paths is None:
        return None
    paths = list(paths)
    if len(paths) != n:
        raise ValueError(f"image_paths has {len(paths)} entries for {n} nodes")
    for i, p in enumerate(paths):
        if not isinstance(p, str):
            raise ValueError(f"image_paths[{i}] must be a path string, got {type(p).__name__}")
    return FolderImageSource(base_dir or Path.cwd(), n, names=[p or None for p in paths])


def from_pyg(data, name: str | None = None, texts=None, images=None, class_names=None,
             base_dir: str | Path | None = None) -> MultimodalGraph:
    """``images``: an ImageSource, else one is built from the Data's image fields (relative image_paths
    resolve against ``base_dir``)."""
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
        texts = next((getattr(data, k) for k in ("texts", "text", "raw_texts") if getattr(data, k, None) is not None),
                     None)
    if class_names is None:
        class_names = getattr(data, "class_names", None)
    if images is None:
        images = _images_from(data, n, Path(base_dir) if base_dir is not None else None)
    ids = getattr(data, "node_ids", None)
    if ids is not None and not isinstance(ids, (list, tuple)):
        ids = to_numpy(ids, "node_ids")
    return MultimodalGraph.from_edges(name or getattr(data, "name", None) or "pyg", ei[0], ei[1], n, texts=texts,
                                      images=images, labels=labels, class_names=class_names, link_split=link,
                                      features=feats, meta={"source_format": "pyg"}, node_ids=ids, **splits)


def load_pyg_file(path: str | Path, name: str | None = None, seed: int = 0, verify_images: bool = False,
                  progress: bool = True) -> MultimodalGraph:
    """A MultimodalGraph from a file that ``torch.save`` wrote a torch_geometric ``Data`` to (edge_index, y,
    masks, texts, images as in ``from_pyg``). Read with ``weights_only=True``: the Data classes are the only
    globals allowed, so the file cannot run code. No masks: a seeded 60/20/20 split of the labelled nodes."""
    import torch

    from mlaga_fast.data.images import scan_images
    from mlaga_fast.data.splits import random_node_split

    Data = _require_pyg()
    from torch_geometric.data.data import DataEdgeAttr, DataTensorAttr
    from torch_geometric.data.storage import GlobalStorage

    path = Path(path)
    try:
        with torch.serialization.safe_globals([Data, DataEdgeAttr, DataTensorAttr, GlobalStorage]):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - an unreadable or unsafe file is a bad input, whatever torch raises
        raise ValueError(f"{path.name} cannot be read as a saved torch_geometric Data "
                         f"({' '.join(str(e).split())[:240]})") from None
    if not isinstance(data, Data):
        raise ValueError(f"{path.name} holds a {type(data).__name__}, not a torch_geometric Data")
    for need in ("edge_index",):
        if getattr(data, need, None) is None:
            raise ValueError(f"{path.name}: the Data has no {need}")
    g = from_pyg(data, name=name, base_dir=path.resolve().parent)
    if not (g.train.size or g.val.size or g.test.size):
        g.train, g.val, g.test = random_node_split(g.num_nodes, 0.6, 0.2, 0.2, seed=seed, labels=g.labels)
        g.meta["node_split"] = f"random 60/20/20 seed={seed}"
    g.stats.update(scan_images(g.images, verify=verify_images, progress=progress))
    g.meta["source_file"] = str(path.resolve())
    g.validate()
    return g

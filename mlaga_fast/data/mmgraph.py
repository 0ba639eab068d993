"""Loader for the MM-GRAPH benchmark's files (Zhu et al., "Multimodal Graph Benchmark").

Supported layout, in ``root/<name>/`` or ``root`` itself (see docs/data_format.md):

  node classification (books-nc, ele-fashion):
    nc_edges-nodeid.pt      edge list, [E, 2] (or [2, E]) node ids, a tensor or nested list
    labels-w-missing.pt     [N] labels; missing as -1 or NaN
    split.pt                {"train_idx": ..., "val_idx": ..., "test_idx": ...}
  link prediction (books-lp, sports-copurchase, cloth-copurchase):
    lp-edge-split-<kind>.pt {"train": {"source_node", "target_node"},
                             "valid"/"test": {"source_node", "target_node", "target_node_neg" [M, K]}}
  both:
    <feat>_feat.pt          [N, D] float node features (clip, imagebind, t5vit, t5dino); N = rows
    images/ or images.tar   optional, <node id>.jpg
The released files carry no raw text, so ``texts`` is None. ``.pt`` files are read with
``torch.load(weights_only=True)``: tensors, lists and dicts only, no arbitrary pickles.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mlaga_fast.data.bounds import check_class_ids, node_count_from_edges
from mlaga_fast.data.graph import LinkSplit, MultimodalGraph, as_int64, check_finite, check_ids, pairs_in_csr
from mlaga_fast.data.images import FolderImageSource, ImageSource, TarImageSource, scan_images
from mlaga_fast.data.splits import random_node_split, sample_negative_pairs
from mlaga_fast.utils.arrays import to_numpy


def _load_pt(path: Path):
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file
        raise ValueError(f"cannot read {path.name} as a tensor/list/dict .pt file: {type(e).__name__}: {e}") from e


def _np(obj, field: str) -> np.ndarray:
    """The package's one converter (utils.arrays.to_numpy); what NumPy cannot read at all (a ragged
    list, say) is a ValueError naming ``field`` too."""
    try:
        return to_numpy(obj, field)
    except Exception as e:  # noqa: BLE001 - NumPy raises several types for unreadable objects
        msg = str(e)
        raise ValueError(msg if msg.startswith(field) else f"{field}: cannot convert to an array ({msg})") from e


def _edges(obj, field: str) -> np.ndarray:
    """[2, E] int64 from an [E, 2] or [2, E] array-like."""
    a = as_int64(_np(obj, field), field, ndim=2)
    if a.shape[1] == 2 and a.shape[0] != 2:
        a = a.T
    elif a.shape[0] != 2:
        raise ValueError(f"{field} must be [E, 2] or [2, E], got {a.shape}")
    return np.ascontiguousarray(a)


def _dataset_dir(root: Path, name: str) -> Path:
    for d in (root / name, root):
        if d.is_dir() and (list(d.glob("nc_edges-nodeid.pt")) or list(d.glob("lp-edge-split-*.pt"))):
            return d
    raise ValueError(f"no MM-GRAPH files (nc_edges-nodeid.pt or lp-edge-split-*.pt) in {root / name} or {root}")


def _features(d: Path, n_hint: int | None) -> dict[str, np.ndarray]:
    feats = {}
    for p in sorted(d.glob("*_feat.pt")):
        arr = _np(_load_pt(p), p.name)
        if arr.dtype.kind not in "f" or arr.ndim != 2:
            raise ValueError(f"{p.name} must be a float [N, D] tensor, got {arr.dtype} {arr.shape}")
        if n_hint is not None and arr.shape[0] != n_hint:
            raise ValueError(f"{p.name} has {arr.shape[0]} rows but other files imply {n_hint} nodes")
        check_finite(arr, p.name)
        feats[p.name[: -len("_feat.pt")]] = np.ascontiguousarray(arr, dtype=np.float32)
        n_hint = arr.shape[0]
    return feats


def _pick_negatives(src: np.ndarray, neg: np.ndarray | None, full_indptr, full_indices, rng,
                    field: str) -> np.ndarray:
    """One negative per positive: the first candidate in its row of ``neg`` that is not an edge of
    the full graph; rows without one get a uniformly sampled non-edge."""
    m = src.shape[0]
    out = np.full((2, m), -1, dtype=np.int64)
    if neg is not None and neg.size:
        neg = as_int64(neg.reshape(m, -1), field, ndim=2)  # [M, K]
        check_ids(neg, full_indptr.shape[0] - 1, field)
        cand = np.stack([np.repeat(src, neg.shape[1]), neg.reshape(-1)])  # [2, M*K]
        ok = (~pairs_in_csr(full_indptr, full_indices, cand) & (cand[0] != cand[1])).reshape(m, -1)
        first = ok.argmax(axis=1)
        has = ok[np.arange(m), first]
        out[0, has] = src[has]
        out[1, has] = neg[np.flatnonzero(has), first[has]]
    todo = np.flatnonzero(out[0] < 0)
    if todo.size:
        out[:, todo] = sample_negative_pairs(full_indptr, full_indices, todo.size, rng)
    return out


def load_mmgraph(root: str | Path, name: str, *, edge_split: str = "hard", images: str | Path | None = None,
                 seed: int = 0, verify_images: bool = False, progress: bool = True) -> MultimodalGraph:
    root = Path(root)
    d = _dataset_dir(root, name)
    link = None
    nc = d / "nc_edges-nodeid.pt"
    labels = None
    split = None
    if nc.exists():
        edges = _edges(_load_pt(nc), nc.name)
        lab_path = d / "labels-w-missing.pt"
        if lab_path.exists():
            raw = _np(_load_pt(lab_path), lab_path.name).reshape(-1)
            if raw.dtype.kind == "f":
                raw = np.where(np.isnan(raw), -1, raw)
            labels = as_int64(raw, lab_path.name)
        sp = d / "split.pt"
        if sp.exists():
            obj = _load_pt(sp)
            if not isinstance(obj, dict):
                raise ValueError(f"{sp.name} must hold a dict with train_idx/val_idx/test_idx")
            split = [as_int64(_np(obj[k], f"{sp.name}:{k}").reshape(-1), f"{sp.name}:{k}")
                     for k in ("train_idx", "val_idx", "test_idx") if k in obj]
            if len(split) != 3:
                raise ValueError(f"{sp.name} must have keys train_idx, val_idx, test_idx; got {sorted(obj)}")
        lp = None
    else:
        cands = sorted(d.glob("lp-edge-split-*.pt"))
        want = d / f"lp-edge-split-{edge_split}.pt"
        lp_path = want if want.exists() else cands[0]
        lp = _load_pt(lp_path)
        if not isinstance(lp, dict) or not {"train", "valid", "test"} <= set(lp):
            raise ValueError(f"{lp_path.name} must be a dict with 'train', 'valid' and 'test'")
        parts = {}
        for k in ("train", "valid", "test"):
            part = lp[k]
            parts[k] = np.stack([as_int64(_np(part["source_node"], f"{k}.source_node").reshape(-1), f"{k}.source_node"),
                                 as_int64(_np(part["target_node"], f"{k}.target_node").reshape(-1), f"{k}.target_node")])
        edges = np.concatenate([parts["train"], parts["valid"], parts["test"]], axis=1)
    feats = _features(d, labels.shape[0] if labels is not None else None)
    if feats:
        n = next(iter(feats.values())).shape[0]
    elif labels is not None:
        n = labels.shape[0]
    else:
        n = node_count_from_edges(edges, "edge list")
    if labels is not None and labels.shape[0] != n:
        raise ValueError(f"labels-w-missing.pt has {labels.shape[0]} labels for {n} nodes "
                         f"(first unmatched index {min(labels.shape[0], n)})")
    check_ids(edges, n, "edges")
    if labels is not None:
        check_class_ids(labels, n, "labels-w-missing.pt")
    g = MultimodalGraph.from_edges(name, edges[0], edges[1], n, labels=labels, features=feats, validate=False)
    if lp is not None:
        rng = np.random.default_rng(seed)
        va, te = parts["valid"], parts["test"]
        keep_va = va[0] != va[1]  # self-loop "positives" cannot be graph edges
        keep_te = te[0] != te[1]
        va_neg = _pick_negatives(va[0], _np(lp["valid"]["target_node_neg"], "valid.target_node_neg")
                                 if "target_node_neg" in lp["valid"] else None, g.indptr, g.indices, rng,
                                 "valid.target_node_neg")
        te_neg = _pick_negatives(te[0], _np(lp["test"]["target_node_neg"], "test.target_node_neg")
                                 if "target_node_neg" in lp["test"] else None, g.indptr, g.indices, rng,
                                 "test.target_node_neg")
        held = np.concatenate([va[:, keep_va], te[:, keep_te]], axis=1)
        hk = np.minimum(held[0], held[1]) * n + np.maximum(held[0], held[1])
        pairs = g.edge_pairs()
        train_pos = pairs[:, ~np.isin(pairs[0] * n + pairs[1], hk)]
        link = LinkSplit(train_pos, va[:, keep_va], va_neg[:, keep_va], te[:, keep_te], te_neg[:, keep_te])
    if split is None:
        split = random_node_split(n, 0.6, 0.2, 0.2, seed=seed, labels=g.labels) if labels is not None else [None] * 3
    img: ImageSource | None = None
    cand = Path(images) if images is not None else next((p for p in (d / "images", d / "images.tar",
                                                                     d / "images.tar.gz") if p.exists()), None)
    if cand is not None:
        img = FolderImageSource(cand, n) if cand.is_dir() else TarImageSource(cand, n, progress=progress)
    stats = dict(g.stats)
    stats.update(scan_images(img, verify=verify_images, progress=progress))
    meta = {"source_format": "mmgraph", "source_root": str(d.resolve()),
            "task_files": "nc" if nc.exists() else f"lp ({edge_split})", "node_split": "split.pt" if nc.exists()
            and (d / "split.pt").exists() else f"random 60/20/20 seed={seed}"}
    return MultimodalGraph(name, g.indptr, g.indices, images=img, labels=g.labels, train=split[0], val=split[1],
                           test=split[2], link_split=link, stats=stats, features=feats, meta=meta)

"""Loader for the MAGB benchmark's own files (Movies, Toys, Grocery, Reddit-S, Reddit-M).

Looked for in ``root`` and ``root/<Name>/`` (see docs/data_format.md):
  <Name>Graph.pt       DGL binary graph (required): COO edges stored once per pair, ndata 'label'
  <Name>.csv           optional: columns text (or title/description), label, second_category, and
                       an id column (id / node_id) or one row per node in id order
  <Name>_split.json    optional: {"train": [...], "val": [...], "test": [...]} (also *_idx / valid);
                       when absent, a seeded 60/20/20 split of the labelled nodes
  images               optional: <id>.jpg in a folder (<Name>Images/, images/) or a tar
                       (<Name>Images.tar[.gz], images.tar[.gz])
  *.npy                optional precomputed node features [N, D] beside the graph or in Feature/
"""
from __future__ import annotations

import csv
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from mlaga_fast.data.bounds import check_class_ids
from mlaga_fast.data.dgl_format import read_dgl_graph
from mlaga_fast.data.graph import MultimodalGraph, as_int64
from mlaga_fast.data.images import FolderImageSource, ImageSource, TarImageSource
from mlaga_fast.data.splits import random_node_split

MAGB_NAMES = ("Movies", "Toys", "Grocery", "Reddit-S", "Reddit-M")


def _name_variants(name: str) -> list[str]:
    out = [name, name.replace("-", ""), name.replace("-", "_")]
    return list(dict.fromkeys(out))


def _find(root: Path, name: str, suffixes: list[str]) -> Path | None:
    for base in (root, root / name, *(root / v for v in _name_variants(name))):
        for v in _name_variants(name):
            for s in suffixes:
                p = base / s.format(name=v)
                if p.exists():
                    return p
    return None


def find_magb_graph(root: str | Path, name: str) -> Path:
    root = Path(root)
    p = _find(root, name, ["{name}Graph.pt", "{name}_Graph.pt", "{name}.pt"])
    if p is None:
        raise ValueError(f"MAGB graph file {name}Graph.pt not found under {root} (also looked in {root / name})")
    return p


def _read_csv(path: Path, n: int) -> dict:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # product descriptions exceed the 128 KiB default
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.DictReader(f)
        cols = reader.fieldnames or []
        rows = list(reader)
    id_col = next((c for c in ("id", "node_id", "nid") if c in cols), None)
    if id_col is not None:
        try:
            ids = np.array([int(float(r[id_col])) for r in rows], dtype=np.int64)
        except ValueError as e:
            raise ValueError(f"{path.name}: column {id_col!r} must hold integer node ids ({e})") from e
        bad = np.flatnonzero((ids < 0) | (ids >= n))
        if bad.size:
            raise ValueError(f"{path.name}: {id_col} {int(ids[bad[0]])} at row {int(bad[0])} is out of range [0, {n})")
        if np.unique(ids).size != ids.size:
            raise ValueError(f"{path.name}: column {id_col!r} repeats node ids")
    else:
        if len(rows) != n:
            raise ValueError(f"{path.name} has {len(rows)} rows but the graph has {n} nodes "
                             f"(first unmatched row/node {min(len(rows), n)}); add an 'id' column or fix the file")
        ids = np.arange(n, dtype=np.int64)
    out: dict = {"ids": ids}
    if "text" in cols:
        out["text"] = [r["text"] or "" for r in rows]
    elif "title" in cols or "description" in cols:
        out["text"] = [" ".join(x for x in (r.get("title") or "", r.get("description") or "") if x) for r in rows]
    if "label" in cols:
        lab = np.full(len(rows), -1, dtype=np.int64)
        for i, r in enumerate(rows):
            s = (r["label"] or "").strip()
            if s in ("", "nan", "NaN", "None"):
                continue
            try:
                lab[i] = int(float(s))
            except ValueError as e:
                raise ValueError(f"{path.name}: label {s!r} at row {i} is not an integer") from e
        out["label"] = lab
    if "second_category" in cols:
        out["category"] = [r["second_category"] for r in rows]
    return out


def _read_split(path: Path, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    try:
        obj = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path.name} is not valid JSON: {e}") from e
    parts = []
    for names in (("train", "train_idx", "train_ids"), ("val", "valid", "val_idx", "valid_idx", "val_ids"),
                  ("test", "test_idx", "test_ids")):
        key = next((k for k in names if k in obj), None)
        if key is None:
            raise ValueError(f"{path.name}: no {names[0]!r} list (looked for {', '.join(names)})")
        arr = as_int64(obj[key], f"{path.name}:{key}")
        bad = np.flatnonzero((arr < 0) | (arr >= n))
        if bad.size:
            raise ValueError(f"{path.name}:{key}: node id {int(arr[bad[0]])} at index {int(bad[0])} is out of range [0, {n})")
        parts.append(arr)
    return tuple(parts)  # type: ignore[return-value]


def _find_images(root: Path, name: str, n: int, images: str | Path | None, progress: bool) -> ImageSource | None:
    cand: Path | None = Path(images) if images is not None else None
    if cand is None:
        stems = ["{name}Images", "{name}_images", "images", "Images", "{name}Image"]
        cand = _find(root, name, [s + ext for s in stems for ext in (".tar.gz", ".tgz", ".tar")] + stems)
    if cand is None:
        return None
    if cand.is_dir():
        return FolderImageSource(cand, n, "{id}.jpg")
    if cand.is_file():
        return TarImageSource(cand, n, "{id}.jpg", progress=progress)
    raise ValueError(f"images path {cand} does not exist")


def _find_features(root: Path, name: str, n: int) -> dict[str, np.ndarray]:
    feats = {}
    graph_dir = find_magb_graph(root, name).parent
    for d in (graph_dir, graph_dir / "Feature", graph_dir / "Features"):
        if not d.is_dir():
            continue
        for p in sorted(d.glob("*.npy")):
            try:
                arr = np.load(p, mmap_mode="r", allow_pickle=False)
            except (ValueError, OSError) as e:
                raise ValueError(f"feature file {p} cannot be read: {e}") from e
            if arr.ndim >= 1 and arr.shape[0] == n and arr.dtype.kind == "f":
                feats[p.stem] = arr
    return feats


def load_magb(root: str | Path, name: str, *, images: str | Path | None = None, seed: int = 0,
              verify_images: bool = False, progress: bool = True) -> MultimodalGraph:
    """Read a MAGB dataset into a MultimodalGraph; only the graph file is required."""
    from mlaga_fast.data.images import scan_images

    root = Path(root)
    gpath = find_magb_graph(root, name)
    dg = read_dgl_graph(gpath)
    n = dg.num_nodes
    labels = dg.ndata.get("label")
    if labels is not None:
        labels = as_int64(labels.reshape(-1) if labels.ndim == 2 and labels.shape[1] == 1 else labels, "label")
        check_class_ids(labels, n, f"{gpath.name} node data 'label'")
    texts = None
    class_names = None
    csv_path = _find(root, name, ["{name}.csv"])
    if csv_path is not None:
        c = _read_csv(csv_path, n)
        if "text" in c:
            texts = [""] * n
            for i, t in zip(c["ids"].tolist(), c["text"]):
                texts[i] = t
        if "label" in c:
            csv_lab = np.full(n, -1, dtype=np.int64)
            csv_lab[c["ids"]] = c["label"]
            check_class_ids(csv_lab, n, f"{csv_path.name} column 'label'")
            if labels is None:
                labels = csv_lab
            else:
                bad = np.flatnonzero((csv_lab != labels) & (csv_lab >= 0))
                if bad.size:
                    i = int(bad[0])
                    raise ValueError(f"{csv_path.name}: label {int(csv_lab[i])} of node {i} disagrees with "
                                     f"{gpath.name} ({int(labels[i])})")
        if "category" in c and labels is not None:
            votes: dict[int, Counter] = {}
            for i, cat in zip(c["ids"].tolist(), c["category"]):
                if labels[i] >= 0 and cat:
                    votes.setdefault(int(labels[i]), Counter())[cat] += 1
            k = int(labels.max()) + 1 if labels.size else 0
            class_names = [votes[j].most_common(1)[0][0] if j in votes else f"class_{j}" for j in range(k)]
    if labels is None:
        labels = np.full(n, -1, dtype=np.int64)
    split_path = _find(root, name, ["{name}_split.json", "split.json"])
    if split_path is not None:
        train, val, test = _read_split(split_path, n)
        split_source = split_path.name
    else:
        train, val, test = random_node_split(n, 0.6, 0.2, 0.2, seed=seed, labels=labels)
        split_source = f"random 60/20/20 seed={seed}"
    img = _find_images(root, name, n, images, progress)
    stats = scan_images(img, verify=verify_images, progress=progress)
    meta = {"source_format": "magb", "source_root": str(root.resolve()), "graph_file": gpath.name,
            "csv": csv_path.name if csv_path else None, "node_split": split_source,
            "images": str(getattr(img, "root", getattr(img, "path", ""))) if img is not None else None}
    return MultimodalGraph.from_edges(name, dg.src, dg.dst, n, texts=texts, images=img, labels=labels,
                                      class_names=class_names, train=train, val=val, test=test,
                                      stats=stats, features=_find_features(root, name, n), meta=meta)

"""The dataset directory: ``graph.json`` (manifest) plus one ``.npy`` per array.

``save`` builds the whole directory under a temporary sibling name and renames it into place, so
an interrupted save leaves either the previous dataset or nothing; never a directory that loads.
Entries of a previous dataset directory that are not the dataset's own files (features/, caches)
are kept across a save.
``load`` memory-maps large arrays and validates everything before returning. The format is
documented in docs/data_format.md.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from mlaga_fast.data.graph import LINK_FIELDS, LinkSplit, MultimodalGraph
from mlaga_fast.data.images import image_source_from_manifest
from mlaga_fast.utils.io import atomic_dir, atomic_np_save, atomic_write_bytes, atomic_write_json

FORMAT = "mlaga_fast.dataset"
FORMAT_VERSION = 1
MANIFEST = "graph.json"
MMAP_BYTES = 1 << 20  # arrays larger than this are memory-mapped on load


def _version() -> str:
    from mlaga_fast import __version__

    return __version__


def _put(d: Path, rel: str, arr: np.ndarray) -> dict:
    arr = np.asarray(arr)
    atomic_np_save(d / rel, arr)
    return {"file": rel, "dtype": arr.dtype.name, "shape": list(arr.shape)}


def _get(d: Path, spec: dict, field: str) -> np.ndarray:
    path = d / spec["file"]
    if not path.is_file():
        raise ValueError(f"dataset {d}: array file for {field} is missing ({spec['file']})")
    try:
        size = path.stat().st_size
        arr = np.load(path, mmap_mode="r" if size > MMAP_BYTES else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"dataset {d}: cannot read {field} from {spec['file']}: {e}") from e
    if arr.dtype.name != spec["dtype"] or list(arr.shape) != list(spec["shape"]):
        raise ValueError(f"dataset {d}: {field} is {arr.dtype.name} {list(arr.shape)}, manifest says "
                         f"{spec['dtype']} {spec['shape']}")
    return arr


def _write_texts(d: Path, texts: list[str]) -> dict:
    # One UTF-8 blob plus offsets: compact, and loads with one read instead of a JSON parse of N strings.
    encoded = [t.encode("utf-8") for t in texts]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    atomic_write_bytes(d / "texts.bin", b"".join(encoded))
    return {"blob": "texts.bin", "offsets": _put(d, "text_offsets.npy", offsets)}


def _read_texts(d: Path, spec: dict, n: int) -> list[str]:
    offsets = np.asarray(_get(d, spec["offsets"], "text_offsets"))
    blob_path = d / spec["blob"]
    if not blob_path.is_file():
        raise ValueError(f"dataset {d}: texts blob {spec['blob']} is missing")
    blob = blob_path.read_bytes()
    if offsets.shape != (n + 1,) or offsets[0] != 0 or np.any(np.diff(offsets) < 0) or offsets[-1] != len(blob):
        raise ValueError(f"dataset {d}: text offsets do not match {n} nodes and a {len(blob)}-byte blob")
    try:
        return [blob[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(n)]
    except UnicodeDecodeError as e:
        raise ValueError(f"dataset {d}: texts blob is not valid UTF-8 ({e})") from e


def _link_manifest(d: Path, split: LinkSplit, sub: str = "link_split") -> dict:
    return {f: _put(d, f"{sub}/{f}.npy", getattr(split, f)) for f in LINK_FIELDS}


# Manifest keys whose values are paths inside the dataset directory (arrays, texts, image files).
_PATH_KEYS = ("file", "blob", "names_file", "path", "index", "array", "present")


def _manifest_entries(node) -> set[str]:
    """Top-level names inside the dataset directory that a manifest refers to."""
    found: set[str] = set()
    if isinstance(node, dict):
        for k, v in node.items():
            if k in _PATH_KEYS and isinstance(v, str) and v and not os.path.isabs(v):
                found.add(Path(v).parts[0])
            else:
                found |= _manifest_entries(v)
    elif isinstance(node, list):
        for v in node:
            found |= _manifest_entries(v)
    return found


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)  # same filesystem (a sibling temp dir): instant, no extra space
    except OSError:
        import shutil

        shutil.copy2(src, dst)


def _carry_over(old_dir: Path, new_dir: Path) -> None:
    """Hard-link into ``new_dir`` every entry of the previous dataset directory that is not part of
    the previous dataset itself (features/, caches, the user's own files) and that the new save did
    not write."""
    import shutil

    try:
        owned = _manifest_entries(json.loads((old_dir / MANIFEST).read_text())) | {MANIFEST}
    except (OSError, json.JSONDecodeError):
        owned = {MANIFEST}
    for entry in sorted(old_dir.iterdir()):
        if entry.name in owned or (new_dir / entry.name).exists():
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, new_dir / entry.name, symlinks=True, copy_function=_link_or_copy)
        elif entry.is_symlink():
            os.symlink(os.readlink(entry), new_dir / entry.name)
        else:
            _link_or_copy(str(entry), str(new_dir / entry.name))


def check_save_target(out_dir: Path) -> bool:
    """True when ``out_dir`` holds a previous dataset; refuses anything else that is not empty."""
    if not out_dir.exists():
        return False
    if not out_dir.is_dir():
        raise ValueError(f"out: {out_dir} exists and is not a directory")
    if (out_dir / MANIFEST).is_file():
        return True
    if any(out_dir.iterdir()):
        raise ValueError(f"out: {out_dir} is a non-empty directory without a dataset ({MANIFEST}); refusing "
                         "to replace it: choose a new or empty directory")
    return False


def save(graph: MultimodalGraph, out_dir: str | os.PathLike) -> Path:
    """Write ``graph`` as a dataset directory, atomically. Returns the directory.

    Over a previous dataset, the dataset's own files are replaced, and everything else in the
    directory (features/, caches, your files) is kept: hard-linked into the new directory before it
    is renamed into place, so an interrupted save still leaves the old directory whole. Kept
    artifacts record the graph fingerprint they were computed from, so the next stage refuses stale
    ones. A non-empty directory that is not a dataset is refused. Use ``save_link_split`` to add a
    link split in place."""
    out_dir = Path(out_dir)
    graph.validate()
    previous = check_save_target(out_dir)
    fp = graph.fingerprint
    with atomic_dir(out_dir) as d:
        manifest: dict = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "name": graph.name,
            "num_nodes": graph.num_nodes, "num_edges": graph.num_edges,
            "num_stored_edges": int(graph.indices.shape[0]), "num_classes": len(graph.class_names),
            "class_names": graph.class_names, "fingerprint": fp,
            "arrays": {k: _put(d, f"{k}.npy", getattr(graph, k))
                       for k in ("indptr", "indices", "labels", "train", "val", "test")},
            "texts": _write_texts(d, graph.texts) if graph.texts is not None else None,
            "images": graph.images.to_manifest(d) if graph.images is not None else None,
            "link_split": _link_manifest(d, graph.link_split) if graph.link_split is not None else None,
            "features": {k: _put(d, f"node_features/{k}.npy", v) for k, v in sorted(graph.features.items())},
            "stats": graph.stats, "meta": graph.meta,
            "mlaga_fast_version": _version(),
        }
        if previous:
            _carry_over(out_dir, d)
        atomic_write_json(d / MANIFEST, manifest)  # written last: its presence marks a complete dataset
    return out_dir


def read_manifest(data_dir: str | os.PathLike) -> dict:
    d = Path(data_dir)
    path = d / MANIFEST
    if not path.is_file():
        raise ValueError(f"{d} is not a dataset directory (no {MANIFEST}); create one with "
                         "`mlaga-fast data prepare` or mlaga_fast.data.save")
    try:
        m = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    if m.get("format") != FORMAT:
        raise ValueError(f"{path}: format is {m.get('format')!r}, expected {FORMAT!r}")
    if int(m.get("format_version", 0)) > FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {m['format_version']} is newer than this mlaga_fast "
                         f"supports ({FORMAT_VERSION}); upgrade mlaga_fast")
    return m


def load(data_dir: str | os.PathLike, validate: bool = True, verify_fingerprint: bool = False) -> MultimodalGraph:
    """Open a dataset directory. Large arrays are memory-mapped (read-only). ``verify_fingerprint``
    rehashes the content and refuses a mismatch with the stored fingerprint."""
    d = Path(data_dir)
    m = read_manifest(d)
    arrays = {k: _get(d, spec, k) for k, spec in m["arrays"].items()}
    n = int(m["num_nodes"])
    if arrays["indptr"].shape != (n + 1,):
        raise ValueError(f"dataset {d}: indptr has {arrays['indptr'].shape[0]} entries, expected {n + 1}")
    texts = _read_texts(d, m["texts"], n) if m.get("texts") else None
    images = image_source_from_manifest(m["images"], d) if m.get("images") else None
    link = None
    if m.get("link_split"):
        link = LinkSplit(**{f: _get(d, m["link_split"][f], f"link_split.{f}") for f in LINK_FIELDS})
    feats = {k: _get(d, spec, f"features[{k!r}]") for k, spec in (m.get("features") or {}).items()}
    g = MultimodalGraph(m["name"], arrays["indptr"], arrays["indices"], texts=texts, images=images,
                        labels=arrays["labels"], class_names=m["class_names"], train=arrays["train"],
                        val=arrays["val"], test=arrays["test"], link_split=link, stats=m.get("stats"),
                        features=feats, meta=m.get("meta"), fingerprint=m.get("fingerprint"), validate=validate)
    if verify_fingerprint:
        actual = g.compute_fingerprint()
        if actual != m.get("fingerprint"):
            raise ValueError(f"dataset {d}: content fingerprint {actual[:16]} does not match graph.json "
                             f"({str(m.get('fingerprint'))[:16]}); the directory was modified")
    return g


def save_link_split(data_dir: str | os.PathLike, split: LinkSplit, params: dict | None = None) -> MultimodalGraph:
    """Add (or replace) the link split of an existing dataset without rewriting the rest of the
    directory. The new arrays go to a fresh sub-directory; rewriting graph.json (atomic) is the
    commit point, so an interrupted call leaves the old dataset loadable."""
    d = Path(data_dir)
    m = read_manifest(d)
    g = load(d)
    g.set_link_split(split)  # validates against the full graph
    old = (m.get("link_split") or {}).get("train_pos", {}).get("file", "")
    sub = "link_split_b" if old.startswith("link_split/") else "link_split"
    with atomic_dir(d / sub) as tmp:
        for f in LINK_FIELDS:
            atomic_np_save(tmp / f"{f}.npy", getattr(split, f))
    m["link_split"] = {f: {"file": f"{sub}/{f}.npy", "dtype": "int64", "shape": list(getattr(split, f).shape)}
                       for f in LINK_FIELDS}
    m["fingerprint"] = g.compute_fingerprint()
    m.setdefault("meta", {})["link_split_params"] = params or {}
    m["mlaga_fast_version"] = _version()
    atomic_write_json(d / MANIFEST, m)
    if old:
        import shutil

        old_dir = d / old.split("/")[0]
        if old_dir.name != sub:
            shutil.rmtree(old_dir, ignore_errors=True)
    return load(d)

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
from mlaga_fast.data.texts import TextBlob
from mlaga_fast.utils.io import _atomic_write, atomic_dir, atomic_np_save, atomic_write_json, read_npy

FORMAT = "mlaga_fast.dataset"
FORMAT_VERSION = 1
MANIFEST = "graph.json"
MMAP_BYTES = 1 << 20  # arrays larger than this are memory-mapped on load
_STRING_CHUNK = 1 << 16  # texts encoded at a time when a blob is written


def _version() -> str:
    from mlaga_fast import __version__

    return __version__


def _put(d: Path, rel: str, arr: np.ndarray) -> dict:
    arr = np.asarray(arr)
    atomic_np_save(d / rel, arr)
    return {"file": rel, "dtype": arr.dtype.name, "shape": list(arr.shape)}


# Arrays that hold node ids, offsets or class ids: an integer dtype is part of their contract, and a
# float copy (even of integral values) is refused rather than silently converted.
_ID_ARRAYS = ("indptr", "indices", "labels", "train", "val", "test", "text_offsets", "node_ids")


def _spec(d: Path, spec, field: str) -> tuple[str, str, list]:
    """(file, dtype, shape) of a manifest array entry, type-checked."""
    if not isinstance(spec, dict):
        raise ValueError(f"dataset {d}: {MANIFEST}: entry for {field} must be an object with file, dtype and "
                         f"shape, got {type(spec).__name__}")
    file, dtype, shape = spec.get("file"), spec.get("dtype"), spec.get("shape")
    if not isinstance(file, str) or not file or os.path.isabs(file) or ".." in Path(file).parts:
        raise ValueError(f"dataset {d}: {MANIFEST}: {field} has no valid file name (got {file!r}); "
                         "files are named relative to the dataset directory")
    if not isinstance(dtype, str) or not isinstance(shape, list) or \
            not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in shape):
        raise ValueError(f"dataset {d}: {MANIFEST}: {field} needs a dtype string and a shape list of sizes "
                         f"(got dtype {dtype!r}, shape {shape!r})")
    return file, dtype, shape


def _get(d: Path, spec, field: str) -> np.ndarray:
    file, dtype, shape = _spec(d, spec, field)
    path = d / file
    if not path.is_file():
        raise ValueError(f"dataset {d}: {file} is missing (it holds {field})")
    try:
        arr = read_npy(path, mmap_bytes=MMAP_BYTES, name=file)
    except ValueError as e:  # the message names the file
        raise ValueError(f"dataset {d}: {e}") from None
    if arr.dtype.name != dtype or list(arr.shape) != shape:
        raise ValueError(f"dataset {d}: {file} holds {arr.dtype.name} {list(arr.shape)}, but {MANIFEST} says "
                         f"{dtype} {shape} for {field}")
    if field.split(".")[0] in _ID_ARRAYS + ("link_split",) and arr.dtype.kind not in "iu":
        raise ValueError(f"dataset {d}: {file} holds {arr.dtype.name} values, but {field} holds ids and must be "
                         "an integer array")
    if arr.dtype.kind not in "iufb":
        raise ValueError(f"dataset {d}: {file} holds {arr.dtype.name} values; {field} must be numeric")
    return arr


def _write_strings(d: Path, strings, blob: str, offsets_file: str) -> dict:
    # One UTF-8 blob plus offsets: compact, and loads with one read instead of a JSON parse of N strings.
    # Streamed, encoded _STRING_CHUNK strings at a time: a million texts never sit in memory twice.
    if isinstance(strings, TextBlob):  # already a blob (a loaded dataset's, or one written while reading tables)
        import shutil

        def copy(f) -> None:
            with open(strings.path, "rb") as src:
                shutil.copyfileobj(src, f, 1 << 20)

        _atomic_write(d / blob, copy)
        return {"blob": blob, "offsets": _put(d, offsets_file, np.asarray(strings.offsets))}
    offsets = np.zeros(len(strings) + 1, dtype=np.int64)

    def write(f) -> None:
        pos = 0
        for lo in range(0, len(strings), _STRING_CHUNK):
            encoded = [t.encode("utf-8") for t in strings[lo:lo + _STRING_CHUNK]]
            np.cumsum([len(b) for b in encoded], out=offsets[lo + 1:lo + 1 + len(encoded)])
            offsets[lo + 1:lo + 1 + len(encoded)] += pos
            pos = int(offsets[lo + len(encoded)])
            f.write(b"".join(encoded))

    _atomic_write(d / blob, write)
    return {"blob": blob, "offsets": _put(d, offsets_file, offsets)}


def _write_texts(d: Path, texts) -> dict:
    return _write_strings(d, texts, "texts.bin", "text_offsets.npy")


def _write_node_ids(d: Path, ids) -> dict:
    """Integer ids as node_ids.npy (an array entry); string ids as node_ids.bin + node_id_offsets.npy."""
    if isinstance(ids, np.ndarray):
        return _put(d, "node_ids.npy", ids)
    return _write_strings(d, ids, "node_ids.bin", "node_id_offsets.npy")


def _read_texts(d: Path, spec, n: int, field: str = "texts", what: str = "the node texts") -> TextBlob:
    if not isinstance(spec, dict) or not isinstance(spec.get("blob"), str) or "offsets" not in spec:
        raise ValueError(f"dataset {d}: {MANIFEST}: {field} must name a blob file and an offsets array, got {spec!r}")
    offsets = _get(d, spec["offsets"], "text_offsets")
    blob_path = d / spec["blob"]
    if not blob_path.is_file():
        raise ValueError(f"dataset {d}: {spec['blob']} is missing (it holds {what})")
    size = blob_path.stat().st_size
    if offsets.shape != (n + 1,) or offsets[0] != 0 or np.any(np.diff(offsets) < 0) or offsets[-1] != size:
        raise ValueError(f"dataset {d}: {spec['offsets']['file']} does not match {n} nodes and the "
                         f"{size}-byte {spec['blob']}: one of them is damaged")
    try:
        return TextBlob(blob_path, offsets, name=spec["blob"])  # decoded on demand (mlaga_fast.data.texts)
    except ValueError as e:
        raise ValueError(f"dataset {d}: {e}") from None


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
            "node_ids": _write_node_ids(d, graph.node_ids) if graph.node_ids is not None else None,
            "stats": graph.stats, "meta": graph.meta,
            "mlaga_fast_version": _version(),
        }
        if previous:
            _carry_over(out_dir, d)
        atomic_write_json(d / MANIFEST, manifest)  # written last: its presence marks a complete dataset
    return out_dir


def read_manifest(data_dir: str | os.PathLike) -> dict:
    """The dataset's graph.json, checked to be a readable manifest of this format (its entries are
    checked by ``load``)."""
    d = Path(data_dir)
    path = d / MANIFEST
    if not path.is_file():
        raise ValueError(f"{d} is not a dataset directory (no {MANIFEST}); create one with "
                         "`mlaga-fast data prepare` or mlaga_fast.data.save")
    try:
        m = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"dataset {d}: {MANIFEST} is not text (not UTF-8): the file is damaged") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"dataset {d}: {MANIFEST} is not valid JSON ({e.msg} at line {e.lineno}, column "
                         f"{e.colno}): the file is damaged") from None
    if not isinstance(m, dict):
        raise ValueError(f"dataset {d}: {MANIFEST} must hold a JSON object, got a JSON {type(m).__name__}")
    if m.get("format") != FORMAT:
        raise ValueError(f"dataset {d}: {MANIFEST}: format is {m.get('format')!r}, expected {FORMAT!r}")
    version = m.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"dataset {d}: {MANIFEST}: format_version must be a positive integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(f"dataset {d}: {MANIFEST}: format_version {version} is newer than this mlaga_fast "
                         f"supports ({FORMAT_VERSION}); upgrade mlaga_fast")
    return m


def _field(d: Path, m: dict, key: str, kinds: tuple, what: str, required: bool = True):
    """``m[key]`` checked against ``kinds`` (None allowed when not required); names the key on failure."""
    if key not in m:
        if required:
            raise ValueError(f"dataset {d}: {MANIFEST} has no {key!r} entry ({what})")
        return None
    v = m[key]
    if v is None and not required:
        return None
    if not isinstance(v, kinds) or isinstance(v, bool):
        raise ValueError(f"dataset {d}: {MANIFEST}: {key!r} must be {what}, got {v!r}"[:300])
    return v


# Field names in MultimodalGraph's validation messages, and the manifest entry that stores each.
_FIELD_FILES = {"indptr": ("arrays", "indptr"), "indices": ("arrays", "indices"), "labels": ("arrays", "labels"),
                "train": ("arrays", "train"), "val": ("arrays", "val"), "test": ("arrays", "test")}


def _blame(d: Path, m: dict, message: str) -> str:
    """Prefix a content error with the file it is about: the first field name the message starts with."""
    import re

    hit = re.match(r"\s*(?:graph[.:]\s*)?(link_split\.(\w+)|features\[(['\"])(.+?)\3\]|\w+)", message)
    if hit:
        if hit.group(2):
            spec = (m.get("link_split") or {}).get(hit.group(2))
        elif hit.group(4):
            spec = (m.get("features") or {}).get(hit.group(4))
        elif hit.group(1) in _FIELD_FILES:
            spec = m["arrays"].get(hit.group(1))
        elif hit.group(1) == "texts":
            spec = {"file": (m.get("texts") or {}).get("blob")}
        elif hit.group(1) == "node_ids":
            ids = m.get("node_ids") or {}
            spec = {"file": ids.get("file") or ids.get("blob")}
        else:
            spec = None
        if isinstance(spec, dict) and spec.get("file"):
            return f"dataset {d}: {spec['file']}: {message}"
    return f"dataset {d}: {MANIFEST} and its arrays disagree: {message}"


def load(data_dir: str | os.PathLike, validate: bool = True, verify_fingerprint: bool = False) -> MultimodalGraph:
    """Open a dataset directory: the one place a dataset on disk is checked. Every entry of graph.json,
    every array file (header, size, dtype, shape) and the graph's content are validated, and any
    problem raises ValueError naming the file and what is wrong with it. Large arrays are memory-mapped
    (read-only). ``verify_fingerprint`` rehashes the content and refuses a mismatch with the stored
    fingerprint."""
    d = Path(data_dir)
    m = read_manifest(d)
    name = _field(d, m, "name", (str,), "the dataset name (a string)")
    n = _field(d, m, "num_nodes", (int,), "the number of nodes (an integer)")
    if n < 0:
        raise ValueError(f"dataset {d}: {MANIFEST}: num_nodes must be >= 0, got {n}")
    class_names = _field(d, m, "class_names", (list,), "the list of class names")
    if not all(isinstance(c, str) for c in class_names):
        raise ValueError(f"dataset {d}: {MANIFEST}: class_names must all be strings")
    specs = _field(d, m, "arrays", (dict,), "the table of array files")
    missing = [k for k in ("indptr", "indices", "labels", "train", "val", "test") if k not in specs]
    if missing:
        raise ValueError(f"dataset {d}: {MANIFEST}: 'arrays' has no entry for {', '.join(missing)}")
    arrays = {k: _get(d, specs[k], k) for k in ("indptr", "indices", "labels", "train", "val", "test")}
    if arrays["indptr"].shape != (n + 1,):
        raise ValueError(f"dataset {d}: {specs['indptr']['file']} has {arrays['indptr'].shape[0]} entries, but "
                         f"{MANIFEST} says num_nodes {n} (expected {n + 1})")
    texts_spec = _field(d, m, "texts", (dict,), "the texts entry", required=False)
    texts = _read_texts(d, texts_spec, n) if texts_spec else None
    images = None
    images_spec = _field(d, m, "images", (dict,), "the images entry", required=False)
    if images_spec:
        try:
            images = image_source_from_manifest(images_spec, d)
        except (ValueError, KeyError, TypeError, OSError) as e:
            msg = f"entry {e} is missing" if isinstance(e, KeyError) else " ".join(str(e).split())
            where = next((images_spec[k] for k in ("array", "index", "classes_file", "names_file", "path", "root")
                          if isinstance(images_spec.get(k), str) and Path(images_spec[k]).name in msg),
                         MANIFEST + " 'images'")
            raise ValueError(f"dataset {d}: images cannot be opened: {msg if where in msg else f'{where}: {msg}'}") \
                from None
    link = None
    link_spec = _field(d, m, "link_split", (dict,), "the link split entry", required=False)
    if link_spec:
        absent = [f for f in LINK_FIELDS if f not in link_spec]
        if absent:
            raise ValueError(f"dataset {d}: {MANIFEST}: link_split has no entry for {', '.join(absent)}")
        parts = {f: _get(d, link_spec[f], f"link_split.{f}") for f in LINK_FIELDS}
        try:
            link = LinkSplit(**parts)
        except ValueError as e:
            raise ValueError(_blame(d, m, str(e))) from None
    feat_specs = _field(d, m, "features", (dict,), "the table of stored feature arrays", required=False) or {}
    feats = {k: _get(d, spec, f"features[{k!r}]") for k, spec in feat_specs.items()}
    ids_spec = _field(d, m, "node_ids", (dict,), "the node ids entry", required=False)
    node_ids = None
    if ids_spec and "blob" in ids_spec:
        node_ids = _read_texts(d, ids_spec, n, "node_ids", "the nodes' own ids")
    elif ids_spec:
        node_ids = _get(d, ids_spec, "node_ids")
    stats = _field(d, m, "stats", (dict,), "an object", required=False)
    meta = _field(d, m, "meta", (dict,), "an object", required=False)
    fingerprint = _field(d, m, "fingerprint", (str,), "a string", required=False)
    try:
        g = MultimodalGraph(name, arrays["indptr"], arrays["indices"], texts=texts, images=images,
                            labels=arrays["labels"], class_names=class_names, train=arrays["train"],
                            val=arrays["val"], test=arrays["test"], link_split=link, stats=stats,
                            features=feats, meta=meta, fingerprint=fingerprint, node_ids=node_ids,
                            validate=validate)
    except ValueError as e:
        raise ValueError(_blame(d, m, str(e))) from None
    if verify_fingerprint:
        actual = g.compute_fingerprint()
        if actual != fingerprint:
            raise ValueError(f"dataset {d}: content fingerprint {actual[:16]} does not match {MANIFEST} "
                             f"({str(fingerprint)[:16]}); the directory was modified")
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

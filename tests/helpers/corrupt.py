"""Damaged copies of a dataset or features directory, one kind of damage at a time, as a user meets them
(a truncated download, an edited manifest, a bit flip). Each kind names the file the error must name and
a word of the problem it must state."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np


def _rewrite_manifest(d: Path, edit) -> None:
    m = json.loads((d / "graph.json").read_text())
    edit(m)
    (d / "graph.json").write_text(json.dumps(m))


def _edit_array(path: Path, edit) -> None:
    a = np.load(path)
    edit(a)
    np.save(path, a)


def _truncate(path: Path, keep: float = 0.5) -> None:
    b = path.read_bytes()
    path.write_bytes(b[:int(len(b) * keep)])


# kind -> (damage(dataset_dir), file the error must name, word of the problem it must state)
DATASET_DAMAGE = {
    "graph.json deleted": (lambda d: (d / "graph.json").unlink(), "graph.json", "not a dataset directory"),
    "graph.json binary garbage": (lambda d: (d / "graph.json").write_bytes(bytes(range(256)) * 4),
                                  "graph.json", "not text"),
    "graph.json cut short": (lambda d: _truncate(d / "graph.json", 0.3), "graph.json", "not valid JSON"),
    "graph.json holds a list": (lambda d: (d / "graph.json").write_text("[1, 2, 3]"), "graph.json", "JSON object"),
    "graph.json lacks arrays": (lambda d: _rewrite_manifest(d, lambda m: m.pop("arrays")), "graph.json",
                                "'arrays'"),
    "num_nodes is 'abc'": (lambda d: _rewrite_manifest(d, lambda m: m.update(num_nodes="abc")), "graph.json",
                           "num_nodes"),
    "class_names not a list": (lambda d: _rewrite_manifest(d, lambda m: m.update(class_names="abc")),
                               "graph.json", "class_names"),
    "array shape edited": (lambda d: _rewrite_manifest(d, lambda m: m["arrays"]["labels"].update(shape=[7])),
                           "labels.npy", "graph.json says"),
    "indices.npy deleted": (lambda d: (d / "indices.npy").unlink(), "indices.npy", "missing"),
    "indices.npy truncated": (lambda d: _truncate(d / "indices.npy"), "indices.npy", "truncated"),
    "indices.npy header garbage": (
        lambda d: (d / "indices.npy").write_bytes(b"\0" * 16 + (d / "indices.npy").read_bytes()[16:]),
        "indices.npy", "not a readable .npy"),
    "indices out of range": (lambda d: _edit_array(d / "indices.npy", lambda a: a.__setitem__(3, 10**6)),
                             "indices.npy", "out of range"),
    "indices stored as float64": (
        lambda d: (np.save(d / "indices.npy", np.load(d / "indices.npy").astype(np.float64)),
                   _rewrite_manifest(d, lambda m: m["arrays"]["indices"].update(dtype="float64"))),
        "indices.npy", "integer array"),
    "indptr decreasing": (lambda d: _edit_array(d / "indptr.npy", lambda a: a.__setitem__(10, a[11] + 3)),
                          "indptr.npy", "non-decreasing"),
    "label out of range": (lambda d: _edit_array(d / "labels.npy", lambda a: a.__setitem__(5, 99)),
                           "labels.npy", "outside"),
    "train id out of range": (lambda d: _edit_array(d / "train.npy", lambda a: a.__setitem__(0, -7)),
                              "train.npy", "out of range"),
    "texts.bin truncated": (lambda d: _truncate(d / "texts.bin"), "texts.bin", "does not match"),
    "link split file deleted": (lambda d: next((d / "link_split").glob("val_pos.npy")).unlink(), "val_pos.npy",
                                "missing"),
    "image file truncated": (lambda d: _truncate(d / "image_class.npy", 0.9), "image_class.npy", "truncated"),
}


def damaged_copy(src: Path, dst: Path, kind: str, damages: dict) -> tuple[str, str]:
    """Copy directory ``src`` to ``dst`` with damage ``kind`` from ``damages`` (DATASET_DAMAGE or
    FEATURES_DAMAGE); returns (file the error must name, word of the problem it must state)."""
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    damage, file, problem = damages[kind]
    damage(dst)
    return file, problem


def _shard0(f: Path, part: str) -> Path:
    return f / f"shard_00000.{part}.npy"


def _retype_shard(f: Path) -> None:
    """A float32 text shard, with its done record updated to the new size (so only the dtype is wrong)."""
    np.save(_shard0(f, "text"), np.load(_shard0(f, "text")).astype(np.float32))
    done = f / "shard_00000.done.json"
    rec = json.loads(done.read_text())
    rec["files"]["text"] = _shard0(f, "text").stat().st_size
    done.write_text(json.dumps(rec))


# kind -> (damage(features_dir), file the error must name, word of the problem)
FEATURES_DAMAGE = {
    "done.json deleted": (lambda f: (f / "shard_00000.done.json").unlink(), "shard_00000.done.json", "missing"),
    "float32 shard in an fp16 store": (_retype_shard, "shard_00000.text.npy", "float32"),
    "text mask all False": (lambda f: np.save(_shard0(f, "text_mask"), np.zeros_like(np.load(_shard0(f, "text_mask")))),
                            "shard_00000.text_mask.npy", "no valid text token"),
    "manifest holds a list": (lambda f: (f / "manifest.json").write_text("[]"), "manifest.json", "JSON object"),
}

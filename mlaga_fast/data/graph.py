"""MultimodalGraph: an undirected graph whose nodes carry a text, an image and a label.

The graph is a symmetric CSR (indptr int64 [N+1], indices int64 [E], E = 2 x undirected pairs),
neighbours sorted, no self-loops or duplicates. ``from_edges`` builds it from a raw edge list
(stored once per pair, as co-purchase data is), counting what it drops.

Every constructor validates its input; a bad field raises ValueError naming the field and the
first bad index. Memory safety is the C++ CSR check (mlaga_fast.graph_check, the one CSR
validation); the conventions on top of it (sorted rows, no duplicates or self-loops, symmetry) are
vectorised NumPy here.
"""
from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from mlaga_fast.data.images import ImageSource, ImageUnavailable, placeholder_image
from mlaga_fast.data.texts import TextBlob
from mlaga_fast.utils.arrays import to_numpy

LINK_FIELDS = ("train_pos", "val_pos", "val_neg", "test_pos", "test_neg")
_CHUNK = 1 << 20  # ids or pair columns per validation step: the checks' temporaries stay bounded


# ----------------------------------------------------------------------------------- validation


def as_int64(a, field: str, ndim: int = 1, allow_float: bool = True) -> np.ndarray:
    """A C-contiguous int64 array. Floats with integral values are accepted when ``allow_float``
    (labels and splits in some published files are float tensors); anything else is refused."""
    arr = to_numpy(a, field)
    kinds = "iuf" if allow_float else "iu"
    if arr.dtype.kind not in kinds:  # bool masks are not id lists
        raise ValueError(f"{field} must be an integer array, got dtype {arr.dtype}")
    if arr.dtype.kind == "f":
        flat = arr.ravel()
        bad = np.flatnonzero(~np.isfinite(flat) | (flat != np.round(flat)))
        if bad.size:
            raise ValueError(f"{field} must hold integer ids; entry {int(bad[0])} is {float(flat[bad[0]])!r}")
    if arr.size == 0 and ndim == 2 and arr.ndim != 2:
        arr = arr.reshape(2, 0)
    if arr.ndim != ndim:
        raise ValueError(f"{field} must be {ndim}-D, got shape {arr.shape}")
    if arr.dtype.kind == "u" and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
        raise ValueError(f"{field} holds ids beyond int64")
    return np.ascontiguousarray(arr, dtype=np.int64)


def check_ids(arr: np.ndarray, num_nodes: int, field: str) -> None:
    """Every value in [0, num_nodes); names the first bad position. Scans _CHUNK values at a time, so its
    temporaries stay bounded on a split of millions of ids."""
    flat = arr.ravel()
    for lo in range(0, flat.size, _CHUNK):
        part = flat[lo:lo + _CHUNK]
        bad = np.flatnonzero((part < 0) | (part >= num_nodes))
        if bad.size:
            i = lo + int(bad[0])
            where = f"index {i}" if arr.ndim == 1 else f"[{i // arr.shape[-1]}, {i % arr.shape[-1]}]"
            raise ValueError(f"{field}: node id {int(flat[i])} at {where} is out of range [0, {num_nodes})")


def check_unique(arr: np.ndarray, field: str) -> None:
    order = np.argsort(arr, kind="stable")
    s = arr[order]
    dup = np.flatnonzero(s[1:] == s[:-1])
    if dup.size:
        i = int(order[dup[0] + 1])
        raise ValueError(f"{field}: node id {int(arr[i])} at index {i} appears more than once")


def _as_node_ids(ids) -> np.ndarray | list[str]:
    """int64 [N] for integer ids, a list of N str for string ids; anything else is refused."""
    if isinstance(ids, np.ndarray) and ids.dtype.kind in "iu":
        return as_int64(ids, "node_ids", allow_float=False)
    out = list(ids)
    for i, v in enumerate(out):
        if not isinstance(v, str):
            raise ValueError(f"node_ids[{i}] must be a string (or pass an integer array), got {type(v).__name__}")
    return out


def check_finite(arr: np.ndarray, field: str) -> None:
    """No NaN/inf; names the first bad row (node)."""
    a = np.asarray(arr)
    if a.dtype.kind not in "fc" or a.size == 0:
        return
    flat = a.reshape(a.shape[0], -1) if a.ndim > 1 else a.reshape(-1, 1)
    bad_rows = np.flatnonzero(~np.isfinite(flat).all(axis=1))
    if bad_rows.size:
        raise ValueError(f"{field}: non-finite value (NaN or inf) in row {int(bad_rows[0])}")


def check_canonical_csr(indptr: np.ndarray, indices: np.ndarray, num_nodes: int, field: str = "graph") -> None:
    """Memory safety (the C++ check_csr), then the shared conventions: sorted neighbours, no duplicate
    or self-loop entries, and symmetry (every stored edge has its reverse). One C++ pass with O(1) extra
    memory (csrc/graph/csr_canonical.h); its NumPy reference is in benchmarks/bench_load.py."""
    from mlaga_fast import _C

    arrays = {"indptr": to_numpy(indptr, "indptr"), "indices": to_numpy(indices, "indices")}
    for name, a in arrays.items():
        if a.dtype.kind not in "iu":  # a float or bool array is refused, never cast to ids
            raise ValueError(f"{field}: {name} must be int32 or int64, got dtype '{a.dtype}'")
    indptr, indices = (np.ascontiguousarray(a, dtype=np.int64) for a in arrays.values())
    try:
        kind, i = _C.csr_violation(indptr, indices, int(num_nodes))
    except ValueError as e:
        raise ValueError(f"{field}: {e}") from None
    if kind == 0:
        return
    row = int(np.searchsorted(indptr, i, side="right")) - 1  # the row that stores entry i
    if kind == 1:
        raise ValueError(f"{field}.indices: self-loop on node {row} at index {i}")
    if kind in (2, 3):
        what = "duplicate" if kind == 2 else "unsorted"
        raise ValueError(f"{field}.indices: {what} neighbour {int(indices[i])} of node {row} at index {i}")
    raise ValueError(f"{field}.indices: edge ({row}, {int(indices[i])}) at index {i} has no reverse "
                     "edge; the graph must be symmetric (undirected)")


def csr_rows(indptr: np.ndarray) -> np.ndarray:
    """int64 [E]: the row (source node) of every stored edge."""
    return np.repeat(np.arange(indptr.shape[0] - 1, dtype=np.int64), np.diff(indptr))


def csr_keys(indptr: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Sorted int64 keys row * N + col of the stored edges of a canonical CSR."""
    return csr_rows(indptr) * np.int64(indptr.shape[0] - 1) + np.asarray(indices, dtype=np.int64)


def pairs_in_csr(indptr: np.ndarray, indices: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """bool [M]: whether each (u, v) column of ``pairs`` [2, M] is a stored edge of a CSR whose rows are
    sorted (every loaded graph's are). A binary search in row u per pair (C++, no E-sized temporaries)."""
    from mlaga_fast import _C

    pairs = np.asarray(pairs)
    indptr = np.ascontiguousarray(indptr, dtype=np.int64)
    return _C.csr_has_pairs(indptr, np.ascontiguousarray(indices, dtype=np.int64), indptr.shape[0] - 1,
                            np.ascontiguousarray(pairs[0], dtype=np.int64),
                            np.ascontiguousarray(pairs[1], dtype=np.int64))


# ----------------------------------------------------------------------------------- building


def symmetrize(src, dst, num_nodes: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Edge list -> canonical symmetric CSR. Returns (indptr, indices, counts) where counts has
    stored_edges, self_loops_dropped and duplicates_merged (a pair given twice, in either
    direction, is one undirected edge)."""
    src = as_int64(src, "src")
    dst = as_int64(dst, "dst")
    if src.shape != dst.shape:
        raise ValueError(f"src and dst differ in length ({src.shape[0]} vs {dst.shape[0]})")
    if num_nodes < 0:
        raise ValueError(f"num_nodes must be >= 0, got {num_nodes}")
    check_ids(src, num_nodes, "src")
    check_ids(dst, num_nodes, "dst")
    n = np.int64(num_nodes)
    loop = src == dst
    u = np.minimum(src[~loop], dst[~loop])
    v = np.maximum(src[~loop], dst[~loop])
    pair_key = np.unique(u * n + v)  # [P] one key per undirected pair
    counts = {"stored_edges": int(src.shape[0]), "self_loops_dropped": int(loop.sum()),
              "duplicates_merged": int(u.shape[0] - pair_key.shape[0])}
    pu, pv = pair_key // n, pair_key % n
    both = np.sort(np.concatenate([pu * n + pv, pv * n + pu]))  # [2P] both directions, row-major
    rows, cols = both // n, both % n
    indptr = np.zeros(num_nodes + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=num_nodes), out=indptr[1:])
    return indptr, np.ascontiguousarray(cols, dtype=np.int64), counts


def undirected_pairs(indptr: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """int64 [2, E/2]: each undirected edge once, as (u, v) with u < v, sorted."""
    rows = csr_rows(indptr)
    keep = rows < indices
    return np.stack([rows[keep], np.asarray(indices, dtype=np.int64)[keep]])


# ----------------------------------------------------------------------------------- link split


@dataclass
class LinkSplit:
    """Link-prediction split; every field is int64 [2, M] (row 0 sources, row 1 targets)."""

    train_pos: np.ndarray
    val_pos: np.ndarray
    val_neg: np.ndarray
    test_pos: np.ndarray
    test_neg: np.ndarray

    def __post_init__(self) -> None:
        for f in LINK_FIELDS:
            arr = as_int64(getattr(self, f), f"link_split.{f}", ndim=2)
            if arr.shape[0] != 2:
                raise ValueError(f"link_split.{f} must have shape [2, M], got {arr.shape}")
            setattr(self, f, arr)

    def arrays(self) -> dict[str, np.ndarray]:
        return {f: getattr(self, f) for f in LINK_FIELDS}

    def validate(self, indptr: np.ndarray, indices: np.ndarray) -> None:
        """Positives are edges of the full graph, negatives are not; negatives match positives in
        number; no self-loops; held-out positives are not repeated in train_pos. Pairs are checked
        _CHUNK columns at a time, so the check's temporaries do not grow with the split (at 1M nodes the
        whole-array version peaked at 200 MiB)."""
        n = indptr.shape[0] - 1
        for f in LINK_FIELDS:
            arr = getattr(self, f)
            check_ids(arr, n, f"link_split.{f}")
            want_edge = f.endswith("_pos")
            for lo in range(0, arr.shape[1], _CHUNK):
                part = arr[:, lo:lo + _CHUNK]
                loops = np.flatnonzero(part[0] == part[1])
                if loops.size:
                    raise ValueError(f"link_split.{f}: self-loop at column {lo + int(loops[0])}")
                bad = np.flatnonzero(pairs_in_csr(indptr, indices, part) != want_edge)
                if bad.size:
                    i = int(bad[0])
                    what = "is not an edge of the graph" if want_edge else "is an edge of the graph"
                    raise ValueError(f"link_split.{f}: pair ({int(part[0, i])}, {int(part[1, i])}) at column {lo + i} "
                                     f"{what}")
        for part in ("val", "test"):
            p, q = getattr(self, f"{part}_pos"), getattr(self, f"{part}_neg")
            if p.shape[1] != q.shape[1]:
                raise ValueError(f"link_split.{part}_neg has {q.shape[1]} pairs but {part}_pos has {p.shape[1]}")
        held = np.sort(_pair_keys(np.concatenate([self.val_pos, self.test_pos], axis=1), n))  # [H]
        for lo in range(0, self.train_pos.shape[1] if held.size else 0, _CHUNK):
            tr = _pair_keys(self.train_pos[:, lo:lo + _CHUNK], n)  # np.isin here would sort chunk + held each time
            clash = np.flatnonzero(held[np.minimum(np.searchsorted(held, tr), held.size - 1)] == tr)
            if clash.size:
                i = lo + int(clash[0])
                raise ValueError(f"link_split.train_pos: pair ({int(self.train_pos[0, i])}, {int(self.train_pos[1, i])}) "
                                 f"at column {i} is also a held-out (val/test) positive")


def _pair_keys(pairs: np.ndarray, n: int) -> np.ndarray:
    """Direction-free int64 key per pair: min * n + max."""
    return np.minimum(pairs[0], pairs[1]) * np.int64(n) + np.maximum(pairs[0], pairs[1])


def _utf8(strings) -> Iterable[bytes]:
    """The UTF-8 bytes of each string; a TextBlob's are sliced from its file without decoding."""
    return strings.encoded() if isinstance(strings, TextBlob) else (t.encode("utf-8") for t in strings)


# ----------------------------------------------------------------------------------- the graph


class MultimodalGraph:
    """See module docstring. Fields follow the shared contract (mlaga_fast.data)."""

    def __init__(self, name: str, indptr, indices, *, texts: Iterable[str] | None = None,
                 images: ImageSource | None = None, labels=None, class_names: list[str] | None = None,
                 train=None, val=None, test=None, link_split: LinkSplit | None = None,
                 stats: dict | None = None, features: dict[str, np.ndarray] | None = None,
                 meta: dict | None = None, fingerprint: str | None = None, node_ids=None,
                 validate: bool = True):
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        self.name = name
        self.indptr = as_int64(indptr, "indptr", allow_float=False)  # a float graph is a corrupted file
        self.indices = as_int64(indices, "indices", allow_float=False)
        n = self.indptr.shape[0] - 1
        if n < 0:
            raise ValueError("indptr must have at least one entry (num_nodes + 1)")
        # A TextBlob (a loaded dataset's texts, decoded on demand) is kept as it is; anything else is copied.
        self.texts = texts if isinstance(texts, TextBlob) or texts is None else [
            ("" if t is None else t) for t in texts]
        self.images = images
        self.labels = np.full(n, -1, np.int64) if labels is None else as_int64(labels, "labels")
        self.class_names = list(class_names) if class_names is not None else None
        if self.class_names is None:
            k = int(self.labels.max()) + 1 if self.labels.size and self.labels.max() >= 0 else 0
            self.class_names = [f"class_{i}" for i in range(k)]
        empty = np.zeros(0, np.int64)
        self.train = empty if train is None else as_int64(train, "train")
        self.val = empty if val is None else as_int64(val, "val")
        self.test = empty if test is None else as_int64(test, "test")
        self.link_split = link_split
        # The user's own node ids (int64 [N], or N strings), kept when a source file named nodes by ids that
        # are not 0..N-1 (`data prepare --format table`); None when node i is simply node i.
        self.node_ids = node_ids if node_ids is None or isinstance(node_ids, TextBlob) else _as_node_ids(node_ids)
        self.stats = dict(stats or {})
        self.features = dict(features or {})
        self.meta = dict(meta or {})
        self._fingerprint = fingerprint
        self._train_graph: tuple[np.ndarray, np.ndarray] | None = None
        self._lock = threading.Lock()
        self.image_failures: dict[int, str] = {}  # node -> reason, for images replaced at load time
        if validate:
            self.validate()

    @classmethod
    def from_edges(cls, name: str, src, dst, num_nodes: int, **kw) -> "MultimodalGraph":
        """Build from an edge list stored once per pair: symmetrise, merge duplicates, drop
        self-loops; the counts land in ``stats``."""
        indptr, indices, counts = symmetrize(src, dst, int(num_nodes))
        stats = dict(kw.pop("stats", None) or {})
        stats.update(counts)
        return cls(name, indptr, indices, stats=stats, **kw)

    # ---- sizes
    @property
    def num_nodes(self) -> int:
        return int(self.indptr.shape[0] - 1)

    @property
    def num_edges(self) -> int:
        """Undirected edges, each counted once."""
        return int(self.indices.shape[0] // 2)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def node_id(self, i: int):
        """The user's id of node ``i`` (int or str): ``node_ids[i]``, or ``i`` when the dataset keeps no
        mapping."""
        if self.node_ids is None:
            return int(i)
        v = self.node_ids[int(i)]
        return v if isinstance(v, str) else int(v)

    def edge_pairs(self) -> np.ndarray:
        """int64 [2, num_edges]: each undirected edge once, (u, v) with u < v."""
        return undirected_pairs(self.indptr, self.indices)

    # ---- validation
    def validate(self) -> None:
        n = self.num_nodes
        check_canonical_csr(self.indptr, self.indices, n)
        if self.texts is not None:
            if len(self.texts) != n:
                raise ValueError(f"texts has {len(self.texts)} entries for {n} nodes"
                                 f" (first missing index {min(len(self.texts), n)})")
            for i, t in enumerate(() if isinstance(self.texts, TextBlob) else self.texts):  # a blob holds str
                if not isinstance(t, str):
                    raise ValueError(f"texts[{i}] must be a string, got {type(t).__name__}")
        if self.images is not None:
            if not isinstance(self.images, ImageSource):
                raise ValueError(f"images must be an ImageSource, got {type(self.images).__name__}")
            if len(self.images) != n:
                raise ValueError(f"images has {len(self.images)} entries for {n} nodes")
        if self.labels.shape != (n,):
            raise ValueError(f"labels has {self.labels.shape[0]} entries for {n} nodes"
                             f" (first bad index {min(self.labels.shape[0], n)})")
        for i, c in enumerate(self.class_names):
            if not isinstance(c, str):
                raise ValueError(f"class_names[{i}] must be a string")
        bad = np.flatnonzero((self.labels < -1) | (self.labels >= len(self.class_names)))
        if bad.size:
            i = int(bad[0])
            raise ValueError(f"labels: value {int(self.labels[i])} at index {i} is outside [-1, "
                             f"{len(self.class_names)}) (num classes = len(class_names))")
        owner = np.full(n, -1, np.int8)
        for k, f in enumerate(("train", "val", "test")):
            arr = getattr(self, f)
            check_ids(arr, n, f)
            check_unique(arr, f)
            clash = np.flatnonzero(owner[arr] >= 0)
            if clash.size:
                i = int(clash[0])
                other = ("train", "val", "test")[owner[arr[i]]]
                raise ValueError(f"{f}: node {int(arr[i])} at index {i} is also in {other}")
            owner[arr] = k
        for key, arr in self.features.items():
            a = np.asarray(arr)
            if a.ndim < 1 or a.shape[0] != n:
                raise ValueError(f"features[{key!r}] has {a.shape[0] if a.ndim else 0} rows for {n} nodes")
            check_finite(a, f"features[{key!r}]")
        if self.node_ids is not None:
            if len(self.node_ids) != n:
                raise ValueError(f"node_ids has {len(self.node_ids)} entries for {n} nodes")
            if isinstance(self.node_ids, np.ndarray):  # string ids are checked to be unique where they are read
                check_unique(self.node_ids, "node_ids")
        if self.link_split is not None:
            if not isinstance(self.link_split, LinkSplit):
                raise ValueError("link_split must be a LinkSplit")
            self.link_split.validate(self.indptr, self.indices)

    # ---- structure used for training and retrieval
    def train_graph(self) -> tuple[np.ndarray, np.ndarray]:
        """(indptr, indices) without the val/test positive edges (both directions); the full graph
        when there is no link split. Everything that trains or retrieves must use this."""
        if self.link_split is None:
            return self.indptr, self.indices
        with self._lock:
            if self._train_graph is None:
                n = self.num_nodes
                ls = self.link_split
                held = np.concatenate([ls.val_pos, ls.test_pos], axis=1)  # [2, H]
                drop = np.concatenate([held[0] * n + held[1], held[1] * n + held[0]])
                key = csr_keys(self.indptr, self.indices)
                keep = ~np.isin(key, drop)
                rows = key[keep] // n
                indptr = np.zeros(n + 1, dtype=np.int64)
                np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
                self._train_graph = (indptr, np.ascontiguousarray(self.indices[keep]))
            return self._train_graph

    def set_link_split(self, split: LinkSplit | None) -> None:
        if split is not None:
            split.validate(self.indptr, self.indices)
        self.link_split = split
        self._train_graph = None
        self._fingerprint = None

    # ---- images
    def load_image(self, i: int):
        """RGB PIL image of node ``i``; a neutral grey placeholder (and a count in
        ``image_failures``) when the image is missing or does not decode."""
        if self.images is None:
            raise ValueError(f"dataset {self.name!r} has no images")
        i = int(i)
        if not 0 <= i < self.num_nodes:
            raise ValueError(f"node id {i} is out of range [0, {self.num_nodes})")
        try:
            img = self.images.open(i)
            return img.convert("RGB") if img.mode != "RGB" else img
        except ImageUnavailable as e:
            self.image_failures[i] = f"missing: {e}"
        except Exception as e:  # noqa: BLE001 - any decoder failure means "corrupt", never a crash
            self.image_failures[i] = f"corrupt: {type(e).__name__}: {e}"
        return placeholder_image()

    # ---- identity
    def compute_fingerprint(self) -> str:
        """sha256 over the name and every array that defines the dataset (graph, texts, labels,
        class names, node splits, link split, features, image source identity)."""
        import json

        h = hashlib.sha256()

        def put(tag: str, arr: np.ndarray) -> None:
            a = np.ascontiguousarray(arr)
            h.update(f"{tag}|{a.dtype.str}|{a.shape}|".encode())
            h.update(a.tobytes())

        h.update(f"name|{self.name}|".encode())
        put("indptr", self.indptr)
        put("indices", self.indices)
        put("labels", self.labels)
        for f in ("train", "val", "test"):
            put(f, getattr(self, f))
        h.update(json.dumps(self.class_names).encode())
        if self.texts is not None:
            h.update(b"texts|")
            for b in _utf8(self.texts):
                h.update(len(b).to_bytes(8, "little"))
                h.update(b)
        if self.link_split is not None:
            for f, a in self.link_split.arrays().items():
                put(f"link.{f}", a)
        if isinstance(self.node_ids, np.ndarray):  # hashed only when present: older fingerprints stay valid
            put("node_ids", self.node_ids)
        elif self.node_ids is not None:
            h.update(b"node_ids|")
            for b in _utf8(self.node_ids):
                h.update(len(b).to_bytes(8, "little"))
                h.update(b)
        for key in sorted(self.features):
            put(f"feat.{key}", np.asarray(self.features[key]))
        if self.images is not None:
            h.update(json.dumps(self.images.identity(), sort_keys=True, default=str).encode())
        return h.hexdigest()

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = self.compute_fingerprint()
        return self._fingerprint

    def __getstate__(self) -> dict:
        # DataLoader workers under spawn/forkserver pickle the graph; a lock cannot travel.
        state = dict(self.__dict__)
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"MultimodalGraph(name={self.name!r}, nodes={self.num_nodes}, edges={self.num_edges}, "
                f"classes={len(self.class_names)}, texts={self.texts is not None}, "
                f"images={self.images.kind if self.images is not None else None}, "
                f"link_split={self.link_split is not None})")

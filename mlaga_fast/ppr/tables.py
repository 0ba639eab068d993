"""PPR on datasets: the MultimodalGraph wrapper, top-k tables on disk and their cache.

Everything here runs on ``graph.train_graph()`` (validation/test link-prediction edges removed),
so retrieved demonstrations never see held-out edges.
"""
from __future__ import annotations

import io
import json
import threading
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from mlaga_fast._version import __version__
from mlaga_fast.ppr.graph import PprGraph, check_table_memory
from mlaga_fast.ppr.options import DEFAULT_ALPHA, DEFAULT_EPS, DEFAULT_K, as_int, mask_array, resolve_device, sources_array
from mlaga_fast.utils.arrays import to_numpy

TABLE_FORMAT = "mlaga_fast.ppr_table/1"

# graph -> (train indptr, train indices, PprGraph): prepared once per graph object, and again only
# when its train graph changes (set_link_split builds new arrays).
_PREPARED: "weakref.WeakKeyDictionary[Any, tuple]" = weakref.WeakKeyDictionary()
_PREPARED_LOCK = threading.Lock()


def prepared_graph(graph) -> PprGraph:
    """``graph.train_graph()`` as a PprGraph (validated, private, locality-ordered), cached."""
    indptr, indices = graph.train_graph()
    with _PREPARED_LOCK:
        hit = _PREPARED.get(graph)
        if hit is not None and hit[0] is indptr and hit[1] is indices:
            return hit[2]
    prepared = PprGraph(indptr, indices)
    with _PREPARED_LOCK:
        _PREPARED[graph] = (indptr, indices, prepared)
    return prepared


def source_ids(graph, rule) -> np.ndarray:
    """Node ids for a sources rule: 'train' | 'val' | 'test' | 'all', or an explicit id array."""
    if isinstance(rule, str):
        if rule == "all":
            return np.arange(graph.num_nodes, dtype=np.int64)
        if rule in ("train", "val", "test"):
            return np.ascontiguousarray(getattr(graph, rule), dtype=np.int64)
        raise ValueError(f"sources must be 'train', 'val', 'test', 'all' or an id array, got {rule!r}")
    return sources_array(rule)


def candidate_mask(graph, rule) -> np.ndarray | None:
    """Candidates for a rule: 'train' (labelled training nodes: demonstrations must never leak
    val/test labels), 'all' (None: every node), or an explicit bool mask [N]."""
    if rule is None or (isinstance(rule, str) and rule == "all"):
        return None
    if isinstance(rule, str):
        if rule != "train":
            raise ValueError(f"candidates must be 'train', 'all' or a bool mask, got {rule!r}")
        mask = np.zeros(graph.num_nodes, dtype=bool)
        train = np.asarray(graph.train, dtype=np.int64)
        mask[train] = True
        labels = np.asarray(graph.labels)
        mask &= labels >= 0
        return mask
    return mask_array(rule, graph.num_nodes)


def _rule_tag(rule) -> str:
    from mlaga_fast.utils.io import fingerprint

    if rule is None or isinstance(rule, str):
        return str(rule if rule is not None else "all")
    arr = np.ascontiguousarray(to_numpy(rule, "rule"))
    return f"array:{fingerprint([str(arr.dtype), list(arr.shape), arr.tobytes().hex()])}"


def ppr_topk_graph(graph, sources, **kw):
    """ppr_topk on ``graph.train_graph()`` (val/test link-prediction edges removed), so neither
    demonstrations nor link features see held-out edges. Keyword arguments as for PprGraph.topk;
    the prepared graph is cached per graph object."""
    return prepared_graph(graph).topk(sources, **kw)


def table_meta(graph, *, alpha: float, eps: float, k: int, sources="train", candidates="train",
               exclude_source: bool = True) -> dict[str, Any]:
    """What a cached table must agree on to be reused (the device and thread count do not matter:
    every kernel meets the same guarantee)."""
    return {
        "format": TABLE_FORMAT,
        "alpha": float(alpha),
        "eps": float(eps),
        "k": int(k),
        "exclude_source": bool(exclude_source),
        "sources": _rule_tag(sources),
        "candidates": _rule_tag(candidates),
        "graph": "train_graph",
        "graph_name": getattr(graph, "name", None),
        "graph_fingerprint": graph.fingerprint,
        "mlaga_fast_version": __version__,
    }


def save_table(path, sources, idx, val, meta: dict) -> None:
    """Atomically write a top-k table (.npz with sources [S], idx [S, k], val [S, k] and the meta
    dict as JSON)."""
    from mlaga_fast.utils.io import atomic_write_bytes

    sources = np.ascontiguousarray(to_numpy(sources, "sources"), dtype=np.int64)
    idx = np.ascontiguousarray(to_numpy(idx, "idx"), dtype=np.int64)
    val = np.ascontiguousarray(to_numpy(val, "val"), dtype=np.float32)
    if idx.ndim != 2 or idx.shape != val.shape or idx.shape[0] != sources.shape[0]:
        raise ValueError(f"table shapes disagree: sources {sources.shape}, idx {idx.shape}, val {val.shape}")
    meta = dict(meta)
    meta.setdefault("format", TABLE_FORMAT)
    meta.setdefault("mlaga_fast_version", __version__)
    meta["num_sources"] = int(sources.shape[0])
    buf = io.BytesIO()
    np.savez(buf, sources=sources, idx=idx, val=val,
             meta=np.frombuffer(json.dumps(meta, sort_keys=True).encode("utf-8"), dtype=np.uint8))
    atomic_write_bytes(path, buf.getvalue())


def load_table(path):
    """(sources int64 [S], idx int64 [S, k], val float32 [S, k], meta dict) from save_table."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"PPR table not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            sources, idx, val = z["sources"], z["idx"], z["val"]
            meta = json.loads(z["meta"].tobytes().decode("utf-8"))
    except (KeyError, ValueError, OSError) as e:
        raise ValueError(f"{path} is not a PPR table written by save_table: {e}") from e
    if meta.get("format") != TABLE_FORMAT:
        raise ValueError(f"{path}: unknown PPR table format {meta.get('format')!r} (expected {TABLE_FORMAT})")
    if idx.ndim != 2 or idx.shape != val.shape or idx.shape[0] != sources.shape[0]:
        raise ValueError(f"{path}: table shapes disagree: sources {sources.shape}, idx {idx.shape}, val {val.shape}")
    return sources, idx, val, meta


def compute_table(graph, *, alpha: float = DEFAULT_ALPHA, eps: float = DEFAULT_EPS, k: int = DEFAULT_K,
                  sources="train", candidates="train", exclude_source: bool = True, device: Any = "cpu",
                  num_threads: int | None = None, chunk: int = 4096, progress: bool = True):
    """(sources, idx, val, meta) for a graph, in chunks of sources so the progress bar moves.

    The graph is prepared (validated, copied, ordered) once, not per chunk, and each chunk writes
    straight into the [S, k] outputs: memory is the table plus O(N + chunk) scratch, whatever the
    number of chunks.
    """
    from tqdm.auto import tqdm

    k = as_int(k, "k", lo=1)
    chunk = as_int(chunk, "chunk", lo=1)
    dev = resolve_device(device)
    src = source_ids(graph, sources)
    mask = candidate_mask(graph, candidates)
    prepared = prepared_graph(graph)
    check_table_memory(src.shape[0], k)
    idx = np.full((src.shape[0], k), -1, dtype=np.int64)
    val = np.zeros((src.shape[0], k), dtype=np.float32)
    kw = dict(alpha=alpha, eps=eps, k=k, candidates=mask, exclude_source=exclude_source, device=dev,
              num_threads=num_threads)
    with tqdm(total=int(src.shape[0]), desc="ppr", unit="src", disable=not progress) as bar:
        for lo in range(0, src.shape[0], chunk):
            hi = min(lo + chunk, src.shape[0])
            if dev == "cpu":
                prepared.topk(src[lo:hi], out=(idx[lo:hi], val[lo:hi]), **kw)
            else:
                i, v = prepared.topk(src[lo:hi], **kw)
                idx[lo:hi] = i.cpu().numpy()
                val[lo:hi] = v.cpu().numpy()
            bar.update(hi - lo)
    meta = table_meta(graph, alpha=alpha, eps=eps, k=k, sources=sources, candidates=candidates,
                      exclude_source=exclude_source)
    return src, idx, val, meta


def cached_topk(graph, cache_path, *, alpha: float = DEFAULT_ALPHA, eps: float = DEFAULT_EPS,
                k: int = DEFAULT_K, sources="train", candidates="train", exclude_source: bool = True,
                device: str = "cpu", num_threads: int | None = None, progress: bool = False):
    """(sources, idx, val) from ``cache_path`` when its meta matches this graph and these
    parameters (alpha, eps, k, rules, graph fingerprint, package version); otherwise recompute and
    atomically rewrite the cache."""
    want = table_meta(graph, alpha=alpha, eps=eps, k=k, sources=sources, candidates=candidates,
                      exclude_source=exclude_source)
    cache_path = Path(cache_path)
    if cache_path.is_file():
        try:
            src, idx, val, meta = load_table(cache_path)
            if all(meta.get(key) == value for key, value in want.items()):
                return src, idx, val
        except ValueError:
            pass  # unreadable or foreign cache: recompute below
    src, idx, val, meta = compute_table(graph, alpha=alpha, eps=eps, k=k, sources=sources,
                                        candidates=candidates, exclude_source=exclude_source,
                                        device=device, num_threads=num_threads, progress=progress)
    save_table(cache_path, src, idx, val, meta)
    return src, idx, val

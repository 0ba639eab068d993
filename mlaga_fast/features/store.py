"""On-disk layout of cached encoder features, and the reader.

FEATDIR/
  manifest.json                 header (encoder, dims, dtype, N, shard_size, fingerprints) + finished shards
  shard_00000.image.npy         fp16 [n, Li, Di]   (absent when the image modality is absent)
  shard_00000.text.npy          fp16 [n, Lt, Dt]
  shard_00000.text_mask.npy     bool [n, Lt]       True = real token
  shard_00000.done.json         written last: the shard's range, file sizes and sha256
  pooled.npy / pooled.json      optional cache of FeatureStore.pooled()

Shard i holds nodes [i * shard_size, min((i + 1) * shard_size, N)). Every file goes through a temp name
and a rename, the done record is written after its arrays, and the manifest lists a shard only after its
done record exists, so a crash can never leave a shard that reads as valid. Image tokens are all valid
for every encoder we ship (fixed patch grid), so the image mask is not stored; ``get`` returns all-True.

Opening a store checks, for every shard, its done record, each file's size and .npy header, and the text
masks (a damaged header or a truncated file is refused). The sha256 of every file (recorded at extraction)
is compared only with ``FeatureStore(path, verify=True)`` (``mlaga-fast features --verify``): hashing
streams every byte, 0.35-0.65 GB/s measured here (benchmarks/bench_verify_features.py: 1M nodes of
tiny-encoder features, 2.1 GB, open 0.6 s, verify 6 s; ViT-L-sized tokens ~16 min per 1M nodes), too slow
for every open; a flipped byte inside the data needs this full check.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from mlaga_fast.utils.arrays import to_numpy
from mlaga_fast.utils.io import atomic_np_save, atomic_write_json, fingerprint, npy_header, sha256_file

FORMAT = "mlaga_fast.features/1"
MANIFEST = "manifest.json"
# Header keys that must agree between a half-finished directory and a run that wants to resume it.
RESUME_KEYS = ("format", "encoder", "image", "text", "dtype", "precision", "num_nodes", "shard_size",
               "graph_fingerprint", "mlaga_fast_version")


def shard_name(i: int, part: str) -> str:
    return f"shard_{i:05d}.{part}"


def shard_parts(manifest: dict) -> list:
    """Array files of one shard, by part name."""
    parts = []
    if manifest.get("image"):
        parts.append("image")
    if manifest.get("text"):
        parts += ["text", "text_mask"]
    return parts


def features_fingerprint(header: dict) -> str:
    """What the features are, independent of how they are laid out in shards."""
    keys = ("format", "encoder", "encoder_info", "image", "text", "dtype", "precision", "num_nodes",
            "graph_fingerprint", "mlaga_fast_version")
    return fingerprint({k: header.get(k) for k in keys})


def read_manifest(path: str | os.PathLike) -> dict:
    p = Path(path) / MANIFEST
    try:
        man = json.loads(p.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"features: no {MANIFEST} in {path}; run `mlaga-fast features` first") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"features: {p} is not valid JSON ({e})") from None
    if not isinstance(man, dict):
        raise ValueError(f"features: {p} must hold a JSON object, got a JSON {type(man).__name__}")
    if man.get("format") != FORMAT:
        raise ValueError(f"features: {p} has format {man.get('format')!r}, expected {FORMAT!r}")
    return man


def _header_sizes(path: Path, m: dict) -> tuple[int, int, int]:
    """(num_nodes, shard_size, num_shards) from a manifest, checked to be consistent integers."""
    vals = [m.get(k) for k in ("num_nodes", "shard_size", "num_shards")]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in vals) or \
            vals[2] != -(-vals[0] // vals[1]):
        raise ValueError(f"features: {path / MANIFEST}: num_nodes, shard_size, num_shards {vals} are not "
                         "consistent positive integers")
    return vals[0], vals[1], vals[2]


def _modality(path: Path, m: dict, key: str) -> tuple[int, int]:
    """(tokens, dim) of a modality header, (0, 0) when absent."""
    h = m.get(key)
    if not h:
        return 0, 0
    ok = isinstance(h, dict) and all(isinstance(h.get(k), int) and not isinstance(h.get(k), bool) and h[k] >= 1
                                     for k in ("tokens", "dim"))
    if not ok:
        raise ValueError(f"features: {path / MANIFEST}: {key} must be {{tokens, dim}} positive integers, got {h!r}")
    return h["tokens"], h["dim"]


def shard_is_done(root: Path, manifest: dict, i: int) -> bool:
    """True when shard i's done record exists and every file it names has the recorded size."""
    try:
        with open(root / shard_name(i, "done.json"), encoding="utf-8") as f:
            rec = json.load(f)
    except (OSError, ValueError):  # unreadable, not JSON, not UTF-8
        return False
    if not isinstance(rec, dict):
        return False
    S, N = manifest["shard_size"], manifest["num_nodes"]
    if rec.get("index") != i or rec.get("start") != i * S or rec.get("stop") != min((i + 1) * S, N):
        return False
    files = rec.get("files", {})
    if sorted(files) != sorted(shard_parts(manifest)):
        return False
    for part, size in files.items():
        f = root / shard_name(i, f"{part}.npy")
        if not f.is_file() or f.stat().st_size != size:
            return False
    return True


def _recorded_sizes(done: Path) -> dict:
    """{part: size} of a shard's done record ({} when it cannot be read)."""
    try:
        files = json.loads(done.read_text(encoding="utf-8")).get("files")
    except (OSError, ValueError, AttributeError):
        return {}
    return files if isinstance(files, dict) else {}


def pool_tokens(image: np.ndarray | None, text: np.ndarray | None, text_mask: np.ndarray | None) -> np.ndarray:
    """float32 [c, Di + Dt]: per modality the mean over its valid tokens, image first. image [c, Li, Di]
    (every token valid), text [c, Lt, Dt] with text_mask [c, Lt]; a node without text gets zeros there."""
    parts = []
    if image is not None:
        parts.append(np.asarray(image).astype(np.float32).mean(axis=1))
    if text is not None:
        txt, msk = np.asarray(text).astype(np.float32), np.asarray(text_mask)
        cnt = np.maximum(msk.sum(axis=1, keepdims=True), 1).astype(np.float32)  # [c, 1]
        parts.append((txt * msk[..., None]).sum(axis=1) / cnt)
    return np.concatenate(parts, axis=1)


class FeatureReader:
    """What every features source shares (FeatureStore, OnlineFeatures): its identity from its manifest, the
    check of the node ids asked for, the layout of a batch, and the torch view of it. A source sets
    manifest, num_nodes, image_len/image_dim, text_len/text_dim and implements get_numpy."""

    manifest: dict
    num_nodes: int
    image_len: int
    image_dim: int
    text_len: int
    text_dim: int

    def _check_idx(self, idx: Any) -> np.ndarray:
        """int64 [n] node ids (a scalar is one id), refused with a one-line error when not 1-D integers in
        [0, num_nodes)."""
        arr = to_numpy(idx, "idx")
        if arr.ndim == 0:
            arr = arr.reshape(1)
        if arr.ndim != 1:
            raise ValueError(f"idx: expected a 1-D array of node ids, got shape {arr.shape}")
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"idx: expected integer node ids, got dtype {arr.dtype}")
        arr = arr.astype(np.int64, copy=False)
        bad = np.flatnonzero((arr < 0) | (arr >= self.num_nodes))
        if bad.size:
            raise ValueError(
                f"idx: node id {int(arr[bad[0]])} at position {int(bad[0])} is outside [0, {self.num_nodes})")
        return arr

    def _empty_batch(self, n: int) -> dict[str, np.ndarray]:
        """The batch layout every source fills: image [n, Li, Di] fp16 (every image token real), text
        [n, Lt, Dt] fp16 with its mask [n, Lt] (False = padding); an absent modality has zero tokens."""
        return {
            "image": np.zeros((n, self.image_len, self.image_dim), np.float16),
            "image_mask": np.ones((n, self.image_len), bool),
            "text": np.zeros((n, self.text_len, self.text_dim), np.float16),
            "text_mask": np.zeros((n, self.text_len), bool),
        }

    def get_numpy(self, idx: Any) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def get(self, idx: Any) -> dict:
        """Features of nodes ``idx`` (int array/tensor, any order, repeats allowed).

        Returns dict(image=[n, Li, Di] fp16, image_mask=[n, Li] bool, text=[n, Lt, Dt] fp16,
        text_mask=[n, Lt] bool) as torch CPU tensors; an absent modality has zero tokens.
        """
        import torch

        return {k: torch.from_numpy(v) for k, v in self.get_numpy(idx).items()}

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    @property
    def encoder(self) -> str:
        return self.manifest["encoder"]

    def __len__(self) -> int:
        return self.num_nodes


class FeatureStore(FeatureReader):
    """Read-only view of a finished features directory; rows are read lazily from memory maps."""

    def __init__(self, path: str | os.PathLike, *, verify: bool = False) -> None:
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        m = self.manifest
        if not m.get("complete"):
            raise ValueError(
                f"features: {self.path} is incomplete ({len(m.get('shards', []))}/{m.get('num_shards')} shards); "
                f"rerun `mlaga-fast features` with the same arguments to resume"
            )
        self.num_nodes, self.shard_size, self.num_shards = _header_sizes(self.path, m)
        self.image_len, self.image_dim = _modality(self.path, m, "image")
        self.text_len, self.text_dim = _modality(self.path, m, "text")
        for key in ("fingerprint", "encoder"):
            if not isinstance(m.get(key), str):
                raise ValueError(f"features: {self.path / MANIFEST} has no {key} string")
        self._parts = shard_parts(m)
        if not self._parts:
            raise ValueError(f"features: {self.path / MANIFEST} records neither image nor text features")
        self._maps: dict = {}
        self._check_shards()
        if verify:
            self.verify()

    def verify(self) -> bool:
        """Hash every shard file (streamed) and compare with the sha256 its done record holds; a ValueError
        names the first file that differs. Returns False (with a one-line warning) when the folder was
        written before checksums were recorded."""
        unrecorded = 0
        for i in range(self.num_shards):
            done = self.path / shard_name(i, "done.json")
            sums = json.loads(done.read_text(encoding="utf-8")).get("sha256")
            if not isinstance(sums, dict):
                unrecorded += 1
                continue
            for part in self._parts:
                f = self.path / shard_name(i, f"{part}.npy")
                if sha256_file(f) != sums.get(part):
                    raise ValueError(f"features: {f} does not match its checksum (recorded in {done.name}): the "
                                     "file was damaged after extraction; rebuild the folder with "
                                     "`mlaga-fast features --overwrite`")
        if unrecorded:
            print(f"Warning: features {self.path}: {unrecorded} of {self.num_shards} shards record no checksums "
                  "(extracted before mlaga_fast recorded them): they cannot be verified", file=sys.stderr)
        return not unrecorded

    def _check_shards(self) -> None:
        """Every shard the manifest lists is whole: its done record checks out, each array file has the
        header (dtype, shape) this store promises and every byte of it, and every node has a valid text
        token (each shipped tokenizer emits at least its start/end tokens, so an all-False mask row
        means the mask is damaged). Reads headers and the small bool masks only."""
        m = self.manifest
        listed = [s.get("index") if isinstance(s, dict) else None for s in m.get("shards") or []]
        if sorted(x for x in listed if isinstance(x, int)) != list(range(self.num_shards)):
            raise ValueError(f"features: {self.path / MANIFEST} lists shards {listed}, expected "
                             f"0..{self.num_shards - 1}")
        want = {"image": (np.float16, (self.image_len, self.image_dim)),
                "text": (np.float16, (self.text_len, self.text_dim)), "text_mask": (np.bool_, (self.text_len,))}
        for i in range(self.num_shards):
            done = self.path / shard_name(i, "done.json")
            if not shard_is_done(self.path, m, i):
                problem = "is missing" if not done.is_file() else "does not match the shard's files"
                for part, size in _recorded_sizes(done).items():
                    f = self.path / shard_name(i, f"{part}.npy")
                    have = f.stat().st_size if f.is_file() else None
                    if have != size:
                        state = ("missing" if have is None
                                 else f"{have} bytes ({'truncated' if have < size else 'grown'})")
                        problem = f"records {f.name} as {size} bytes, but it is {state}"
                        break
                raise ValueError(f"features: {self.path}: {done.name} {problem}, so shard {i} cannot be trusted; "
                                 f"the folder was modified: rebuild it with `mlaga-fast features --overwrite`")
            rows = min((i + 1) * self.shard_size, self.num_nodes) - i * self.shard_size
            for part in self._parts:
                f = self.path / shard_name(i, f"{part}.npy")
                try:
                    shape, dtype = npy_header(f)
                except ValueError as e:
                    raise ValueError(f"features: {self.path}: {e}") from None
                dt, tail = want[part]
                if dtype != np.dtype(dt) or tuple(shape) != (rows, *tail):
                    raise ValueError(f"features: {self.path}: {f.name} holds {dtype} {list(shape)}, but this store "
                                     f"holds {np.dtype(dt).name} {[rows, *tail]}: the folder was modified")
            if self.text_len:
                empty = np.flatnonzero(~np.asarray(self._map(i, "text_mask")).any(axis=1))
                if empty.size:
                    raise ValueError(f"features: {self.path}: {shard_name(i, 'text_mask.npy')} marks no valid "
                                     f"text token for node {i * self.shard_size + int(empty[0])} (and "
                                     f"{empty.size - 1} more): the mask is damaged")

    def __repr__(self) -> str:
        return (f"FeatureStore({str(self.path)!r}, encoder={self.encoder!r}, N={self.num_nodes}, "
                f"image=[{self.image_len}, {self.image_dim}], text=[{self.text_len}, {self.text_dim}])")

    # Memory maps are per process: drop them when pickled (DataLoader workers re-open lazily), so a
    # worker never receives a copy of the data.
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_maps"] = {}
        return state

    def _map(self, i: int, part: str) -> np.ndarray:
        key = (i, part)
        arr = self._maps.get(key)
        if arr is None:
            arr = np.load(self.path / shard_name(i, f"{part}.npy"), mmap_mode="r")
            self._maps[key] = arr
        return arr

    # --- reading ------------------------------------------------------------------------------
    def get_numpy(self, idx: Any) -> dict:
        """Like ``get`` but returns NumPy arrays (fp16 features, bool masks)."""
        ids = self._check_idx(idx)
        n = ids.size
        out = self._empty_batch(n)
        shard = ids // self.shard_size
        order = np.argsort(shard, kind="stable")
        bounds = np.flatnonzero(np.diff(shard[order])) + 1
        for pos in np.split(order, bounds) if n else []:
            i = int(shard[pos[0]])
            rows = ids[pos] - i * self.shard_size
            # Read shard rows in increasing file order (sequential I/O), then scatter back to the caller's
            # order; only these rows are paged in.
            srt = np.argsort(rows, kind="stable")
            for part in self._parts:
                out[part][pos[srt]] = self._map(i, part)[rows[srt]]
        return out

    # --- pooled features for baselines ----------------------------------------------------------
    def pooled(self, progress: bool = False) -> np.ndarray:
        """float32 [N, Di + Dt]: per modality, the mean over valid tokens, concatenated (image first).

        Computed once shard by shard (memory ~ one shard) and cached atomically as pooled.npy; the cache
        is tied to this store's fingerprint and is recomputed if it does not match.
        """
        cache, meta = self.path / "pooled.npy", self.path / "pooled.json"
        want = {"fingerprint": self.fingerprint, "image_dim": self.image_dim, "text_dim": self.text_dim}
        if cache.is_file() and meta.is_file():
            try:
                ok = json.loads(meta.read_text(encoding="utf-8")) == want
            except json.JSONDecodeError:
                ok = False
            if ok:
                arr = np.load(cache)
                if arr.shape == (self.num_nodes, self.image_dim + self.text_dim):
                    return arr
        from tqdm.auto import tqdm

        out = np.zeros((self.num_nodes, self.image_dim + self.text_dim), np.float32)
        step = 1024  # rows per chunk: float32 temporaries stay small whatever the shard size
        for i in tqdm(range(self.num_shards), desc="pooling", unit="shard", disable=not progress):
            base = i * self.shard_size
            rows = min(self.shard_size, self.num_nodes - base)
            for a in range(0, rows, step):
                b = min(a + step, rows)
                out[base + a:base + b] = pool_tokens(
                    self._map(i, "image")[a:b] if self.image_len else None,  # [c, Li, Di] fp16
                    self._map(i, "text")[a:b] if self.text_len else None,  # [c, Lt, Dt] fp16
                    self._map(i, "text_mask")[a:b] if self.text_len else None)  # [c, Lt]
        atomic_np_save(cache, out)
        atomic_write_json(meta, want)
        return out

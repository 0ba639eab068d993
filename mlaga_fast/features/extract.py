"""The resumable, sharded feature extraction loop (`mlaga-fast features`).

Nodes are processed shard by shard in node order. Each shard is accumulated in a preallocated fp16
buffer (so memory is one shard + one batch, whatever N is), then written file by file through temp +
rename, then its done record, then the manifest listing it. A rerun with the same arguments skips
every shard whose done record checks out and recomputes the rest; batches never straddle a shard
boundary, so a resumed run produces the same bytes as an uninterrupted one (on CPU, where the
encoders run deterministically: in exact fp32, or in bf16 autocast where ``precision`` chooses it, and a
resumed folder keeps the precision it was started in).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from mlaga_fast.data.texts import TextBlob
from mlaga_fast.features.store import (
    FORMAT, MANIFEST, RESUME_KEYS, FeatureStore, features_fingerprint, shard_is_done, shard_name, shard_parts,
)
from mlaga_fast.utils.heap import release_free_heap
from mlaga_fast.utils.io import atomic_np_save, atomic_write_json, fingerprint, sha256_file
from mlaga_fast.utils.lock import exclusive_output


PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class FeatureConfig:
    encoder: str = field(default="open_clip:ViT-L-14/openai", metadata={
        "help": "encoder spec of both towers: open_clip:MODEL/TAG, open_clip:MODEL//ckpt, hf_clip:ID_OR_DIR, "
                "offline[@SIZE], tiny[:SEED]"})
    text_encoder: str = field(default="", metadata={
        "help": "text tower spec, instead of --encoder's: hf:ID_OR_DIR[@LEN], minilm, tiny[:SEED], ...; off = "
                "no text features; none = --encoder's"})
    image_encoder: str = field(default="", metadata={
        "help": "image tower spec, instead of --encoder's: timm:MODEL[//ckpt][@SIZE], efficientnet[@SIZE], "
                "open_clip:MODEL/TAG, tiny[:SEED], ...; off = no image features; none = --encoder's"})
    batch_size: int = field(default=64, metadata={"help": "nodes per encoder forward pass"})
    device: str = field(default="auto", metadata={"help": "auto (cuda when available), cpu, cuda, cuda:N"})
    shard_size: int = field(default=0, metadata={"help": "nodes per shard; 0 = as many as fit in --shard-mib"})
    shard_mib: int = field(default=256, metadata={"help": "byte budget of one shard (bounds memory)"})
    max_shard_nodes: int = field(default=4096, metadata={
        "help": "cap on nodes per shard, so an interrupted run loses little work"})
    num_workers: int = field(default=0, metadata={"help": "DataLoader workers for image decoding + tokenising"})
    cpu_threads: int = field(default=0, metadata={
        "help": "torch intra-op threads for CPU encoding; 0 = torch's default (small encoders run best on 1)"})
    precision: str = field(default="auto", metadata={
        "help": "CPU compute of the encoders: auto (bf16 autocast where the CPU has native bf16 and it measures "
                ">= 1.2x faster, else fp32), fp32, bf16; on CUDA they always compute in fp16",
        "choices": PRECISIONS})
    overwrite: bool = field(default=False, metadata={"help": "replace features made with other settings"})

    def validate(self) -> None:
        for name in ("batch_size", "shard_mib", "max_shard_nodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("shard_size", "num_workers", "cpu_threads"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision: expected one of {list(PRECISIONS)}, got {self.precision!r}")
        self.encoder_spec()

    def encoder_spec(self) -> str:
        """The spec the features record: --encoder, or text=...+image=... when a tower is named on its own
        (mlaga_fast.features.encoders.tower_spec; raises ValueError naming the option of a bad spec)."""
        from mlaga_fast.features.encoders import tower_spec

        return tower_spec(self.encoder, text=self.text_encoder, image=self.image_encoder)


def graph_fingerprint(graph: Any, data_dir: Optional[str | os.PathLike] = None) -> str:
    """The dataset's fingerprint: graph.json's when a dataset directory is given, else the object's."""
    if data_dir is not None and (Path(data_dir) / "graph.json").is_file():
        fp = json.loads((Path(data_dir) / "graph.json").read_text(encoding="utf-8")).get("fingerprint")
        if fp:
            return str(fp)
    fp = getattr(graph, "fingerprint", None)
    if isinstance(fp, str) and fp:
        return fp
    # Fallback for in-memory graphs: hash what the features depend on (name, size, texts).
    texts = getattr(graph, "texts", None)
    return fingerprint({"name": getattr(graph, "name", ""), "num_nodes": int(graph.num_nodes),
                        "texts": fingerprint(list(texts)) if texts is not None else None})


def _resolve_device(device: str) -> str:
    from mlaga_fast.runtime.device import pick_device

    return str(pick_device(device))


class _NodeInputs:
    """Map-style dataset: node id -> (id, preprocessed image or None, text or None)."""

    def __init__(self, graph: Any, image_pre: Optional[Callable], use_text: bool) -> None:
        self.graph, self.image_pre, self.use_text = graph, image_pre, use_text

    def __len__(self) -> int:
        return int(self.graph.num_nodes)

    def __getitem__(self, i: int):
        img = self.image_pre(self.graph.load_image(int(i))) if self.image_pre is not None else None
        txt = self.graph.texts[int(i)] if self.use_text else None
        return int(i), img, txt


class _Collate:
    def __init__(self, tokenize: Optional[Callable]) -> None:
        self.tokenize = tokenize

    def __call__(self, items: list):
        import torch

        ids = torch.tensor([it[0] for it in items], dtype=torch.int64)
        pix = torch.stack([it[1] for it in items]) if items[0][1] is not None else None  # [B, 3, H, W]
        tok = self.tokenize([it[2] if isinstance(it[2], str) else "" for it in items]) if self.tokenize else None
        return ids, pix, tok


class _ShardBatches:
    """Batch sampler: node-id batches inside each pending shard, never across a shard boundary."""

    def __init__(self, shards: list, shard_size: int, num_nodes: int, batch_size: int) -> None:
        self.ranges = [(i * shard_size, min((i + 1) * shard_size, num_nodes)) for i in shards]
        self.batch_size = batch_size

    def __iter__(self):
        for lo, hi in self.ranges:
            for s in range(lo, hi, self.batch_size):
                yield list(range(s, min(s + self.batch_size, hi)))

    def __len__(self) -> int:
        return sum(-(-(hi - lo) // self.batch_size) for lo, hi in self.ranges)


def tower_record(enc: Any, use_text: bool, use_image: bool) -> dict:
    """The features manifest's "encoders": the spec each stored modality's tower came from, None for a
    modality the features do not hold (the graph lacks it, or the encoder has no tower for it)."""
    towers = getattr(enc, "towers", None) or {}
    return {"text": towers.get("text", enc.spec) if use_text else None,
            "image": towers.get("image", enc.spec) if use_image else None}


def choose_precision(precision: str, enc: Any, graph: Any, use_image: bool, use_text: bool,
                     resumed: Optional[dict] = None) -> tuple[str, dict]:
    """(what the encoders compute in on this CPU, why) for ``precision`` (auto | fp32 | bf16). ``auto`` keeps the
    precision of a folder being resumed (``resumed``: its manifest), so its shards stay alike; otherwise it is bf16 autocast where the
    CPU has native bf16 and the two towers, timed on the graph's first 16 nodes, run at least 1.2x faster in it
    (mlaga_fast.runtime.autotune: measured once per CPU and cached), else fp32."""
    from mlaga_fast.runtime.autotune import Workload, time_steps
    from mlaga_fast.runtime.precision import resolve_precision

    if enc.device.type == "cuda":
        return "fp16", {"rule": "CUDA: fp16 autocast"}
    if precision == "auto" and (resumed or {}).get("precision") in ("fp32", "bf16"):
        return resumed["precision"], resumed.get("precision_why") or {}
    nodes = min(16, int(graph.num_nodes))
    workload = Workload(trains=False, hidden=enc.image_dim, intermediate=enc.text_dim, heads=1,
                        seq=enc.image_tokens + enc.text_tokens, tokens=nodes, arch=f"features {enc.spec}")

    def measure(_: Any) -> tuple[float, float]:
        inputs = _NodeInputs(graph, enc.image.preprocess if use_image else None, use_text)
        _, pix, tok = _Collate(enc.text.tokenize if use_text else None)([inputs[i] for i in range(nodes)])

        def step(name: str):
            def run() -> None:
                enc.cpu_precision = name
                if use_image:
                    enc.encode_image(pix)  # [nodes, Li, Di]
                if use_text:
                    enc.encode_text(*tok)  # [nodes, Lt, Dt]
            return run

        try:
            return time_steps({"fp32": step("fp32"), "bf16": step("bf16")})
        finally:
            enc.cpu_precision = "fp32"

    chosen = resolve_precision(precision, "cpu", frozen_weights=False, workload=workload, measure=measure)
    return chosen.name, dict(chosen.why or {})


def _check_graph(graph: Any) -> tuple:
    n = int(graph.num_nodes)
    if n < 1:
        raise ValueError(f"graph: has {n} nodes; nothing to featurise")
    texts = getattr(graph, "texts", None)
    if texts is not None:
        if len(texts) != n:
            raise ValueError(f"graph.texts: has {len(texts)} entries for {n} nodes")
        for i, t in enumerate(() if isinstance(texts, TextBlob) else texts):  # a loaded blob holds str only
            if t is not None and not isinstance(t, str):
                raise ValueError(f"graph.texts: entry {i} is {type(t).__name__}, expected str or None")
    has_images = getattr(graph, "images", None) is not None
    return n, texts is not None, has_images


def _header(cfg: FeatureConfig, enc: Any, graph: Any, graph_fp: Optional[str], n: int, use_image: bool,
            use_text: bool, precision_why: dict) -> dict:
    """The features manifest's header (everything but the shard list), its fingerprint included."""
    from mlaga_fast import __version__

    image_hdr = {"tokens": enc.image_tokens, "dim": enc.image_dim} if use_image else None
    text_hdr = {"tokens": enc.text_tokens, "dim": enc.text_dim} if use_text else None
    per_node = (enc.image_tokens * enc.image_dim * 2 if use_image else 0) + (
        enc.text_tokens * (enc.text_dim * 2 + 1) if use_text else 0)  # fp16 features + bool mask bytes
    S = cfg.shard_size or max(1, min(cfg.max_shard_nodes, (cfg.shard_mib << 20) // max(per_node, 1)))
    S = min(S, n)
    header = {
        "format": FORMAT, "encoder": enc.spec, "encoders": tower_record(enc, use_text, use_image),
        "encoder_info": enc.info, "image": image_hdr, "text": text_hdr,
        "dtype": "float16", "precision": enc.precision, "precision_why": precision_why,
        "num_nodes": n, "shard_size": S, "num_shards": -(-n // S),
        "graph_fingerprint": graph_fp or graph_fingerprint(graph), "graph_name": getattr(graph, "name", ""),
        "mlaga_fast_version": __version__,
    }
    header["fingerprint"] = features_fingerprint(header)
    return header


def _read_old_manifest(out: Path) -> Optional[dict]:
    """The manifest of an earlier run in ``out`` (None when there is none); a one-line error when unreadable."""
    if not (out / MANIFEST).is_file():
        return None
    try:
        old = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"features: {out / MANIFEST} is unreadable ({e}); pass --overwrite to start over") from None
    if not isinstance(old, dict):
        raise ValueError(f"features: {out / MANIFEST} is not a features manifest; pass --overwrite to start over")
    return old


def _clean_stray(out: Path) -> None:
    # Temp files of an interrupted atomic write (".name.XXXX.tmp"); they never read as valid, but they
    # take space.
    for f in out.glob(".shard_*.tmp"):
        f.unlink(missing_ok=True)
    for f in out.glob(f".{MANIFEST}.*.tmp"):
        f.unlink(missing_ok=True)


def _wipe(out: Path) -> None:
    """--overwrite: remove only what this module writes (never arbitrary user files)."""
    for pat in ("shard_*.npy", "shard_*.done.json", "pooled.npy", "pooled.json", MANIFEST):
        for f in out.glob(pat):
            f.unlink()
    _clean_stray(out)


def extract_features(
    graph: Any,
    out_dir: str | os.PathLike,
    config: FeatureConfig | None = None,
    *,
    graph_fp: Optional[str] = None,
    encoder: Any = None,
    on_shard_done: Optional[Callable[[int], None]] = None,
    progress: bool = True,
) -> FeatureStore:
    """Run the frozen encoders over every node of ``graph`` and write FEATDIR ``out_dir``.

    graph: needs ``num_nodes``, ``texts`` (list[str] | None), ``images`` (None = no images) and
    ``load_image(i)`` (PIL RGB). ``encoder``: an already loaded ``Encoder`` (else built from the spec).
    ``on_shard_done(i)`` is called after shard i is durable (progress hooks, tests).
    Returns the finished FeatureStore. Resumes a matching unfinished directory; refuses a mismatched
    one unless ``config.overwrite``.
    """
    import torch
    from tqdm.auto import tqdm

    from mlaga_fast.features.encoders import load_encoder

    cfg = config or FeatureConfig()
    cfg.validate()
    n, has_texts, has_images = _check_graph(graph)
    if not (has_texts or has_images):  # checked before any weights are looked for
        raise ValueError(
            f"dataset {getattr(graph, 'name', '')!r} has neither node texts nor images, so there is nothing to "
            "encode: give it a text column (<Name>.csv) or images and prepare it again, or use structure-only "
            "methods on it (`mlaga-fast baseline --model labelprop`)")
    device = _resolve_device(cfg.device)
    enc = encoder if encoder is not None else load_encoder(cfg.encoder_spec(), device)
    if encoder is not None:
        enc.to(device)
    use_image = enc.image is not None and has_images
    use_text = enc.text is not None and has_texts
    if not (use_image or use_text):
        has, reads = ("texts" if has_texts else "images"), ("images" if enc.image is not None else "texts")
        raise ValueError(f"dataset {getattr(graph, 'name', '')!r} has only {has}, and encoder {enc.spec!r} reads "
                         f"only {reads}: choose an encoder that reads {has}")

    out = Path(out_dir)
    # One writer per folder: a second run would mix its shards with ours or delete our temp files.
    with exclusive_output(out, "features"):  # creates the folder
        if cfg.overwrite:
            _wipe(out)
        old = _read_old_manifest(out)
        name, why = choose_precision(cfg.precision, enc, graph, use_image, use_text, resumed=old)
        if enc.device.type != "cuda":
            enc.cpu_precision = name
        header = _header(cfg, enc, graph, graph_fp, n, use_image, use_text, why)
        S, K = header["shard_size"], header["num_shards"]
        if old is not None:
            diff = [k for k in RESUME_KEYS if old.get(k) != header.get(k)]
            if diff:
                detail = "; ".join(f"{k}: on disk {old.get(k)!r}, now {header.get(k)!r}" for k in diff)
                raise ValueError(f"features: {out} holds features made differently ({detail}); pass --overwrite "
                                 f"to replace them or choose another --out")
        elif any(p.name != ".gitkeep" for p in out.iterdir()):
            raise ValueError(f"features: {out} is not empty and has no {MANIFEST}; refusing to write into it "
                             f"(choose an empty --out, or pass --overwrite)")
        _clean_stray(out)

        done = [i for i in range(K) if shard_is_done(out, header, i)]
        done_set = set(done)
        pending = [i for i in range(K) if i not in done_set]

        def write_manifest(finished: list) -> None:
            shards = [{"index": i, "start": i * S, "stop": min((i + 1) * S, n)} for i in sorted(finished)]
            atomic_write_json(out / MANIFEST, {**header, "shards": shards, "complete": len(shards) == K})

        write_manifest(done)
        if not pending:
            return FeatureStore(out)

        from torch.utils.data import DataLoader

        loader = DataLoader(
            _NodeInputs(graph, enc.image.preprocess if use_image else None, use_text),
            batch_sampler=_ShardBatches(pending, S, n, cfg.batch_size),
            collate_fn=_Collate(enc.text.tokenize if use_text else None),
            num_workers=cfg.num_workers,
            pin_memory=device.startswith("cuda"),
            persistent_workers=False,
        )
        parts = shard_parts(header)
        finished = list(done)
        cur, buf, filled = -1, {}, 0
        threads = torch.get_num_threads()
        if cfg.cpu_threads and not device.startswith("cuda"):
            torch.set_num_threads(cfg.cpu_threads)  # restored below: the caller's setting is not ours to keep
        bar = tqdm(total=n, initial=sum(min((i + 1) * S, n) - i * S for i in done),
                   unit="node", desc=f"features {enc.spec}", disable=not progress, smoothing=0.1)
        try:
            for ids, pix, tok in loader:
                shard = int(ids[0]) // S
                if shard != cur:  # first batch of a new shard: a fresh buffer (the old one was flushed)
                    cur, filled = shard, 0
                    rows = min((shard + 1) * S, n) - shard * S
                    buf = {}
                    if use_image:
                        buf["image"] = np.empty((rows, enc.image_tokens, enc.image_dim), np.float16)
                    if use_text:
                        buf["text"] = np.empty((rows, enc.text_tokens, enc.text_dim), np.float16)
                        buf["text_mask"] = np.empty((rows, enc.text_tokens), bool)
                lo = int(ids[0]) - cur * S
                hi = lo + ids.numel()
                if use_image:
                    buf["image"][lo:hi] = _finite(enc.encode_image(pix), ids, "image")  # [B, Li, Di]
                if use_text:
                    tid, tmask = tok
                    buf["text"][lo:hi] = _finite(enc.encode_text(tid, tmask), ids, "text")  # [B, Lt, Dt]
                    buf["text_mask"][lo:hi] = tmask.numpy()
                filled += ids.numel()
                bar.update(ids.numel())
                if filled == buf[parts[0]].shape[0]:
                    _flush_shard(out, cur, S, n, buf, parts)
                    finished.append(cur)
                    write_manifest(finished)
                    buf = {}
                    release_free_heap()  # resident memory stays one shard, however many shards (utils/heap.py)
                    if on_shard_done is not None:
                        on_shard_done(cur)
        finally:
            bar.close()
            torch.set_num_threads(threads)
        if len(finished) != K:  # a loader that silently skipped work would be a bug here, not a user error
            raise RuntimeError(f"features: only {len(finished)} of {K} shards were written")
        return FeatureStore(out)


def _finite(x: Any, ids: Any, what: str) -> np.ndarray:
    """fp16 copy of an encoder output; refuses NaN/inf (also fp16 overflow) rather than storing garbage."""
    import torch

    h = x.half()  # cast on the device: half the bytes to copy back
    ok = torch.isfinite(h).flatten(1).all(dim=1)  # [B]
    if not bool(ok.all()):
        bad = int(ids[int((~ok).nonzero()[0, 0])])
        raise ValueError(f"{what} features: node {bad} encodes to non-finite values (NaN/inf or beyond fp16 range)")
    return h.cpu().numpy()


def _flush_shard(out: Path, i: int, S: int, n: int, buf: dict, parts: list) -> None:
    for part in parts:
        atomic_np_save(out / shard_name(i, f"{part}.npy"), buf[part])
    files = {part: (out / shard_name(i, f"{part}.npy")).stat().st_size for part in parts}
    # sha256 of each file as written (read back from the page cache, ~0.5 GB/s: small next to encoding),
    # checked by FeatureStore(verify=True) / `mlaga-fast features --verify`
    sums = {part: sha256_file(out / shard_name(i, f"{part}.npy")) for part in parts}
    atomic_write_json(out / shard_name(i, "done.json"),
                      {"index": i, "start": i * S, "stop": min((i + 1) * S, n), "files": files, "sha256": sums})


"""Online features: the frozen encoders run on each requested batch, and nothing is stored.

Stored features cost (Li * Di + Lt * Dt) * 2 bytes per node: with ViT-L/14 (257 x 1024) and CLIP
text (77 x 1024) that is about 684 KB per node, 684 GB at a million nodes. OnlineFeatures reads the
same thing from the graph itself, encoding every batch it is asked for: no storage at all, at the
price of running the encoders on every read (every epoch of Stage 1 re-encodes its nodes).
docs/online_features.md gives measured throughput of both ways.

OnlineFeatures has the read interface of mlaga_fast.features.FeatureStore (num_nodes, image/text
lengths and dims, get / get_numpy, fingerprint, encoder, manifest), and for the same encoder and
graph it returns what extract_features stores: the same preprocessing and encoder calls, cast to
fp16 the same way, and the same fingerprint, so a model trained on one can be used with the other.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from mlaga_fast.features.extract import (
    _check_graph, _Collate, _finite, _NodeInputs, _resolve_device, graph_fingerprint, tower_record,
)
from mlaga_fast.features.store import FORMAT, FeatureReader, features_fingerprint, pool_tokens


class OnlineFeatures(FeatureReader):
    """Encoder features of ``graph``'s nodes, computed on demand.

    graph: a MultimodalGraph (or anything extract_features accepts: num_nodes, texts, images,
    load_image). encoder: a spec string (see mlaga_fast.features.encoders) or a loaded Encoder. precision: what
    the encoders compute in on a CPU, fp32 or bf16 (autocast): stored features match only when extracted in the
    same one (their manifest's "precision"; `mlaga-fast features --precision auto` may choose bf16).
    """

    def __init__(self, graph: Any, encoder: Any = "tiny", *, device: str = "auto", graph_fp: Optional[str] = None,
                 precision: str = "fp32"):
        from mlaga_fast import __version__
        from mlaga_fast.features.encoders import load_encoder

        n, has_texts, has_images = _check_graph(graph)
        self.device = _resolve_device(device)
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision: expected 'fp32' or 'bf16', got {precision!r}")
        enc = load_encoder(encoder, self.device) if isinstance(encoder, str) else encoder.to(self.device)
        enc.cpu_precision = precision
        self._enc = enc
        self._graph = graph
        self._use_image = enc.image is not None and has_images
        self._use_text = enc.text is not None and has_texts
        if not (self._use_image or self._use_text):
            raise ValueError(f"encoder: {enc.spec!r} has no tower for the modalities this graph has "
                             f"(texts: {has_texts}, images: {has_images})")
        self.num_nodes = n
        self.image_len, self.image_dim = (enc.image_tokens, enc.image_dim) if self._use_image else (0, 0)
        self.text_len, self.text_dim = (enc.text_tokens, enc.text_dim) if self._use_text else (0, 0)
        header = {
            "format": FORMAT, "encoder": enc.spec, "encoders": tower_record(enc, self._use_text, self._use_image),
            "encoder_info": enc.info,
            "image": {"tokens": enc.image_tokens, "dim": enc.image_dim} if self._use_image else None,
            "text": {"tokens": enc.text_tokens, "dim": enc.text_dim} if self._use_text else None,
            "dtype": "float16", "precision": enc.precision, "num_nodes": n,
            "graph_fingerprint": graph_fp or graph_fingerprint(graph),
            "graph_name": getattr(graph, "name", ""), "mlaga_fast_version": __version__,
        }
        self.manifest = {**header, "fingerprint": features_fingerprint(header), "mode": "online", "complete": True}
        self.path = f"online:{enc.spec}"  # what messages name; mlaga_fast.features.source opens this string
        self._pooled: np.ndarray | None = None
        self._inputs = _NodeInputs(graph, enc.image.preprocess if self._use_image else None, self._use_text)
        self._collate = _Collate(enc.text.tokenize if self._use_text else None)

    def __repr__(self) -> str:
        return (f"OnlineFeatures(encoder={self.encoder!r}, N={self.num_nodes}, image=[{self.image_len}, "
                f"{self.image_dim}], text=[{self.text_len}, {self.text_dim}], device={self.device!r})")

    # --- reading ------------------------------------------------------------------------------
    def get_numpy(self, idx: Any) -> dict:
        """Like ``get`` but returns NumPy arrays (fp16 features, bool masks)."""
        ids = self._check_idx(idx)
        n = ids.size
        out = self._empty_batch(n)
        if n == 0:
            return out
        node_ids, pix, tok = self._collate([self._inputs[int(i)] for i in ids])
        if self._use_image:
            out["image"][:] = _finite(self._enc.encode_image(pix), node_ids, "image")  # [n, Li, Di]
        if self._use_text:
            tid, tmask = tok
            out["text"][:] = _finite(self._enc.encode_text(tid, tmask), node_ids, "text")  # [n, Lt, Dt]
            out["text_mask"][:] = tmask.numpy()
        return out

    def pooled(self, progress: bool = False, batch_size: int = 256) -> np.ndarray:
        """float32 [N, Di + Dt], as FeatureStore.pooled: every node encoded once now (kept in memory)."""
        if self._pooled is None:
            from tqdm.auto import tqdm

            out = np.zeros((self.num_nodes, self.image_dim + self.text_dim), np.float32)
            for lo in tqdm(range(0, self.num_nodes, batch_size), desc="pooling (online)", disable=not progress):
                ids = np.arange(lo, min(lo + batch_size, self.num_nodes))
                f = self.get_numpy(ids)
                out[ids] = pool_tokens(f["image"] if self.image_len else None, f["text"] if self.text_len else None,
                                       f["text_mask"] if self.text_len else None)
            self._pooled = out
        return self._pooled

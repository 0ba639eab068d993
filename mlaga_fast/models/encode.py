"""Aligner inference: a Stage-1 model over a feature store's nodes, in node-order chunks.

One path for every caller: ``mlaga-fast embed``, Stage 2's node-token cache, the probes and
``Aligner.encode`` all run the aligner through ``encode_nodes``, so they see the same tokens.
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch

from mlaga_fast.features import FeatureStore
from mlaga_fast.runtime.device import pick_device
from mlaga_fast.utils.progress import progress as bar_of

__all__ = ["encode_nodes", "encode_all"]


def encode_nodes(model: Any, store: Any, nodes: np.ndarray | None = None, *, batch_size: int = 256,
                 device: str = "auto", progress: bool = True,
                 desc: str = "embed") -> Iterator[tuple[np.ndarray, Any, Any]]:
    """Yield (node ids [b], tokens [b, nq, d] float32 tensor, pooled [b, d]) in node order chunks."""
    dev = pick_device(device)
    model = model.to(dev).eval()
    ids = np.arange(store.num_nodes, dtype=np.int64) if nodes is None else np.asarray(nodes, dtype=np.int64)
    amp = dev.type == "cuda"
    bar = bar_of(total=len(ids), desc=desc, enabled=progress)
    with torch.inference_mode():
        for lo in range(0, len(ids), batch_size):
            chunk = ids[lo:lo + batch_size]
            batch = {k: v.to(dev, non_blocking=True) for k, v in store.get(chunk).items()}
            with torch.autocast(dev.type, dtype=torch.bfloat16 if amp and torch.cuda.is_bf16_supported()
                                else torch.float16, enabled=amp):
                tokens, pooled = model(batch)  # [b, nq, d], [b, d]
            bar.update(len(chunk))
            yield chunk, tokens.float().cpu(), pooled.float().cpu()
    bar.close()


def encode_all(model: torch.nn.Module, features: Any, nodes: Any = None, *, batch_size: int = 256, device: str = "auto",
               progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """tokens [n, nq, d] and pooled [n, d] float32 of ``nodes`` (default all) of a features dir / FeatureStore."""
    store = features if hasattr(features, "get") else FeatureStore(features)
    toks, pools = [], []
    for _, tok, pooled in encode_nodes(model, store, nodes, batch_size=batch_size, device=device, progress=progress):
        toks.append(tok.numpy())
        pools.append(pooled.numpy())
    return np.concatenate(toks), np.concatenate(pools)

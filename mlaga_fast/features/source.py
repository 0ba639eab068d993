"""One way to open a features source: a stored features folder, or ``online:ENCODER``.

``online:ENCODER`` (e.g. ``online:tiny``, ``online:offline@128``, ``online:open_clip:ViT-L-14/openai``) runs
the frozen encoders on every batch a stage reads and stores no tokens (mlaga_fast.features.online); any
other value is a folder written by ``mlaga-fast features``. Both give the same tokens and the same
fingerprint for the same encoder and graph, so runs trained on one can be used with the other. The
trade-off, measured: docs/online_features.md.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["ONLINE_PREFIX", "is_online", "open_features", "features_arg"]

ONLINE_PREFIX = "online:"


def is_online(features: Any) -> bool:
    return isinstance(features, str) and features.startswith(ONLINE_PREFIX)


def features_arg(features: str | os.PathLike) -> str:
    """How a run records its features: ``online:ENCODER`` as given, a folder as an absolute path."""
    return str(features) if is_online(features) else str(Path(features).resolve())


def open_features(features: str | os.PathLike, *, data_dir: str | os.PathLike | None = None, graph: Any = None,
                  device: str = "cpu") -> Any:
    """A FeatureStore for a folder, or an OnlineFeatures on the dataset (``graph``, else loaded from
    ``data_dir``) for ``online:ENCODER``."""
    if not is_online(features):
        from mlaga_fast.features.store import FeatureStore

        return FeatureStore(features)
    spec = str(features)[len(ONLINE_PREFIX):]
    if not spec:
        raise ValueError("features: 'online:' needs an encoder spec, e.g. online:tiny or online:offline@128")
    from mlaga_fast.features.extract import graph_fingerprint
    from mlaga_fast.features.online import OnlineFeatures

    if graph is None:
        if data_dir is None:
            raise ValueError(f"features {features}: online features need the dataset they encode (--data)")
        from mlaga_fast.data import load

        graph = load(data_dir)
    return OnlineFeatures(graph, spec, device=device, graph_fp=graph_fingerprint(graph, data_dir))

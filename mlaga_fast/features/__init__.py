"""Cached encoder features: frozen image/text encoders run once over every node, stored as fp16 shards.

    from mlaga_fast.features import FeatureStore, extract_features, FeatureConfig, load_encoder
"""
from mlaga_fast.features.extract import FeatureConfig, extract_features, graph_fingerprint
from mlaga_fast.features.store import FeatureStore, read_manifest

__all__ = ["FeatureConfig", "FeatureStore", "EncoderUnavailable", "extract_features", "graph_fingerprint",
           "load_encoder", "parse_spec", "read_manifest"]


def __getattr__(name: str):
    # The encoders import torch/open_clip; keep `import mlaga_fast.features` cheap for readers.
    if name in ("load_encoder", "parse_spec", "EncoderUnavailable", "Encoder"):
        from mlaga_fast.features import encoders

        return getattr(encoders, name)
    raise AttributeError(name)

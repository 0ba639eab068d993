"""Built-in baselines for NC and LP on the same splits and result format as Stage 2's `eval`.

MLP and 2-layer GCN / GraphSAGE / GAT on pooled node features, built from torch_geometric's
layers (models.py), label propagation on structure alone with PyG's LabelPropagation
(labelprop.py), their full-batch training + evaluation (train.py), and the run settings
(config.py, torch-free). CLI: `mlaga-fast baseline --data DIR --model
mlp|gcn|sage|gat|labelprop --task nc|lp`.

Names are resolved lazily so that importing the config (for CLI options) does not load torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "BaselineConfig": "config", "ENCODERS": "config", "MODELS": "config",
    "LabelPropResult": "labelprop", "label_propagation": "labelprop",
    "steps_to_converge": "labelprop",
    "EdgeScorer": "models", "Encoder": "models", "build_encoder": "models",
    "edge_index_from_csr": "models", "graph_operand": "models",
    "best_threshold": "train", "roc_auc": "train", "run_baseline": "train", "run_lp": "train",
    "run_nc": "train", "sample_negatives": "train",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'mlaga_fast.baselines' has no attribute {name!r}")
    return getattr(importlib.import_module(f"mlaga_fast.baselines.{_WHERE[name]}"), name)

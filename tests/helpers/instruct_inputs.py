"""A tiny Stage-2 setup on disk: a 120-node catalogue, tiny-CLIP features, a 2-step aligner and a tiny
random Llama, laid out as ROOT/data, ROOT/data/features, ROOT/align and ROOT/llm."""
from __future__ import annotations

from pathlib import Path


def build_instruct_inputs(root: Path, vocab_texts=(), **llm_kw) -> Path:
    """Fills ``root``; ``vocab_texts`` join the tokenizer's vocabulary (beside the catalogue's texts and class
    names), ``llm_kw`` go to ``build_tiny_llm`` (hidden, heads, init_std, ...). Returns ``root``."""
    from helpers.tiny_llm import build_tiny_llm
    from mlaga_fast.data.synth import make_catalogue
    from mlaga_fast.features import FeatureConfig, extract_features
    from mlaga_fast.features.extract import graph_fingerprint
    from mlaga_fast.train.align import train_align
    from mlaga_fast.train.align_config import AlignConfig

    g = make_catalogue(root / "data", nodes=120, classes=3, mean_degree=4, seed=0, image_size=32)
    extract_features(g, root / "data" / "features", FeatureConfig(encoder="tiny", device="cpu", batch_size=64),
                     graph_fp=graph_fingerprint(g, root / "data"), progress=False)
    train_align(AlignConfig(dim=16, num_layers=1, num_heads=2, num_queries=2, batch_size=32, max_steps=2,
                            warmup_steps=1, device="cpu"),
                root / "data", root / "data" / "features", root / "align", show_progress=False)
    build_tiny_llm(root / "llm", list(g.texts) + list(g.class_names) + list(vocab_texts), **llm_kw)
    return root

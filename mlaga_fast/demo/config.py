"""The demo's settings: one typed config, two presets (full and --fast)."""
from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["DemoConfig", "PRESETS"]


@dataclass
class DemoConfig:
    # --- data ---
    nodes: int = field(default=2000, metadata={"help": "synthetic catalogue size"})
    classes: int = field(default=8, metadata={"help": "product categories"})
    homophily: float = field(default=0.75, metadata={"help": "edge homophily of the catalogue graph"})
    image_mismatch: float = field(default=0.15, metadata={"help": "fraction of nodes showing another class's image"})
    text_mismatch: float = field(default=0.05, metadata={"help": "fraction of nodes with another class's text"})
    encoder: str = field(default="offline@128", metadata={
        "help": "feature encoder spec; 'offline@128' = MiniLM text + EfficientNet-Lite0 image at 128 px (real "
                "weights; the 64 px synthetic pictures lose nothing at 128 px)"})
    # --- Stage 1 ---
    align_epochs: int = field(default=3, metadata={"help": "aligner epochs"})
    align_positives: int = field(default=5, metadata={"help": "1-hop positives sampled per aligner anchor"})
    align_d: int = field(default=128, metadata={"help": "aligner width"})
    num_queries: int = field(default=4, metadata={"help": "aligned tokens per node (nq)"})
    # --- Stage 2 ---
    llm: str = field(default="smollm2", metadata={"help": "frozen LLM (hub id, folder, *.gguf or alias)"})
    projector: str = field(default="modality", metadata={"help": "Stage 2 projectors: modality or single",
                                                        "choices": ["modality", "single"]})
    warmup_train: int = field(default=800, metadata={"help": "warm-up prompts (node tokens + question; projectors only)"})
    nc_train: int = field(default=600, metadata={"help": "NC instruction prompts (PPR demonstrations)"})
    lp_train: int = field(default=1600, metadata={"help": "LP instruction prompts (MLaGA only; the raw ablation trains NC)"})
    instruct_batch: int = field(default=16, metadata={"help": "Stage 2 prompts per step"})
    warmup_lr: float = field(default=3e-3, metadata={"help": "Stage 2 warm-up learning rate"})
    instruct_lr: float = field(default=3e-3, metadata={"help": "Stage 2 instruct-phase learning rate (LoRA)"})
    projector_lr_scale: float = field(default=0.1, metadata={"help": "instruct phase: projector LR / instruct_lr"})
    lora: bool = field(default=True, metadata={"help": "LoRA adapters in the instruct phase"})
    eval_nc: int = field(default=200, metadata={"help": "test nodes scored per NC variant"})
    eval_lp: int = field(default=200, metadata={"help": "test pairs scored per LP variant"})
    generate: bool = field(default=False, metadata={"help": "also score free generation (slower)"})
    baseline_epochs: int = field(default=100, metadata={"help": "full-batch epochs of the GNN/MLP baselines"})
    # --- runtime ---
    seed: int = field(default=0, metadata={"help": "one seed for every stage"})
    threads: int = field(default=0, metadata={
        "help": "torch CPU threads in all (0 = all cores); from 2 on, half of them run the raw-feature ablation, "
                "the baselines and the t-SNE map in a second process beside Stage 2"})


PRESETS: dict[str, dict] = {
    "full": {},
    # A sanity run for CI: every stage runs and writes its outputs, at a size that fits in ~3 minutes.
    "fast": {"nodes": 400, "align_epochs": 2, "warmup_train": 32, "nc_train": 16, "lp_train": 16, "eval_nc": 16,
             "eval_lp": 16, "baseline_epochs": 30},
}

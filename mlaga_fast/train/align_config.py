"""Stage 1's settings: ``AlignConfig`` (every field is a ``mlaga-fast train align`` option), its presets, and
the fields a resumed run may change. Import-light: the CLI builds its options from it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from mlaga_fast.config import resolve_config
from mlaga_fast.train.loop import LOOP_RUNTIME_FIELDS, LoopConfig, validate_loop

__all__ = ["AlignConfig", "PRESETS", "RESUMABLE_CHANGES", "build_config"]


@dataclass
class AlignConfig(LoopConfig):
    # --- model (every size is a field; the paper's sizes are the "paper" preset) ---
    arch: Literal["prenorm", "mlaga"] = field(default="prenorm", metadata={
        "help": "aligner structure: prenorm (ours: joint pre-norm residual layers) or mlaga (the released "
                "model's: shared per-modality self-attention, post-norm, no residuals)"})
    # named `dim`, not `d`: torchrun's argument parser would take `--d` for an abbreviation of its own options
    dim: int = field(default=128, metadata={"help": "aligner width d"})
    num_layers: int = field(default=2, metadata={"help": "self-attention layers"})
    num_heads: int = field(default=4, metadata={"help": "attention heads (d must be divisible by it)"})
    num_queries: int = field(default=8, metadata={"help": "learnable queries nq = aligned tokens per node"})
    cross_attention_every: int = field(default=1, metadata={
        "help": "prenorm: queries cross-attend at layers 0, k, 2k, ...; mlaga: at layers i with (i + 1) % k == 0"})
    mlp_ratio: float = field(default=4.0, metadata={"help": "FFN hidden width / d"})
    dropout: float = field(default=0.0, metadata={"help": "dropout in attention outputs and FFNs"})
    # --- loss ---
    # The default is the released loss: in the 3-seed comparison (README, `mlaga-fast compare`) it was ahead
    # of our InfoNCE (tau 0.1) in 11 of 12 paired runs on both NC (+4.8 points) and LP (+13.4).
    objective: Literal["infonce", "mlaga"] = field(default="mlaga", metadata={
        "help": "mlaga (the released loss: positives summed in one log, negatives at tau) or infonce (ours; "
                "use it with tau 0.1)"})
    num_positives: int = field(default=5, metadata={"help": "1-hop positives sampled per anchor"})
    tau: float = field(default=0.5, metadata={"help": "temperature (0.5 is the released value for mlaga)"})
    tau_mode: Literal["both", "negatives_only"] = field(
        default="both", metadata={"help": "infonce: apply tau to positives and negatives (both) or to negatives only"})
    # --- optimisation (the shared loop fields are in LoopConfig) ---
    batch_size: int = field(default=64, metadata={"help": "global anchors per micro-batch (split over ranks)"})
    grad_accum: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    # --- runtime (may change on --resume) ---
    num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes"})
    collapse_threshold: float = field(default=0.05, metadata={"help": "warn when the embedding spread falls below"})
    attn_backend: Literal["auto", "triton", "sdpa", "reference"] = field(
        default="auto", metadata={"help": "cross-attention backend (auto dispatches)"})
    # LoopConfig defaults that differ for Stage 1
    epochs: int = field(default=10, metadata={"help": "passes over all nodes (max_steps overrides)"})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay (not on biases/norms)"})
    warmup_steps: int = field(default=50, metadata={"help": "linear LR warmup steps (0 = warmup_ratio decides)"})
    log_every: int = field(default=10, metadata={"help": "steps between metrics.jsonl records"})

    def validate(self) -> None:
        validate_loop(self)
        positive = ("dim", "num_layers", "num_heads", "num_queries", "cross_attention_every", "num_positives",
                    "batch_size", "grad_accum")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"config field {name!r} must be >= 1, got {getattr(self, name)}")
        if self.dim % self.num_heads:
            raise ValueError(f"config field 'dim' ({self.dim}) must be divisible by num_heads ({self.num_heads})")
        for name in ("tau", "mlp_ratio"):
            if getattr(self, name) <= 0:
                raise ValueError(f"config field {name!r} must be > 0, got {getattr(self, name)}")
        for name in ("num_workers", "collapse_threshold"):
            if getattr(self, name) < 0:
                raise ValueError(f"config field {name!r} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.dropout < 1:
            raise ValueError("config field 'dropout' must be in [0, 1)")
        if self.arch == "mlaga" and self.num_layers % self.cross_attention_every:
            raise ValueError(f"config field 'num_layers' ({self.num_layers}) must be a multiple of "
                             f"cross_attention_every ({self.cross_attention_every}) for arch mlaga")

    def model_kwargs(self) -> dict[str, Any]:
        return {"d": self.dim, "num_layers": self.num_layers, "num_heads": self.num_heads,
                "num_queries": self.num_queries, "cross_attention_every": self.cross_attention_every,
                "mlp_ratio": self.mlp_ratio, "dropout": self.dropout,
                "attn_backend": None if self.attn_backend == "auto" else self.attn_backend}


# The released model's aligner and its training (docs/paper_model.md): its structure and loss, d 1024,
# 6 layers, 8 heads, 32 queries, cross-attention at layers 1, 3, 5, dropout 0.1; batch 16, 1 epoch,
# lr 1e-5, 100 warmup steps, cosine to 0, no weight decay, tau 0.5.
PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {},
    "paper": {"arch": "mlaga", "objective": "mlaga", "dim": 1024, "num_layers": 6, "num_heads": 8, "num_queries": 32,
              "cross_attention_every": 2, "dropout": 0.1, "tau": 0.5, "batch_size": 16, "epochs": 1, "lr": 1e-5,
              "warmup_steps": 100, "min_lr_ratio": 0.0, "weight_decay": 0.0},
}

# Fields that may differ between a run and its resumption without changing the maths.
RESUMABLE_CHANGES = LOOP_RUNTIME_FIELDS + ("num_workers", "collapse_threshold", "attn_backend")


def build_config(cli_values: dict[str, Any] | None = None, *, config_file: str | None = None,
                 preset: str | None = None, base: dict[str, Any] | None = None) -> AlignConfig:
    """defaults < base (a resumed run's saved config) < preset < file < CLI."""
    cfg = resolve_config(AlignConfig, cli_values or {}, config_file=config_file, preset=preset, presets=PRESETS,
                         base=base)
    cfg.validate()
    return cfg

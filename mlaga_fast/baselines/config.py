"""BaselineConfig: the typed settings of one baseline run (also the CLI options and the optional
YAML/TOML file of `mlaga-fast baseline`). Kept free of torch so `--help` stays instant."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ENCODERS = ("mlp", "gcn", "sage", "gat")
MODELS = ENCODERS + ("labelprop",)


def _f(default: Any, help: str, choices: tuple | None = None) -> Any:
    meta = {"help": help, **({"choices": choices} if choices else {})}
    return field(default=default, metadata=meta)


@dataclass
class BaselineConfig:
    model: str = _f("gcn", "baseline model", MODELS)
    task: str = _f("nc", "node classification or link prediction", ("nc", "lp"))
    hidden: int = _f(256, "hidden width; also the LP embedding width")
    heads: int = _f(4, "gat: attention heads of the hidden layer (each hidden/heads wide)")
    epochs: int = _f(200, "maximum training epochs (full batch)")
    lr: float = _f(0.01, "Adam learning rate")
    weight_decay: float = _f(5e-4, "Adam weight decay")
    dropout: float = _f(0.5, "dropout on the input and hidden layer")
    patience: int = _f(100, "stop after this many epochs without a val improvement (0 = never)")
    seed: int = _f(0, "seed for initialisation, dropout and negative sampling")
    standardize: bool = _f(True, "z-score feature columns (statistics over all nodes, label-free)")
    scorer: str = _f("dot", "LP edge scorer: <h_u, h_v> or MLP(h_u * h_v)", ("dot", "mlp"))
    neg_ratio: int = _f(1, "LP: sampled non-edges per training positive edge")
    alpha: float = _f(0.9, "labelprop: propagation weight in [0, 1)")
    tol: float = _f(1e-6, "labelprop: stop when max |change| < tol")
    max_iter: int = _f(1000, "labelprop: iteration cap")
    device: str = _f("cpu", "torch device (cpu, cuda, cuda:1)")
    num_threads: int = _f(0, "torch CPU threads (0 = leave torch's default)")
    progress: bool = _f(True, "show a progress bar")

    def validate(self) -> "BaselineConfig":
        if self.model not in MODELS:
            raise ValueError(f"model: expected one of {MODELS}, got {self.model!r}")
        if self.task not in ("nc", "lp"):
            raise ValueError(f"task: expected 'nc' or 'lp', got {self.task!r}")
        if self.model == "labelprop" and self.task != "nc":
            raise ValueError("model: 'labelprop' predicts node labels; it has no link prediction "
                             "(use --task nc)")
        if self.scorer not in ("dot", "mlp"):
            raise ValueError(f"scorer: expected 'dot' or 'mlp', got {self.scorer!r}")
        for name in ("num_threads", "patience"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: expected >= 0, got {getattr(self, name)}")
        for name in ("hidden", "heads", "epochs", "neg_ratio", "max_iter"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")
        if self.model == "gat" and self.hidden % self.heads:
            raise ValueError(f"heads: hidden ({self.hidden}) must be a multiple of heads ({self.heads}) "
                             "for gat")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout: expected a value in [0, 1), got {self.dropout}")
        return self

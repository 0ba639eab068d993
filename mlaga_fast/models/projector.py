"""Stage 2 projector: maps each of a node's nq aligner tokens into the LLM's embedding space.

The projector is the only module Stage 2 trains (besides optional LoRA adapters); the LLM stays frozen.
It is a 2-layer MLP with a GELU in between, applied token-wise, as in LLaVA-style connectors.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass
class ProjectorConfig:
    in_dim: int  # aligner token dim d (or the raw pooled feature dim in the "raw" ablation)
    out_dim: int  # LLM hidden size H
    hidden_dim: int = 0  # 0 = use out_dim, the usual choice for 2-layer connectors

    def to_dict(self) -> dict:
        return asdict(self)


class Projector(nn.Module):
    def __init__(self, cfg: ProjectorConfig) -> None:
        super().__init__()
        if cfg.in_dim <= 0 or cfg.out_dim <= 0 or cfg.hidden_dim < 0:
            raise ValueError(f"projector dims must be positive, got {cfg}")
        self.cfg = cfg
        hid = cfg.hidden_dim or cfg.out_dim
        self.fc1 = nn.Linear(cfg.in_dim, hid)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hid, cfg.out_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        # tokens: [..., nq, in_dim] -> [..., nq, out_dim]; token-wise, so any leading shape works
        if tokens.shape[-1] != self.cfg.in_dim:
            raise ValueError(
                f"projector input: last dim is {tokens.shape[-1]}, expected in_dim={self.cfg.in_dim}"
            )
        x = tokens.to(self.fc1.weight.dtype)
        return self.fc2(self.act(self.fc1(x)))


def save_projector(proj: Projector, path) -> None:
    """Atomically write weights (safetensors) with the config in the file's metadata."""
    import json

    from safetensors.torch import save

    from mlaga_fast.utils.io import atomic_write_bytes

    state = {k: v.detach().cpu().contiguous().float() for k, v in proj.state_dict().items()}
    atomic_write_bytes(path, save(state, metadata={"projector_config": json.dumps(proj.cfg.to_dict())}))


def load_projector(path) -> Projector:
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "projector_config" not in meta:
        raise ValueError(f"{path}: not a projector file (no projector_config metadata)")
    proj = Projector(ProjectorConfig(**json.loads(meta["projector_config"])))
    proj.load_state_dict(load_file(str(path)))
    return proj

"""Stage 2 projectors: what turns a node's aligner tokens (and its picture) into LLM input embeddings.

Two kinds (``ProjectorConfig.kind``):

- ``single``: one 2-layer MLP (Linear, GELU, Linear; LLaVA-style) applied token-wise to the node's
  nq graph tokens, for every task. No image token.
- ``modality`` (the paper's modality-aware projectors): an image projector maps the node's pooled
  image vector [Dp] to one ``<image>`` token; task-specific graph projectors (``nc`` and ``lp``, or one
  ``shared``) map its nq aligner tokens to its ``<graph>`` tokens; an optional cross-task attention
  block lets a task's projection attend to the other task's projection of the same node (queries from
  the task's projector, keys/values from the other's; one pre-norm attention + FFN block, 8 heads,
  FFN 4H, dropout 0.1, residual). On features without images (``image_dim`` 0) there is no image
  projector and no ``<image>`` slot: the graph projectors alone, never a zero vector posing as a picture.

Only these (and optional LoRA adapters) train; the LLM stays frozen.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save
from torch import nn

from mlaga_fast.runs.open import check_tensor_shapes, safetensors_header
from mlaga_fast.utils.io import atomic_write_bytes

__all__ = ["ProjectorConfig", "Projectors", "CrossTaskAttention", "save_projectors", "load_projectors",
           "projector_config", "PROJECTOR_KINDS", "TASKS"]

PROJECTOR_KINDS = ("single", "modality")
TASKS = ("nc", "lp")


@dataclass
class ProjectorConfig:
    graph_dim: int  # aligner token dim d (or the raw pooled feature dim in the "raw" ablation)
    out_dim: int  # LLM hidden size H
    kind: str = "single"
    hidden_dim: int = 0  # 0 = out_dim, the usual choice for 2-layer connectors
    image_dim: int = 0  # pooled image vector dim Dp (kind "modality"; 0 = no image slot: text-only features)
    shared_graph: bool = False  # modality: one graph projector for both tasks
    cross_task: bool = False  # modality: cross-task attention between the NC and LP projections
    cross_heads: int = 8
    cross_dropout: float = 0.1

    def validate(self) -> None:
        if self.kind not in PROJECTOR_KINDS:
            raise ValueError(f"projector: {self.kind!r} is not one of {list(PROJECTOR_KINDS)}")
        if self.graph_dim <= 0 or self.out_dim <= 0 or self.hidden_dim < 0:
            raise ValueError(f"projector dims must be positive, got graph_dim={self.graph_dim}, "
                             f"out_dim={self.out_dim}, hidden_dim={self.hidden_dim}")
        if self.image_dim < 0 or (self.kind == "single" and self.image_dim):
            raise ValueError(f"projector {self.kind!r}: image_dim {self.image_dim} (a pooled image vector dim for "
                             "'modality', 0 for none)")
        if self.cross_task and (self.kind != "modality" or self.shared_graph):
            raise ValueError("cross_task_attention needs projector 'modality' with task-specific graph projectors "
                             "(not shared_graph_projector)")
        if self.cross_task and self.out_dim % self.cross_heads:
            raise ValueError(f"cross-task attention: hidden size {self.out_dim} is not divisible by "
                             f"{self.cross_heads} heads")

    def to_dict(self) -> dict:
        return asdict(self)


def projector_config(settings: Mapping[str, Any] | Any, graph_dim: int, hidden: int, image_dim: int) -> ProjectorConfig:
    """The projector config of a Stage-2 run's settings (an InstructConfig or its saved config dict), for node
    tokens of width ``graph_dim``, an LLM of hidden size ``hidden`` and pooled image vectors of ``image_dim``."""
    c = settings if isinstance(settings, Mapping) else asdict(settings)
    modality = c["projector"] == "modality"
    return ProjectorConfig(graph_dim=graph_dim, out_dim=hidden, kind=c["projector"], hidden_dim=c["projector_hidden"],
                           image_dim=image_dim if modality else 0, shared_graph=c["shared_graph_projector"],
                           cross_task=c["cross_task_attention"])


def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, d_out))


class CrossTaskAttention(nn.Module):
    """x [K, n, H] attends to other [K, n, H] (the same node's other-task projection) -> [K, n, H]."""

    def __init__(self, dim: int, num_heads: int = 8, dropout: float = 0.1):
        super().__init__()
        self.h, self.p = num_heads, dropout
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q, self.k, self.v, self.out = (nn.Linear(dim, dim) for _ in range(4))
        self.ffn = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim), nn.Dropout(dropout))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        K, n, H = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:  # [K, n, H] -> [K, h, n, H / h]
            return t.view(K, n, self.h, H // self.h).transpose(1, 2)

        qn, kvn = self.norm1(x), self.norm1(other)
        o = F.scaled_dot_product_attention(heads(self.q(qn)), heads(self.k(kvn)), heads(self.v(kvn)),
                                           dropout_p=self.p if self.training else 0.0)  # [K, h, n, H / h]
        x = x + self.drop(self.out(o.transpose(1, 2).reshape(K, n, H)))
        return x + self.ffn(self.norm2(x))


class Projectors(nn.Module):
    """graph(tokens [K, n, d], task) -> [K, n, H] (n = nq, or 2 * nq for a paired LP slot, over which the
    cross-task attention runs as one sequence); image(vectors [M, Dp]) -> [M, 1, H]."""

    def __init__(self, cfg: ProjectorConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        hid = cfg.hidden_dim or cfg.out_dim
        names = ("shared",) if cfg.kind == "single" or cfg.shared_graph else TASKS
        self.graph_mlp = nn.ModuleDict({n: _mlp(cfg.graph_dim, hid, cfg.out_dim) for n in names})
        self.image_mlp = _mlp(cfg.image_dim, hid, cfg.out_dim) if cfg.kind == "modality" and cfg.image_dim else None
        self.cross = CrossTaskAttention(cfg.out_dim, cfg.cross_heads, cfg.cross_dropout) if cfg.cross_task else None

    @property
    def image_tokens(self) -> int:
        """Image tokens per node in a prompt (0 or 1)."""
        return int(self.image_mlp is not None)

    def _mlp_for(self, task: str) -> nn.Module:
        if task not in TASKS:
            raise ValueError(f"task: {task!r} is not one of {list(TASKS)}")
        return self.graph_mlp["shared"] if "shared" in self.graph_mlp else self.graph_mlp[task]

    def graph(self, tokens: torch.Tensor, task: str) -> torch.Tensor:
        if tokens.shape[-1] != self.cfg.graph_dim:
            raise ValueError(f"projector input: last dim is {tokens.shape[-1]}, expected {self.cfg.graph_dim}")
        x = tokens.to(next(self.parameters()).dtype)  # [K, nq, d]
        out = self._mlp_for(task)(x)  # [K, nq, H]
        if self.cross is not None:
            other = self._mlp_for("lp" if task == "nc" else "nc")(x)
            out = self.cross(out, other)
        return out

    def image(self, vectors: torch.Tensor) -> torch.Tensor:
        """vectors [M, Dp] -> [M, 1, H] (one image token per slot), or [M, p, Dp] -> [M, p, H] (a paired slot)."""
        if self.image_mlp is None:
            raise ValueError(f"this run has no image projector (projector {self.cfg.kind!r}, image_dim "
                             f"{self.cfg.image_dim})")
        if vectors.shape[-1] != self.cfg.image_dim:
            raise ValueError(f"image projector input: last dim is {vectors.shape[-1]}, expected {self.cfg.image_dim}")
        out = self.image_mlp(vectors.to(next(self.parameters()).dtype))
        return out.unsqueeze(1) if vectors.dim() == 2 else out  # [M, 1, H] or [M, p, H]

    @torch.no_grad()
    def copy_task(self, src: str, dst: str) -> None:
        """Start task dst's graph projector from task src's (a no-op with one shared projector)."""
        if "shared" not in self.graph_mlp:
            self.graph_mlp[dst].load_state_dict(self.graph_mlp[src].state_dict())


def save_projectors(proj: Projectors, path) -> None:
    """Atomically write the weights (safetensors) with the config in the file's metadata."""
    state = {k: v.detach().cpu().contiguous().float() for k, v in proj.state_dict().items()}
    atomic_write_bytes(path, save(state, metadata={"projector_config": json.dumps(proj.cfg.to_dict())}))


def load_projectors(path, expected: Mapping[str, Any] | None = None) -> Projectors:
    """The projectors saved at ``path``, after checking its header (``runs.open.safetensors_header``), the
    config in its metadata (against ``expected``, the run manifest's, when given) and every tensor's name
    and shape against that config, so a damaged file is refused with a ValueError naming it."""
    tensors, meta = safetensors_header(path)
    if "projector_config" not in meta:
        raise ValueError(f"{path}: not a projector file (no projector_config metadata)")
    try:
        cfg = ProjectorConfig(**json.loads(meta["projector_config"]))
        cfg.validate()
    except (json.JSONDecodeError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: its projector_config metadata is damaged ({' '.join(str(e).split())})") from None
    if expected is not None and cfg.to_dict() != dict(expected):
        raise ValueError(f"{path} was saved with projector config {cfg.to_dict()}, but the manifest records "
                         f"{dict(expected)}")
    proj = Projectors(cfg)
    check_tensor_shapes(path, tensors, {k: tuple(v.shape) for k, v in proj.state_dict().items()},
                        "the projector config")
    proj.load_state_dict(load_file(str(path)))
    return proj

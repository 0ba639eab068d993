"""Stage 1 aligner with the structure of the authors' released MLaGA code (``arch: mlaga``).

Read from the release and re-expressed (see docs/paper_model.md for the facts and its defects):

- text tokens [B, Lt, Dt] go through a Linear(Dt, d); image tokens are used as they are when Di == d
  (CLIP ViT-L/14: 1024 == d) and through a Linear(Di, d) otherwise (our encoders; a documented
  deviation, since the release only ran CLIP);
- one self-attention block per layer, its weights shared by the modalities but applied to the image
  tokens and to the text tokens separately (two calls), never to their concatenation;
- ``num_queries`` learnable queries (std-1 normal init) with no self-attention; they change only at the
  cross-attention layers, layer i (0-based) with (i + 1) % cross_attention_every == 0: there
  queries <- FFN(CrossAttn(queries, concat(SA(image), SA(text)))) and each modality's tokens become
  FFN(SA(tokens)); at the other layers only the tokens move, tokens <- FFN(SA(tokens));
- attention: Q/K/V Linear(d, d) with bias, scaled dot product over d / heads per head, no output
  projection; FFN: Linear(d, r d), GELU, Linear(r d, d), dropout, then LayerNorm(eps 1e-12); each
  layer's one FFN serves the queries and both modalities; post-norm, no residual connections;
- the node's tokens are the queries after the last cross-attention layer, [B, nq, d]; the pooled
  vector the contrastive loss compares is their mean.

Our fix: padded text tokens are masked as keys (the release attends to them). The cross-attention
runs through the fused dispatch (``mlaga_fast.ops.cross_attention``: Triton on GPU, SDPA elsewhere).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mlaga_fast.models.encode import encode_all
from mlaga_fast.ops.cross_attention import cross_attention

__all__ = ["MLaGAAligner", "check_modality"]


def check_modality(batch: dict, modality: str, dim: int) -> None:
    """A batch must carry ``modality`` ("image" or "text") at width ``dim`` when the aligner reads it (dim > 0).
    An aligner built without a modality (dim 0: a text-only or image-only graph) runs on the other alone and
    reads nothing of this one, so no zero tokens ever stand in for a missing modality."""
    if not dim:
        return
    x = batch.get(modality)
    got = 0 if x is None or x.dim() != 3 or x.shape[1] == 0 else int(x.shape[-1])
    if got == 0:
        raise ValueError(f"the features have no {modality} tokens, but this aligner was trained with {modality}s "
                         f"({modality}_dim {dim}); use features of the graph and encoder it was trained on")
    if got != dim:
        raise ValueError(f"batch {modality} dim {got} != aligner {modality}_dim {dim}")


def _valid_keys(mask: torch.Tensor) -> torch.Tensor:
    """[B, L] bool key mask where a row with no valid key (a node without text) keeps every key: its
    outputs are never read as keys downstream (masked there), and softmax over no key would be NaN."""
    return mask | ~mask.any(dim=1, keepdim=True)


class _QKV(nn.Module):
    """Q/K/V projections (bias, no output projection), split into heads: [B, L, d] -> [B, H, L, dh]."""

    def __init__(self, d: int, num_heads: int):
        super().__init__()
        self.h = num_heads
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)

    def heads(self, lin: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        B, L, d = x.shape
        return lin(x).view(B, L, self.h, d // self.h).transpose(1, 2)


class _SelfAttention(_QKV):
    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # x: [B, L, d], mask: [B, L] bool (True = valid key) -> [B, L, d]
        B, L, d = x.shape
        attn = _valid_keys(mask)[:, None, None, :]  # [B, 1, 1, L]
        o = F.scaled_dot_product_attention(self.heads(self.q, x), self.heads(self.k, x), self.heads(self.v, x),
                                           attn_mask=attn)  # [B, H, L, dh]
        return o.transpose(1, 2).reshape(B, L, d)


class _CrossAttention(_QKV):
    def __init__(self, d: int, num_heads: int, backend: str | None):
        super().__init__(d, num_heads)
        self.backend = backend

    def forward(self, queries: torch.Tensor, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # queries: [B or 1, nq, d], x: [B, L, d], mask: [B, L] -> [B, nq, d]
        B, L, d = x.shape
        nq = queries.shape[1]
        o = cross_attention(self.heads(self.q, queries), self.heads(self.k, x), self.heads(self.v, x), mask,
                            backend=self.backend)  # [B, H, nq, dh]
        return o.transpose(1, 2).reshape(B, nq, d)


class _FFN(nn.Module):
    def __init__(self, d: int, mlp_ratio: float, dropout: float):
        super().__init__()
        hidden = int(round(d * mlp_ratio))
        self.fc1, self.act, self.fc2 = nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d, eps=1e-12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.drop(self.fc2(self.act(self.fc1(x)))))


class _Layer(nn.Module):
    def __init__(self, d: int, num_heads: int, mlp_ratio: float, dropout: float, cross: bool,
                 attn_backend: str | None):
        super().__init__()
        self.sa = _SelfAttention(d, num_heads)
        self.ffn = _FFN(d, mlp_ratio, dropout)
        self.cross = _CrossAttention(d, num_heads, attn_backend) if cross else None


class MLaGAAligner(nn.Module):
    """forward(batch) -> (tokens [B, nq, d], pooled [B, d]); batch as returned by FeatureStore.get."""

    uses_input_stats = False  # the release feeds the encoders' tokens unstandardised

    def __init__(self, *, image_dim: int, text_dim: int, d: int = 128, num_layers: int = 2, num_heads: int = 4,
                 num_queries: int = 8, cross_attention_every: int = 2, mlp_ratio: float = 4.0,
                 dropout: float = 0.1, attn_backend: str | None = None):
        super().__init__()
        for name, v in {"d": d, "num_layers": num_layers, "num_heads": num_heads, "num_queries": num_queries,
                        "cross_attention_every": cross_attention_every}.items():
            if int(v) < 1:
                raise ValueError(f"aligner {name} must be >= 1, got {v}")
        if d % num_heads:
            raise ValueError(f"aligner d ({d}) must be divisible by num_heads ({num_heads})")
        if num_layers % cross_attention_every:
            raise ValueError(f"arch mlaga: the queries change only at layers i with (i + 1) % cross_attention_every "
                             f"== 0 and the last layer must be one of them (later layers would train nothing), so "
                             f"num_layers ({num_layers}) must be a multiple of cross_attention_every "
                             f"({cross_attention_every})")
        if image_dim < 0 or text_dim < 0 or image_dim + text_dim == 0:
            raise ValueError(f"aligner needs at least one modality: image_dim={image_dim}, text_dim={text_dim}")
        self.arch = {"arch": "mlaga", "d": d, "num_layers": num_layers, "num_heads": num_heads,
                     "num_queries": num_queries, "cross_attention_every": cross_attention_every,
                     "mlp_ratio": float(mlp_ratio), "image_dim": image_dim, "text_dim": text_dim}
        self.d, self.num_queries = d, num_queries
        self.image_proj = (nn.Identity() if image_dim == d else nn.Linear(image_dim, d)) if image_dim else None
        self.text_proj = nn.Linear(text_dim, d) if text_dim else None
        self.queries = nn.Parameter(torch.randn(num_queries, d))
        self.layers = nn.ModuleList(
            _Layer(d, num_heads, mlp_ratio, dropout, cross=(i + 1) % cross_attention_every == 0,
                   attn_backend=attn_backend) for i in range(num_layers))

    def encode(self, features, nodes=None, *, batch_size: int = 256, device: str = "auto", progress: bool = False):
        """Aligned tokens [n, nq, d] and pooled vectors [n, d] (float32) of ``nodes`` (default all) of a
        features dir or FeatureStore."""
        return encode_all(self, features, nodes, batch_size=batch_size, device=device, progress=progress)

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = self.queries.dtype
        check_modality(batch, "image", self.arch["image_dim"])
        check_modality(batch, "text", self.arch["text_dim"])
        streams = []  # (tokens [B, L, d], mask [B, L]) per modality the aligner reads, image first
        if self.image_proj is not None:
            streams.append((self.image_proj(batch["image"].to(dtype)), batch["image_mask"].bool()))
        if self.text_proj is not None:
            streams.append((self.text_proj(batch["text"].to(dtype)), batch["text_mask"].bool()))
        q = self.queries.unsqueeze(0)  # [1, nq, d] until the first cross-attention layer
        for i, layer in enumerate(self.layers):
            attended = [layer.sa(x, m) for x, m in streams]  # SA per modality, shared weights
            if layer.cross is not None:
                kv = torch.cat(attended, dim=1)  # [B, Li + Lt, d]
                mask = torch.cat([m for _, m in streams], dim=1)  # [B, Li + Lt]
                q = layer.ffn(layer.cross(q, kv, mask))  # [B, nq, d]
            if i + 1 < len(self.layers):  # the last layer's token outputs are never read
                streams = [(layer.ffn(a), m) for a, (_, m) in zip(attended, streams)]  # [B, L, d] each
        return q, q.mean(dim=1)  # tokens [B, nq, d], pooled [B, d]

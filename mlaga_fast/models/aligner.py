"""Stage 1: the structure-aware multimodal aligner.

A node arrives as cached encoder tokens: image [B, Li, Di] and text [B, Lt, Dt] (fp16, with masks,
True = real token). The aligner

1. standardises each modality's token features per dimension (statistics of the training features,
   stored with the weights), projects them to the model width d and adds a modality embedding;
2. runs a stack of shared self-attention layers over the concatenated [image; text] tokens, with
   padded text tokens masked out as keys (a graph without images or texts: image_dim or text_dim 0,
   and the stack runs over the one modality's tokens; nothing stands in for the missing one);
3. carries nq learnable queries through the same stack (Q-Former style). The query stream has its
   own self-attention and FFN in every layer, and at every ``cross_attention_every``-th layer
   (layers 0, k, 2k, ...) it cross-attends to the token states that layer just produced, through
   the fused ``QueryCrossAttention`` op (Triton on GPU, SDPA elsewhere; one dispatch point);
4. returns the normalised query states as the node's aligned tokens [B, nq, d] and their mean as
   the pooled vector [B, d] that the contrastive loss compares.

All layers are pre-norm residual blocks (stable without LR warm-restarts at d = 1024).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from mlaga_fast.models.aligner_mlaga import MLaGAAligner, check_modality
from mlaga_fast.models.encode import encode_all
from mlaga_fast.ops.cross_attention import QueryCrossAttention
from mlaga_fast.runs.open import check_tensor_shapes, open_run, safetensors_header

__all__ = ["Aligner", "load_aligner", "input_stats", "ALIGNER_ARCH_KEYS"]

# The keys of a run's manifest "dims" that rebuild the architecture (everything except weights).
ALIGNER_ARCH_KEYS = ("d", "num_layers", "num_heads", "num_queries", "cross_attention_every", "mlp_ratio",
                     "image_dim", "text_dim")


class _SelfAttention(nn.Module):
    """Multi-head self-attention with a key-padding mask, on SDPA (flash/mem-efficient when possible)."""

    def __init__(self, d: int, num_heads: int, dropout: float):
        super().__init__()
        self.h = num_heads
        # No key bias: softmax is invariant to adding q.b_k to every logit of a row, so a key bias gets
        # an exactly-zero gradient and only drifts with Adam's normalised rounding noise.
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(d))
        self.v_bias = nn.Parameter(torch.zeros(d))
        self.out = nn.Linear(d, d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        B, L, d = x.shape  # x: [B, L, d]; mask: [B, L] bool, True = valid key
        bias = torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])  # [3d]
        qkv = F.linear(x, self.qkv.weight, bias).view(B, L, 3, self.h, d // self.h)  # [B, L, 3, H, dh]
        qkv = qkv.permute(2, 0, 3, 1, 4)  # [3, B, H, L, dh]
        attn = None
        if mask is not None:
            # A row with no valid key would softmax over -inf only (NaN); let such rows attend to
            # everything instead. Their states are never read as keys (masked), so this is harmless.
            empty = ~mask.any(dim=1)  # [B]
            attn = (mask | empty[:, None])[:, None, None, :]  # [B, 1, 1, L]
        o = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=attn)  # [B, H, L, dh]
        return self.drop(self.out(o.transpose(1, 2).reshape(B, L, d)))


class _FFN(nn.Sequential):
    def __init__(self, d: int, mlp_ratio: float, dropout: float):
        hidden = int(round(d * mlp_ratio))
        super().__init__(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d), nn.Dropout(dropout))


class AlignerLayer(nn.Module):
    """One layer: token self-attn + FFN; query self-attn, optional cross-attn to the tokens, FFN."""

    def __init__(self, d: int, num_heads: int, mlp_ratio: float, dropout: float, cross: bool,
                 attn_backend: str | None):
        super().__init__()
        self.tok_norm1, self.tok_attn = nn.LayerNorm(d), _SelfAttention(d, num_heads, dropout)
        self.tok_norm2, self.tok_ffn = nn.LayerNorm(d), _FFN(d, mlp_ratio, dropout)
        self.q_norm1, self.q_attn = nn.LayerNorm(d), _SelfAttention(d, num_heads, dropout)
        self.cross = cross
        if cross:
            self.q_norm_x, self.kv_norm = nn.LayerNorm(d), nn.LayerNorm(d)
            self.q_cross = QueryCrossAttention(d, num_heads, dropout=dropout, backend=attn_backend)
        self.q_norm2, self.q_ffn = nn.LayerNorm(d), _FFN(d, mlp_ratio, dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # x: [B, L, d] tokens, mask: [B, L], q: [B, nq, d] queries
        x = x + self.tok_attn(self.tok_norm1(x), mask)
        x = x + self.tok_ffn(self.tok_norm2(x))
        q = q + self.q_attn(self.q_norm1(q))
        if self.cross:
            q = q + self.q_cross(self.q_norm_x(q), self.kv_norm(x), mask)  # [B, nq, d]
        q = q + self.q_ffn(self.q_norm2(q))
        return x, q


class Aligner(nn.Module):
    """forward(batch) -> (tokens [B, nq, d], pooled [B, d]); batch as returned by FeatureStore.get."""

    uses_input_stats = True  # inputs are standardised per dimension (set_input_stats)

    def __init__(self, *, image_dim: int, text_dim: int, d: int = 128, num_layers: int = 2, num_heads: int = 4,
                 num_queries: int = 8, cross_attention_every: int = 1, mlp_ratio: float = 4.0,
                 dropout: float = 0.0, attn_backend: str | None = None):
        super().__init__()
        checks = {"d": d, "num_layers": num_layers, "num_heads": num_heads, "num_queries": num_queries,
                  "cross_attention_every": cross_attention_every}
        for name, v in checks.items():
            if int(v) < 1:
                raise ValueError(f"aligner {name} must be >= 1, got {v}")
        if d % num_heads:
            raise ValueError(f"aligner d ({d}) must be divisible by num_heads ({num_heads})")
        if image_dim < 0 or text_dim < 0 or image_dim + text_dim == 0:
            raise ValueError(f"aligner needs at least one modality: image_dim={image_dim}, text_dim={text_dim}")
        if mlp_ratio <= 0:
            raise ValueError(f"aligner mlp_ratio must be > 0, got {mlp_ratio}")
        self.arch = {"arch": "prenorm", "d": d, "num_layers": num_layers, "num_heads": num_heads, "num_queries": num_queries,
                     "cross_attention_every": cross_attention_every, "mlp_ratio": float(mlp_ratio),
                     "image_dim": image_dim, "text_dim": text_dim}
        self.d, self.num_queries = d, num_queries
        self.image_proj = nn.Linear(image_dim, d) if image_dim else None
        self.text_proj = nn.Linear(text_dim, d) if text_dim else None
        # Per-dimension input standardisation, fitted on the training features (set_input_stats) and
        # saved with the weights. Frozen encoders' tokens share a large common component (e.g. ViT
        # positional and class-token directions): without this, every node starts with nearly the same
        # pooled vector (cosine ~0.9 measured on tiny CLIP) and the contrastive loss learns slowly.
        self.register_buffer("image_mean", torch.zeros(image_dim))
        self.register_buffer("image_std", torch.ones(image_dim))
        self.register_buffer("text_mean", torch.zeros(text_dim))
        self.register_buffer("text_std", torch.ones(text_dim))
        self.modality_emb = nn.Parameter(torch.zeros(2, d))  # row 0 image, row 1 text
        self.queries = nn.Parameter(torch.zeros(num_queries, d))
        self.layers = nn.ModuleList(
            AlignerLayer(d, num_heads, mlp_ratio, dropout, cross=(i % cross_attention_every == 0),
                         attn_backend=attn_backend)
            for i in range(num_layers)
        )
        self.out_norm = nn.LayerNorm(d)
        self._init_weights()

    def _init_weights(self) -> None:
        # Xavier weights keep the node-specific signal at unit scale through every projection (a fixed
        # std of 0.02 shrinks it ~10x at d = 32-128, leaving the shared queries to dominate); zero
        # biases add no direction shared by all nodes.
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.modality_emb, std=0.02)
        # Distinct query initialisations so the queries do not start as one token repeated nq times.
        nn.init.trunc_normal_(self.queries, std=0.02)

    @torch.no_grad()
    def set_input_stats(self, image_mean=None, image_std=None, text_mean=None, text_std=None) -> None:
        """Set the per-dimension input standardisation (tensors [Di] / [Dt]; std is floored at 1e-6)."""
        for name, v in (("image_mean", image_mean), ("image_std", image_std), ("text_mean", text_mean),
                        ("text_std", text_std)):
            if v is None:
                continue
            buf = getattr(self, name)
            v = torch.as_tensor(v, dtype=buf.dtype, device=buf.device)
            if v.shape != buf.shape or not torch.isfinite(v).all():
                raise ValueError(f"aligner {name}: expected {tuple(buf.shape)} finite values, got {tuple(v.shape)}")
            buf.copy_(v.clamp(min=1e-6) if name.endswith("std") else v)

    def embed_tokens(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Project and concatenate the modalities the aligner reads: ([B, Li + Lt, d], mask [B, Li + Lt]).
        Without images (image_dim 0) that is the text tokens alone, [B, Lt, d], and vice versa."""
        check_modality(batch, "image", self.arch["image_dim"])
        check_modality(batch, "text", self.arch["text_dim"])
        dtype = self.modality_emb.dtype
        parts, masks = [], []
        if self.image_proj is not None:
            img = batch["image"]  # [B, Li, Di] fp16
            img = (img.to(dtype) - self.image_mean) / self.image_std
            parts.append(self.image_proj(img) + self.modality_emb[0])
            masks.append(batch["image_mask"].bool())
        if self.text_proj is not None:
            txt = batch["text"]  # [B, Lt, Dt] fp16
            txt = (txt.to(dtype) - self.text_mean) / self.text_std
            parts.append(self.text_proj(txt) + self.modality_emb[1])
            masks.append(batch["text_mask"].bool())
        return torch.cat(parts, dim=1), torch.cat(masks, dim=1)

    @staticmethod
    def from_pretrained(run_dir: str | Path, device: str = "cpu", *, verify: bool = True) -> nn.Module:
        """The aligner of a finished Stage-1 run (arch prenorm or mlaga), in eval mode on ``device``, its files
        checked first (``load_aligner``; ``verify=False`` skips the checksum).
        Its ``encode(features)`` maps a features dir or FeatureStore to tokens [N, nq, d] and pooled [N, d]."""
        model, _ = load_aligner(run_dir, map_location=device, verify=verify)
        return model

    def encode(self, features: Any, nodes: Any = None, *, batch_size: int = 256, device: str = "auto",
               progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Aligned tokens [n, nq, d] and pooled vectors [n, d] (float32) of ``nodes`` (default all) of a
        features dir or FeatureStore, computed as ``mlaga-fast embed`` does."""
        return encode_all(self, features, nodes, batch_size=batch_size, device=device, progress=progress)

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x, mask = self.embed_tokens(batch)  # [B, L, d], [B, L]
        q = self.queries.unsqueeze(0).expand(x.shape[0], -1, -1)  # [B, nq, d]
        for layer in self.layers:
            x, q = layer(x, mask, q)
        tokens = self.out_norm(q)  # [B, nq, d]
        return tokens, tokens.mean(dim=1)  # pooled: [B, d]


def load_aligner(run_dir: str | Path, map_location: str | torch.device = "cpu",
                 attn_backend: str | None = None, *, verify: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a finished Stage 1 run's aligner (``arch`` prenorm or mlaga; eval mode) and return it with
    the run manifest.

    The run is opened with ``mlaga_fast.runs.open.open_run`` (manifest, stage, version, the weights'
    checksum unless ``verify`` is False, a sound safetensors header), then every tensor's name and shape is
    compared with the architecture its manifest's dims describe, before any weight is read.
    """
    run_dir = Path(run_dir)
    manifest = open_run(run_dir, "align", verify=verify).manifest
    dims = manifest.get("dims")
    missing = [k for k in ALIGNER_ARCH_KEYS if not isinstance(dims, dict) or k not in dims]
    if missing:
        raise ValueError(f"{run_dir}/manifest.json dims lack {missing[0]!r}: not an aligner run manifest")
    weights = run_dir / "model.safetensors"
    cls = MLaGAAligner if dims.get("arch", "prenorm") == "mlaga" else Aligner
    try:
        model = cls(**{k: dims[k] for k in ALIGNER_ARCH_KEYS}, attn_backend=attn_backend)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{run_dir}/manifest.json: its dims do not describe an aligner ({e})") from None
    tensors, _ = safetensors_header(weights)
    check_tensor_shapes(weights, tensors, {k: tuple(v.shape) for k, v in model.state_dict().items()},
                        "the architecture in its manifest")
    model.load_state_dict(load_file(str(weights), device=str(map_location)))
    return model.eval(), json.loads(json.dumps(manifest))


def input_stats(store: Any, max_nodes: int = 4096, seed: int = 0, batch_size: int = 512) -> dict[str, torch.Tensor]:
    """Per-dimension mean / std of the valid tokens of up to ``max_nodes`` seeded-random nodes.

    Streams ``batch_size`` nodes at a time from the memory-mapped store (float64 sums), so memory is
    one batch. Returns image_mean/std [Di] and text_mean/std [Dt] (empty for an absent modality).
    """
    n = store.num_nodes
    ids = np.sort(np.random.default_rng([seed, 7]).choice(n, min(n, max_nodes), replace=False))
    acc = {m: [torch.zeros(dim, dtype=torch.float64), torch.zeros(dim, dtype=torch.float64), 0]
           for m, dim in (("image", store.image_dim), ("text", store.text_dim))}
    for lo in range(0, len(ids), batch_size):
        b = store.get(ids[lo:lo + batch_size])
        for m in ("image", "text"):
            if acc[m][0].numel() == 0:
                continue
            x = b[m][b[f"{m}_mask"]].double()  # [valid tokens, D]
            acc[m][0] += x.sum(0)
            acc[m][1] += (x * x).sum(0)
            acc[m][2] += x.shape[0]
    out = {}
    for m, (s1, s2, cnt) in acc.items():
        cnt = max(cnt, 1)
        mean = s1 / cnt
        out[f"{m}_mean"] = mean.float()
        std = (s2 / cnt - mean * mean).clamp(min=0).sqrt()
        # a dimension that is (nearly) constant in the sample must not blow up at inference
        out[f"{m}_std"] = std.clamp(min=1e-2 * float(std.mean()) if std.numel() else 0.0).float()
    return out

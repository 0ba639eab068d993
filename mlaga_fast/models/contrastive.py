"""Stage 1's graph-contrastive objectives (our InfoNCE and the released MLaGA loss), and the 1-hop
positive sampler.

Positives of an anchor node are ``k`` neighbours sampled from the *training* graph (val/test link
edges removed, so link prediction is not leaked): without replacement when the node has at least k
neighbours, with replacement when it has fewer, and the node itself when it is isolated.

Negatives are the other anchors of the (global) batch, minus the anchor itself and minus any anchor
that is one of its positives (compared by node id). With ``s`` the cosine similarity of pooled
vectors, each (anchor i, positive j) pair contributes

    loss_ij = -log( exp(s_ij / tp) / (exp(s_ij / tp) + sum_n exp(s_in / tau)) )

and the loss is the mean over all pairs. ``tau_mode="both"`` (default) uses tp = tau: the usual
InfoNCE, a softmax at one temperature. ``tau_mode="negatives_only"`` uses tp = 1, as the MLaGA
reference code does: positives are then never sharpened, so the loss keeps pushing negatives apart
long after the positives are ranked first, and its minimum is not at s_ij = 1 alone. "both" is the
one with the standard InfoNCE interpretation.

``mlaga_objective`` is the loss of the authors' released code (objective "mlaga"): per anchor i with
k positives p_ik and the batch's anchors a_j (j = i included, no mask),

    L_i = -log sum_k exp(cos(a_i, p_ik)) + log sum_j exp(cos(a_i, a_j) / tau),     tau = 0.5

i.e. the positives are summed inside one log, unsharpened, against a denominator of negatives only.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["sample_positives", "graph_infonce", "mlaga_objective", "contrastive_stats", "embedding_spread",
           "OBJECTIVES"]

OBJECTIVES = ("infonce", "mlaga")


def sample_positives(indptr: np.ndarray, indices: np.ndarray, nodes: np.ndarray, k: int,
                     rng: np.random.Generator) -> np.ndarray:
    """int64 [len(nodes), k] neighbour ids (see module docstring for the rules)."""
    if k < 1:
        raise ValueError(f"num_positives must be >= 1, got {k}")
    nodes = np.asarray(nodes, dtype=np.int64)
    n = indptr.shape[0] - 1
    bad = np.flatnonzero((nodes < 0) | (nodes >= n))
    if bad.size:
        raise ValueError(f"nodes: id {int(nodes[bad[0]])} at index {int(bad[0])} is out of range [0, {n})")
    start = indptr[nodes]  # [B]
    deg = indptr[nodes + 1] - start  # [B]
    out = np.empty((nodes.shape[0], k), dtype=np.int64)
    few = deg < k
    # fewer than k neighbours (vectorised): uniform with replacement; isolated -> itself
    if few.any():
        r = rng.random((int(few.sum()), k))
        d = deg[few]
        off = np.floor(r * np.maximum(d, 1)[:, None]).astype(np.int64)  # [b, k] in [0, d)
        picked = indices[np.minimum(start[few][:, None] + off, max(indices.shape[0] - 1, 0))] if indices.size \
            else np.zeros_like(off)
        out[few] = np.where(d[:, None] > 0, picked, nodes[few][:, None])
    # at least k neighbours: k distinct ones (Generator.choice is O(k) for small k, not O(degree))
    for row in np.flatnonzero(~few):
        pick = rng.choice(int(deg[row]), size=k, replace=False)
        out[row] = indices[start[row] + pick]
    return out


def embedding_spread(z: torch.Tensor) -> torch.Tensor:
    """RMS distance of L2-normalised vectors [n, d] to their centroid, in [0, 1]; 0 = collapse."""
    z = F.normalize(z.detach().float(), dim=-1)
    return (z - z.mean(dim=0, keepdim=True)).pow(2).sum(dim=-1).mean().sqrt()


def _check_pair_shapes(anchor: torch.Tensor, positives: torch.Tensor, tau: float) -> None:
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    if anchor.dim() != 2 or positives.dim() != 3 or positives.shape[0] != anchor.shape[0]:
        raise ValueError(f"anchor must be [B, d] and positives [B, k, d], got {tuple(anchor.shape)}, "
                         f"{tuple(positives.shape)}")


def _cosines(anchor: torch.Tensor, positives: torch.Tensor, all_anchor: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """(s_pos [B, k], s_neg [B, G]): cosine of each anchor with its positives and with every pooled anchor."""
    a = F.normalize(anchor.float(), dim=-1)  # [B, d]
    p = F.normalize(positives.float(), dim=-1)  # [B, k, d]
    g = F.normalize(all_anchor.float(), dim=-1)  # [G, d]
    return torch.einsum("bd,bkd->bk", a, p), a @ g.T


def graph_infonce(anchor: torch.Tensor, positives: torch.Tensor, anchor_ids: torch.Tensor,
                  positive_ids: torch.Tensor, *, tau: float = 0.1, tau_mode: str = "both",
                  all_anchor: torch.Tensor | None = None, all_anchor_ids: torch.Tensor | None = None,
                  ) -> torch.Tensor:
    """Mean InfoNCE over (anchor, positive) pairs (objective "infonce").

    anchor [B, d], positives [B, k, d]: pooled vectors (any scale; cosine is taken here).
    anchor_ids [B], positive_ids [B, k]: node ids (int64).
    all_anchor [G, d], all_anchor_ids [G]: the negatives' pool, e.g. the anchors gathered from every
    rank (must contain this rank's anchors); defaults to this batch's anchors.
    """
    _check_pair_shapes(anchor, positives, tau)
    if tau_mode not in ("both", "negatives_only"):
        raise ValueError(f"tau_mode must be 'both' or 'negatives_only', got {tau_mode!r}")
    if all_anchor is None:
        all_anchor, all_anchor_ids = anchor, anchor_ids
    s_pos, s_neg = _cosines(anchor, positives, all_anchor)  # [B, k], [B, G]
    ids_g = all_anchor_ids.view(1, -1)  # [1, G]
    valid = (ids_g != anchor_ids.view(-1, 1)) & ~(ids_g.unsqueeze(-1) == positive_ids.unsqueeze(1)).any(-1)  # [B, G]
    tp = tau if tau_mode == "both" else 1.0
    lp = s_pos / tp  # [B, k]
    # A finite fill, not -inf: a row with no valid negative (tiny batch) would otherwise give a NaN
    # gradient through logsumexp; exp(-1e9 - anything reasonable) is exactly 0 in fp32.
    ln = (s_neg / tau).masked_fill(~valid, -1e9)  # [B, G]
    # log(exp(lp) + sum exp(ln)) per pair: logaddexp of lp with each row's negative logsumexp
    neg_lse = torch.logsumexp(ln, dim=-1, keepdim=True)  # [B, 1]
    return (torch.logaddexp(lp, neg_lse) - lp).mean()


def mlaga_objective(anchor: torch.Tensor, positives: torch.Tensor, tau: float = 0.5,
                    all_anchor: torch.Tensor | None = None) -> torch.Tensor:
    """The released MLaGA loss (objective "mlaga"; formula in the module docstring), mean over anchors.

    anchor [B, d], positives [B, k, d]; all_anchor [G, d] is the negatives' pool (every rank's anchors,
    containing this rank's), by default the batch's anchors. Every pooled anchor is a negative,
    the anchor itself included, as in the released code.
    """
    _check_pair_shapes(anchor, positives, tau)
    s_pos, s_neg = _cosines(anchor, positives, anchor if all_anchor is None else all_anchor)
    return (torch.logsumexp(s_neg / tau, dim=-1) - torch.logsumexp(s_pos, dim=-1)).mean()


@torch.no_grad()
def contrastive_stats(anchor: torch.Tensor, positives: torch.Tensor, anchor_ids: torch.Tensor,
                      all_anchor: torch.Tensor, all_anchor_ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """Detached diagnostics of a batch, whatever the objective: pos_sim (mean cosine to positives),
    neg_sim (mean cosine to the other pooled anchors), gap = pos_sim - neg_sim, spread (of all_anchor)."""
    s_pos, s_neg = _cosines(anchor, positives, all_anchor)
    other = all_anchor_ids.view(1, -1) != anchor_ids.view(-1, 1)  # [B, G]
    neg_sim = (s_neg * other).sum() / other.sum().clamp(min=1)
    pos_sim = s_pos.mean()
    return {"pos_sim": pos_sim, "neg_sim": neg_sim, "gap": pos_sim - neg_sim, "spread": embedding_spread(all_anchor)}

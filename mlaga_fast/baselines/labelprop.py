"""Label propagation on graph structure alone (Zhou et al., "Learning with local and global
consistency"): iterate F <- alpha * S F + (1 - alpha) * Y, S = D^-1/2 A D^-1/2, to convergence.

Y holds one-hot rows for the training nodes only (val/test labels are never read). The fixed
point is (1 - alpha) (I - alpha S)^-1 Y, which exists for alpha in [0, 1) because S's spectral
radius is at most 1; the iteration contracts by alpha per step, so it stops after about
log(tol) / log(alpha) steps.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mlaga_fast.baselines.models import normalized_adjacency


@dataclass
class LabelPropResult:
    pred: np.ndarray       # int64 [N] argmax class per node
    scores: np.ndarray     # float64 [N, C] propagated label mass
    iterations: int        # iterations run
    converged: bool        # max |F_t+1 - F_t| < tol reached within max_iter
    unreached: int         # nodes with no path to a training node (they get the majority class)


def label_propagation(indptr, indices, labels, train_idx, num_classes: int, *,
                      alpha: float = 0.9, tol: float = 1e-6,
                      max_iter: int = 1000) -> LabelPropResult:
    """Propagate the labels of `train_idx` over the CSR graph; see the module docstring."""
    num_nodes = int(np.asarray(indptr).shape[0]) - 1
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"alpha: expected a value in [0, 1), got {alpha}")
    if num_classes <= 0:
        raise ValueError(f"num_classes: expected > 0, got {num_classes}")
    labels = np.asarray(labels, dtype=np.int64)
    train_idx = np.asarray(train_idx, dtype=np.int64)
    if labels.shape != (num_nodes,):
        raise ValueError(f"labels: expected shape ({num_nodes},), got {labels.shape}")
    if train_idx.size == 0:
        raise ValueError("train_idx: empty; label propagation needs labelled nodes")
    bad = np.flatnonzero((train_idx < 0) | (train_idx >= num_nodes))
    if bad.size:
        raise ValueError(f"train_idx: node {int(train_idx[bad[0]])} at index {int(bad[0])} "
                         f"is outside [0, {num_nodes})")
    y_train = labels[train_idx]
    bad = np.flatnonzero((y_train < 0) | (y_train >= num_classes))
    if bad.size:
        raise ValueError(f"labels: training node {int(train_idx[bad[0]])} (train index "
                         f"{int(bad[0])}) has label {int(y_train[bad[0]])} outside "
                         f"[0, {num_classes})")

    S = normalized_adjacency(indptr, indices, num_nodes, kind="sym", dtype=torch.float64)
    Y = torch.zeros(num_nodes, num_classes, dtype=torch.float64)  # [N, C]
    Y[torch.from_numpy(train_idx), torch.from_numpy(y_train)] = 1.0
    base = (1.0 - alpha) * Y
    F = Y.clone()
    converged = False
    it = 0
    for it in range(1, max_iter + 1):
        F_next = alpha * torch.sparse.mm(S, F) + base
        delta = float((F_next - F).abs().max()) if num_nodes else 0.0
        F = F_next
        if delta < tol:
            converged = True
            break

    scores = F.numpy()
    pred = scores.argmax(axis=1).astype(np.int64)
    # A node that no training label can reach has an all-zero row; argmax would say class 0,
    # so it gets the most frequent training class instead (the best structure-free guess).
    unreached = scores.max(axis=1) <= 0.0
    majority = int(np.bincount(y_train, minlength=num_classes).argmax())
    pred[unreached] = majority
    return LabelPropResult(pred=pred, scores=scores, iterations=it, converged=converged,
                           unreached=int(unreached.sum()))

"""Baseline node encoders over pooled node features: MLP, 2-layer GCN, 2-layer GraphSAGE (mean).

Dependency-free graph ops: the normalised adjacency is a torch sparse CSR tensor built once from
the training graph's CSR arrays, and each propagation is one sparse @ dense product.
Every encoder has the same call signature, forward(x [N, D], adj) -> [N, out_dim], so the
training loop does not care which one it holds (the MLP ignores `adj`).
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

from mlaga_fast.graph_check import check_csr

from mlaga_fast.baselines.config import ENCODERS


def _csr_arrays(indptr, indices, num_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    indptr = np.ascontiguousarray(np.asarray(indptr), dtype=np.int64)
    indices = np.ascontiguousarray(np.asarray(indices), dtype=np.int64)
    check_csr(indptr, indices, num_nodes)  # ValueError naming the first bad index
    # The C++ check allows self-loops and duplicates; the normalisations below assume neither
    # (GCN adds its own self-loop), so a graph breaking the package convention is refused here.
    rows = np.repeat(np.arange(num_nodes, dtype=np.int64), np.diff(indptr))
    bad = np.flatnonzero(rows == indices)
    if bad.size:
        raise ValueError(f"indices[{int(bad[0])}]: self-loop on node {int(rows[bad[0]])}; "
                         "the graph must have none")
    same = np.flatnonzero((rows[1:] == rows[:-1]) & (indices[1:] <= indices[:-1]))
    if same.size:
        raise ValueError(f"indices[{int(same[0]) + 1}]: neighbours of node {int(rows[same[0]])} "
                         "are not strictly increasing (duplicate or unsorted)")
    return indptr, indices


def normalized_adjacency(indptr, indices, num_nodes: int, kind: str = "gcn",
                         dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Sparse CSR propagation matrix [N, N] for a CSR graph (assumed without self-loops).

    kind="gcn":  D^-1/2 (A + I) D^-1/2 with D the degree of A + I (Kipf & Welling).
    kind="mean": D^-1 A, the neighbour mean used by GraphSAGE; rows of isolated nodes are zero.
    kind="sym":  D^-1/2 A D^-1/2 without self-loops (label propagation); isolated rows are zero.
    """
    if kind not in ("gcn", "mean", "sym"):
        raise ValueError(f"kind: expected 'gcn', 'mean' or 'sym', got {kind!r}")
    indptr, indices = _csr_arrays(indptr, indices, num_nodes)
    deg = np.diff(indptr)  # [N] neighbours per node
    rows = np.repeat(np.arange(num_nodes, dtype=np.int64), deg)  # [E]
    if kind == "gcn":
        # Insert the self-loop into each row; rows stay sorted because we re-sort by (row, col).
        rows = np.concatenate([rows, np.arange(num_nodes, dtype=np.int64)])
        cols = np.concatenate([indices, np.arange(num_nodes, dtype=np.int64)])
        order = np.lexsort((cols, rows))
        rows, cols = rows[order], cols[order]
        d = (deg + 1).astype(np.float64)
        vals = 1.0 / np.sqrt(d[rows] * d[cols])
        new_indptr = np.concatenate([[0], np.cumsum(deg + 1)]).astype(np.int64)
    else:
        cols = indices
        d = deg.astype(np.float64)
        safe = np.where(d > 0, d, 1.0)
        vals = 1.0 / safe[rows] if kind == "mean" else 1.0 / np.sqrt(safe[rows] * safe[cols])
        new_indptr = indptr
    with warnings.catch_warnings():  # "sparse CSR support is in beta": nothing to act on
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            torch.from_numpy(new_indptr), torch.from_numpy(np.ascontiguousarray(cols)),
            torch.from_numpy(vals).to(dtype), size=(num_nodes, num_nodes), check_invariants=False)


def propagate(adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """adj [N, N] sparse CSR @ x [N, d] -> [N, d] (autograd flows into x)."""
    return torch.sparse.mm(adj, x)


class MLPEncoder(nn.Module):
    """Two linear layers on the node's own features; ignores the graph."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, dropout: float = 0.5) -> None:
        super().__init__()
        self.lin1 = nn.Linear(in_dim, hidden)
        self.lin2 = nn.Linear(hidden, out_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, adj: torch.Tensor | None = None) -> torch.Tensor:
        h = torch.relu(self.lin1(self.dropout(x)))  # [N, hidden]
        return self.lin2(self.dropout(h))  # [N, out_dim]


class GCNEncoder(nn.Module):
    """H = Â relu(Â X W1) W2 with Â = D^-1/2 (A+I) D^-1/2 (adj from normalized_adjacency 'gcn')."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, dropout: float = 0.5) -> None:
        super().__init__()
        self.lin1 = nn.Linear(in_dim, hidden)
        self.lin2 = nn.Linear(hidden, out_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        # Â (X W) == (Â X) W; multiplying by W first keeps the sparse product at `hidden` width.
        h = torch.relu(propagate(adj, self.lin1(self.dropout(x))))  # [N, hidden]
        return propagate(adj, self.lin2(self.dropout(h)))  # [N, out_dim]


class SAGELayer(nn.Module):
    """GraphSAGE-mean: h_i' = W_self h_i + W_neigh mean_{j in N(i)} h_j (adj = 'mean')."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.lin_self = nn.Linear(in_dim, out_dim)
        self.lin_neigh = nn.Linear(in_dim, out_dim, bias=False)

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        return self.lin_self(x) + propagate(adj, self.lin_neigh(x))


class SAGEEncoder(nn.Module):
    def __init__(self, in_dim: int, hidden: int, out_dim: int, dropout: float = 0.5) -> None:
        super().__init__()
        self.conv1 = SAGELayer(in_dim, hidden)
        self.conv2 = SAGELayer(hidden, out_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv1(self.dropout(x), adj))  # [N, hidden]
        return self.conv2(self.dropout(h), adj)  # [N, out_dim]


def adjacency_kind(model: str) -> str | None:
    """Which normalized_adjacency an encoder needs (None: no graph)."""
    return {"mlp": None, "gcn": "gcn", "sage": "mean"}[model]


def build_encoder(model: str, in_dim: int, hidden: int, out_dim: int,
                  dropout: float = 0.5) -> nn.Module:
    if model not in ENCODERS:
        raise ValueError(f"model: expected one of {ENCODERS}, got {model!r}")
    cls = {"mlp": MLPEncoder, "gcn": GCNEncoder, "sage": SAGEEncoder}[model]
    return cls(in_dim, hidden, out_dim, dropout)


class EdgeScorer(nn.Module):
    """Score for a node pair from its two embeddings: 'dot' = <h_u, h_v>; 'mlp' = MLP(h_u * h_v).

    Both are symmetric in (u, v), as edges of an undirected graph must be.
    """

    def __init__(self, kind: str, dim: int, hidden: int | None = None) -> None:
        super().__init__()
        if kind not in ("dot", "mlp"):
            raise ValueError(f"scorer: expected 'dot' or 'mlp', got {kind!r}")
        self.kind = kind
        if kind == "mlp":
            hidden = hidden or dim
            self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, h: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        """h [N, d], pairs int64 [2, M] -> logits [M]."""
        hu, hv = h[pairs[0]], h[pairs[1]]  # [M, d] each
        if self.kind == "dot":
            return (hu * hv).sum(-1)
        return self.mlp(hu * hv).squeeze(-1)

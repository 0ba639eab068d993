"""Personalized PageRank by forward push: C++/OpenMP and CUDA kernels, top-k API, tables, cache.

See docs/ppr.md for the definition, the error guarantee and the defaults.
"""
from mlaga_fast.ppr.core import bounded_topk_host, ppr_dense, ppr_topk
from mlaga_fast.ppr.graph import PprGraph
from mlaga_fast.ppr.options import (
    DEFAULT_ALPHA,
    DEFAULT_CUDA_BUDGET_BYTES,
    DEFAULT_EPS,
    DEFAULT_K,
    MAX_DEFAULT_CAPACITY,
)
from mlaga_fast.ppr.tables import (
    TABLE_FORMAT,
    cached_topk,
    candidate_mask,
    compute_table,
    load_table,
    ppr_topk_graph,
    prepared_graph,
    save_table,
    source_ids,
    table_meta,
)

__all__ = [
    "DEFAULT_ALPHA", "DEFAULT_CUDA_BUDGET_BYTES", "DEFAULT_EPS", "DEFAULT_K", "MAX_DEFAULT_CAPACITY",
    "PprGraph", "TABLE_FORMAT", "bounded_topk_host", "cached_topk", "candidate_mask", "compute_table", "load_table",
    "ppr_dense", "ppr_topk", "ppr_topk_graph", "prepared_graph", "save_table", "source_ids", "table_meta",
]

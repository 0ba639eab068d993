"""Sizes read from benchmark files, bounded by what the file can hold before anything is built from them.

A flipped byte in a graph file can turn a label into 10^12 or a node id into 2^40; a loader that then
builds a class-name list or an indptr of that length runs out of memory instead of reporting the
corruption. Every loader that derives a count from file contents passes it through here first.
"""
from __future__ import annotations

import numpy as np


def check_class_ids(labels: np.ndarray, num_nodes: int, source: str) -> None:
    """Labels are class ids 0..K-1, or -1 for unlabelled. K cannot exceed the number of nodes (a class
    no node can have is not in the file), so a larger id is corruption, refused before a K-long list
    of class names is made."""
    if labels.size == 0:
        return
    low, high = int(labels.min()), int(labels.max())
    if low < -1:
        i = int(np.argmin(labels))
        raise ValueError(f"{source}: label {low} of node {i} is not a class id (0..K-1, or -1 for unlabelled)")
    if high >= max(num_nodes, 1):
        i = int(np.argmax(labels))
        raise ValueError(f"{source}: label {high} of node {i} cannot be a class id in a graph of {num_nodes} nodes "
                         "(ids run 0..K-1 with K at most the node count): the file is corrupt")


def node_count_from_edges(edges: np.ndarray, source: str) -> int:
    """Node count of an id-indexed edge list [2, E] that states no count: largest id + 1. E edges touch
    at most 2E nodes, so a larger id means sparse or corrupt ids, refused before an array of that
    length is allocated."""
    if edges.size == 0:
        return 0
    top = int(edges.max())
    if top >= edges.size:
        raise ValueError(f"{source}: node id {top} in a list of {edges.size // 2} edges (which touch at most "
                         f"{edges.size} nodes): node ids must run 0..N-1; the file is corrupt")
    return top + 1

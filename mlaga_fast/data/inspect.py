"""Dataset report for `mlaga-fast data inspect`: sizes, cleaning counts, homophily, splits, modalities."""
from __future__ import annotations

import numpy as np

from mlaga_fast.data.graph import MultimodalGraph


def edge_homophily(graph: MultimodalGraph) -> float | None:
    """Fraction of undirected edges whose two endpoints share a label, over edges with both ends
    labelled; None when there is no such edge."""
    pairs = graph.edge_pairs()
    a, b = graph.labels[pairs[0]], graph.labels[pairs[1]]
    both = (a >= 0) & (b >= 0)
    if not both.any():
        return None
    return float((a[both] == b[both]).mean())


def inspect_graph(graph: MultimodalGraph, verify_images: bool = False, progress: bool = True) -> dict:
    deg = np.diff(graph.indptr)
    labelled = graph.labels >= 0
    counts = np.bincount(graph.labels[labelled], minlength=len(graph.class_names)) if labelled.any() else \
        np.zeros(len(graph.class_names), np.int64)
    st = graph.stats
    if verify_images and graph.images is not None:
        from mlaga_fast.data.images import scan_images

        img = scan_images(graph.images, verify=True, progress=progress)
    else:
        img = {k: st.get(k, 0) for k in ("missing_images", "corrupt_images")}
        img["images_verified"] = bool(st.get("images_verified", False))
    ls = graph.link_split
    rep = {
        "name": graph.name,
        "num_nodes": graph.num_nodes,
        "num_edges": graph.num_edges,
        "num_stored_edges": int(graph.indices.shape[0]),
        "source_stored_edges": st.get("stored_edges"),
        "num_classes": len(graph.class_names),
        "self_loops_dropped": int(st.get("self_loops_dropped", 0)),
        "duplicates_merged": int(st.get("duplicates_merged", 0)),
        "isolated_nodes": int((deg == 0).sum()),
        "mean_degree": float(deg.mean()) if deg.size else 0.0,
        "max_degree": int(deg.max()) if deg.size else 0,
        "edge_homophily": edge_homophily(graph),
        "labelled_nodes": int(labelled.sum()),
        "class_counts": {c: int(k) for c, k in zip(graph.class_names, counts.tolist())},
        "split_sizes": {"train": int(graph.train.size), "val": int(graph.val.size), "test": int(graph.test.size)},
        "link_split": None if ls is None else {f: int(a.shape[1]) for f, a in ls.arrays().items()},
        "has_text": graph.texts is not None,
        "has_images": graph.images is not None,
        "image_source": graph.images.kind if graph.images is not None else None,
        "missing_images": int(img["missing_images"]) if graph.images is not None else 0,
        "corrupt_images": int(img.get("corrupt_images", 0)),
        "images_verified": bool(img.get("images_verified", False)),
        "features": {k: list(np.shape(v)) for k, v in graph.features.items()},
        "fingerprint": graph.fingerprint,
    }
    if ls is not None:
        ip, _ = graph.train_graph()
        rep["train_graph_isolated_nodes"] = int((np.diff(ip) == 0).sum())
    return rep


def format_report(rep: dict) -> str:
    h = rep["edge_homophily"]
    lines = [
        f"dataset {rep['name']}  (fingerprint {rep['fingerprint'][:16]})",
        f"  nodes {rep['num_nodes']:,}   edges {rep['num_edges']:,} undirected ({rep['num_stored_edges']:,} stored "
        f"both ways)   classes {rep['num_classes']}",
        f"  cleaning: {rep['self_loops_dropped']:,} self-loops dropped, {rep['duplicates_merged']:,} duplicates merged"
        + (f" (source listed {rep['source_stored_edges']:,} edges)" if rep.get("source_stored_edges") is not None else ""),
        f"  degree: mean {rep['mean_degree']:.2f}, max {rep['max_degree']:,}, isolated nodes {rep['isolated_nodes']:,}",
        f"  edge homophily {h:.4f}" if h is not None else "  edge homophily n/a (no labelled edges)",
        f"  labelled nodes {rep['labelled_nodes']:,}; split train {rep['split_sizes']['train']:,} / val "
        f"{rep['split_sizes']['val']:,} / test {rep['split_sizes']['test']:,}",
    ]
    if rep["link_split"]:
        ls = rep["link_split"]
        lines.append("  link split: " + ", ".join(f"{k} {v:,}" for k, v in ls.items()))
    lines.append(f"  text: {'yes' if rep['has_text'] else 'no'}   images: "
                 + (f"{rep['image_source']} ({rep['missing_images']:,} missing or corrupt"
                    + ("" if rep["images_verified"] else ", not decoded") + ")" if rep["has_images"] else "no"))
    if rep["features"]:
        lines.append("  features: " + ", ".join(f"{k} {v}" for k, v in rep["features"].items()))
    return "\n".join(lines)


def readiness_notes(graph: MultimodalGraph) -> list[str]:
    """What a freshly prepared dataset lacks, and what then still works: said when it is written, not
    when `features` or Stage 2 fails on it later."""
    notes = []
    if graph.texts is None and graph.images is None:
        stored = sorted(graph.features)
        notes.append(
            "no node texts and no images were found (no <Name>.csv with a text column, no image folder or tar "
            "beside the graph), so `mlaga-fast features` and both MLaGA stages cannot run on this dataset. "
            "Structure-only methods work: `mlaga-fast baseline --model labelprop`"
            + (f", and MLP/GCN/SAGE on its stored arrays with --features graph:{stored[0]}" if stored else "")
            + ". Add the CSV or images and prepare it again for the full method.")
    elif graph.texts is None or graph.images is None:
        notes.append(f"no {'texts' if graph.texts is None else 'images'} were found: features will hold the "
                     f"{'images' if graph.texts is None else 'texts'} only")
    if graph.class_names and all(c == f"class_{i}" for i, c in enumerate(graph.class_names)):
        notes.append(f"class names are placeholders (class_0 .. class_{len(graph.class_names) - 1}): the source "
                     "names no categories (MAGB: a second_category column in <Name>.csv), and Stage 2's prompts "
                     "will show these placeholders as the answers")
    return notes

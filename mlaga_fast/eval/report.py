"""The shared result format for node classification (NC) and link prediction (LP), and its writers.

Every evaluator (the built-in baselines and the Stage 2 `eval`) produces one result dict per
(task, method, dataset, split), so results from different methods line up in one table:

    {
      "format": "mlaga_fast.result/1",
      "task": "nc" | "lp",
      "method": str,                 # e.g. "gcn", "labelprop", "mlaga-qwen2.5-0.5b"
      "dataset": str,                # graph name (MultimodalGraph.name)
      "split": "test",               # or "val"
      "accuracy": float,             # in [0, 1]; invalid predictions count as wrong
      "num_examples": int,           # number of evaluated examples (nodes for NC, edges for LP)
      "num_invalid": int,            # predictions that could not be mapped to a class (-1)
      "class_names": [str, ...],     # NC: the graph's classes; LP: ["No", "Yes"]
      "per_class_accuracy": {name: float | null},   # recall per true class; null if no examples
      "confusion": [[int]],          # [C, C], rows = true class, columns = predicted class
      "extra": {...},                # method-specific (AUC, threshold, iterations, seed, ...)
      "mlaga_fast_version": str,
    }

For LP the positive class is "Yes" (index 1): an edge exists. The confusion matrix and
per-class accuracy are filled for LP too (2 x 2), so the same plot works for both tasks.

Functions: make_result(...), validate_result(result), write_result_json(path, result) (atomic),
read_result_json(path), results_table_markdown(results), plot_confusion(result, path).
"""
from __future__ import annotations

import json
import math
import os
from collections import OrderedDict
from typing import Any, Iterable, Sequence

import numpy as np

from mlaga_fast._version import __version__
from mlaga_fast.plots.png import save_png
from mlaga_fast.utils.io import atomic_write_json

FORMAT = "mlaga_fast.result/1"
TASKS = ("nc", "lp")
LP_CLASS_NAMES = ["No", "Yes"]
_REQUIRED = ("task", "method", "dataset", "split", "accuracy", "num_examples", "class_names",
             "per_class_accuracy", "confusion", "extra")


def _as_int_vector(x: Any, field: str) -> np.ndarray:
    arr = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x)
    if arr.ndim != 1:
        raise ValueError(f"{field}: expected a 1-D array, got shape {tuple(arr.shape)}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.bool_):
            return arr.astype(np.int64)
        bad = np.flatnonzero(arr != np.round(arr))
        if bad.size:
            raise ValueError(f"{field}: non-integer value {arr[bad[0]]!r} at index {int(bad[0])}")
    return arr.astype(np.int64)


def make_result(
    *,
    task: str,
    method: str,
    dataset: str,
    y_true: Any,
    y_pred: Any,
    class_names: Sequence[str] | None = None,
    split: str = "test",
    extra: dict | None = None,
) -> dict:
    """Build a result from true and predicted class ids (int arrays of equal length).

    y_pred may hold -1 for an invalid prediction (e.g. an LLM answer that names no class); it
    counts as wrong, is left out of the confusion matrix and is counted in `num_invalid`.
    For task "lp" class_names defaults to ["No", "Yes"] and labels must be 0/1.
    """
    if task not in TASKS:
        raise ValueError(f"task: expected one of {TASKS}, got {task!r}")
    if class_names is None:
        if task != "lp":
            raise ValueError("class_names: required for task 'nc'")
        class_names = LP_CLASS_NAMES
    class_names = [str(c) for c in class_names]
    if len(class_names) == 0:
        raise ValueError("class_names: empty")
    num_classes = len(class_names)
    yt = _as_int_vector(y_true, "y_true")
    yp = _as_int_vector(y_pred, "y_pred")
    if yt.shape != yp.shape:
        raise ValueError(f"y_pred: length {yp.size} differs from y_true length {yt.size}")
    bad = np.flatnonzero((yt < 0) | (yt >= num_classes))
    if bad.size:
        raise ValueError(f"y_true: value {int(yt[bad[0]])} at index {int(bad[0])} "
                         f"is outside [0, {num_classes})")
    bad = np.flatnonzero((yp < -1) | (yp >= num_classes))
    if bad.size:
        raise ValueError(f"y_pred: value {int(yp[bad[0]])} at index {int(bad[0])} "
                         f"is outside [-1, {num_classes})")

    valid = yp >= 0
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (yt[valid], yp[valid]), 1)  # rows = true class
    invalid = np.bincount(yt[~valid], minlength=num_classes)  # [C] unparsable answers per true class
    support = np.bincount(yt, minlength=num_classes)
    per_class = OrderedDict()
    for c, name in enumerate(class_names):
        per_class[name] = float(confusion[c, c] / support[c]) if support[c] else None
    n = int(yt.size)
    acc = float((yt == yp).sum() / n) if n else 0.0
    return {
        "format": FORMAT,
        "task": task,
        "method": str(method),
        "dataset": str(dataset),
        "split": str(split),
        "accuracy": acc,
        "num_examples": n,
        "num_invalid": int((~valid).sum()),
        "invalid_per_class": invalid.tolist(),
        "class_names": class_names,
        "per_class_accuracy": dict(per_class),
        "confusion": confusion.tolist(),
        "extra": dict(extra or {}),
        "mlaga_fast_version": __version__,
    }


def validate_result(result: dict) -> dict:
    """Check the keys and value ranges of a result dict; returns it unchanged or raises ValueError."""
    if not isinstance(result, dict):
        raise ValueError(f"result: expected a dict, got {type(result).__name__}")
    for key in _REQUIRED:
        if key not in result:
            raise ValueError(f"result: missing field {key!r}")
    if result["task"] not in TASKS:
        raise ValueError(f"task: expected one of {TASKS}, got {result['task']!r}")
    acc = result["accuracy"]
    if not isinstance(acc, (int, float)) or not (0.0 <= float(acc) <= 1.0):
        raise ValueError(f"accuracy: expected a number in [0, 1], got {acc!r}")
    c = len(result["class_names"])
    conf = np.asarray(result["confusion"])
    if conf.size and conf.shape != (c, c):
        raise ValueError(f"confusion: expected shape ({c}, {c}), got {tuple(conf.shape)}")
    return result


def write_result_json(path: str | os.PathLike, result: dict) -> None:
    """Validate, then write atomically (temp file + rename)."""
    atomic_write_json(path, validate_result(result))


def read_result_json(path: str | os.PathLike) -> dict:
    """A result file, validated; a ValueError names the file and the problem."""
    try:
        with open(path, encoding="utf-8") as f:
            return validate_result(json.load(f))
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise ValueError(f"{path}: not a result file ({e})") from None


def dataset_key(result: dict) -> str:
    """What identifies a result's dataset: the graph fingerprint it records (``extra.graph_fingerprint``),
    else its name. Two datasets may share a name (every `data synth` graph is "synthetic-catalogue")."""
    fp = result.get("extra", {}).get("graph_fingerprint")
    return f"fp:{fp}" if isinstance(fp, str) and fp else f"name:{result['dataset']}"


def _fmt(accs: list[float]) -> str:
    # Several results for one cell are seeds of the same setting: show mean ± sample std.
    mean = 100.0 * sum(accs) / len(accs)
    if len(accs) == 1:
        return f"{mean:.2f}"
    var = sum((100.0 * a - mean) ** 2 for a in accs) / (len(accs) - 1)
    return f"{mean:.2f} ± {math.sqrt(var):.2f} (n={len(accs)})"


def results_table_markdown(results: Iterable[dict]) -> str:
    """Markdown table of accuracy (%): one row per method, one column per dataset and task.

    Results are grouped by dataset identity (``dataset_key``: the graph fingerprint, not the name), so
    two graphs with one name never share a column; such names get a fingerprint prefix, e.g.
    "synthetic-catalogue [3fa2b1c0]". With one dataset the columns are just the tasks. A split other
    than "test" gets its own column, e.g. "NC (val)", so val and test are never averaged. An evaluation
    on a graph the method was not trained on (``extra.transfer``) is its own row, "METHOD (transfer)".
    Cells with several results (e.g. seeds) show mean ± std; a missing cell shows "-". Row and column
    order follow the first appearance in `results`.
    """
    results = [validate_result(r) for r in results]
    if not results:
        raise ValueError("results: empty list")
    fps: dict[str, set] = {}  # dataset name -> the fingerprints recorded under it
    for r in results:
        key = dataset_key(r)
        fps.setdefault(r["dataset"], set()).update([key] if key.startswith("fp:") else [])

    def key_of(r: dict) -> str:
        # A result that records no fingerprint belongs to the one fingerprinted dataset of its name,
        # if there is exactly one; otherwise it stays apart.
        key = dataset_key(r)
        return next(iter(fps[r["dataset"]])) if key.startswith("name:") and len(fps[r["dataset"]]) == 1 else key

    keys = {key_of(r) for r in results}
    multi = len(keys) > 1

    def dataset_label(r: dict) -> str:
        same_name = {key_of(q) for q in results if q["dataset"] == r["dataset"]}
        key = key_of(r)
        if len(same_name) == 1:
            return r["dataset"]
        return f"{r['dataset']} [{key[3:11]}]" if key.startswith("fp:") else f"{r['dataset']} [no fingerprint]"

    cells: dict[tuple[str, str], list[float]] = {}
    rows: list[str] = []
    cols: list[str] = []
    for r in results:
        col = r["task"].upper() + ("" if r["split"] == "test" else f" ({r['split']})")
        col = f"{dataset_label(r)} / {col}" if multi else col
        row = r["method"] + (" (transfer)" if r["extra"].get("transfer") else "")
        if row not in rows:
            rows.append(row)
        if col not in cols:
            cols.append(col)
        cells.setdefault((row, col), []).append(float(r["accuracy"]))
    lines = ["| method | " + " | ".join(cols) + " |",
             "|---|" + "---:|" * len(cols)]
    for m in rows:
        vals = [_fmt(cells[(m, c)]) if (m, c) in cells else "-" for c in cols]
        lines.append(f"| {m} | " + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n"


def plot_confusion(result: dict, path: str | os.PathLike, normalize: bool = True) -> None:
    """Confusion matrix heat map as a PNG (written atomically). Rows = true class.

    normalize=True colours each row by its share of the true class (recall), annotating counts.
    """
    # A bare Figure renders with the Agg canvas and never touches pyplot's global state, so
    # this works headless and in loops without leaking figures.
    from matplotlib.figure import Figure

    validate_result(result)
    conf = np.asarray(result["confusion"], dtype=np.float64)
    names = result["class_names"]
    c = len(names)
    if conf.shape != (c, c):
        raise ValueError(f"confusion: expected shape ({c}, {c}), got {tuple(conf.shape)}")
    labels = list(names)
    invalid = np.asarray(result.get("invalid_per_class") or [0] * c, dtype=np.float64)
    if invalid.sum() > 0:  # free generation: unparsable answers get their own column [C, C+1]
        conf = np.concatenate([conf, invalid[:, None]], axis=1)
        labels.append("invalid")
    shown = conf / np.maximum(conf.sum(axis=1, keepdims=True), 1) if normalize else conf
    side = max(3.5, 0.45 * c + 2.0)
    fig = Figure(figsize=(side + 1.0, side))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(shown, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else None)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(len(labels)))
    ax.set_yticks(range(c))
    ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
    ax.set_yticklabels(names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{result['method']} on {result['dataset']} ({result['task'].upper()}, "
                 f"{result['split']}): acc {100 * result['accuracy']:.1f}%", fontsize=9)
    if c <= 30:
        for i in range(c):
            for j in range(len(labels)):
                if conf[i, j]:
                    ax.text(j, i, str(int(conf[i, j])), ha="center", va="center", fontsize=6,
                            color="white" if shown[i, j] > 0.5 * (shown.max() or 1) else "black")
    fig.tight_layout()
    save_png(fig, path, dpi=120)

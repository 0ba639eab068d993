"""`mlaga-fast predict`: per-node NC predictions (the class and every class's score) or per-pair LP P(Yes),
written as CSV, JSONL or Parquet (by the output's suffix), resumable. Rows name nodes twice: ``node`` (``a``,
``b``) is the dataset's node index 0..N-1, ``id`` (``a_id``, ``b_id``) the user's own id of that node when the
dataset keeps one (`data prepare --format table`), else the index again.

Work goes in chunks of ``CHUNK`` rows. Each finished chunk is written atomically to OUT.partial/, next
to a job record (run, dataset, task, the ids, demonstrations, seed); rerunning the same command skips
the chunks already there, and a different job refuses to mix in. The final file is assembled from the
chunks and renamed into place, then OUT.partial/ is removed: an interrupted run leaves no half file.
"""
from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np

from mlaga_fast.assistant import MLaGA
from mlaga_fast.eval.instruct_eval import check_inputs
from mlaga_fast.prompts.demos import LinkPairs
from mlaga_fast.utils.io import atomic_write_bytes, atomic_write_json, atomic_write_text, fingerprint
from mlaga_fast.utils.progress import progress as bar_of

CHUNK = 256
FORMATS = (".csv", ".jsonl", ".parquet")


def _read_ids(path: Path, width: int) -> np.ndarray:
    """int64 [n] (width 1) or [n, 2] ids from a .npy file or a text file (one row per line)."""
    if path.suffix == ".npy":
        arr = np.load(path, allow_pickle=False)
    else:
        rows = [line.replace(",", " ").split() for line in path.read_text(encoding="utf-8").splitlines()]
        rows = [r for r in rows if r]
        try:
            arr = np.array([[int(x) for x in r] for r in rows], dtype=np.int64)
        except ValueError:
            raise ValueError(f"{path}: expected integer node ids, {width} per line") from None
    arr = np.asarray(arr)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{path}: node ids must be integers, got {arr.dtype}")
    if width == 1:
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]
        if arr.ndim != 1:
            raise ValueError(f"{path}: expected one node id per line, got shape {arr.shape}")
    elif arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{path}: expected two node ids (a pair) per line, got shape {arr.shape}")
    return arr.astype(np.int64)


def select_nodes(graph, spec: str) -> np.ndarray:
    if spec == "all":
        return np.arange(graph.num_nodes, dtype=np.int64)
    if spec in ("train", "val", "test"):
        return np.asarray(getattr(graph, spec), dtype=np.int64)
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"--nodes: {spec!r} is not all/train/val/test or an existing file")
    return _read_ids(path, 1)


def run_predict(run_dir, data_dir, task: str, out_file, *, nodes: str = "test", pairs_file=None, demos=None,
                seed: int = 0, features=None, device: str = "auto", batch_size: int = 32, progress: bool = True,
                model=None, verify: bool = True) -> int:
    """Write the predictions; returns the number of rows. ``model``: an already loaded MLaGA; ``verify``:
    check the run's checksums when loading it."""
    out = Path(out_file)
    if out.suffix not in FORMATS:
        raise ValueError(f"--out: {out.name} must end in one of {list(FORMATS)}")
    if out.suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ValueError("--out *.parquet needs pyarrow (pip install pyarrow)") from None
    if task not in ("nc", "lp"):
        raise ValueError(f"task: {task!r} is not one of ['nc', 'lp']")
    if model is None:
        check_inputs(data_dir, features)  # before the LLM is loaded
    m = model or MLaGA.from_pretrained(run_dir, device=device, progress=progress, verify=verify)
    ds = m.dataset(data_dir, features, progress=progress)
    if task == "nc":
        ids = select_nodes(ds.graph, nodes)
    else:
        ids = _read_ids(Path(pairs_file), 2) if pairs_file else LinkPairs(ds.graph).eval_pairs("test")[0].T
    m.check_nodes(ds, ids.reshape(-1))
    job = {"run": m.manifest.get("created"), "run_dir": str(Path(m.run_dir).resolve()),
           "dataset": ds.graph.fingerprint, "task": task, "ids": fingerprint(ids.tolist()), "demos": demos,
           "seed": seed}
    part = out.with_name(out.name + ".partial")
    part.mkdir(parents=True, exist_ok=True)
    jfile = part / "job.json"
    if jfile.is_file() and json.loads(jfile.read_text(encoding="utf-8")) != job:
        raise ValueError(f"{part} holds an interrupted predict with other settings; delete it or choose another --out")
    atomic_write_json(jfile, job)

    names = list(ds.graph.class_names)
    chunks = range(0, len(ids), CHUNK)
    for ci in bar_of(chunks, desc=f"predict {task}", unit="chunk", enabled=progress):
        path = part / f"chunk_{ci // CHUNK:06d}.jsonl"
        if path.is_file():
            continue  # done before an interruption
        sel = ids[ci:ci + CHUNK]
        if task == "nc":
            p = m.predict_nc(data_dir, sel, features=features, demos=demos, batch_size=batch_size, seed=seed)
            rows = [{"node": int(v), "id": ds.graph.node_id(v), "prediction": names[int(y)], "class_index": int(y),
                     **{f"score_{n}": float(s) for n, s in zip(names, sc)}}
                    for v, y, sc in zip(sel.tolist(), p.labels, p.scores)]
        else:
            p = m.predict_lp(data_dir, sel, features=features, demos=demos, batch_size=batch_size, seed=seed)
            rows = [{"a": int(a), "b": int(b), "a_id": ds.graph.node_id(a), "b_id": ds.graph.node_id(b),
                     "p_yes": float(q), "prediction": "Yes" if y == 1 else "No"}
                    for (a, b), q, y in zip(sel.tolist(), p.p_yes, p.labels)]
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))

    rows = [json.loads(line) for f in sorted(part.glob("chunk_*.jsonl"))
            for line in f.read_text(encoding="utf-8").splitlines() if line]
    if len(rows) != len(ids):
        raise ValueError(f"{part}: {len(rows)} rows for {len(ids)} ids; delete it and run again")
    _write_rows(out, rows)
    shutil.rmtree(part)
    return len(rows)


def _write_rows(out: Path, rows: list[dict]) -> None:
    if out.suffix == ".jsonl":
        atomic_write_text(out, "".join(json.dumps(r) + "\n" for r in rows))
    elif out.suffix == ".csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else [])
        w.writeheader()
        w.writerows(rows)
        atomic_write_text(out, buf.getvalue())
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        sink = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_pylist(rows), sink)
        atomic_write_bytes(out, sink.getvalue().to_pybytes())

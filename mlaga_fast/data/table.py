"""Your own graph from two plain tables: a nodes file and an edges file (`data prepare --format table`).

nodes  CSV, TSV, Parquet or JSONL (by suffix; .gz/.bz2/.zst compressed CSV, TSV and JSONL too), one row
       per node, columns (each renamable):
         id      required; any strings or integers, unique. Node i of the dataset is the i-th row, and the
                 ids are kept (graph.node_ids) unless they are exactly 0..N-1 in row order
         text    optional; several columns are joined with a space (``text_cols=("title", "description")``)
         image   optional; a file path relative to ``images`` (default: the nodes file's folder), or absolute
         label   optional; class names, or class ids 0..K-1 (one kind per file); empty = unlabelled
         split   optional; train / val / test (also valid, validation); empty = in no split. Without the
                 column: a seeded 60/20/20 split of the labelled nodes, as for MAGB
edges  CSV, TSV, Parquet or JSONL, one row per edge (undirected; either direction; repeats merged,
       self-loops dropped and counted), columns:
         src, dst  ids of the nodes file
         split     optional; train / val / test: the link-prediction split's positives. The dataset's
                   LinkSplit also needs negatives, which no edge list holds: as many as the val and test
                   positives, sampled (seeded) among the pairs that are not edges, as `data split-links` does
A column left at its default name (None here) is used when the file has it; a column named explicitly
must exist. Rows are counted from 1, the header not counted.

Read in chunks (pyarrow's streaming CSV reader, Parquet record batches, pandas JSONL chunks) with every
cell read as a string, so a column's type is never guessed from its first rows. What stays in memory is
each column's final array: the ids (Arrow strings), int32 label and split codes, and, when ``text_dir``
is given, not even the texts: they are written to a blob there as they are read (a ``TextBlob``).

A bad input raises ValueError naming the file, the row and the value (duplicate or empty ids, edges to
unknown ids, labels that mix names and ids, unknown split names, a labelled split holding an unlabelled
node); what can be worked around is counted and reported through ``warn`` (empty texts, image files not
found, nodes with no image).
"""
from __future__ import annotations

import csv
import io
import re
import warnings
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from mlaga_fast.data.bounds import check_class_ids
from mlaga_fast.data.graph import LinkSplit, MultimodalGraph
from mlaga_fast.data.texts import TextBlob

CHUNK_ROWS = 1 << 16  # rows per Parquet batch / JSONL chunk; a CSV block is CSV_BLOCK_BYTES
# pyarrow's streaming CSV reader parses ahead of its consumer: with 16 MiB blocks it held 165 MiB at once
# on a 163 MiB file, with 1 MiB blocks 38 MiB, as fast. A row longer than a block is read by reopening the
# file with blocks 16x larger, past the rows already read.
CSV_BLOCK_BYTES = 1 << 20
LOOKUP_ROWS = 1 << 20  # edge rows whose ends are looked up in the ids at once
_KINDS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl",
          ".ndjson": "jsonl"}
_COMPRESSED = (".gz", ".bz2", ".zst")
_BLANK = {"", "nan", "NaN", "None", "null"}  # an empty label or split cell, as spreadsheets and pandas write it
_SPLITS = {"train": 0, "val": 1, "valid": 1, "validation": 1, "test": 2}
_INT = re.compile(r"[+-]?\d+(\.0*)?")


def table_kind(path: Path) -> str:
    """csv, tsv, parquet or jsonl, from the file name."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSED:
        suffixes = suffixes[:-1]
    kind = _KINDS.get(suffixes[-1]) if suffixes else None
    if kind is None or (kind == "parquet" and path.suffix.lower() in _COMPRESSED):
        raise ValueError(f"{path.name}: cannot tell the format from the name; use .csv, .tsv, .parquet or .jsonl")
    return kind


# ----------------------------------------------------------------------------------- reading


def _require(package: str, path: Path) -> None:
    import importlib.util

    for name in dict.fromkeys(["pyarrow", package]):
        if importlib.util.find_spec(name) is None:
            raise ValueError(f"reading {path.name} needs {name}: pip install \"mlaga-fast[table]\"")


def _first_line(path: Path) -> str:
    """The file's first line (decompressed), without its line end or a UTF-8 byte-order mark."""
    import pyarrow as pa

    with pa.input_stream(str(path), compression="detect") as f:
        head = b""
        while b"\n" not in head:
            block = f.read(1 << 16)
            if not block:
                break
            head += block
    return head.split(b"\n", 1)[0].decode("utf-8", errors="replace").lstrip("\ufeff").rstrip("\r")


def _header(path: Path, kind: str) -> list[str]:
    """Column names of a table file, read without reading its rows (JSONL: the keys of its first object)."""
    if kind == "parquet":
        import pyarrow.parquet as pq

        return list(pq.ParquetFile(path).schema_arrow.names)
    line = _first_line(path)
    if kind == "jsonl":
        import json

        try:
            first = json.loads(line)
        except ValueError:
            first = None
        if not isinstance(first, dict):
            raise ValueError(f"{path.name}, row 1: not a JSON object: {_q(line)}")
        return list(first)
    return next(csv.reader(io.StringIO(line), delimiter="\t" if kind == "tsv" else ","), [])


def _chunks(path: Path, kind: str, columns: list[str]) -> Iterator[dict]:
    """Dicts column -> pyarrow string array (nulls for missing cells), CHUNK_ROWS-ish rows at a time."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if kind in ("csv", "tsv"):
        import pyarrow.csv as pa_csv

        block, done = CSV_BLOCK_BYTES, 0
        while True:
            reader = pa_csv.open_csv(
                str(path), read_options=pa_csv.ReadOptions(block_size=block, skip_rows_after_names=done),
                parse_options=pa_csv.ParseOptions(delimiter="\t" if kind == "tsv" else ",", newlines_in_values=True),
                convert_options=pa_csv.ConvertOptions(include_columns=columns,
                                                      column_types={c: pa.string() for c in columns}))
            try:
                for batch in reader:
                    done += batch.num_rows
                    yield {c: batch.column(c) for c in columns}
                break
            except pa.ArrowInvalid as e:
                if "straddl" not in str(e) or block >= 1 << 30:
                    raise
                block *= 16  # a row longer than a block
            finally:
                pa.default_memory_pool().release_unused()  # return the parser's freed buffers to the system
    elif kind == "parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=CHUNK_ROWS, columns=columns):
            out = {}
            for c in columns:
                col = batch.column(c)
                try:
                    out[c] = col if col.type == pa.string() else pc.cast(col, pa.string())
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                    raise ValueError(f"{path.name}: column {c!r} of type {col.type} cannot be read as text "
                                     f"({e})") from None
            yield out
    else:
        import pandas as pd

        # dtype=False keeps values as written; before pandas 3 it did not stop date parsing by column name
        old = {"convert_dates": False} if int(pd.__version__.split(".")[0]) < 3 else {}
        try:
            for df in pd.read_json(path, lines=True, chunksize=CHUNK_ROWS, dtype=False, compression="infer", **old):
                yield {c: pa.array([_cell(v) for v in df[c].tolist()] if c in df else [None] * len(df), pa.string())
                       for c in columns}
        except ValueError as e:
            raise ValueError(f"{path.name}: not valid JSON lines ({' '.join(str(e).split())})") from None


def _cell(v) -> str | None:
    """A JSON value as the string a CSV cell would hold (3.0 -> '3': pandas turns ints with gaps into floats)."""
    if v is None or (isinstance(v, float) and v != v):
        return None
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return v if isinstance(v, str) else str(v)


def _read(path: Path, columns: list[str], progress: bool, what: str) -> Iterator[tuple[int, dict]]:
    """(first row number, chunk) pairs; parse errors become ValueError naming the file and the row."""
    import pyarrow as pa
    from tqdm import tqdm

    kind = table_kind(path)
    row = 1
    bar = tqdm(desc=f"reading {path.name}", unit=" rows", unit_scale=True, disable=not progress, leave=False)
    try:
        for chunk in _chunks(path, kind, columns):
            yield row, chunk
            k = len(next(iter(chunk.values()))) if chunk else 0
            row += k
            bar.update(k)
    except (pa.ArrowInvalid, UnicodeDecodeError) as e:
        found = _ragged_row(path, kind) if kind in ("csv", "tsv") else None
        if found:
            r, width, cells = found
            raise ValueError(f"{path.name}, row {r}: {len(cells)} cells where the header has {width}: "
                             f"{_q(cells)}") from None
        raise ValueError(f"{path.name} ({what}) cannot be parsed" + (f" after row {row - 1}" if row > 1 else "")
                         + f": {' '.join(str(e).split())[:300]}") from None
    finally:
        bar.close()


def _ragged_row(path: Path, kind: str) -> tuple[int, int, list[str]] | None:
    """(row, header width, cells) of the first CSV row whose cell count differs from the header's; None if
    none does. Only called once pyarrow has refused the file, which reports no row number."""
    import sys

    import pyarrow as pa

    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with pa.input_stream(str(path), compression="detect") as raw, \
            io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="") as f:
        rows = csv.reader(f, delimiter="\t" if kind == "tsv" else ",")
        width = len(next(rows, []))
        for r, cells in enumerate(rows, 1):
            if cells and len(cells) != width:
                return r, width, cells
    return None


_OPTION = {"id": "--id-col", "text": "--text-cols", "image": "--image-col", "label": "--label-col",
           "split": "--split-col", "src": "--src-col", "dst": "--dst-col", "edge split": "--edge-split-col"}


def _columns(path: Path, what: str, required: list[tuple[str, str]], optional: dict[str, tuple[str | None, str]],
             ) -> dict[str, str | None]:
    """Map each role to a column of the file: each (role, column) in ``required`` must exist; an optional
    role given as (None, default) uses the default name when the file has it, (name, _) must exist."""
    names = _header(path, table_kind(path))
    have = ", ".join(repr(n) for n in names[:20]) + (" ..." if len(names) > 20 else "")

    def need(col: str, role: str) -> str:
        if col not in names:
            raise ValueError(f"{path.name} ({what}) has no column {col!r} for the {role} (columns: {have}); "
                             f"name it with {_OPTION[role]}")
        return col

    out: dict[str, str | None] = {role: need(col, role) for role, col in required}
    for role, (col, default) in optional.items():
        out[role] = (default if default in names else None) if col is None else need(col, role)
    return out


class _StringSink:
    """Strings appended chunk by chunk: kept in a list, or (with a folder) written to a UTF-8 blob there and
    returned as a TextBlob, so a million texts never sit in memory."""

    def __init__(self, folder: Path | None, name: str):
        self.items: list[str] = []
        self.path = None if folder is None else Path(folder) / name
        self.f = None if self.path is None else open(self.path, "wb")
        self.lengths: list[np.ndarray] = []

    def extend(self, strings: list[str]) -> None:
        if self.f is None:
            self.items.extend(strings)
            return
        enc = [s.encode("utf-8") for s in strings]
        self.f.write(b"".join(enc))
        self.lengths.append(np.fromiter(map(len, enc), np.int64, len(enc)))

    def finish(self):
        if self.f is None:
            return self.items
        self.f.close()
        lengths = np.concatenate(self.lengths) if self.lengths else np.zeros(0, np.int64)
        offsets = np.zeros(lengths.size + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return TextBlob(self.path, offsets)


class _Codes:
    """A column of few distinct values (labels, split names), coded chunk by chunk: int32 codes per row
    (-1 for an empty cell) into ``values``, with the first row of each value for messages."""

    def __init__(self):
        self.values: list[str] = []
        self.first_row: list[int] = []
        self._index: dict[str, int] = {}
        self.codes: list[np.ndarray] = []

    def add(self, arr, row0: int) -> None:
        import pyarrow.compute as pc

        enc = pc.dictionary_encode(arr)
        idx = enc.indices.to_numpy(zero_copy_only=False)  # float with NaN where null
        idx = np.where(np.isnan(idx), -1, idx).astype(np.int64) if idx.dtype.kind == "f" else idx.astype(np.int64)
        local = np.full(len(enc.dictionary) + 1, -1, np.int32)  # [-1] stays -1: a null cell
        _, first = np.unique(idx, return_index=True)
        first_of = {int(idx[f]): int(f) for f in first}
        for j, v in enumerate(enc.dictionary.to_pylist()):
            v = v.strip()
            if v in _BLANK:
                continue
            if v not in self._index:
                self._index[v] = len(self.values)
                self.values.append(v)
                self.first_row.append(row0 + first_of[j])
            local[j] = self._index[v]
        self.codes.append(local[idx])

    def column(self) -> np.ndarray:
        return np.concatenate(self.codes) if self.codes else np.zeros(0, np.int32)


def _blank_rows(arr) -> np.ndarray:
    """Row indices of null or whitespace-only cells."""
    import pyarrow.compute as pc

    blank = pc.or_kleene(pc.is_null(arr), pc.equal(pc.utf8_trim_whitespace(arr), ""))
    return np.flatnonzero(pc.fill_null(blank, True).to_numpy(zero_copy_only=False))


def _q(v) -> str:
    s = repr(v)
    return s if len(s) <= 80 else s[:77] + "..."


# ----------------------------------------------------------------------------------- nodes


def _labels(codes: _Codes, col: np.ndarray, path: Path, column: str, n: int) -> tuple[np.ndarray, list[str]]:
    """int64 [N] labels and the class names, from coded label cells."""
    is_int = [bool(_INT.fullmatch(v)) for v in codes.values]
    if any(is_int) and not all(is_int):
        i, j = is_int.index(True), is_int.index(False)
        raise ValueError(f"{path.name}: column {column!r} mixes class ids and class names: row {codes.first_row[i]} "
                         f"holds {_q(codes.values[i])}, row {codes.first_row[j]} holds {_q(codes.values[j])}; "
                         "use names throughout, or ids 0..K-1 throughout")
    if not codes.values:
        return np.full(n, -1, np.int64), []
    if all(is_int):
        ids = np.array([int(float(v)) for v in codes.values], np.int64)
        bad = np.flatnonzero(ids < -1)
        if bad.size:
            k = int(bad[0])
            raise ValueError(f"{path.name}, row {codes.first_row[k]}: label {_q(codes.values[k])} is not a class id "
                             "(0..K-1; -1 or an empty cell for unlabelled)")
        labels = np.where(col >= 0, ids[np.maximum(col, 0)], -1).astype(np.int64)
        check_class_ids(labels, n, f"{path.name} column {column!r}")
        return labels, [f"class_{k}" for k in range(int(labels.max()) + 1)] if labels.max() >= 0 else []
    names = sorted(codes.values)  # class ids in name order: the same ids whatever the row order
    rank = np.empty(len(names), np.int64)
    rank[np.argsort(np.array(codes.values, dtype=object))] = np.arange(len(names))
    return np.where(col >= 0, rank[np.maximum(col, 0)], -1).astype(np.int64), names


def _splits(codes: _Codes, col: np.ndarray, path: Path, column: str) -> np.ndarray:
    """int8 [N]: 0 train, 1 val, 2 test, -1 none."""
    lookup = np.full(len(codes.values) + 1, -1, np.int8)
    for k, v in enumerate(codes.values):
        part = _SPLITS.get(v.lower())
        if part is None:
            raise ValueError(f"{path.name}, row {codes.first_row[k]}: {column} {_q(v)} is not train, val or test")
        lookup[k] = part
    return lookup[col]  # -1 indexes the trailing -1: an empty cell


def _duplicate_error(ids, path: Path, column: str) -> ValueError:
    import pyarrow.compute as pc

    codes = pc.index_in(ids, value_set=pc.unique(ids)).to_numpy(zero_copy_only=False)
    _, first = np.unique(codes, return_index=True)
    repeat = np.ones(codes.size, bool)
    repeat[first] = False
    r = int(np.flatnonzero(repeat)[0])
    f = int(np.flatnonzero(codes == codes[r])[0])
    return ValueError(f"{path.name}, row {r + 1}: {column} {_q(ids[r].as_py())} appears again (first at row {f + 1}); "
                      f"ids must be unique ({int(repeat.sum())} repeated rows in all)")


def _node_ids(ids, text_dir: Path | None):
    """None when the ids are 0..N-1 in row order; int64 [N] when all are integers; else the strings."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(ids)
    if n and pc.all(pc.match_substring_regex(ids, r"^(0|-?[1-9][0-9]{0,17})$")).as_py():
        arr = pc.cast(ids, pa.int64()).to_numpy()
        return None if np.array_equal(arr, np.arange(n)) else arr
    sink = _StringSink(text_dir, "node_ids.bin")
    for lo in range(0, n, CHUNK_ROWS):
        sink.extend(ids.slice(lo, CHUNK_ROWS).to_pylist())
    return sink.finish()


def _read_nodes(path: Path, cols: dict, text_cols: list[str], images_root: Path | None, text_dir: Path | None,
                warn: Callable[[str], None], progress: bool) -> dict:
    import pyarrow as pa

    wanted = [c for c in dict.fromkeys([cols["id"], *text_cols, cols["image"], cols["label"], cols["split"]]) if c]
    ids, n = [], 0
    texts = _StringSink(text_dir, "texts.bin") if text_cols else None
    images: list[str | None] | None = [] if cols["image"] else None
    labels, split = _Codes(), _Codes()
    empty_text, first_empty = 0, None
    for row0, ch in _read(path, wanted, progress, "nodes"):
        idc = ch[cols["id"]]
        blank = _blank_rows(idc)
        if blank.size:
            raise ValueError(f"{path.name}, row {row0 + int(blank[0])}: the {cols['id']!r} cell is empty; every node "
                             "needs an id")
        ids.append(idc)
        k = len(idc)
        if texts is not None:
            parts = [ch[c].to_pylist() for c in text_cols]
            rows = parts[0] if len(parts) == 1 else zip(*parts)
            joined = [(t or "") for t in rows] if len(parts) == 1 else [" ".join(p for p in r if p) for r in rows]
            empty = [i for i, t in enumerate(joined) if not t.strip()]
            if empty and first_empty is None:
                first_empty = (row0 + empty[0], idc[empty[0]].as_py())
            empty_text += len(empty)
            texts.extend(joined)
        if images is not None:
            images.extend(v if v and v.strip() else None for v in ch[cols["image"]].to_pylist())
        if cols["label"]:
            labels.add(ch[cols["label"]], row0)
        if cols["split"]:
            split.add(ch[cols["split"]], row0)
        n += k
    if n == 0:
        raise ValueError(f"{path.name} (nodes) has no rows")
    ids = pa.chunked_array(ids, pa.string()).combine_chunks()
    if len(ids.unique()) != n:
        raise _duplicate_error(ids, path, cols["id"])
    pa.default_memory_pool().release_unused()  # the hash table of unique() (about 60 MiB for a million ids)
    if empty_text:
        warn(f"{path.name}: {empty_text:,} node(s) have an empty text ({' + '.join(repr(c) for c in text_cols)}); "
             f"first at row {first_empty[0]}, id {_q(first_empty[1])}")
    out = {"ids": ids, "n": n, "texts": texts.finish() if texts is not None else None, "empty_texts": empty_text}
    out["labels"], out["class_names"] = (
        _labels(labels, labels.column(), path, cols["label"], n) if cols["label"] else (np.full(n, -1, np.int64), []))
    out["split"] = _splits(split, split.column(), path, cols["split"]) if cols["split"] else None
    if images is not None:
        out["images"] = _image_source(images, images_root, path, cols["image"], warn)
    return out


def _image_source(names: list[str | None], root: Path, path: Path, column: str, warn: Callable[[str], None]):
    from mlaga_fast.data.images import FolderImageSource

    src = FolderImageSource(root, len(names), names=names)
    have = src.availability()
    named = np.array([s is not None for s in names], bool)
    lost = np.flatnonzero(named & ~have)
    if lost.size:
        r = int(lost[0])
        warn(f"{path.name}: {lost.size:,} image file(s) not found (replaced by a grey placeholder); first at row "
             f"{r + 1}: {column} {_q(names[r])} (looked in {root})")
    blank = np.flatnonzero(~named)
    if blank.size:
        warn(f"{path.name}: {blank.size:,} node(s) have an empty {column!r} cell and so no image; first at row "
             f"{int(blank[0]) + 1}")
    return src


# ----------------------------------------------------------------------------------- edges


def _read_edges(path: Path, cols: dict, ids, nodes_name: str, progress: bool) -> tuple[np.ndarray, np.ndarray,
                                                                                       np.ndarray | None]:
    """int64 [E] src, int64 [E] dst (node rows), int8 [E] split codes or None. Ends are looked up in the ids
    LOOKUP_ROWS rows at a time: each lookup hashes all N ids (0.5 s for a million), so not once per block."""
    import pyarrow as pa
    import pyarrow.compute as pc

    found: list[np.ndarray] = []  # int64 [2, k] per lookup
    pending: list[tuple] = []  # (src, dst) string arrays of consecutive rows
    first_pending, count = 1, 0

    def lookup() -> None:
        nonlocal first_pending, count
        both = pa.concat_arrays([a for pair in pending for a in pair[:1]] + [a for pair in pending for a in pair[1:]])
        pos = pc.index_in(both, value_set=ids)
        unknown = np.flatnonzero(pc.is_null(pos).to_numpy(zero_copy_only=False))
        if unknown.size:
            first = int(unknown[0])
            role = "src" if first < count else "dst"
            bad = unknown[unknown < count] if role == "src" else unknown[unknown >= count]
            raise ValueError(f"{path.name}, row {first_pending + first % count}: {cols[role]} {_q(both[first].as_py())} "
                             f"is not an id of {nodes_name} ({bad.size:,} unknown {cols[role]} in rows "
                             f"{first_pending}-{first_pending + count - 1})")
        found.append(pos.to_numpy(zero_copy_only=False).astype(np.int64).reshape(2, count))
        del both, pos
        pa.default_memory_pool().release_unused()  # the lookup's hash table of all N ids
        first_pending += count
        pending.clear()
        count = 0

    split = _Codes() if cols["split"] else None
    for row0, ch in _read(path, [c for c in (cols["src"], cols["dst"], cols["split"]) if c], progress, "edges"):
        for role in ("src", "dst"):
            blank = _blank_rows(ch[cols[role]])
            if blank.size:
                raise ValueError(f"{path.name}, row {row0 + int(blank[0])}: the {cols[role]!r} cell is empty")
        pending.append((ch[cols["src"]], ch[cols["dst"]]))
        count += len(ch[cols["src"]])
        if split is not None:
            split.add(ch[cols["split"]], row0)
        if count >= LOOKUP_ROWS:
            lookup()
    if count:
        lookup()
    ends = np.concatenate(found, axis=1) if found else np.zeros((2, 0), np.int64)  # [2, E]
    codes = None
    if split is not None:
        codes = _splits(split, split.column(), path, cols["split"])
        codes = np.where(codes < 0, 0, codes).astype(np.int8)  # an empty cell: a training edge
    return ends[0], ends[1], codes


def _given_link_split(graph: MultimodalGraph, src: np.ndarray, dst: np.ndarray, part: np.ndarray, path: Path,
                      seed: int) -> LinkSplit | None:
    """The edges file's train/val/test positives, with sampled negatives; None when it holds no val or test
    edge. A pair given in two parts (in either direction) is refused, naming both rows."""
    from mlaga_fast.data.splits import sample_negative_pairs

    n = np.int64(graph.num_nodes)
    keep = src != dst  # self-loops are no edges of the graph (dropped and counted by from_edges)
    rows = np.flatnonzero(keep)
    key = np.minimum(src[keep], dst[keep]) * n + np.maximum(src[keep], dst[keep])
    part = part[keep]
    if not (part > 0).any():
        return None
    order = np.lexsort((part, key))  # by pair, then part: two parts of one pair sit side by side
    ks, ps = key[order], part[order]
    clash = np.flatnonzero((ks[1:] == ks[:-1]) & (ps[1:] != ps[:-1]))
    if clash.size:
        a, b = int(rows[order[clash[0]]]), int(rows[order[clash[0] + 1]])
        names = ("train", "val", "test")
        raise ValueError(f"{path.name}: rows {min(a, b) + 1} and {max(a, b) + 1} give the edge "
                         f"({graph.node_id(src[a])!r}, {graph.node_id(dst[a])!r}) two parts, "
                         f"{names[part[order[clash[0]]]]} and {names[part[order[clash[0] + 1]]]}; an edge is in one")
    pairs = {p: np.unique(key[part == p]) for p in (0, 1, 2)}
    as_pairs = {p: np.stack([k // n, k % n]) for p, k in pairs.items()}
    rng = np.random.default_rng(seed)
    neg = sample_negative_pairs(graph.indptr, graph.indices, pairs[1].size + pairs[2].size, rng)
    return LinkSplit(train_pos=as_pairs[0], val_pos=as_pairs[1], val_neg=neg[:, :pairs[1].size],
                     test_pos=as_pairs[2], test_neg=neg[:, pairs[1].size:])


# ----------------------------------------------------------------------------------- the graph


def load_table(nodes: str | Path, edges: str | Path, *, name: str, images: str | Path | None = None,
               id_col: str = "id", text_cols: str | list[str] | tuple[str, ...] | None = None,
               image_col: str | None = None, label_col: str | None = None, split_col: str | None = None,
               src_col: str = "src", dst_col: str = "dst", edge_split_col: str | None = None, seed: int = 0,
               verify_images: bool = False, text_dir: str | Path | None = None,
               warn: Callable[[str], None] | None = None, progress: bool = True) -> MultimodalGraph:
    """A MultimodalGraph from a nodes table and an edges table (see the module docstring).

    Columns left at None use their default name (text, image, label, split; split in the edges file) when
    the file has it; ``text_cols`` may be a comma-separated string. ``text_dir``: a folder where the texts
    (and string ids) are written as they are read, returned as TextBlobs that map those files (keep the
    folder while the graph is in use); without it they are lists. ``warn`` receives the counted warnings
    (default: warnings.warn). The seed draws the node split when there is no split column, and the
    link split's negatives."""
    from mlaga_fast.data.images import scan_images
    from mlaga_fast.data.splits import random_node_split

    warn = warn or (lambda m: warnings.warn(m, stacklevel=3))
    nodes, edges = Path(nodes), Path(edges)
    for p, what in ((nodes, "nodes"), (edges, "edges")):
        if not p.is_file():
            raise ValueError(f"{what} file {p} does not exist")
        _require("pandas" if table_kind(p) == "jsonl" else "pyarrow", p)
    if isinstance(text_cols, str):
        text_cols = [c.strip() for c in text_cols.split(",") if c.strip()]
    ncols = _columns(nodes, "nodes", [("id", id_col), *(("text", c) for c in text_cols or ())],
                     {"text": (None, "text"), "image": (image_col, "image"), "label": (label_col, "label"),
                      "split": (split_col, "split")})
    tcols = list(text_cols) if text_cols else [c for c in [ncols.pop("text")] if c]
    ncols.pop("text", None)
    if images is not None:
        images = Path(images)
        if not images.is_dir():
            raise ValueError(f"--images: {images} is not a folder (the table format resolves the {ncols['image'] or 'image'!r} "
                             "column's paths against a folder)")
        if ncols["image"] is None:
            raise ValueError(f"--images: {nodes.name} has no {image_col or 'image'!r} column naming each node's file "
                             "(name it with --image-col)")
    ecols = _columns(edges, "edges", [("src", src_col), ("dst", dst_col)], {"edge split": (edge_split_col, "split")})
    ecols["split"] = ecols.pop("edge split")
    if text_dir is not None:
        Path(text_dir).mkdir(parents=True, exist_ok=True)

    nd = _read_nodes(nodes, ncols, tcols, images or nodes.parent.resolve(), text_dir and Path(text_dir), warn,
                     progress)
    n, labels = nd["n"], nd["labels"]
    src, dst, epart = _read_edges(edges, ecols, nd["ids"], nodes.name, progress)
    if nd["split"] is not None:
        part = nd["split"]
        unlabelled = np.flatnonzero((part >= 0) & (labels < 0))
        if unlabelled.size:
            r = int(unlabelled[0])
            raise ValueError(f"{nodes.name}, row {r + 1}: node {_q(nd['ids'][r].as_py())} is in the "
                             f"{('train', 'val', 'test')[part[r]]} split but has no label ({unlabelled.size:,} such "
                             "rows); label it or leave its split cell empty")
        train, val, test = (np.flatnonzero(part == k).astype(np.int64) for k in (0, 1, 2))
        node_split = f"column {ncols['split']!r}"
    else:
        train, val, test = random_node_split(n, 0.6, 0.2, 0.2, seed=seed, labels=labels)
        node_split = f"random 60/20/20 seed={seed}"
    img = nd.get("images")
    stats = scan_images(img, verify=verify_images, progress=progress)
    stats["empty_texts"] = nd["empty_texts"]
    meta = {"source_format": "table", "nodes_file": str(nodes.resolve()), "edges_file": str(edges.resolve()),
            "columns": {"nodes": {**ncols, "text": tcols}, "edges": ecols}, "node_split": node_split,
            "link_split": None}
    node_ids = _node_ids(nd["ids"], text_dir and Path(text_dir))
    g = MultimodalGraph.from_edges(name, src, dst, n, texts=nd["texts"], images=img, labels=labels,
                                   class_names=nd["class_names"], train=train, val=val, test=test, stats=stats,
                                   meta=meta, node_ids=node_ids)
    if epart is not None:
        ls = _given_link_split(g, src, dst, epart, edges, seed)
        if ls is not None:
            g.set_link_split(ls)
            g.meta["link_split"] = (f"column {ecols['split']!r} of {edges.name}; negatives sampled with seed {seed}")
    return g


# ----------------------------------------------------------------------------------- writing


_EXPORT_FILES = {"nodes.csv", "edges.csv", "images"}
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}")  # ids usable as image file names


def check_table_target(folder: str | Path) -> None:
    """Refuse a folder ``write_tables`` would not replace: one holding anything but a previous export."""
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or not {p.name for p in folder.iterdir()} <= _EXPORT_FILES):
        raise ValueError(f"--as-table: {folder} exists and holds other files than {', '.join(sorted(_EXPORT_FILES))}; "
                         "choose a new or empty folder")


def write_tables(graph: MultimodalGraph, folder: str | Path, ids: list[str] | None = None,
                 progress: bool = True) -> Path:
    """Write ``graph`` as the tables ``load_table`` reads: FOLDER/nodes.csv (id, text, image, label, split),
    FOLDER/edges.csv (src, dst, and split when the graph has a link split: its train/val/test positives)
    and FOLDER/images/<id>.png (lossless). ``ids``: the node ids to write (default: the graph's own, else
    0..N-1). The folder is built under a temporary name and renamed into place; an existing folder is
    replaced only when it holds nothing but such an export."""
    from tqdm import tqdm

    from mlaga_fast.utils.io import atomic_dir

    folder = Path(folder)
    check_table_target(folder)
    n = graph.num_nodes
    if ids is None:
        ids = [str(graph.node_id(i)) for i in range(n)]
    if len(ids) != n or len(set(ids)) != n:
        raise ValueError(f"ids: need {n} distinct ids, got {len(set(ids))} distinct of {len(ids)}")
    part = np.full(n, "", dtype=object)
    for name in ("train", "val", "test"):
        part[np.asarray(getattr(graph, name))] = name
    has_img = graph.images is not None
    with atomic_dir(folder) as d:
        if has_img:
            (d / "images").mkdir()
        with open(d / "nodes.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["id", "text", "image", "label", "split"] if has_img else ["id", "text", "label", "split"])
            for i in tqdm(range(n), desc=f"writing {folder.name}", unit=" nodes", disable=not progress, leave=False):
                y = int(graph.labels[i])
                label = graph.class_names[y] if y >= 0 else ""
                text = graph.texts[i] if graph.texts is not None else ""
                row = [ids[i], text]
                if has_img:
                    if graph.images.available(i):
                        file = f"{ids[i]}.png" if _SAFE_NAME.fullmatch(ids[i]) else f"{i}.png"
                        graph.load_image(i).save(d / "images" / file)
                        row.append(file)
                    else:
                        row.append("")
                w.writerow(row + [label, part[i]])
        with open(d / "edges.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, lineterminator="\n")
            ls = graph.link_split
            w.writerow(["src", "dst"] if ls is None else ["src", "dst", "split"])
            pairs = graph.edge_pairs()  # [2, M], u < v: every edge once; held-out ones marked val / test
            names = np.full(pairs.shape[1], "train", dtype=object)
            if ls is not None:
                key = pairs[0] * np.int64(n) + pairs[1]
                for name in ("val", "test"):
                    held = getattr(ls, f"{name}_pos")
                    names[np.isin(key, np.minimum(held[0], held[1]) * np.int64(n) + np.maximum(held[0], held[1]))] = name
            for (a, b), name in zip(pairs.T.tolist(), names.tolist()):
                w.writerow([ids[a], ids[b]] if ls is None else [ids[a], ids[b], name])
    return folder

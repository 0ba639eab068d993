"""Reader (and a small writer) for DGL's binary graph file, without DGL.

MAGB ships its graphs as ``<Name>Graph.pt`` written by ``dgl.save_graphs``: despite the suffix it is
not a torch pickle. The layout (version 2, "heterograph" files; every integer little-endian) is:

    0      u64 file magic 0xDD2E4FF046B4A13F, u64 version (2), u64 graph type (2), u64 num_graphs
           ... zero/garbage padding up to byte 4096 (DGL writes a fixed 4 KiB metadata block)
    4096   u64 start of the graph section, then the graph-label dict: vector<NamedTensor>
    start  per graph, a HeteroGraphData record:
             HeteroGraph  = magic, metagraph (ImmutableGraph), vector<UnitGraph>, vector<i64> num_nodes per type
             node data    = vector (per node type) of vector<NamedTensor>
             edge data    = vector (per edge type) of vector<NamedTensor>
             vector<string> node type names, vector<string> edge type names
    end    vector<u64> byte offset of each graph record

with ``vector<T>`` = u64 count + items, ``string`` = u64 length + bytes, ``NamedTensor`` = string +
NDArray, and NDArray a DLPack-style record: u64 magic 0xDD5E40F096B4A13F, u64 reserved, i32 device
type, i32 device id, i32 ndim, u8 dtype code, u8 bits, u16 lanes, i64 shape[ndim], i64 byte count,
raw data. An ImmutableGraph is its magic followed by a CSR matrix; a UnitGraph is its magic, i64
saved-formats code, i64 allowed-formats code, then a COO and/or CSR and/or CSC block, each of which
is a metagraph (ImmutableGraph) followed by the matrix (COO: magic, rows, cols, row ids, col ids,
edge ids, u8 row-sorted, u8 col-sorted; CSR: magic, rows, cols, indptr, indices, edge ids, u8 sorted).

Every read is bounds-checked: a short file raises ``ValueError("... truncated ...")``, a wrong magic
number or an implausible count raises ``ValueError`` naming what was expected; nothing here can
crash the interpreter or allocate unbounded memory.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FILE_MAGIC = 0xDD2E4FF046B4A13F
NDARRAY_MAGIC = 0xDD5E40F096B4A13F
HETEROGRAPH_MAGIC = 0xDD589FBE35224ABF
IMMUTABLE_GRAPH_MAGIC = 0xDD3C5FFE20046ABF
CSR_MAGIC = 0xDD6CD31205DFF127
COO_MAGIC = 0xDD61FFD305DFF127
UNIT_GRAPH_MAGIC = 0xDD2E60F0F6B4A127
META_BLOCK = 4096  # DGL pads the file header to 4 KiB

# Sparse-format bits in a UnitGraph record (DGL's COO_CODE / CSR_CODE / CSC_CODE).
_COO, _CSR, _CSC = 1, 2, 4
_FORMAT_FLAG = 0x100000000  # set by DGL >= 0.6 to mark a bitmask rather than a legacy enum
_LEGACY_FORMAT = {0: _COO, 1: _COO, 2: _CSR, 3: _CSC}

# DLPack dtype codes: 0 int, 1 uint, 2 float (bfloat16 is rejected: NumPy has no such dtype).
_DTYPES = {(0, 8): np.int8, (0, 16): np.int16, (0, 32): np.int32, (0, 64): np.int64,
           (1, 8): np.uint8, (1, 16): np.uint16, (1, 32): np.uint32, (1, 64): np.uint64,
           (2, 16): np.float16, (2, 32): np.float32, (2, 64): np.float64}
_MAX_COUNT = 1 << 40  # larger counts in a header are corruption, not data


@dataclass
class DGLGraph:
    """One homogeneous graph read from a DGL file: COO edges plus named node/edge tensors."""

    num_nodes: int
    src: np.ndarray  # int64 [E]
    dst: np.ndarray  # int64 [E]
    ndata: dict[str, np.ndarray] = field(default_factory=dict)
    edata: dict[str, np.ndarray] = field(default_factory=dict)
    graph_labels: dict[str, np.ndarray] = field(default_factory=dict)
    num_graphs: int = 1


class _Reader:
    def __init__(self, buf, path: str):
        self.buf = buf
        self.n = len(buf)
        self.pos = 0
        self.path = path

    def _need(self, nbytes: int, what: str) -> None:
        if nbytes < 0 or self.pos + nbytes > self.n:
            raise ValueError(
                f"DGL graph file {self.path} is truncated: reading {what} needs {nbytes} bytes at "
                f"offset {self.pos}, but the file has {self.n} bytes")

    def u64(self, what: str) -> int:
        self._need(8, what)
        (v,) = struct.unpack_from("<Q", self.buf, self.pos)
        self.pos += 8
        return v

    def i64(self, what: str) -> int:
        self._need(8, what)
        (v,) = struct.unpack_from("<q", self.buf, self.pos)
        self.pos += 8
        return v

    def i32(self, what: str) -> int:
        self._need(4, what)
        (v,) = struct.unpack_from("<i", self.buf, self.pos)
        self.pos += 4
        return v

    def u8(self, what: str) -> int:
        self._need(1, what)
        v = self.buf[self.pos]
        self.pos += 1
        return v

    def count(self, what: str) -> int:
        """A vector length or string size: every item takes at least one byte, so it is bounded by the
        bytes left in the file (before a loop or an allocation of that length starts)."""
        v = self.u64(what)
        if v > min(_MAX_COUNT, self.n - self.pos):
            raise ValueError(f"DGL graph file {self.path}: implausible {what} {v} at offset {self.pos - 8} (only "
                             f"{self.n - self.pos} bytes follow); the file is corrupt")
        return v

    def magic(self, expected: int, what: str) -> None:
        at = self.pos
        got = self.u64(f"{what} magic number")
        if got != expected:
            raise ValueError(f"DGL graph file {self.path}: bad {what} magic number 0x{got:016X} at offset "
                             f"{at} (expected 0x{expected:016X}); not a DGL graph file or corrupt")

    def string(self, what: str) -> str:
        n = self.count(f"{what} length")
        self._need(n, what)
        s = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        try:
            return s.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"DGL graph file {self.path}: {what} is not UTF-8 at offset {self.pos - n}") from e

    def ndarray(self, what: str) -> np.ndarray:
        self.magic(NDARRAY_MAGIC, f"tensor '{what}'")
        self.u64(f"{what} reserved field")
        self.i32(f"{what} device type")
        self.i32(f"{what} device id")
        ndim = self.i32(f"{what} ndim")
        if not 0 <= ndim <= 8:
            raise ValueError(f"DGL graph file {self.path}: tensor '{what}' has invalid ndim {ndim}")
        code, bits = self.u8(f"{what} dtype code"), self.u8(f"{what} dtype bits")
        self._need(2, f"{what} dtype lanes")
        (lanes,) = struct.unpack_from("<H", self.buf, self.pos)
        self.pos += 2
        dtype = _DTYPES.get((code, bits))
        if dtype is None or lanes != 1:
            raise ValueError(f"DGL graph file {self.path}: tensor '{what}' has unsupported dtype "
                             f"(code {code}, bits {bits}, lanes {lanes})")
        shape = [self.i64(f"{what} shape") for _ in range(ndim)]
        if any(s < 0 for s in shape):
            raise ValueError(f"DGL graph file {self.path}: tensor '{what}' has negative shape {shape}")
        nbytes = self.i64(f"{what} byte count")
        expect = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize if shape else np.dtype(dtype).itemsize
        if nbytes != expect:
            raise ValueError(f"DGL graph file {self.path}: tensor '{what}' declares {nbytes} bytes but "
                             f"shape {shape} of {np.dtype(dtype).name} needs {expect}")
        self._need(nbytes, f"tensor '{what}' data")
        arr = np.frombuffer(self.buf, dtype=np.dtype(dtype).newbyteorder("<"), count=nbytes // np.dtype(dtype).itemsize,
                            offset=self.pos).reshape(shape)
        self.pos += nbytes
        return arr.astype(dtype, copy=True)  # own the memory: the file mapping is closed after reading

    def named_tensors(self, what: str) -> dict[str, np.ndarray]:
        out = {}
        for _ in range(self.count(f"{what} count")):
            name = self.string(f"{what} name")
            out[name] = self.ndarray(name)
        return out

    def csr_matrix(self, what: str) -> tuple[int, int, np.ndarray, np.ndarray, np.ndarray]:
        self.magic(CSR_MAGIC, f"{what} CSR matrix")
        rows, cols = self.i64(f"{what} rows"), self.i64(f"{what} cols")
        indptr, indices, eids = (self.ndarray(f"{what} {k}") for k in ("indptr", "indices", "edge ids"))
        self.u8(f"{what} sorted flag")
        return rows, cols, indptr, indices, eids

    def immutable_graph(self, what: str) -> None:
        self.magic(IMMUTABLE_GRAPH_MAGIC, f"{what} metagraph")
        self.csr_matrix(f"{what} metagraph")

    def unit_graph(self) -> tuple[int, int, np.ndarray, np.ndarray, np.ndarray | None]:
        """Returns (num_src, num_dst, src, dst, edge_ids or None) from whichever format was saved."""
        self.magic(UNIT_GRAPH_MAGIC, "relation graph")
        saved = self.i64("saved formats code")
        self.i64("allowed formats code")
        saved = saved & 0xFFFFFFFF if saved & _FORMAT_FLAG else _LEGACY_FORMAT.get(saved, -1)
        if saved <= 0 or saved & ~(_COO | _CSR | _CSC):
            raise ValueError(f"DGL graph file {self.path}: unknown sparse-format code {saved}")
        found = None
        if saved & _COO:
            self.immutable_graph("COO")
            self.magic(COO_MAGIC, "COO matrix")
            rows, cols = self.i64("COO rows"), self.i64("COO cols")
            row, col, eids = (self.ndarray(f"COO {k}") for k in ("row", "col", "edge ids"))
            self.u8("COO row-sorted flag")
            self.u8("COO col-sorted flag")
            found = (rows, cols, row, col, eids)
        for bit, name in ((_CSR, "CSR"), (_CSC, "CSC")):
            if saved & bit:
                self.immutable_graph(name)
                rows, cols, indptr, indices, eids = self.csr_matrix(name)
                if found is None:
                    if indptr.shape != (rows + 1,) or (rows > 0 and int(indptr[-1]) != indices.shape[0]):
                        raise ValueError(f"DGL graph file {self.path}: {name} indptr is inconsistent with its indices")
                    if np.any(np.diff(indptr) < 0) or (rows >= 0 and indptr.size and indptr[0] != 0):
                        raise ValueError(f"DGL graph file {self.path}: {name} indptr is not non-decreasing from 0")
                    seg = np.repeat(np.arange(rows, dtype=np.int64), np.diff(indptr))
                    # CSC stores in-edges: its rows are destinations.
                    found = (rows, cols, seg, indices, eids) if name == "CSR" else (cols, rows, indices, seg, eids)
        rows, cols, src, dst, eids = found
        if src.shape != dst.shape or src.ndim != 1:
            raise ValueError(f"DGL graph file {self.path}: source and destination arrays differ in shape "
                             f"({src.shape} vs {dst.shape})")
        if eids.size and eids.shape == src.shape:
            order = np.argsort(eids, kind="stable")  # restore the edge order DGL's edge data refers to
            src, dst = src[order], dst[order]
        return rows, cols, src.astype(np.int64), dst.astype(np.int64), None


def read_dgl_graph(path: str | os.PathLike, graph_index: int = 0) -> DGLGraph:
    """Parse one graph of a ``dgl.save_graphs`` file; raises ValueError on anything malformed."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"DGL graph file not found: {path}")
    buf = path.read_bytes()  # graph files are small next to the images; one read beats mmap bookkeeping
    if not buf:
        raise ValueError(f"DGL graph file {path} is truncated: it is empty")
    return _parse(buf, str(path), graph_index)


def _parse(buf, path: str, graph_index: int) -> DGLGraph:
    r = _Reader(buf, path)
    try:
        r.magic(FILE_MAGIC, "file")
        version = r.u64("format version")
        if version != 2:
            raise ValueError(f"DGL graph file {path}: format version {version} is not supported "
                             "(only version 2, written by DGL >= 0.5); re-save it with a recent DGL")
        r.u64("graph type")
        num_graphs = r.count("number of graphs")
        if not 0 <= graph_index < num_graphs:
            raise ValueError(f"DGL graph file {path}: graph_index {graph_index} out of range (file holds {num_graphs})")
        r._need(META_BLOCK - r.pos, "4 KiB header block")
        r.pos = META_BLOCK
        start = r.u64("graph section offset")
        labels = r.named_tensors("graph label")
        if start != r.pos:
            raise ValueError(f"DGL graph file {path}: graph section offset {start} does not follow the label "
                             f"dict (ends at {r.pos})")
        # The graph index sits at the end: a string (u64 length L + L bytes) holding vector<u64> of
        # graph offsets, followed by L again so a reader can find it from the end of the file.
        if r.n - 8 < start:
            raise ValueError(f"DGL graph file {path} is truncated: no room for the graph index table")
        idx_reader = _Reader(buf, path)
        idx_reader.pos = r.n - 8
        blob_len = idx_reader.u64("graph index size")
        if blob_len != 8 * (num_graphs + 1) or r.n - 16 - blob_len < start:
            raise ValueError(f"DGL graph file {path} is truncated or corrupt: graph index table of {blob_len} "
                             f"bytes does not fit {num_graphs} graphs")
        idx_reader.pos = r.n - 16 - blob_len
        if idx_reader.u64("graph index size") != blob_len or idx_reader.u64("graph index count") != num_graphs:
            raise ValueError(f"DGL graph file {path} is truncated or corrupt: graph index table does not "
                             f"list {num_graphs} graphs")
        tail = r.n - 16 - blob_len
        offsets = [idx_reader.u64("graph offset") for _ in range(num_graphs)]
        if offsets[graph_index] < start or offsets[graph_index] >= tail:
            raise ValueError(f"DGL graph file {path}: graph {graph_index} offset {offsets[graph_index]} is out of range")
        r.pos = offsets[graph_index]
        return _parse_graph(r, labels, num_graphs)
    except struct.error as e:  # defensive: _need should have caught it
        raise ValueError(f"DGL graph file {path} is truncated or corrupt: {e}") from e


def _parse_graph(r: _Reader, labels: dict, num_graphs: int) -> DGLGraph:
    path = r.path
    r.magic(HETEROGRAPH_MAGIC, "heterograph")
    r.immutable_graph("heterograph")
    n_rel = r.count("number of relation graphs")
    if n_rel != 1:
        raise ValueError(f"DGL graph file {path}: {n_rel} edge types; only homogeneous graphs (one edge type) "
                         "are supported")
    rows, cols, src, dst, _ = r.unit_graph()
    n_types = r.count("number of node types")
    num_nodes_per_type = [r.i64("nodes per type") for _ in range(n_types)]
    if n_types != 1:
        raise ValueError(f"DGL graph file {path}: {n_types} node types; only homogeneous graphs are supported")
    num_nodes = num_nodes_per_type[0]
    if num_nodes < 0 or rows != num_nodes or cols != num_nodes:
        raise ValueError(f"DGL graph file {path}: node count {num_nodes} disagrees with the adjacency "
                         f"shape {rows} x {cols}")
    ndata = {}
    for _ in range(r.count("node-data type count")):
        ndata.update(r.named_tensors("node data"))
    edata = {}
    for _ in range(r.count("edge-data type count")):
        edata.update(r.named_tensors("edge data"))
    for what in ("node type names", "edge type names"):
        for _ in range(r.count(what)):
            r.string(what)
    for field, ids in (("source", src), ("destination", dst)):
        bad = np.flatnonzero((ids < 0) | (ids >= num_nodes))
        if bad.size:
            i = int(bad[0])
            raise ValueError(f"DGL graph file {path}: edge {i} has {field} node id {int(ids[i])}, out of range "
                             f"[0, {num_nodes})")
    if not ndata and num_nodes > max(src.shape[0] * 2, 1):
        # Nothing else in the file is sized by the node count: nodes beyond the 2E endpoints are not in it.
        raise ValueError(f"DGL graph file {path}: declares {num_nodes} nodes but holds {src.shape[0]} edges and no "
                         "node data; the node count is corrupt")
    for name, arr in ndata.items():
        if arr.ndim == 0 or arr.shape[0] != num_nodes:
            raise ValueError(f"DGL graph file {path}: node data '{name}' has {arr.shape[0] if arr.ndim else 0} "
                             f"rows, expected {num_nodes}")
    for name, arr in edata.items():
        if arr.ndim == 0 or arr.shape[0] != src.shape[0]:
            raise ValueError(f"DGL graph file {path}: edge data '{name}' has wrong length, expected {src.shape[0]}")
    return DGLGraph(num_nodes=int(num_nodes), src=src, dst=dst, ndata=ndata, edata=edata,
                    graph_labels=labels, num_graphs=int(num_graphs))


# --------------------------------------------------------------------------------------------
# Writer: produces the same layout (COO only). Used to build MAGB-style fixtures and exports.


def _w_ndarray(out: list, arr: np.ndarray) -> None:
    arr = np.ascontiguousarray(arr)
    key = next((k for k, v in _DTYPES.items() if np.dtype(v) == arr.dtype), None)
    if key is None:
        raise ValueError(f"cannot write dtype {arr.dtype} to a DGL file")
    out.append(struct.pack("<QQiii", NDARRAY_MAGIC, 0, 1, 0, arr.ndim))
    out.append(struct.pack("<BBH", key[0], key[1], 1))
    out.append(struct.pack(f"<{arr.ndim}q", *arr.shape))
    data = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
    out.append(struct.pack("<q", len(data)))
    out.append(data)


def _w_string(out: list, s: str) -> None:
    b = s.encode("utf-8")
    out.append(struct.pack("<Q", len(b)) + b)


def _w_meta(out: list) -> None:
    # One node type with one self-loop edge type: the metagraph of a homogeneous graph.
    out.append(struct.pack("<QQqq", IMMUTABLE_GRAPH_MAGIC, CSR_MAGIC, 1, 1))
    _w_ndarray(out, np.array([0, 1], np.int64))
    _w_ndarray(out, np.array([0], np.int64))
    _w_ndarray(out, np.array([0], np.int64))
    out.append(b"\x00")


def dgl_graph_bytes(src, dst, num_nodes: int, ndata: dict[str, np.ndarray] | None = None) -> bytes:
    """Serialise a homogeneous graph (COO) in DGL's version-2 layout; the inverse of read_dgl_graph."""
    src = np.asarray(src, np.int64)
    dst = np.asarray(dst, np.int64)
    out: list[bytes] = [struct.pack("<QQQQ", FILE_MAGIC, 2, 2, 1)]
    out.append(b"\x00" * (META_BLOCK - 32))
    out.append(struct.pack("<QQ", META_BLOCK + 16, 0))  # graph start; empty label dict
    out.append(struct.pack("<Q", HETEROGRAPH_MAGIC))
    _w_meta(out)
    out.append(struct.pack("<QQqq", 1, UNIT_GRAPH_MAGIC, 1, 7 | _FORMAT_FLAG))  # legacy "COO" code, as DGL writes it
    _w_meta(out)
    out.append(struct.pack("<Qqq", COO_MAGIC, num_nodes, num_nodes))
    _w_ndarray(out, src)
    _w_ndarray(out, dst)
    _w_ndarray(out, np.zeros(0, np.int64))
    out.append(b"\x00\x00")
    out.append(struct.pack("<Qq", 1, num_nodes))
    ndata = ndata or {}
    out.append(struct.pack("<QQ", 1, len(ndata)))
    for name, arr in ndata.items():
        _w_string(out, name)
        _w_ndarray(out, np.asarray(arr))
    out.append(struct.pack("<QQ", 1, 0))
    out.append(struct.pack("<Q", 1))
    _w_string(out, "_N")
    out.append(struct.pack("<Q", 1))
    _w_string(out, "_E")
    out.append(struct.pack("<QQQQ", 16, 1, META_BLOCK + 16, 16))
    return b"".join(out)

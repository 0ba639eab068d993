"""Bad input for the compiled core (mlaga_fast._C) and the PPR API, as issue 16 met it.

Every case is a call and what a user must get back: a clear exception (its type, and a pattern
that names the parameter or the problem), or, for input that is legal but unusual (big-endian
ids, 'cpu:0', CPU tensors), the same answer as the plain call. A case fails when the call
returns where it should raise, returns something else, raises the wrong kind of error, or (seen
from the test that runs this module in a subprocess) crashes or hangs.

    python tests/helpers/core_fuzz.py [GROUP]    # prints one JSON line per case, then a summary
"""
from __future__ import annotations

import json
import re
import sys
import traceback
from typing import Any, Callable

import numpy as np

GROUPS = ("api", "core", "graph")


def _path(n: int = 5):
    """Undirected path 0-1-...-(n-1) as CSR (built by hand, independent of the package)."""
    rows, cols = [], []
    for i in range(n - 1):
        rows += [i, i + 1]
        cols += [i + 1, i]
    order = np.lexsort((cols, rows))
    rows, cols = np.asarray(rows)[order], np.asarray(cols)[order]
    indptr = np.zeros(n + 1, np.int64)
    np.add.at(indptr, rows + 1, 1)
    return np.cumsum(indptr), cols.astype(np.int64)


class Case:
    def __init__(self, name: str, call: Callable[[], Any], raises: tuple = (ValueError,), match: str = "",
                 same_as: Callable[[], Any] | None = None):
        self.name, self.call, self.raises, self.match, self.same_as = name, call, raises, match, same_as

    def run(self) -> dict:
        try:
            got = self.call()
        except Exception as e:  # noqa: BLE001 - classifying every outcome is the point
            msg = str(e)
            if self.same_as is not None:
                return {"case": self.name, "ok": False, "why": f"raised {type(e).__name__}: {msg}"}
            if not isinstance(e, self.raises):
                return {"case": self.name, "ok": False,
                        "why": f"{type(e).__name__} instead of {[t.__name__ for t in self.raises]}: {msg}",
                        "trace": traceback.format_exc(limit=3)}
            if not msg.strip() or (self.match and not re.search(self.match, msg)):
                return {"case": self.name, "ok": False, "why": f"unclear message {msg!r} (want /{self.match}/)"}
            return {"case": self.name, "ok": True, "outcome": "clear_error", "error": f"{type(e).__name__}: {msg[:160]}"}
        if self.same_as is None:
            return {"case": self.name, "ok": False, "why": "returned instead of raising (silent result)"}
        want = self.same_as()
        if not _same(got, want):
            return {"case": self.name, "ok": False, "why": "returned a different answer than the plain call"}
        return {"case": self.name, "ok": True, "outcome": "correct_result"}


def _same(a, b) -> bool:
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if hasattr(a, "numpy"):
        a = a.numpy()
    if hasattr(b, "numpy"):
        b = b.numpy()
    return np.array_equal(np.asarray(a), np.asarray(b))


# ------------------------------------------------------------------------------------ values
def _bad_graph_arrays(ip, ix):
    """(label, indptr, indices, pattern) for malformed graphs."""
    n = ip.shape[0] - 1
    out = [
        ("indptr 2-D", ip[None, :], ix, "indptr must be 1-D"),
        ("indptr float64", ip.astype(np.float64), ix, "indptr must hold integers|indptr must be int64"),
        ("indptr empty", np.zeros(0, np.int64), ix, "indptr"),
        ("indptr not from 0", ip + 1, ix, r"indptr\[0\] must be 0"),
        ("indptr decreasing", np.concatenate([ip[:1], ip[2:3], ip[1:2], ip[3:]]), ix, r"non-decreasing: indptr\[2\]"),
        ("indptr end != nnz", np.concatenate([ip[:-1], [ip[-1] + 3]]), ix, r"indptr\[-1\]|non-decreasing"),
        ("indptr objects", np.array([0, "a"], dtype=object), ix, "numeric|integers"),
        ("indptr strings", np.array(["0", "1"]), ix, "integers|int64"),
        ("indptr bool", np.ones(n + 1, bool), ix, "integers|int64"),
        ("indptr uint64 huge", np.full(n + 1, 2**64 - 1, np.uint64), ix, "too large|int64|indptr"),
        ("indices float64", ip, ix.astype(np.float64), "indices must hold integers|int32 or int64"),
        ("indices float32", ip, ix.astype(np.float32), "indices must hold integers|int32 or int64"),
        ("indices int16", ip, ix.astype(np.int16), None),  # widened losslessly by the API
        ("indices -1", ip, np.where(np.arange(ix.size) == 2, -1, ix), r"indices\[2\] = -1"),
        ("indices = N", ip, np.where(np.arange(ix.size) == 3, n, ix), rf"indices\[3\] = {n}"),
        ("indices 2**40", ip, np.where(np.arange(ix.size) == 1, 2**40, ix), r"indices\[1\] = 1099511627776"),
        ("indices 2**40+1 (int32 wrap)", ip, np.where(np.arange(ix.size) == 1, 2**32 + 1, ix), r"indices\[1\]"),
        ("indices 2-D", ip, ix.reshape(2, -1), "indices must be 1-D"),
        ("indices uint64 huge", ip, np.full(ix.size, 2**63, np.uint64), "too large|out of range|indices"),
        ("indices bool", ip, np.ones(ix.size, bool), "integers|int32 or int64"),
        ("indices short", ip, ix[:-1], r"indptr\[-1\] must equal len\(indices\)"),
        ("indices None", ip, None, "numeric|integers|indices"),
    ]
    return out


def api_cases() -> list[Case]:
    import torch

    from mlaga_fast.graph_check import check_csr
    from mlaga_fast.ppr import PprGraph, bounded_topk_host, ppr_dense, ppr_topk

    ip, ix = _path(5)
    src = np.array([0, 2], np.int64)
    cases: list[Case] = []
    # malformed graphs, through every entry that takes one
    for label, p, i, pat in _bad_graph_arrays(ip, ix):
        for fname, fn in (("ppr_topk", lambda p=p, i=i: ppr_topk(p, i, src, k=3)),
                          ("ppr_dense", lambda p=p, i=i: ppr_dense(p, i, src)),
                          ("bounded_topk_host", lambda p=p, i=i: bounded_topk_host(p, i, src, k=3, capacity=64)),
                          ("PprGraph", lambda p=p, i=i: PprGraph(p, i).topk(src, k=3))):
            if pat is None:  # legal: same answer as int64 ids
                cases.append(Case(f"{fname}: {label}", fn, same_as=lambda f=fname: {
                    "ppr_topk": lambda: ppr_topk(ip, ix, src, k=3), "ppr_dense": lambda: ppr_dense(ip, ix, src),
                    "bounded_topk_host": lambda: bounded_topk_host(ip, ix, src, k=3, capacity=64),
                    "PprGraph": lambda: PprGraph(ip, ix).topk(src, k=3)}[f]()))
            else:
                cases.append(Case(f"{fname}: {label}", fn, match=pat))
        if pat is not None and "None" not in label and "objects" not in label and "strings" not in label:
            cases.append(Case(f"check_csr: {label}", lambda p=p, i=i: check_csr(p, i),
                              match=pat + "|indptr must be int64|indices must be int32 or int64"))
    # big-endian ids are converted, never reinterpreted: same answer as native ones
    for label, p, i, s in (("indices >i8", ip, ix.astype(">i8"), src), ("indices >i4", ip, ix.astype(">i4"), src),
                           ("indptr >i8", ip.astype(">i8"), ix, src), ("sources >i8", ip, ix, src.astype(">i8"))):
        cases.append(Case(f"ppr_topk: {label}", lambda p=p, i=i, s=s: ppr_topk(p, i, s, k=3),
                          same_as=lambda: ppr_topk(ip, ix, src, k=3)))
        cases.append(Case(f"check_csr: {label} accepted", lambda p=p, i=i: check_csr(p, i) or "ok",
                          same_as=lambda: "ok"))
    # parameters
    bad = {
        "alpha": [(0.0, "alpha"), (1.0, "alpha"), (-0.5, "alpha"), (float("nan"), "alpha"), (float("inf"), "alpha"),
                  (1e-300, "1 / \\(alpha \\* eps\\)"), (1e-9, "1 / \\(alpha \\* eps\\)"), ("x", "alpha"),
                  (None, "alpha"), (True, "alpha")],
        "eps": [(0.0, "eps"), (-1e-3, "eps"), (float("nan"), "eps"), (float("inf"), "eps"),
                (5e-324, "1 / \\(alpha \\* eps\\)"), (1e-300, "1 / \\(alpha \\* eps\\)"), ("x", "eps"), (None, "eps")],
        "k": [(0, "k"), (-1, "k"), (2**62, "k = 4611686018427387904.*(memory|does not fit)"),
              (2**40, "k = 1099511627776.*(memory|does not fit)"),
              (2**63, "k must be"), (2**64, "k must be"), (1.5, "k must be an integer"), ("x", "k must be"),
              (None, "k must be")],
        "num_threads": [(0, "num_threads"), (-1, "num_threads"), (2**31, "num_threads"), (2**40, "num_threads"),
                        (10**6, "num_threads"), (2**64, "num_threads"), (1.5, "num_threads")],
        "device": [("tpu", "device"), ("meta", "not supported"), (object(), "device"), ("cuda:x", "device")],
        "workspace": [("sparse", "workspace"), (3, "workspace")],
        "candidates": [(np.ones(4, bool), "one entry per node"), (np.ones(5, np.int64), "bool mask"),
                       (np.ones((5, 1), bool), "one entry per node"), ("all", "bool mask|candidates")],
        "order": [("x", "order"), ("", "order")],
    }
    if not torch.cuda.is_available():
        bad["device"] += [("cuda", "CUDA is not available"), (0, "CUDA is not available"),
                          (torch.device("cuda", 1), "CUDA is not available")]
    for param, values in bad.items():
        for value, pat in values:
            if param == "order":
                fn = (lambda v=value: ppr_topk(ip, ix, src, order=v))
            else:
                fn = (lambda p=param, v=value: ppr_topk(ip, ix, src, **{p: v}))
            cases.append(Case(f"ppr_topk: {param}={value!r}", fn, match=pat))
            if param in ("alpha", "eps", "num_threads"):
                cases.append(Case(f"ppr_dense: {param}={value!r}", lambda p=param, v=value: ppr_dense(ip, ix, src, **{p: v}),
                                  match=pat))
            if param in ("alpha", "eps", "k", "candidates"):
                cases.append(Case(f"bounded_topk_host: {param}={value!r}",
                                  lambda p=param, v=value: bounded_topk_host(ip, ix, src, capacity=64, **{p: v}),
                                  match=pat))
    for cap, pat in ((0, "capacity"), (1, "capacity"), (3, "capacity"), (12, "capacity"), (-5, "capacity"),
                     (2**31, "capacity"), (2**62, "capacity"), (2**30, "capacity = 1073741824.*memory|capacity"),
                     (1.5, "capacity"), ("x", "capacity")):
        cases.append(Case(f"bounded_topk_host: capacity={cap!r}", lambda c=cap: bounded_topk_host(ip, ix, src, capacity=c),
                          match=pat))
    for s, pat in (([0, 5], r"sources\[1\] = 5"), ([-1], r"sources\[0\] = -1"), (np.array([0.5]), "integers"),
                   (np.zeros((2, 2), np.int64), "1-D"), ([2**63 - 1], "out of range"), ("abc", "integers|sources"),
                   (np.array([True]), "integers"), (None, "sources")):
        cases.append(Case(f"ppr_topk: sources={s!r}"[:80], lambda s=s: ppr_topk(ip, ix, s), match=pat))
    # devices that torch.device accepts, and tensors
    ti, tx, ts = torch.from_numpy(ip), torch.from_numpy(ix), torch.from_numpy(src)
    for dev in ("cpu:0", torch.device("cpu"), "cpu"):
        cases.append(Case(f"ppr_topk: device={dev!r}", lambda d=dev: ppr_topk(ip, ix, src, k=3, device=d),
                          same_as=lambda: ppr_topk(ip, ix, src, k=3)))
    cases.append(Case("ppr_topk: CPU tensors", lambda: ppr_topk(ti, tx, ts, k=3), same_as=lambda: ppr_topk(ip, ix, src, k=3)))
    meta = torch.empty(6, dtype=torch.int64, device="meta")
    cases.append(Case("ppr_topk: meta indptr", lambda: ppr_topk(meta, ix, src), match="device 'meta'.*not|supported"))
    cases.append(Case("ppr_topk: meta sources", lambda: ppr_topk(ip, ix, torch.empty(2, dtype=torch.int64, device="meta")),
                      match="meta"))
    cases.append(Case("ppr_topk: bf16 indices", lambda: ppr_topk(ip, tx.to(torch.bfloat16), src), match="bfloat16|NumPy"))
    cases.append(Case("check_csr: meta", lambda: check_csr(meta, ix), match="meta"))
    return cases


def core_cases() -> list[Case]:
    """The compiled module itself, as a user calling _C directly meets it."""
    from mlaga_fast import _C

    ip, ix = _path(5)
    src = np.array([0, 2], np.int64)
    g = _C.PprGraph(ip, ix, "none")
    ok_topk = lambda **kw: g.topk(src, None, kw.get("alpha", 0.15), kw.get("eps", 1e-4), kw.get("k", 3),  # noqa: E731
                                  True, kw.get("num_threads", 0), kw.get("workspace", 0), kw.get("out_idx"),
                                  kw.get("out_val"))
    cases: list[Case] = [
        Case("_C has no public raw-pointer CUDA entry", lambda: _C.ppr_topk_cuda, raises=(AttributeError,),
             match="ppr_topk_cuda"),
        Case("_C has no raw-array ppr_topk", lambda: _C.ppr_topk, raises=(AttributeError,), match="ppr_topk"),
    ]
    for label, p, i, pat in _bad_graph_arrays(ip, ix):
        if i is None or p.dtype == object or p.dtype.kind == "U":
            cases.append(Case(f"_C.PprGraph: {label}", lambda p=p, i=i: _C.PprGraph(p, i, "none"),
                              raises=(TypeError, ValueError), match=""))
            continue
        want = pat if pat is not None else "int32 or int64"
        want = {"indptr float64": "indptr must be int64", "indptr bool": "indptr must be int64",
                "indptr uint64 huge": "indptr must be int64", "indices uint64 huge": "indices must be int32 or int64",
                "indices bool": "indices must be int32 or int64", "indices float64": "indices must be int32 or int64",
                "indices float32": "indices must be int32 or int64"}.get(label, want)
        if label in ("indices 2**40", "indices 2**40+1 (int32 wrap)"):
            want = r"indices\[1\]"
        cases.append(Case(f"_C.PprGraph: {label}", lambda p=p, i=i: _C.PprGraph(p, i, "none"), match=want))
        cases.append(Case(f"_C.check_csr: {label}", lambda p=p, i=i: _C.check_csr(p, i, 5), match=want.split("|")[0]))
    # big-endian at the C level: refused (never read as native)
    for label, p, i in (("indices >i8", ip, ix.astype(">i8")), ("indices >i4", ip, ix.astype(">i4")),
                        ("indptr >i8", ip.astype(">i8"), ix)):
        cases.append(Case(f"_C.PprGraph: {label}", lambda p=p, i=i: _C.PprGraph(p, i, "none"), match="byte order"))
        cases.append(Case(f"_C.check_csr: {label}", lambda p=p, i=i: _C.check_csr(p, i, 5), match="byte order"))
    cases.append(Case("_C.PprGraph.topk: sources >i8",
                      lambda: g.topk(src.astype(">i8"), None, 0.15, 1e-4, 3, True, 0, 0, None, None), match="byte order"))
    cases.append(Case("_C.check_csr: 2-D indptr", lambda: _C.check_csr(ip[None, :], ix, 5), match="1-D"))
    cases.append(Case("_C.PprGraph: order 'x'", lambda: _C.PprGraph(ip, ix, "x"), match="order"))
    # options at the C level
    for kw, pat in (({"alpha": 0.0}, "alpha"), ({"alpha": 1e-9}, "1 / \\(alpha \\* eps\\)"),
                    ({"eps": 5e-324}, "1 / \\(alpha \\* eps\\)"), ({"eps": float("nan")}, "eps"),
                    ({"k": 0}, "k must"), ({"k": 2**62}, "k = 4611686018427387904.*memory"),
                    ({"k": 2**40}, "k = 1099511627776.*memory"), ({"num_threads": -1}, "num_threads"),
                    ({"num_threads": 2**31}, "num_threads"), ({"num_threads": 2**40}, "num_threads"),
                    ({"workspace": 3}, "workspace"), ({"workspace": -1}, "workspace"), ({"workspace": 2**40}, "workspace"),
                    ({"out_idx": np.zeros((2, 4), np.int64)}, "out_idx must have shape"),
                    ({"out_idx": np.zeros((2, 3), np.int32)}, "out_idx must be a NumPy array"),
                    ({"out_idx": np.zeros((3, 2), np.int64).T}, "C-contiguous|shape"),
                    ({"out_val": np.zeros((2, 3), np.float64)}, "out_val must be a NumPy array"),
                    ({"out_idx": np.zeros((2, 3), np.int64).astype(">i8")}, "byte order|out_idx"),
                    ):
        cases.append(Case(f"_C.PprGraph.topk: {kw!r}"[:90], lambda kw=kw: ok_topk(**kw), match=pat))
    ro = np.zeros((2, 3), np.int64)
    ro.setflags(write=False)
    cases.append(Case("_C.PprGraph.topk: read-only out_idx", lambda: ok_topk(out_idx=ro, out_val=np.zeros((2, 3), np.float32)),
                      match="writable"))
    cases.append(Case("_C.PprGraph.topk: num_threads 2**64", lambda: ok_topk(num_threads=2**64), raises=(TypeError,),
                      match="incompatible function arguments"))
    for s, pat in ((np.array([5]), r"sources\[0\] = 5"), (np.array([-3]), r"sources\[0\] = -3"),
                   (np.array([0.0]), "sources must be int64"), (np.zeros((1, 1), np.int64), "1-D"),
                   (np.array([0], np.int32), "sources must be int64")):
        cases.append(Case(f"_C.PprGraph.topk: sources {s!r}", lambda s=s: g.topk(s, None, 0.15, 1e-4, 3, True, 0, 0, None, None),
                          match=pat))
    for m, pat in ((np.ones(4, bool), "one entry per node"), (np.ones(5, np.int64), "bool mask"), ([1, 0, 1, 0, 1], "bool mask|candidates")):
        cases.append(Case(f"_C.PprGraph.topk: candidates {m!r}"[:80],
                          lambda m=m: g.topk(src, m, 0.15, 1e-4, 3, True, 0, 0, None, None), match=pat))
    cases.append(Case("_C.PprGraph.dense: eps 0", lambda: g.dense(src, 0.15, 0.0, 0, 0), match="eps"))
    # legal and large: the exact size (keys, r, p: 8 B per slot; queue, used: 4 B; 32 lanes x k
    # top entries of 8 + 4 B; each part rounded up to 256 B), never a wrapped one
    exact = {(2**30, 1): 3 * 2**33 + 2 * 2**32 + 256 + 256, (2**30, 2**40): 3 * 2**33 + 2 * 2**32 + 2**48 + 2**47}
    for (cap, k), size in exact.items():
        cases.append(Case(f"_C.ppr_bounded_scratch_bytes({cap}, {k}) exact", lambda c=cap, k=k: _C.ppr_bounded_scratch_bytes(c, k),
                          same_as=lambda size=size: size))
    for cap, k, pat in ((2**30, 2**60, "k = 1152921504606846976.*does not fit"), (2**62, 1, "capacity"),
                        (3, 1, "capacity"), (2, 0, "k must"), (2, -1, "k must"), (0, 1, "capacity")):
        cases.append(Case(f"_C.ppr_bounded_scratch_bytes({cap}, {k})", lambda c=cap, k=k: _C.ppr_bounded_scratch_bytes(c, k),
                          match=pat))
    cases.append(Case("_C.PprGraph.bounded_host: capacity 2**30 (memory)",
                      lambda: g.bounded_host(src, None, 0.15, 1e-4, 3, True, 2**30), match="capacity = 1073741824.*memory"))
    if hasattr(g, "_topk_cuda"):
        import torch
        from torch.utils.dlpack import to_dlpack

        cpu = to_dlpack(torch.zeros(2, 3, dtype=torch.int64))
        for label, args, pat in (
                ("raw integers as pointers", (1, 2, 3, 4, 5), "DLPack capsule"),
                ("CPU tensors", (to_dlpack(torch.zeros(1 << 20, dtype=torch.uint8)), cpu, cpu, cpu, cpu), "CUDA device"),
                ("None", (None, None, None, None, None), "DLPack capsule")):
            cases.append(Case(f"_C.PprGraph._topk_cuda: {label}",
                              lambda a=args: g._topk_cuda(src, None, 0.15, 1e-4, 3, True, 64, 1, 0, 0, *a),
                              raises=(ValueError, TypeError), match=pat))
        cases.append(Case("_C.PprGraph._topk_cuda: num_warps 0",
                          lambda: g._topk_cuda(src, None, 0.15, 1e-4, 3, True, 64, 0, 0, 0, None, None, None, None, None),
                          match="num_warps"))
        cases.append(Case("_C.PprGraph._topk_cuda: capacity 3",
                          lambda: g._topk_cuda(src, None, 0.15, 1e-4, 3, True, 3, 1, 0, 0, None, None, None, None, None),
                          match="capacity"))
    return cases


def graph_cases() -> list[Case]:
    """MultimodalGraph: the dataset container refuses what the kernels would misread."""
    from mlaga_fast.data import MultimodalGraph

    ip, ix = _path(5)
    cases = [
        Case("MultimodalGraph: float64 indices", lambda: MultimodalGraph("g", ip, ix.astype(np.float64)),
             match="indices must be an integer array"),
        Case("MultimodalGraph: float64 indptr", lambda: MultimodalGraph("g", ip.astype(np.float64), ix),
             match="indptr must be an integer array"),
        Case("MultimodalGraph: big-endian indices", lambda: MultimodalGraph("g", ip, ix.astype(">i8")).indices,
             same_as=lambda: ix),
        Case("MultimodalGraph: 2-D indptr", lambda: MultimodalGraph("g", ip[None, :], ix), match="indptr must be 1-D"),
        Case("MultimodalGraph: num_classes is an int", lambda: type(MultimodalGraph("g", ip, ix).num_classes).__name__,
             same_as=lambda: "int"),
    ]
    return cases


def run(group: str) -> list[dict]:
    cases = {"api": api_cases, "core": core_cases, "graph": graph_cases}[group]()
    return [c.run() for c in cases]


if __name__ == "__main__":
    groups = sys.argv[1:] or list(GROUPS)
    for grp in groups:
        for res in run(grp):
            print(json.dumps({"group": grp, **res}), flush=True)

"""Opening a dataset: ``load`` against the NumPy formulation it replaced, on the same directory.

    python benchmarks/bench_load.py --nodes 1000000 [--data DIR] [--work DIR]

Ours: texts decoded on demand from the mapped blob (``TextBlob``), the CSR conventions and the link
split's pair lookups in C++ with O(1) extra memory, the link split checked 2^20 pairs at a time.
Peer ("numpy"): the same ``load`` with those three parts as they were before: every text decoded into a
list, the canonical-CSR check and the pair lookups as whole-array NumPy (sorted keys, ``searchsorted``),
the link split checked at once. Both sides run the same checks and must accept the dataset. Each side
runs in its own process; reported: wall seconds and the peak rise of anonymous memory (RssAnon, sampled
every 20 ms) over the process after imports. Without --data, a synthetic catalogue of --nodes nodes is
made in --work first. Results: benchmarks/results/load.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- the NumPy peer
def numpy_violation(indptr: np.ndarray, indices: np.ndarray, n: int) -> tuple[int, int]:
    """(kind, index) of the first convention broken, as ``_C.csr_violation`` reports it: 1 self-loop,
    2 duplicate, 3 unsorted, 4 no reverse edge; (0, -1) when none. E-long temporaries throughout."""
    from mlaga_fast.data.graph import csr_rows

    if indices.size == 0:
        return 0, -1
    rows = csr_rows(indptr)  # [E]
    loops = np.flatnonzero(rows == indices)
    if loops.size:
        return 1, int(loops[0])
    key = rows * np.int64(n) + indices  # [E], strictly increasing iff sorted and duplicate-free
    bad = np.flatnonzero(np.diff(key) <= 0)
    if bad.size:
        i = int(bad[0]) + 1
        return (2 if key[i] == key[i - 1] else 3), i
    rkey = indices * np.int64(n) + rows  # every reverse must be stored
    pos = np.minimum(np.searchsorted(key, rkey), key.size - 1)
    missing = np.flatnonzero(key[pos] != rkey)
    return (4, int(missing[0])) if missing.size else (0, -1)


def numpy_pairs_in_csr(indptr: np.ndarray, indices: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    from mlaga_fast.data.graph import csr_keys

    key = csr_keys(indptr, indices)
    q = pairs[0] * np.int64(indptr.shape[0] - 1) + pairs[1]
    if key.size == 0:
        return np.zeros(q.shape, dtype=bool)
    return key[np.minimum(np.searchsorted(key, q), key.size - 1)] == q


def _use_numpy_peer() -> None:
    """Swap in the NumPy formulation for this process (the peer's child only)."""
    import mlaga_fast.data.graph as graph
    import mlaga_fast.data.store as store

    def check(indptr, indices, num_nodes, field="graph"):
        from mlaga_fast.graph_check import check_csr

        check_csr(indptr, indices, num_nodes)
        kind, i = numpy_violation(np.asarray(indptr), np.asarray(indices), num_nodes)
        if kind:
            raise ValueError(f"{field}: convention {kind} broken at index {i}")

    read_texts = store._read_texts
    graph.check_canonical_csr = check
    graph.pairs_in_csr = numpy_pairs_in_csr
    graph._CHUNK = 1 << 62  # ids and the link split checked as whole arrays
    store._read_texts = lambda d, spec, n: list(read_texts(d, spec, n))


# ----------------------------------------------------------------------------- one side, in a child
def _anon_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssAnon")) / 1024


def run_side(side: str, data: Path) -> dict:
    from mlaga_fast.data import load

    if side == "numpy":
        _use_numpy_peer()
    base, peak, stop = _anon_mib(), [0.0], threading.Event()

    def watch():
        while not stop.is_set():
            peak[0] = max(peak[0], _anon_mib())
            time.sleep(0.02)

    th = threading.Thread(target=watch, daemon=True)
    th.start()
    t0 = time.perf_counter()
    g = load(data)
    wall = time.perf_counter() - t0
    stop.set()
    th.join()
    return {"side": side, "wall_s": round(wall, 2), "peak_anon_rise_mib": round(max(peak[0], _anon_mib()) - base, 1),
            "nodes": g.num_nodes, "stored_edges": int(g.indices.size), "texts_type": type(g.texts).__name__}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=1_000_000)
    ap.add_argument("--data", type=Path, default=None, help="an existing dataset directory (else one is made)")
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "mlaga_bench_load")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "load.json")
    ap.add_argument("--side", default=None, help=argparse.SUPPRESS)  # child process: ours | numpy
    args = ap.parse_args(argv)
    data = args.data or args.work / f"n{args.nodes}"
    if args.side:
        print("RESULT " + json.dumps(run_side(args.side, data)), flush=True)
        return 0
    if args.data is None and not (data / "graph.json").is_file():
        from mlaga_fast.data.synth import make_catalogue

        make_catalogue(data, nodes=args.nodes)
    rows = []
    for side in ("ours", "numpy"):
        proc = subprocess.run([sys.executable, __file__, "--side", side, "--data", str(data)], capture_output=True,
                              text=True)
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode or not line:
            raise SystemExit(f"bench_load: the {side} side failed: {proc.stderr.strip().splitlines()[-1:]}")
        rows.append(json.loads(line[-1][len("RESULT "):]))
        print(json.dumps(rows[-1]), flush=True)
    ours, peer = rows
    ratio = {"time": round(peer["wall_s"] / ours["wall_s"], 2),
             "memory": round(peer["peak_anon_rise_mib"] / max(ours["peak_anon_rise_mib"], 1.0), 2)}
    print(f"load of {data} ({ours['nodes']:,} nodes, {ours['stored_edges']:,} stored edges): ours {ours['wall_s']} s, "
          f"+{ours['peak_anon_rise_mib']} MiB; numpy {peer['wall_s']} s, +{peer['peak_anon_rise_mib']} MiB; "
          f"numpy / ours: {ratio['time']}x time, {ratio['memory']}x memory")
    from mlaga_fast import __version__
    from mlaga_fast.utils.io import atomic_write_json

    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, {"benchmark": "load", "mlaga_fast_version": __version__, "data": str(data),
                                 "machine": {"platform": platform.platform(), "cpus": len(os.sched_getaffinity(0))},
                                 "results": rows, "numpy_over_ours": ratio})
    return 0


if __name__ == "__main__":
    sys.exit(main())

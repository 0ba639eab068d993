"""Benchmark: our forward-push PPR (C++/OpenMP, and CUDA when present) against PyG's get_ppr (numba
forward push) and a SciPy power iteration, on the same cores with the same alpha, eps, k, sources.

Graphs: the two real MAGB graphs (Toys, Grocery) and a seeded synthetic power-law (Chung-Lu)
graph with >= 1M nodes and >= 20M stored edges. Per graph: the one-time preparation of our graph
(validation, private 32-bit copy; like PyG's numba compile, reported on its own), sources/s and
edge pushes/s per core on 1 thread and on all threads (wall time, and process CPU time, which is
steadier on a shared machine; medians of --repeats runs), the ratio to PyG measured in the same
run, the SciPy baseline, and the maximum violation of 0 <= pi - p < eps * d(v) on a subset of
sources against a float64 power iteration. On the large graph also: every node order (none,
degree, rcm) alone, and a PPR table for all training nodes (60%) with its wall time and peak RSS.

    python benchmarks/bench_ppr.py                       # everything (~10 minutes on 2 cores)
    python benchmarks/bench_ppr.py --quick               # small synthetic graph, few sources
    python benchmarks/bench_ppr.py --magb-dir DIR        # where ToysGraph.pt / GroceryGraph.pt live
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
# The shared data checkout next to the repository (the same place tests/conftest.py looks);
# MLAGA_MAGB_DIR or --magb-dir point elsewhere.
MAGB = Path(os.environ.get("MLAGA_MAGB_DIR", ROOT.parent / "shared" / "data" / "magb"))


# ----------------------------------------------------------------------------- graphs
def symmetric_csr(n: int, src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Undirected simple graph: both directions, no self-loops, no duplicates, sorted rows."""
    keep = src != dst
    a, b = src[keep].astype(np.int64), dst[keep].astype(np.int64)
    key = np.unique(np.concatenate([a * n + b, b * n + a]))  # sorted by (row, col)
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(key // n, minlength=n), out=indptr[1:])
    return indptr, key % n


def magb_graph(path: Path):
    from mlaga_fast.data.dgl_format import read_dgl_graph

    g = read_dgl_graph(path)
    return symmetric_csr(int(g.num_nodes), np.asarray(g.src), np.asarray(g.dst))


def powerlaw_graph(n: int, stored_edges: int, gamma: float = 2.5, seed: int = 0):
    """Chung-Lu graph: endpoints drawn with probability ~ rank^(-1/(gamma-1)) (degree tail exponent
    gamma), ids shuffled so hubs are spread over memory; exactly stored_edges // 2 distinct pairs."""
    rng = np.random.default_rng(seed)
    w = np.arange(1, n + 1, dtype=np.float64) ** (-1.0 / (gamma - 1.0))
    cdf = np.cumsum(w)
    cdf /= cdf[-1]
    perm = rng.permutation(n).astype(np.int64)
    need = stored_edges // 2
    keys = np.zeros(0, np.int64)
    while keys.size < need:
        m = int((need - keys.size) * 1.1) + 1024
        u = perm[np.minimum(np.searchsorted(cdf, rng.random(m)), n - 1)]
        v = perm[np.minimum(np.searchsorted(cdf, rng.random(m)), n - 1)]
        keep = u != v
        keys = np.unique(np.concatenate([keys, np.minimum(u[keep], v[keep]) * n + np.maximum(u[keep], v[keep])]))
    keys = keys[rng.permutation(keys.size)[:need]]
    a, b = keys // n, keys % n
    key = np.sort(np.concatenate([a * n + b, b * n + a]))
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(key // n, minlength=n), out=indptr[1:])
    return indptr, key % n


# ----------------------------------------------------------------------------- references
def transition_t(indptr, indices) -> sp.csr_matrix:
    """P^T with P = D^-1 A, dangling rows P[u][u] = 1 (the package's convention)."""
    n = indptr.shape[0] - 1
    deg = np.diff(indptr).astype(np.float64)
    rows = np.repeat(np.arange(n), np.diff(indptr))
    inv = np.where(deg > 0, 1.0 / np.maximum(deg, 1.0), 0.0)
    p = sp.csr_matrix((inv[rows], (rows, indices)), shape=(n, n))
    d = np.flatnonzero(deg == 0)
    p = p + sp.csr_matrix((np.ones(d.size), (d, d)), shape=(n, n))
    return p.T.tocsr()


def power_iteration(pt, sources, alpha, tol, max_iter=10_000):
    """float64 [N, S] PPR columns; iterate until the max column L1 change is below tol.
    Returns (x, iterations, last change). The L1 error is at most change * (1 - alpha) / alpha."""
    n = pt.shape[0]
    e = np.zeros((n, len(sources)))
    e[sources, np.arange(len(sources))] = 1.0
    x = e.copy()
    change = np.inf
    it = 0
    while change >= tol and it < max_iter:
        nxt = (1.0 - alpha) * (pt @ x)
        nxt += alpha * e
        change = float(np.abs(nxt - x).sum(axis=0).max())
        x = nxt
        it += 1
    return x, it, change


# ----------------------------------------------------------------------------- timing helpers
def timed(fn):
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def median_timed(fn, repeats):
    """(last result, median wall s, median CPU s) over `repeats` runs."""
    runs = [timed(fn) for _ in range(max(1, repeats))]
    return runs[-1][0], float(np.median([r[1] for r in runs])), float(np.median([r[2] for r in runs]))


def rates(n_sources, edge_pushes, wall, cpu, threads):
    return {
        "wall_s": round(wall, 4), "cpu_s": round(cpu, 4), "threads": threads,
        "sources_per_s": round(n_sources / wall, 1),
        "sources_per_s_per_core_wall": round(n_sources / wall / threads, 1),
        "sources_per_cpu_s": round(n_sources / cpu, 1) if cpu > 0 else None,
        "edge_pushes_per_s_per_core_wall": round(edge_pushes / wall / threads) if edge_pushes else None,
        "edge_pushes_per_cpu_s": round(edge_pushes / cpu) if edge_pushes and cpu > 0 else None,
    }


def peak_rss_reset() -> None:
    """Start a new peak-RSS window (Linux: VmHWM restarts from the current RSS)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _status_mib(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def peak_rss_mib() -> float:
    return _status_mib("VmHWM")


def rss_mib() -> float:
    return _status_mib("VmRSS")


def pyg_kernel():
    """PyG's own numba forward push (torch_geometric.utils.ppr._get_ppr), compiled here so the
    compile time is measured on its own."""
    import numba
    import torch_geometric.utils.ppr as pyg_ppr

    fn = numba.jit(nopython=True, parallel=True)(pyg_ppr._get_ppr)
    t0 = time.perf_counter()
    fn(np.array([0, 1, 2], np.int64), np.array([1, 0], np.int64), 0.15, 1e-4, np.array([0], np.int64))
    return fn, time.perf_counter() - t0


# ----------------------------------------------------------------------------- one graph
def bench_graph(name, indptr, indices, args, pyg_fn, log, orders=()):
    from mlaga_fast.ppr import PprGraph

    n = indptr.shape[0] - 1
    deg = np.diff(indptr)
    rng = np.random.default_rng(args.seed)
    sources = np.sort(rng.choice(n, min(args.sources, n), replace=False)).astype(np.int64)
    a, eps, k, T, R = args.alpha, args.eps, args.k, args.threads, args.repeats
    res = {"graph": name, "nodes": int(n), "stored_edges": int(indices.shape[0]), "max_degree": int(deg.max()),
           "isolated_nodes": int((deg == 0).sum()), "num_sources": int(sources.size)}
    log(f"[{name}] N={n:,} E={indices.shape[0]:,} max deg {deg.max():,}; {sources.size} sources")

    # ours: prepared once (validation + private 32-bit copy), then queried
    graph, pw_, pc_ = timed(lambda: PprGraph(indptr, indices))
    res["ours_prepare"] = {"wall_s": round(pw_, 4), "cpu_s": round(pc_, 4), "order": graph.order,
                           "memory_mib": round(graph.memory_bytes / 2**20, 1)}
    graph.topk(sources[:16], alpha=a, eps=eps, k=k, num_threads=T)  # warm-up: scratch, page-in
    graph.topk(sources[:16], alpha=a, eps=eps, k=k, num_threads=1)
    (_, _, st), wall, cpu = median_timed(
        lambda: graph.topk(sources, alpha=a, eps=eps, k=k, num_threads=T, return_stats=True), R)
    res["ours_cpu"] = {**rates(sources.size, st["edge_pushes"], wall, cpu, T), **st}
    (_, _, st1), wall1, cpu1 = median_timed(
        lambda: graph.topk(sources, alpha=a, eps=eps, k=k, num_threads=1, return_stats=True), R)
    res["ours_cpu_1thread"] = rates(sources.size, st1["edge_pushes"], wall1, cpu1, 1)
    log(f"  ours  : prepare {pw_:.2f} s; {res['ours_cpu']['sources_per_s']:,.0f} src/s on {T} threads; 1 thread "
        f"{res['ours_cpu_1thread']['edge_pushes_per_cpu_s'] / 1e6:.1f}M edge pushes per CPU-s, "
        f"{res['ours_cpu_1thread']['edge_pushes_per_s_per_core_wall'] / 1e6:.1f}M per wall-s")

    # PyG: its numba kernel on the same CSR and sources (edge pushes: ours, as the work measure)
    if pyg_fn is not None:
        import numba

        for threads, key, ours in ((T, "pyg", (wall, cpu)), (1, "pyg_1thread", (wall1, cpu1))):
            numba.set_num_threads(threads)
            pyg_fn(indptr, indices, a, eps, sources[:16])
            _, pw, pc = median_timed(lambda: pyg_fn(indptr, indices, a, eps, sources), R)
            res[key] = rates(sources.size, st["edge_pushes"], pw, pc, threads)
            res[key]["note"] = "edge-pushes rate uses our kernel's push count for the same sources (same eps rule)"
            suffix = "" if threads == T else "_1thread"
            res[f"speedup_vs_pyg_per_core_wall{suffix}"] = round(pw / ours[0], 2)
            res[f"speedup_vs_pyg_per_cpu_s{suffix}"] = round(pc / ours[1], 2) if ours[1] > 0 else None
        log(f"  PyG   : ours/PyG per core = {res['speedup_vs_pyg_per_cpu_s_1thread']}x (1 thread, CPU time), "
            f"{res['speedup_vs_pyg_per_core_wall_1thread']}x (1 thread, wall); on {T} threads "
            f"{res['speedup_vs_pyg_per_cpu_s']}x (CPU time), {res['speedup_vs_pyg_per_core_wall']}x (wall)")

    # each node order alone: preparation cost and 1-thread throughput; the answers must not change
    if orders:
        base = graph.topk(sources, alpha=a, eps=eps, k=k, num_threads=1)
        res["orders"] = {}
        for order in orders:
            g2, ow, oc = timed(lambda o=order: PprGraph(indptr, indices, order=o))
            g2.topk(sources[:16], alpha=a, eps=eps, k=k, num_threads=1)
            (oi, ov, ost), w2, c2 = median_timed(
                lambda: g2.topk(sources, alpha=a, eps=eps, k=k, num_threads=1, return_stats=True), R)
            same = bool(np.array_equal(oi, base[0]) and np.array_equal(ov, base[1]))
            res["orders"][order] = {"prepare_cpu_s": round(oc, 3), "prepare_wall_s": round(ow, 3),
                                    **rates(sources.size, ost["edge_pushes"], w2, c2, 1), "same_answer": same}
            log(f"  order {order:6s}: prepare {oc:.2f} CPU-s, {ost['edge_pushes'] / c2 / 1e6:.1f}M edge pushes "
                f"per CPU-s (1 thread), same answer: {same}")
            del g2

    # SciPy power iteration (one core): time to an L1 error below eps, on a block of sources;
    # then on to 1e-10 for the bound check of our push on the same sources.
    check = sources[rng.choice(sources.size, min(args.check_sources, sources.size), replace=False)]
    check = np.unique(np.append(check, sources[np.argmax(deg[sources])]))  # include the busiest source
    pt = transition_t(indptr, indices)
    tol_eps = eps * a / (1.0 - a)
    (x, it_eps, _), sw, sc = timed(lambda: power_iteration(pt, check, a, tol_eps))
    res["scipy_power_iteration"] = {
        **rates(check.size, 0, sw, sc, 1), "sources": int(check.size), "iterations": it_eps,
        "stop_rule": "max column L1 change < eps * alpha / (1 - alpha), i.e. L1 error < eps"}
    log(f"  SciPy : {check.size / sw:,.1f} src/s ({it_eps} iterations, {check.size} sources)")
    x, it, change = power_iteration(pt, check, a, 1e-11)
    pi = x.T  # [C, N]
    err = change * (1.0 - a) / a
    p = graph.dense(check, alpha=a, eps=eps, num_threads=T)
    gap = pi - p
    limit = np.where(deg > 0, eps * deg, 0.0)
    upper = gap - limit
    upper[:, deg == 0] = np.abs(gap[:, deg == 0])  # dangling: exact
    res["bound_check"] = {
        "sources": int(check.size), "reference_iterations": it, "reference_l1_error_bound": err,
        "max_upper_violation": float(max(0.0, upper.max() - err)),
        "max_upper_ratio": float((gap[:, deg > 0] / limit[deg > 0]).max()),
        "min_gap": float(gap.min()), "lower_violation": float(max(0.0, -gap.min() - err)),
    }
    ok = res["bound_check"]["max_upper_violation"] == 0.0 and res["bound_check"]["lower_violation"] == 0.0
    res["bound_check"]["violations"] = "none" if ok else "VIOLATED"
    log(f"  bound : max (pi - p) / (eps d) = {res['bound_check']['max_upper_ratio']:.3f}, "
        f"min gap {gap.min():.2e} -> {res['bound_check']['violations']}")

    if args.cuda:
        import torch

        dev = torch.device("cuda", torch.cuda.current_device())
        graph.topk(sources[:16], alpha=a, eps=eps, k=k, device=dev)  # uploads the graph once
        torch.cuda.synchronize()
        for label, s_t in (("ours_cuda", sources), ("ours_cuda_all_nodes", np.arange(n, dtype=np.int64))):
            t0 = time.perf_counter()
            _, _, cst = graph.topk(s_t, alpha=a, eps=eps, k=k, device=dev, return_stats=True)
            torch.cuda.synchronize()
            cw = time.perf_counter() - t0
            res[label] = {"wall_s": round(cw, 4), "sources": int(s_t.size),
                          "sources_per_s": round(s_t.size / cw, 1),
                          "edge_pushes_per_s": round(cst["edge_pushes"] / cw), **cst}
            log(f"  CUDA  : {label}: {s_t.size / cw:,.0f} src/s, overflow {cst['cuda_overflow']}")
        res["speedup_cuda_vs_ours_cpu_all_threads"] = round(wall / res["ours_cuda"]["wall_s"], 2)
        ci, cv = graph.topk(check, alpha=a, eps=eps, k=k, device=dev)
        ci, cv = ci.cpu().numpy(), cv.cpu().numpy()
        worst = 0.0
        for r in range(check.size):
            got = ci[r][ci[r] >= 0]
            worst = max(worst, float(np.max(pi[r, got] - cv[r][: got.size] - eps * deg[got], initial=-1.0)),
                        float(np.max(cv[r][: got.size] - pi[r, got] * (1 + 1e-6), initial=-1.0)))
        res["cuda_bound_check_topk"] = {"max_violation": max(0.0, worst - err)}
    return res


def bench_table(name, indptr, indices, args, log):
    """A PPR demonstration table for every training node (60% of the nodes), as `mlaga-fast ppr`
    builds it: wall time, CPU time and the peak RSS of the process while it runs."""
    from mlaga_fast.data import MultimodalGraph
    from mlaga_fast.data.splits import random_node_split
    from mlaga_fast.ppr import compute_table

    n = indptr.shape[0] - 1
    labels = np.random.default_rng(args.seed).integers(0, 8, n)
    tr, va, te = random_node_split(n, seed=args.seed, labels=labels)
    graph = MultimodalGraph(name, indptr, indices, labels=labels, train=tr, val=va, test=te, validate=False)
    rss_before = rss_mib()
    peak_rss_reset()
    (src, idx, _, _), wall, cpu = timed(lambda: compute_table(graph, alpha=args.alpha, eps=args.eps, k=args.k,
                                                            sources="train", candidates="train",
                                                            num_threads=args.threads, progress=False))
    peak = peak_rss_mib()
    table_mib = idx.nbytes * 1.5 / 2**20  # idx int64 + val float32
    res = {"graph": name, "sources": int(src.size), "k": args.k, "threads": args.threads, "wall_s": round(wall, 2),
           "cpu_s": round(cpu, 2), "sources_per_s": round(src.size / wall, 1),
           "rss_before_mib": round(rss_before, 1), "peak_rss_mib": round(peak, 1),
           "peak_rise_mib": round(peak - rss_before, 1), "table_mib": round(table_mib, 1),
           "graph_arrays_mib": round((indptr.nbytes + indices.nbytes) / 2**20, 1),
           "note": "peak RSS of the whole process during compute_table; it holds the caller's graph, its prepared "
                   "32-bit copy, one scratch per thread (16 B per node) and the [S, k] table"}
    log(f"[{name}] table for {src.size:,} training nodes: {wall:.1f} s wall, {cpu:.1f} CPU-s, peak RSS "
        f"{peak:,.0f} MiB, {peak - rss_before:,.0f} MiB above the start (table {table_mib:,.0f} MiB, graph arrays "
        f"{res['graph_arrays_mib']:,.0f} MiB)")
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--alpha", type=float, default=0.15)
    ap.add_argument("--eps", type=float, default=1e-4)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--sources", type=int, default=2000)
    ap.add_argument("--check-sources", type=int, default=8, help="sources checked against power iteration")
    ap.add_argument("--nodes", type=int, default=1_000_000)
    ap.add_argument("--edges", type=int, default=20_000_000, help="stored (directed) edges of the synthetic graph")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-pyg", action="store_true")
    ap.add_argument("--no-real", action="store_true")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (the median is kept)")
    ap.add_argument("--orders", default="none,degree,rcm",
                    help="node orders measured alone on the synthetic graph ('' to skip)")
    ap.add_argument("--no-table", action="store_true", help="skip the all-training-nodes table on the synthetic graph")
    ap.add_argument("--magb-dir", type=Path, default=MAGB, help="directory holding ToysGraph.pt and GroceryGraph.pt")
    ap.add_argument("--quick", action="store_true", help="100k-node synthetic graph, 500 sources")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.quick:
        args.nodes, args.edges, args.sources = 100_000, 1_000_000, 500
    try:
        import torch

        args.cuda = torch.cuda.is_available()
    except ImportError:
        args.cuda = False

    import mlaga_fast
    from mlaga_fast import _C
    from mlaga_fast.utils.io import atomic_write_json

    def log(msg):
        print(msg, flush=True)

    t_start = time.perf_counter()
    report = {
        "benchmark": "ppr_topk", "mlaga_fast_version": mlaga_fast.__version__,
        "params": {"alpha": args.alpha, "eps": args.eps, "k": args.k, "sources": args.sources,
                   "threads": args.threads, "seed": args.seed, "repeats": args.repeats},
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpus_available": len(os.sched_getaffinity(0)), "loadavg_start": os.getloadavg(),
                    "cuda": args.cuda, "omp_max_threads": _C.openmp_max_threads()},
        "graphs": [],
    }
    pyg_fn = None
    if not args.no_pyg:
        try:
            pyg_fn, compile_s = pyg_kernel()
            report["pyg_numba_compile_s"] = round(compile_s, 3)
            log(f"PyG numba compile: {compile_s:.2f} s (not counted in its throughput)")
        except ImportError as e:
            report["pyg_error"] = f"PyG/numba unavailable: {e}"
    graphs = []
    if not args.no_real:
        if (args.magb_dir / "ToysGraph.pt").is_file():
            graphs += [("MAGB-Toys", lambda: magb_graph(args.magb_dir / "ToysGraph.pt"), False),
                       ("MAGB-Grocery", lambda: magb_graph(args.magb_dir / "GroceryGraph.pt"), False)]
        else:
            log(f"real MAGB graphs not found in {args.magb_dir}: skipped (see --magb-dir)")
    graphs.append((f"powerlaw-{args.nodes}", lambda: powerlaw_graph(args.nodes, args.edges, seed=args.seed), True))
    orders = [o for o in args.orders.split(",") if o]
    for name, make, large in graphs:
        t0 = time.perf_counter()
        indptr, indices = make()
        log(f"[{name}] built in {time.perf_counter() - t0:.1f} s")
        report["graphs"].append(bench_graph(name, indptr, indices, args, pyg_fn, log, orders if large else ()))
        if large and not args.no_table:
            report["table"] = bench_table(name, indptr, indices, args, log)
        del indptr, indices
    report["machine"]["loadavg_end"] = os.getloadavg()
    report["total_s"] = round(time.perf_counter() - t_start, 1)
    out = args.out or ROOT / "benchmarks" / "results" / ("ppr_cuda.json" if args.cuda else "ppr_cpu.json")
    atomic_write_json(out, report)
    log(f"wrote {out} ({report['total_s']} s)")
    bad = [g["graph"] for g in report["graphs"] if g["bound_check"]["violations"] != "none"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

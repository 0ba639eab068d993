"""The whole pipeline at growing sizes: time and peak memory of every stage, per node count.

    python benchmarks/bench_scale.py --nodes 100000,1000000
    python benchmarks/bench_scale.py --nodes 10000,100000 --stages synth,ppr,examples   # a subset
    python benchmarks/bench_scale.py --nodes 1000000 --stages table,table_pandas        # your own tables

Stages, each in a fresh process (so its peak RSS is its own), on a synthetic catalogue of N nodes:
  synth     mlaga_fast.data.synth.make_catalogue: graph, texts, splits, link split, saved to disk
  features  mlaga_fast.features.extract_features with the "tiny" encoder on the CPU
  align     Stage 1 (mlaga_fast.train.align.train_align) for --align-steps steps: steps/s
  embed     mlaga_fast.models.embeddings.export_embeddings: aligned tokens for every node
  ppr       the PPR demonstration table Stage 2 uses (mlaga_fast.prompts.demos.ppr_demo_table:
            every node's top-k labelled training nodes), cached in the dataset
  examples  the Stage-2 training examples (token ids of every NC and LP prompt), through
            build_examples() below, the one place that calls the Stage-2 code
  table     `mlaga-fast data prepare --format table` on a nodes.csv of N rows (string ids, a text of about
            150 bytes, a class name; no images) and a sparse edges.csv (2 rows per node), written beforehand
            by another process (write_table_input)
  table_pandas  the reference for `table`: what a user wrote before it existed (docs/data_format.md):
            pandas.read_csv of both files whole, a dict from id to row, MultimodalGraph.from_edges, save
Per stage: wall and CPU seconds, peak RSS of the process, and its RSS right after imports
(the rise is the stage's own memory). With two or more sizes, a stage whose rise grows with N
by more than --growth-tolerance is flagged, next to what that stage holds (HOLDS).

Writes benchmarks/results/scale.json (or --out) after every stage, so a long run keeps what it did.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("synth", "features", "align", "embed", "ppr", "examples", "table", "table_pandas")
# What each stage keeps in memory, and so whether its peak may grow with N by design.
HOLDS = {
    "synth": "the whole graph while it is generated (CSR, texts, labels, splits, link split): grows with N",
    "features": "one shard buffer and one batch; the graph's arrays and texts are memory maps (texts decoded per batch)",
    "align": "the training graph (the CSR without held-out edges, built in memory) and the positive sampler; "
             "features are read from memory maps per batch",
    "embed": "the model and one batch; features and outputs are memory maps written chunk by chunk, freed heap "
             "returned to the OS every 8 batches",
    "ppr": "the graph, its prepared 32-bit copy, one scratch per thread (16 B per node) and the [N, k] table",
    "examples": "the graph, the [N, k] demonstration table and every prompt's token ids (built up front)",
    "table": "the ids (Arrow strings), int32 label codes, text offsets, the edge list and the CSR: about 100 B per "
             "node; texts stream to a file beside the output, so the file's rows are never all in memory",
    "table_pandas": "both files whole as DataFrames (Python strings), the id dict, the texts list and the CSR",
}
TABLE_REFERENCE = "table_pandas"  # the named peer of the `table` stage
ALIGN_CFG = dict(dim=64, num_layers=1, num_heads=2, num_queries=4, batch_size=64, num_positives=3,
                 warmup_steps=1, log_every=5, checkpoint_every=10**9, device="cpu")


# ----------------------------------------------------------------------------- the one Stage-2 call
def build_examples(data_dir: Path, nq: int, ppr_k: int, progress: bool = False) -> list:
    """Stage-2 training examples for one dataset, as train_instruct builds them (token ids only).

    The only place this benchmark touches Stage-2 code: when that code changes, update this function.
    """
    from mlaga_fast.data import load
    from mlaga_fast.llm.loading import load_tokenizer, resolve_llm
    from mlaga_fast.train.instruct_config import InstructConfig
    from mlaga_fast.train.instruct_examples import build_phase_examples
    from mlaga_fast.models.node_inputs import DatasetInputs

    graph = load(data_dir)
    # Every labelled training node gets an NC prompt, and as many LP prompts: the largest set Stage 2 builds.
    cfg = InstructConfig(data=[str(data_dir)], tasks=["nc", "lp"], demos="ppr", ppr_k=ppr_k, nc_per_dataset=0,
                         lp_per_dataset=0)
    tokenizer = load_tokenizer(resolve_llm(cfg.llm))
    inputs = DatasetInputs(graph.name, Path(data_dir), graph, store=None, tokens=None)  # tokens are not read here
    warm, instruct = build_phase_examples(cfg, [inputs], tokenizer, nq, image_tokens=1, progress=progress)
    return warm + instruct


# ----------------------------------------------------------------------------- your own tables
def write_table_input(folder: Path, n: int, seed: int = 0) -> None:
    """nodes.csv (id, text, label) of n rows and edges.csv (src, dst) of 2n rows, written 2^16 rows at a time
    (run in its own process, so its memory is not the measured stage's)."""
    import csv

    import numpy as np

    from mlaga_fast.data import vocab

    rng = np.random.default_rng(seed)
    cats = vocab.CATEGORIES[:8]
    words = np.array(sorted({w for c in cats for w in " ".join(c.nouns + c.features).split()}))
    folder.mkdir(parents=True, exist_ok=True)
    step = 1 << 16
    with open(folder / "nodes.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["id", "text", "label"])
        for lo in range(0, n, step):
            k = min(step, n - lo)
            pick = words[rng.integers(0, words.size, (k, 20))]  # [k, 20] words: about 150 bytes a text
            label = rng.integers(0, len(cats), k)
            w.writerows([f"p{lo + i:09d}", " ".join(pick[i]), cats[label[i]].name] for i in range(k))
    with open(folder / "edges.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["src", "dst"])
        for lo in range(0, 2 * n, step):
            k = min(step, 2 * n - lo)
            a, b = (lo + np.arange(k)) % n, rng.integers(0, n, k)
            w.writerows([f"p{x:09d}", f"p{y:09d}"] for x, y in zip(a.tolist(), b.tolist()))


def _table_input(work: Path, n: int) -> Path:
    folder = work / f"n{n}" / "tables"
    if not (folder / "edges.csv").is_file():
        subprocess.run([sys.executable, __file__, "--write-table", str(n), "--work", str(work)], check=True)
    return folder


def prepare_with_pandas(nodes: Path, edges: Path, out: Path):
    """The reference: the Python a user wrote before `--format table` (docs/data_format.md's from_edges + save)."""
    import numpy as np
    import pandas as pd

    from mlaga_fast.data import MultimodalGraph, random_node_split, save

    nd = pd.read_csv(nodes, dtype=str, keep_default_na=False)
    ed = pd.read_csv(edges, dtype=str, keep_default_na=False)
    row = {v: i for i, v in enumerate(nd["id"])}
    names = sorted(set(nd["label"]))
    labels = nd["label"].map({c: i for i, c in enumerate(names)}).to_numpy(np.int64)
    train, val, test = random_node_split(len(nd), labels=labels)
    g = MultimodalGraph.from_edges("tables", ed["src"].map(row).to_numpy(np.int64), ed["dst"].map(row).to_numpy(np.int64),
                                   len(nd), texts=nd["text"].tolist(), labels=labels, class_names=names,
                                   train=train, val=val, test=test)
    save(g, out)
    return g


# ----------------------------------------------------------------------------- one stage, in-process
def _status_mib(key: str = "VmRSS") -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


class _AnonPeak:
    """Peak anonymous memory (RssAnon: what the process allocates), sampled every 50 ms on a thread. Peak
    RSS also counts the pages of memory-mapped files a stage has read or written (page cache that the
    kernel drops under pressure), so a streamed stage's RSS grows with the files it maps while its
    anonymous memory does not."""

    def __init__(self):
        import threading

        self.peak, self._stop = _status_mib("RssAnon"), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, _status_mib("RssAnon"))

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return max(self.peak, _status_mib("RssAnon"))


def run_stage(stage: str, n: int, work: Path, args) -> dict:
    """Runs one stage here and returns its figures (called in a child process)."""
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    d = work / f"n{n}"
    data, feats, run, emb = d / "data", d / "features", d / "align", d / "emb"
    # imports every stage needs, before the baseline is taken
    from mlaga_fast.data import load  # noqa: F401
    from mlaga_fast.features import FeatureStore  # noqa: F401

    if stage in ("table", "table_pandas"):
        tables = _table_input(work, n)  # written by another process, before the baseline is taken
        import pandas  # noqa: F401  (the libraries either path reads with, imported before the baseline)
        import pyarrow.compute  # noqa: F401
        import pyarrow.csv  # noqa: F401

        from mlaga_fast.cli.main import cli  # noqa: F401
    base, anon_base = _status_mib(), _status_mib("RssAnon")
    anon = _AnonPeak()
    c0, t0 = time.process_time(), time.perf_counter()
    out: dict = {}
    if stage == "synth":
        import shutil

        from mlaga_fast.data.synth import make_catalogue

        shutil.rmtree(data, ignore_errors=True)  # a save keeps a previous dataset's caches; dataset_mib is the dataset
        g = make_catalogue(data, nodes=n)
        out.update(nodes=g.num_nodes, edges=g.num_edges,
                   dataset_mib=round(sum(p.stat().st_size for p in data.rglob("*") if p.is_file()) / 2**20, 1))
    elif stage == "features":
        from mlaga_fast.features import FeatureConfig, extract_features

        store = extract_features(load(data), feats, FeatureConfig(encoder="tiny", device="cpu", batch_size=256,
                                                                  cpu_threads=args.threads, overwrite=True),
                                 progress=False)
        out.update(nodes=store.num_nodes, features_mib=round(sum(p.stat().st_size for p in feats.glob("*.npy")) / 2**20, 1))
    elif stage == "align":
        import shutil

        from mlaga_fast.train.align import train_align

        from mlaga_fast.train.align_config import AlignConfig
        from mlaga_fast.train.metrics import read_jsonl

        shutil.rmtree(run, ignore_errors=True)
        cfg = AlignConfig(**ALIGN_CFG, max_steps=args.align_steps)
        train_align(cfg, data, feats, run, show_progress=False)
        recs = [r for r in read_jsonl(run / "metrics.jsonl") if "step_s" in r]
        steady = recs[1:] or recs  # the first record's step includes the warm-up
        sps = 1.0 / float(np.mean([r["step_s"] for r in steady]))
        out.update(steps=args.align_steps, batch_size=cfg.batch_size, steps_per_s=round(sps, 3),
                   anchors_per_s=round(sps * cfg.batch_size, 1))
    elif stage == "embed":
        import shutil

        from mlaga_fast.models.embeddings import export_embeddings

        shutil.rmtree(emb, ignore_errors=True)
        man = export_embeddings(run, emb, batch_size=512, device="cpu", progress=False)
        out.update(nodes=man["num_nodes"])
    elif stage == "ppr":
        from mlaga_fast.prompts.demos import ppr_demo_table

        cache = data / "cache"
        for f in cache.glob("ppr_demos-*.npz"):
            f.unlink()  # measure the computation, not a cache hit
        table = ppr_demo_table(load(data), k=args.ppr_k, cache_dir=cache, progress=False)
        out.update(sources=int(table.shape[0]), k=args.ppr_k)
    elif stage == "examples":
        ex = build_examples(data, nq=ALIGN_CFG["num_queries"], ppr_k=args.ppr_k)
        out.update(examples=len(ex))
    elif stage == "table":
        import shutil

        from mlaga_fast.cli.main import cli

        shutil.rmtree(d / "table_data", ignore_errors=True)
        cli.main(["data", "prepare", "--format", "table", "--nodes", str(tables / "nodes.csv"), "--edges",
                  str(tables / "edges.csv"), "--name", "tables", "--out", str(d / "table_data"), "--no-progress"],
                 standalone_mode=False)
        g = load(d / "table_data")
        out.update(nodes=g.num_nodes, edges=g.num_edges,
                   nodes_csv_mib=round((tables / "nodes.csv").stat().st_size / 2**20, 1))
    elif stage == "table_pandas":
        import shutil

        shutil.rmtree(d / "table_pandas_data", ignore_errors=True)
        g = prepare_with_pandas(tables / "nodes.csv", tables / "edges.csv", d / "table_pandas_data")
        out.update(nodes=g.num_nodes, edges=g.num_edges)
    else:
        raise ValueError(f"unknown stage {stage!r}; choose from {STAGES}")
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    anon_peak = anon.stop()
    if "nodes" in out:
        out["nodes_per_s"] = round(out["nodes"] / wall, 1)
    return {"stage": stage, "n": n, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "peak_rss_mib": round(peak, 1),
            "rss_after_imports_mib": round(base, 1), "rise_mib": round(peak - base, 1),
            "peak_anon_mib": round(anon_peak, 1), "anon_rise_mib": round(anon_peak - anon_base, 1), **out}


# ----------------------------------------------------------------------------- driver
def growth(results: list[dict], tolerance: float) -> dict:
    """Per stage: the rise in peak anonymous memory (peak RSS for records without it) from the smallest to
    the largest N measured."""
    by_stage: dict = {}
    for r in results:
        if "error" not in r:
            by_stage.setdefault(r["stage"], []).append(r)
    out = {}
    for stage, rows in by_stage.items():
        rows = sorted(rows, key=lambda r: r["n"])
        if len(rows) < 2:
            continue
        lo, hi = rows[0], rows[-1]
        key = "anon_rise_mib" if "anon_rise_mib" in lo and "anon_rise_mib" in hi else "rise_mib"
        extra = hi[key] - lo[key]
        grows = extra > tolerance * max(lo[key], 1.0)
        out[stage] = {"from_n": lo["n"], "to_n": hi["n"], "measure": key, "rise_mib": [lo[key], hi[key]],
                      "rss_rise_mib": [lo["rise_mib"], hi["rise_mib"]], "grows_with_n": bool(grows),
                      "holds": HOLDS[stage]}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", default="100000,1000000", help="comma-separated node counts")
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--work", type=Path, default=None, help="working directory (default: a folder under /tmp)")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--align-steps", type=int, default=20)
    ap.add_argument("--ppr-k", type=int, default=8)
    ap.add_argument("--growth-tolerance", type=float, default=0.5,
                    help="flag a stage whose memory rise grows by more than this fraction from the smallest N")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scale.json")
    ap.add_argument("--stage-only", default=None, help=argparse.SUPPRESS)  # child process: STAGE:N
    ap.add_argument("--write-table", type=int, default=None, help=argparse.SUPPRESS)  # child process: N
    args = ap.parse_args(argv)
    work = args.work or Path(os.environ.get("TMPDIR", "/tmp")) / "mlaga_bench_scale"
    if args.write_table:
        write_table_input(work / f"n{args.write_table}" / "tables", args.write_table)
        return 0
    if args.stage_only:
        stage, n = args.stage_only.split(":")
        print("RESULT " + json.dumps(run_stage(stage, int(n), work, args)), flush=True)
        return 0

    from mlaga_fast import __version__
    from mlaga_fast.utils.io import atomic_write_json

    sizes = [int(s) for s in args.nodes.split(",") if s]
    stages = [s for s in args.stages.split(",") if s]
    bad = [s for s in stages if s not in STAGES]
    if bad:
        ap.error(f"unknown stage(s) {bad}; choose from {list(STAGES)}")
    report = {"benchmark": "scale", "mlaga_fast_version": __version__, "nodes": sizes, "stages": stages,
              "threads": args.threads, "align": {**ALIGN_CFG, "steps": args.align_steps}, "ppr_k": args.ppr_k,
              "machine": {"platform": platform.platform(), "cpus": len(os.sched_getaffinity(0)),
                          "loadavg_start": os.getloadavg()}, "results": []}
    for n in sizes:
        for stage in stages:
            cmd = [sys.executable, __file__, "--stage-only", f"{stage}:{n}", "--work", str(work),
                   "--threads", str(args.threads), "--align-steps", str(args.align_steps), "--ppr-k", str(args.ppr_k)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
            if proc.returncode != 0 or not lines:
                res = {"stage": stage, "n": n, "error": proc.stderr.strip().splitlines()[-1:] or ["failed"]}
            else:
                res = json.loads(lines[-1][len("RESULT "):])
            report["results"].append(res)
            print(json.dumps(res), flush=True)
            report["growth"] = growth(report["results"], args.growth_tolerance)
            report["machine"]["loadavg_end"] = os.getloadavg()
            atomic_write_json(args.out, report)
    print(f"{'stage':9s} " + " ".join(f"{'N=' + format(n, ','):>42s}" for n in sizes))
    for stage in stages:
        cells = []
        for n in sizes:
            r = next((r for r in report["results"] if r["stage"] == stage and r["n"] == n), {})
            cells.append(f"{r['wall_s']:8.1f} s {r['peak_rss_mib']:7.0f} MiB (+{r['rise_mib']:.0f}, anon "
                         f"+{r.get('anon_rise_mib', float('nan')):.0f})" if "wall_s" in r
                         else f"{'error':>42s}")
        print(f"{stage:9s} " + " ".join(f"{c:>42s}" for c in cells))
    for n in sizes:
        ours, ref = (next((r for r in report["results"] if r["stage"] == s and r["n"] == n and "wall_s" in r), None)
                     for s in ("table", TABLE_REFERENCE))
        if ours and ref:
            print(f"table vs {TABLE_REFERENCE} at N={n:,}: peak RSS {ours['peak_rss_mib']:.0f} vs {ref['peak_rss_mib']:.0f} "
                  f"MiB (x{ours['peak_rss_mib'] / ref['peak_rss_mib']:.2f}), rise +{ours['rise_mib']:.0f} vs "
                  f"+{ref['rise_mib']:.0f} MiB, {ours['wall_s']:.1f} vs {ref['wall_s']:.1f} s")
    for stage, g in report.get("growth", {}).items():
        if g["grows_with_n"]:
            print(f"grows with N: {stage}: {g['rise_mib'][0]:.0f} -> {g['rise_mib'][1]:.0f} MiB; holds {g['holds']}")
    print(f"wrote {args.out}")
    return 1 if any("error" in r for r in report["results"]) else 0


if __name__ == "__main__":
    sys.exit(main())

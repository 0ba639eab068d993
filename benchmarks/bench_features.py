"""Throughput and peak memory of `mlaga-fast features` on a synthetic catalogue.

    python benchmarks/bench_features.py [--nodes 10000] [--encoders tiny,offline] [--device cpu]
                                        [--batch-size 64] [--num-workers 0] [--keep DIR]

A catalogue of --nodes nodes is generated and saved once; then, per encoder, the real CLI runs in a
fresh process under `/usr/bin/time -v` (peak RSS = "Maximum resident set size" of that process and its
waited-for children). nodes/s is reported twice: for the encoding loop alone (the CLI's own timer,
after the model is loaded) and for the whole command (interpreter start, imports, model load).
CPU seconds (user + system) are recorded too: on a shared machine they move less than wall time.
Results are printed and written to benchmarks/results/features.json.
"""
from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click


def _run_timed(cmd: list) -> tuple:
    """Run cmd under /usr/bin/time -v; returns (wall seconds, peak RSS MiB, CPU seconds, stdout)."""
    timer = shutil.which("time") or "/usr/bin/time"
    t0 = time.perf_counter()
    res = subprocess.run([timer, "-v", *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"command failed ({res.returncode}): {' '.join(cmd)}\n{res.stderr[-3000:]}")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", res.stderr)
    rss = int(m.group(1)) / 1024 if m else float("nan")
    # user + system CPU time: on a shared machine this is steadier than wall time
    cpu = sum(float(x) for x in re.findall(r"(?:User|System) time \(seconds\): ([\d.]+)", res.stderr))
    return wall, rss, cpu, res.stdout


@click.command()
@click.option("--nodes", default=10000, show_default=True)
@click.option("--encoders", default="tiny,offline", show_default=True, help="Comma-separated encoder specs.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--batch-size", default=64, show_default=True)
@click.option("--num-workers", default=0, show_default=True)
@click.option("--cpu-threads", default=0, show_default=True, help="torch threads (0 = torch default)")
@click.option("--keep", type=click.Path(file_okay=False), default=None, help="Keep data + features here.")
@click.option("--out", default=str(Path(__file__).parent / "results" / "features.json"), show_default=True)
def main(nodes: int, encoders: str, device: str, batch_size: int, num_workers: int, cpu_threads: int,
         keep: str | None,
         out: str) -> None:
    from mlaga_fast import __version__
    from mlaga_fast.data.synth import make_catalogue
    from mlaga_fast.utils.io import atomic_write_json

    root = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="bench_features."))
    rows = []
    try:
        data = root / "data"
        if not (data / "graph.json").is_file():
            t0 = time.perf_counter()
            make_catalogue(data, nodes=nodes, seed=0)
            click.echo(f"catalogue: {nodes} nodes in {time.perf_counter() - t0:.1f} s -> {data}")
        for spec in [s for s in encoders.split(",") if s]:
            feat = root / f"features_{re.sub(r'[^A-Za-z0-9]+', '_', spec)}"
            shutil.rmtree(feat, ignore_errors=True)
            cmd = [sys.executable, "-m", "mlaga_fast", "features", "--data", str(data), "--encoder", spec,
                   "--out", str(feat), "--device", device, "--batch-size", str(batch_size),
                   "--num-workers", str(num_workers), "--cpu-threads", str(cpu_threads), "--no-progress"]
            wall, rss, cpu, stdout = _run_timed(cmd)
            summary = json.loads(stdout.strip().splitlines()[-1])
            size_mb = sum(p.stat().st_size for p in feat.iterdir() if p.is_file()) / 2**20
            row = {
                "encoder": spec, "nodes": nodes, "device": device, "batch_size": batch_size,
                "num_workers": num_workers, "cpu_threads": cpu_threads,
                "image": summary["image"], "text": summary["text"],
                "shards": summary["shards"], "encode_s": summary["seconds"],
                "encode_nodes_per_s": round(nodes / summary["seconds"], 1),
                "command_wall_s": round(wall, 2), "command_nodes_per_s": round(nodes / wall, 1),
                "command_cpu_s": round(cpu, 1), "peak_rss_mib": round(rss, 1), "features_mib": round(size_mb, 1),
                "command": " ".join(["/usr/bin/time -v", "mlaga-fast", *cmd[3:]]),
            }
            rows.append(row)
            click.echo(json.dumps(row))
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    atomic_write_json(out, {"mlaga_fast_version": __version__, "machine": platform.platform(),
                            "cpus": os.cpu_count(), "rows": rows})
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    main()

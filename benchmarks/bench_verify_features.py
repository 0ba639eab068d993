"""What checking a features folder costs: opening it (sizes, .npy headers, text masks) against the full
sha256 check (``FeatureStore(path, verify=True)`` / ``mlaga-fast features --verify``), on a synthetic
folder in the extraction's own layout (shards written by ``features.extract._flush_shard``).

    python benchmarks/bench_verify_features.py --nodes 1000000 --out /tmp/feat_1m     # tiny-encoder dims
    python benchmarks/bench_verify_features.py --nodes 20000 --image 257x1024 --text 77x768  # ViT-L-like

Prints JSON: bytes, seconds to open, seconds to verify, GB/s, and the verify time extrapolated to 1M nodes.
The folder is kept (pass the same --out to time it again with a warm page cache; delete it after).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from mlaga_fast.features.extract import _flush_shard
from mlaga_fast.features.store import FORMAT, MANIFEST, FeatureStore, features_fingerprint
from mlaga_fast.utils.io import atomic_write_json


def build(out: Path, n: int, image: tuple[int, int], text: tuple[int, int], shard: int) -> None:
    rng = np.random.default_rng(0)
    header = {"format": FORMAT, "encoder": "synthetic", "image": {"tokens": image[0], "dim": image[1]},
              "text": {"tokens": text[0], "dim": text[1]}, "dtype": "float16", "num_nodes": n,
              "shard_size": shard, "num_shards": -(-n // shard), "graph_fingerprint": None,
              "mlaga_fast_version": "bench"}
    header["fingerprint"] = features_fingerprint(header)
    out.mkdir(parents=True, exist_ok=True)
    for i in range(header["num_shards"]):
        rows = min((i + 1) * shard, n) - i * shard
        buf = {"image": rng.random((rows, *image), dtype=np.float32).astype(np.float16),
               "text": rng.random((rows, *text), dtype=np.float32).astype(np.float16),
               "text_mask": np.ones((rows, text[0]), bool)}
        _flush_shard(out, i, shard, n, buf, ["image", "text", "text_mask"])
    shards = [{"index": i, "start": i * shard, "stop": min((i + 1) * shard, n)} for i in range(header["num_shards"])]
    atomic_write_json(out / MANIFEST, {**header, "shards": shards, "complete": True})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=1_000_000)
    ap.add_argument("--image", default="17x32", help="tokens x dim (tiny CLIP: 17x32)")
    ap.add_argument("--text", default="16x32", help="tokens x dim")
    ap.add_argument("--shard-size", type=int, default=4096)
    ap.add_argument("--out", type=Path, default=Path("/tmp/mlaga_bench_verify"))
    a = ap.parse_args()
    image = tuple(int(x) for x in a.image.split("x"))
    text = tuple(int(x) for x in a.text.split("x"))
    t0 = time.perf_counter()
    if not (a.out / MANIFEST).is_file():
        build(a.out, a.nodes, image, text, a.shard_size)
    t_build = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in a.out.glob("shard_*.npy"))
    t0 = time.perf_counter()
    store = FeatureStore(a.out)
    t_open = time.perf_counter() - t0
    t0 = time.perf_counter()
    store.verify()
    t_verify = time.perf_counter() - t0
    print(json.dumps({"nodes": store.num_nodes, "shards": store.num_shards, "gb": round(size / 1e9, 3),
                      "build_s": round(t_build, 1), "open_s": round(t_open, 3), "verify_s": round(t_verify, 2),
                      "verify_gb_per_s": round(size / 1e9 / t_verify, 2),
                      "verify_s_per_1m_nodes": round(t_verify * 1e6 / store.num_nodes, 1)}))


if __name__ == "__main__":
    main()

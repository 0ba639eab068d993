"""Stage 1 aligner training throughput (nodes/s); JSON to benchmarks/results/align_<device>.json.

One training step = forward of the anchors and their positives, the graph InfoNCE, backward, grad
clipping and an AdamW step, exactly as in mlaga_fast.train.align (data loading excluded: random
fp16 token tensors of the right shapes stand in for the feature store). Two figures per config:
  anchors/s  anchors per second (what an epoch over N nodes costs: N / anchors/s)
  encoded/s  nodes passed through the aligner per second (anchors + their k positives)
Peer: the same model with the plain-PyTorch cross-attention (backend "reference") instead of the
dispatched op (SDPA on CPU, Triton on CUDA); the ratio is printed.

Configs
  tiny   d 128, 2 layers, 4 heads, 8 queries, cross every layer; tokens as the "tiny" encoder
         gives them (image 17 x 32, text 32 x 32); 64 anchors x 5 positives
  paper  d 1024, 6 layers, 8 heads, 32 queries, cross every 2nd layer; image 257 x 1024 (ViT-L/14),
         text 77 x 768; a few steps only (on CPU: 2 anchors x 1 positive)

  python benchmarks/bench_align.py                      # CPU, both configs (~2-4 min on 2 cores)
  python benchmarks/bench_align.py --configs tiny --steps 3
  python benchmarks/bench_align.py --device cuda        # larger batches, bf16 autocast
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"

CONFIGS = {
    "tiny": dict(model=dict(d=128, num_layers=2, num_heads=4, num_queries=8, cross_attention_every=1),
                 tokens=dict(Li=17, Di=32, Lt=32, Dt=32), cpu=dict(anchors=64, k=5), cuda=dict(anchors=256, k=5)),
    "paper": dict(model=dict(d=1024, num_layers=6, num_heads=8, num_queries=32, cross_attention_every=2),
                  tokens=dict(Li=257, Di=1024, Lt=77, Dt=768), cpu=dict(anchors=2, k=1), cuda=dict(anchors=32, k=5)),
}


def _batch(n, Li, Di, Lt, Dt, device, gen):
    lengths = torch.randint(8, Lt + 1, (n,), generator=gen)  # ragged text, as real titles are
    return {
        "image": torch.randn(n, Li, Di, generator=gen).half().to(device),
        "image_mask": torch.ones(n, Li, dtype=torch.bool, device=device),
        "text": torch.randn(n, Lt, Dt, generator=gen).half().to(device),
        "text_mask": (torch.arange(Lt)[None, :] < lengths[:, None]).to(device),
    }


def run_one(name, backend, device, steps, warmup):
    from mlaga_fast.models.aligner import Aligner
    from mlaga_fast.models.contrastive import graph_infonce

    spec = CONFIGS[name]
    tok, shape = spec["tokens"], spec["cuda" if device.type == "cuda" else "cpu"]
    B, k = shape["anchors"], shape["k"]
    torch.manual_seed(0)
    model = Aligner(image_dim=tok["Di"], text_dim=tok["Dt"], attn_backend=backend, **spec["model"]).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=device.type == "cuda")
    gen = torch.Generator().manual_seed(0)
    n = B * (1 + k)
    batch = _batch(n, tok["Li"], tok["Di"], tok["Lt"], tok["Dt"], device, gen)
    ids = torch.arange(n, device=device)
    amp = torch.bfloat16 if device.type == "cuda" else None

    def step():
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            _, pooled = model(batch)  # [n, d]
        a, p = pooled[:B].float(), pooled[B:].float().view(B, k, -1)
        loss, _ = graph_infonce(a, p, ids[:B], ids[B:].view(B, k), tau=0.1)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / steps
    params = sum(p.numel() for p in model.parameters())
    return {"config": name, "backend": backend or "auto", "anchors": B, "positives": k, "encoded_per_step": n,
            "step_s": dt, "anchors_per_s": B / dt, "encoded_per_s": n / dt, "params": params,
            "tokens_per_node": tok["Li"] + tok["Lt"], **spec["model"]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--configs", default="tiny,paper")
    ap.add_argument("--steps", type=int, default=0, help="timed steps (default: 5 tiny, 2 paper on CPU)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--no-peer", action="store_true", help="skip the plain-PyTorch cross-attention peer")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    rows = []
    for name in args.configs.split(","):
        steps = args.steps or (2 if name == "paper" and device.type == "cpu" else 5)
        for backend in ([None] if args.no_peer else [None, "reference"]):
            r = run_one(name, backend, device, steps, args.warmup)
            rows.append(r)
            print(f"{name:5s} {r['backend']:9s} anchors {r['anchors']:4d} x (1+{r['positives']}) "
                  f"step {r['step_s'] * 1e3:9.1f} ms  anchors/s {r['anchors_per_s']:9.2f}  "
                  f"encoded/s {r['encoded_per_s']:9.2f}", flush=True)
        if not args.no_peer:
            ours, peer = rows[-2], rows[-1]
            print(f"{name:5s} dispatch / plain-PyTorch cross-attention speed-up: "
                  f"{ours['anchors_per_s'] / peer['anchors_per_s']:.2f}x", flush=True)
    meta = {"device": str(device), "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(), "torch": torch.__version__, "python": sys.version.split()[0]}
    if device.type == "cuda":
        meta["gpu"] = torch.cuda.get_device_name(device)
    out = Path(args.out) if args.out else RESULTS / f"align_{device.type}.json"
    from mlaga_fast.utils.io import atomic_write_json

    atomic_write_json(out, {"meta": meta, "results": rows})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

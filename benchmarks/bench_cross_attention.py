"""Benchmark the aligner's query cross-attention (issue 5); JSON to benchmarks/results/.

CUDA: ours (Triton) vs SDPA with each backend that accepts the shape (flash, efficient, math,
cudnn) and eager PyTorch, forward and forward+backward, B in {256, 1024, 4096, 8192}, nq 32,
L 334, d 1024, 16 heads, fp16 and bf16, ragged key-padding masks. Reports time, achieved HBM GB/s
(bytes model below) as a fraction of the device's peak, and TFLOP/s.
CPU: the dispatch path (what a CPU user gets: SDPA) vs eager PyTorch, with the ratio printed.

  python benchmarks/bench_cross_attention.py --device cuda          # full GPU sweep
  python benchmarks/bench_cross_attention.py --device cpu           # ~1 min, B in {16, 64}
  python benchmarks/bench_cross_attention.py --device cpu --batch 8 --iters 3   # smoke

Bytes model (dense; padded keys counted although our kernel skips them): forward reads K, V
(2 B L d), q (nq d shared, else B nq d), mask (B L bytes), writes O (B nq d) and LSE
(B H nq fp32). Backward reads q, K, V, O, dO, LSE, mask and writes dK, dV, dq. FLOPs model
(algorithmic, recompute not counted): forward 4 B nq L d, backward 8 B nq L d.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"

# (name substring, HBM bytes/s, dense bf16 FLOP/s); first match wins
PEAKS = [
    ("H100 PCIe", 2.0e12, 756e12),
    ("H100", 3.35e12, 989e12),
    ("H200", 4.8e12, 989e12),
    ("GH200", 4.0e12, 989e12),
    ("A100-SXM4-80GB", 2.039e12, 312e12),
    ("A100", 1.555e12, 312e12),
    ("L40S", 0.864e12, 362e12),
    ("A10", 0.6e12, 125e12),
]


def byte_model(B, nq, L, d, H, esize, shared_q, backward):
    kv = 2 * B * L * d * esize
    q = (1 if shared_q else B) * nq * d * esize
    o = B * nq * d * esize
    fwd = kv + q + B * L + o + B * H * nq * 4
    if not backward:
        return fwd
    bwd = q + kv + 2 * o + B * H * nq * 4 + B * L + kv + q  # reads + writes (dK, dV, dq)
    return fwd + bwd


def flop_model(B, nq, L, d, backward):
    return (12 if backward else 4) * B * nq * L * d


def _time(fn, iters, warmup, cuda):
    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize()
        times = []
        for _ in range(iters):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            torch.cuda.synchronize()
            times.append(a.elapsed_time(b) / 1e3)
    else:
        times = []
        for _ in range(iters):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


def _make(B, H, nq, L, dh, dtype, device, shared_q, masked=True, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    q = torch.randn(1 if shared_q else B, H, nq, dh, generator=g).to(device, dtype)
    k = torch.randn(B, H, L, dh, generator=g).to(device, dtype)
    v = torch.randn(B, H, L, dh, generator=g).to(device, dtype)
    # ragged token counts like real nodes (image 257 always present, text 1..77), ~1% empty nodes
    lens = torch.randint(max(1, L - 77), L + 1, (B,), generator=g)
    lens[torch.rand(B, generator=g) < 0.01] = 0
    mask = (torch.arange(L)[None, :] < lens[:, None]).to(device) if masked else None
    return q, k, v, mask


def _methods(device):
    """name -> callable(q, k, v, mask, scale) -> out."""
    from mlaga_fast.ops.cross_attention import _sdpa, cross_attention
    from mlaga_fast.ops.cross_attention_ref import cross_attention_reference

    m = {"eager": cross_attention_reference}
    if device == "cuda":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        m["ours"] = lambda q, k, v, mask, s: cross_attention(q, k, v, mask, s, backend="triton")
        for name in ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "MATH", "CUDNN_ATTENTION"):
            be = getattr(SDPBackend, name, None)
            if be is None:
                continue

            def run(q, k, v, mask, s, _be=be):
                with sdpa_kernel([_be]):
                    return _sdpa(q, k, v, mask, s)

            m["sdpa-" + name.split("_")[0].lower()] = run
    else:
        m["dispatch"] = lambda q, k, v, mask, s: cross_attention(q, k, v, mask, s)  # SDPA on CPU
    return m


def _check(methods, q, k, v, mask, scale, n=64):
    """Sanity before trusting a timing: each method vs the fp32 eager reference on the first n batches."""
    from mlaga_fast.ops.cross_attention_ref import cross_attention_reference

    qs = q if q.shape[0] == 1 else q[:n]
    ks, vs, ms = k[:n], v[:n], (None if mask is None else mask[:n])
    with torch.no_grad():
        want = cross_attention_reference(qs.float(), ks.float(), vs.float(), ms, scale)
        errs = {}
        for name, fn in methods.items():
            try:
                qq = qs.expand(ks.shape[0], -1, -1, -1).contiguous() if name.startswith("sdpa-") else qs
                errs[name] = (fn(qq, ks, vs, ms, scale).float() - want).abs().max().item()
            except Exception:  # the same backend is reported as n/a in the timings
                errs[name] = None
    return errs


def bench_one(fn, q, k, v, mask, scale, backward, iters, warmup, cuda):
    if backward:
        leaves = [t.detach().requires_grad_(True) for t in (q, k, v)]
        go = torch.randn(k.shape[0], q.shape[1], q.shape[2], q.shape[3], device=q.device, dtype=q.dtype)

        def step():
            out = fn(*leaves, mask, scale)
            torch.autograd.grad(out, leaves, go)
    else:
        def step():
            with torch.no_grad():
                fn(q, k, v, mask, scale)
    return _time(step, iters, warmup, cuda)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    ap.add_argument("--batch", type=int, nargs="+",
                    help="batch sizes (default: 256 1024 4096 8192 on CUDA, 16 64 on CPU)")
    ap.add_argument("--dtypes", nargs="+", help="default: fp16 bf16 on CUDA, fp32 on CPU")
    ap.add_argument("--nq", type=int, default=32)
    ap.add_argument("--L", type=int, default=334)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--per-batch-q", action="store_true", help="q [B, H, nq, dh] instead of shared [1, ...]")
    ap.add_argument("--mask", choices=["ragged", "none"], default="ragged",
                    help="ragged key padding (flash SDPA rejects masks) or no mask (every SDPA backend runs)")
    ap.add_argument("--iters", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--peak-gbps", type=float, default=None, help="override HBM peak (GB/s)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="override dense bf16 peak (TFLOP/s)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    from tqdm import tqdm

    import mlaga_fast
    from mlaga_fast.utils.io import atomic_write_json

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device visible")
    cuda = device == "cuda"
    batches = args.batch or ([256, 1024, 4096, 8192] if cuda else [16, 64])
    dtypes = args.dtypes or (["fp16", "bf16"] if cuda else ["fp32"])
    dt_map = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
    for d in dtypes:
        if d not in dt_map:
            raise SystemExit(f"--dtypes: unknown {d!r} (fp16|bf16|fp32)")
    iters = args.iters or (20 if cuda else 7)
    warmup = args.warmup or (5 if cuda else 2)
    if args.dim % args.heads:
        raise SystemExit(f"--dim {args.dim} not divisible by --heads {args.heads}")
    H, dh, nq, L, d = args.heads, args.dim // args.heads, args.nq, args.L, args.dim
    shared_q = not args.per_batch_q

    dev_name, peak_bw, peak_fl = platform.processor() or "cpu", None, None
    if cuda:
        dev_name = torch.cuda.get_device_name()
        for sub, bw, fl in PEAKS:
            if sub in dev_name:
                peak_bw, peak_fl = bw, fl
                break
    if args.peak_gbps:
        peak_bw = args.peak_gbps * 1e9
    if args.peak_tflops:
        peak_fl = args.peak_tflops * 1e12
    scale = dh ** -0.5
    methods = _methods(device)
    rows = []
    jobs = [(B, dt, bw) for dt in dtypes for B in batches for bw in (False, True)]
    for B, dt, backward in tqdm(jobs, desc=f"cross-attention bench ({device})"):
        dtype = dt_map[dt]
        esize = torch.empty((), dtype=dtype).element_size()
        try:
            q, k, v, mask = _make(B, H, nq, L, dh, dtype, device, shared_q, masked=args.mask == "ragged")
        except torch.OutOfMemoryError:
            rows.append(dict(B=B, dtype=dt, backward=backward, error="OOM allocating inputs"))
            continue
        nbytes = byte_model(B, nq, L, d, H, esize, shared_q, backward)
        nflop = flop_model(B, nq, L, d, backward)
        res = dict(B=B, dtype=dt, backward=backward, bytes_model=nbytes, flop_model=nflop,
                   floor_ms=(nbytes / peak_bw * 1e3) if peak_bw else None, methods={})
        for name, fn in methods.items():
            try:
                # SDPA gets q materialised per batch outside the timed region (not every SDPA
                # backend takes a stride-0 batch); ours and eager broadcast the shared queries
                qq = q.expand(B, -1, -1, -1).contiguous() if name.startswith("sdpa-") else q
                t = bench_one(fn, qq, k, v, mask, scale, backward, iters, warmup, cuda)
            except Exception as e:  # an SDPA backend that rejects the shape/mask, or OOM
                res["methods"][name] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
                if cuda:
                    torch.cuda.empty_cache()
                continue
            gbps = nbytes / t / 1e9
            res["methods"][name] = dict(
                ms=t * 1e3, gbps=gbps, tflops=nflop / t / 1e12,
                bw_frac=(gbps * 1e9 / peak_bw) if peak_bw else None,
                flop_frac=(nflop / t / peak_fl) if peak_fl else None)
        if not backward:
            res["max_abs_err_vs_fp32_eager"] = _check(methods, q, k, v, mask, scale)
        ok = {n: r["ms"] for n, r in res["methods"].items() if "ms" in r}
        if cuda and "ours" in ok:
            sdpa = {n: t for n, t in ok.items() if n.startswith("sdpa-")}
            if sdpa:
                best = min(sdpa, key=sdpa.get)
                res["best_sdpa"] = best
                res["speedup_vs_best_sdpa"] = sdpa[best] / ok["ours"]
            if "eager" in ok:
                res["speedup_vs_eager"] = ok["eager"] / ok["ours"]
        if not cuda and "dispatch" in ok and "eager" in ok:
            res["dispatch_over_eager"] = ok["dispatch"] / ok["eager"]  # < 1: the fallback is faster
        rows.append(res)
        del q, k, v, mask
        if cuda:
            torch.cuda.empty_cache()

    # report
    print(f"\n{dev_name}  H={H} dh={dh} nq={nq} L={L} d={d} shared_q={shared_q}"
          + (f"  peak {peak_bw / 1e9:.0f} GB/s" if peak_bw else "  (unknown peak: pass --peak-gbps)"))
    for r in rows:
        if "error" in r:
            print(f"B={r['B']:5d} {r['dtype']} {'fwd+bwd' if r['backward'] else 'fwd    '}  {r['error']}")
            continue
        parts = []
        for n, m in r["methods"].items():
            if "ms" in m:
                frac = f" {100 * m['bw_frac']:.0f}%BW" if m.get("bw_frac") else ""
                parts.append(f"{n} {m['ms']:.3f} ms ({m['gbps']:.1f} GB/s{frac}, {m['tflops']:.3f} TF/s)")
            else:
                parts.append(f"{n} n/a")
        extra = ""
        err = (r.get("max_abs_err_vs_fp32_eager") or {}).get("ours" if cuda else "dispatch")
        if err is not None:
            extra += f"  [max|err| {err:.2e}]"
        if "speedup_vs_best_sdpa" in r:
            extra += f"  -> ours {r['speedup_vs_best_sdpa']:.2f}x vs {r['best_sdpa']}"
        if "dispatch_over_eager" in r:
            extra += f"  -> dispatch/eager time ratio {r['dispatch_over_eager']:.2f}"
        print(f"B={r['B']:5d} {r['dtype']} {'fwd+bwd' if r['backward'] else 'fwd    '}  " + " | ".join(parts) + extra)

    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    out = args.out or RESULTS / f"cross_attention_{device}.json"
    atomic_write_json(out, dict(
        bench="cross_attention", package_version=mlaga_fast.__version__, torch=torch.__version__,
        triton=triton_version, python=sys.version.split()[0], device=device, device_name=dev_name,
        peak_hbm_bytes_per_s=peak_bw, peak_flops=peak_fl,
        config=dict(H=H, dh=dh, nq=nq, L=L, d=d, shared_q=shared_q, iters=iters, warmup=warmup,
                    batches=batches, dtypes=dtypes, mask=("ragged: L-77..L valid keys, ~1% empty" if args.mask == "ragged" else "none"),
                    sdpa_q="materialised [B, H, nq, dh] (untimed)"),
        models=dict(bytes=__doc__.split("Bytes model")[1].strip()),
        argv=sys.argv[1:] if argv is None else list(argv),
        results=rows,
    ))
    print(f"wrote {out}")
    return rows


if __name__ == "__main__":
    main()

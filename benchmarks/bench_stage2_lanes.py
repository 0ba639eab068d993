"""How Stage 2 should use two cores once the demo's second process is done: the demo gives the MLaGA Stage 2
both cores as two threads of one process (mlaga_fast.demo.pipeline, HANDOFF). This times that layout against
the alternatives on a finished demo's own run, each a real ``train_instruct`` on its prompts and node tokens:

  threads   one process, --threads threads, batch 16                           (what the demo does; the peer)
  procs     two processes at once, --threads / 2 threads each, batch 8 each: the compute of a two-rank
            data-parallel step with the same global batch, without its gradient all-reduce (an upper bound)
  batch32   one process, --threads threads, batch 32 (half the optimizer steps for the same prompts)
  noprefix  as "threads", with the shared prompt prefix run without gradient under LoRA: the forward is the
            same, the LoRA gradient through the prefix's keys and values is dropped (not shipped: inexact)
  packed    as "threads", with the prefix packed into the rows' decoder call under LoRA: one sequence of
            prefix + every row's tokens, so each linear layer runs once per step instead of once for the prefix
            (batch 1) and once for the rows; attention is split back per row (the prefix causal on itself, each
            row on the prefix and its own tokens): the same loss, LoRA gradients within 6e-7 (relative,
            fp32, one batch) of the shipped path (not shipped: see docs/bench_bf16.md)

Each mode trains ``--steps`` instruct-phase steps (no warm-up, so LoRA trains from the first step) in the
run's precision (or ``--precision fp32|bf16``), and reports seconds per step (the mean after the first 3
steps), prompts per second and the ratio to "threads"; the table also goes to
benchmarks/results/stage2_lanes.json. The modes run one after another in ``--rounds`` alternating rounds (the
order reversed every other round), and each reports its best round, so that a machine whose speed drifts hits
every mode alike.

    python benchmarks/bench_stage2_lanes.py --run demo_out [--steps 30] [--rounds 3] [--threads 2]
        [--modes threads,procs,batch32,noprefix,packed] [--precision run|fp32|bf16]
    python benchmarks/bench_stage2_lanes.py --run demo_out --check-packed
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from mlaga_fast.runtime.autotune import cpu_identity
from mlaga_fast.runtime.precision import cpu_has_native_bf16

MODES = ("threads", "procs", "batch32", "noprefix", "packed")
RESULTS = Path(__file__).resolve().parent / "results"


def _worker(args) -> None:
    """One timed train_instruct in this process; prints {"step_s": ..., "batch": ...} as its last line."""
    import numpy as np
    import torch

    from mlaga_fast.config import RUN_CONFIG, load_config
    from mlaga_fast.runs.manifest import read_stage_manifest
    from mlaga_fast.train.instruct import train_instruct
    from mlaga_fast.train.instruct_config import InstructConfig

    torch.set_num_threads(args.threads)
    if args.no_prefix_grad:
        from mlaga_fast.llm import forward

        compute = forward.PrefixKV._compute

        def no_grad_compute(self, ids, device):
            with torch.no_grad():
                return compute(self, ids, device)

        forward.PrefixKV._compute = no_grad_compute
    if args.packed:
        _pack_prefix()
    demo = Path(args.run).resolve()  # the demo's layout: data/, data/features/, runs/align/, runs/instruct/
    run = demo / "runs" / "instruct"
    cfg = replace(load_config(InstructConfig, run / RUN_CONFIG), data=[str(demo / "data")],
                  features=[str(demo / "data" / "features")], align=str(demo / "runs" / "align"),
                  precision=(read_stage_manifest(run, "instruct")["precision"]["name"] if args.precision == "run"
                             else args.precision), batch_size=args.batch,
                  warmup_examples=0, nc_per_dataset=10 * args.batch, lp_per_dataset=20 * args.batch,
                  describe_per_dataset=2 * args.batch, max_steps=args.steps, checkpoint_every=10_000)
    marks: list[float] = []
    with tempfile.TemporaryDirectory() as out:
        train_instruct(cfg, Path(out) / "run", progress=False,
                       on_step=lambda step, total, rec: marks.append(time.perf_counter()))
    print(json.dumps({"step_s": float(np.diff(marks)[3:].mean()), "batch": args.batch}))


def _pack_prefix() -> None:
    """The "packed" mode: Stage 2's LoRA training forward runs prefix + rows as one decoder call (module docstring).
    Reference: the shipped ``forward_hidden`` (prefix keys/values at batch 1, then the rows), which it must match."""
    import contextvars

    import torch
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

    import mlaga_fast.models.graph_llm as graph_llm

    layout = contextvars.ContextVar("packed_layout")
    name = "packed_prefix"

    def attention(module, q, k, v, attention_mask, **kw):
        P, B, T, masks, inner = layout.get()  # q [1, h, P + B*T, dh], k/v [1, kvh, P + B*T, dh]
        fn = ALL_ATTENTION_FUNCTIONS[inner]

        def rows(x):  # [1, n, B*T, dh] -> [B, n, T, dh]
            return x[0, :, P:].unflatten(1, (B, T)).transpose(0, 1)

        kp, vp = k[:, :, :P], v[:, :, :P]
        out_p, _ = fn(module, q[:, :, :P], kp, vp, masks[0], **kw)  # [1, P, h, dh]
        out_r, _ = fn(module, rows(q), torch.cat([kp.expand(B, -1, -1, -1), rows(k)], 2),
                      torch.cat([vp.expand(B, -1, -1, -1), rows(v)], 2), masks[1], **kw)  # [B, T, h, dh]
        return torch.cat([out_p, out_r.reshape(1, B * T, *out_r.shape[2:])], 1), None

    AttentionInterface.register(name, attention)
    shipped = graph_llm.forward_hidden

    def forward_hidden(parts, embeds, mask, prefix_ids, prefix, *, use_cache=False):
        if not (prefix_ids and parts.trainable and torch.is_grad_enabled() and not use_cache):
            return shipped(parts, embeds, mask, prefix_ids, prefix, use_cache=use_cache)
        B, T, H = embeds.shape
        P, dev = len(prefix_ids), embeds.device
        pre = parts.embed(torch.tensor([list(prefix_ids)], device=dev)).to(embeds.dtype)  # [1, P, H]
        pos = torch.cat([torch.arange(P, device=dev), (P + (mask.cumsum(1) - 1).clamp(min=0)).reshape(-1)])[None]
        m = mask.bool()
        causal = torch.ones(T, T, dtype=torch.bool, device=dev).tril()
        row_mask = torch.cat([torch.ones(B, T, P, dtype=torch.bool, device=dev), causal & m[:, None, :]], 2)[:, None]
        pre_mask = torch.ones(P, P, dtype=torch.bool, device=dev).tril()[None, None]
        cfg = parts.config
        inner = cfg._attn_implementation  # sdpa or eager: both take these boolean masks
        token = layout.set((P, B, T, (pre_mask, row_mask), inner))
        cfg._attn_implementation = name
        try:
            out = parts.decoder.module(inputs_embeds=torch.cat([pre, embeds.reshape(1, B * T, H)], 1),
                                       position_ids=pos, use_cache=False)
        finally:
            cfg._attn_implementation = inner
            layout.reset(token)
        return out.last_hidden_state[:, P:].reshape(B, T, H), None

    graph_llm.forward_hidden = forward_hidden


def _check_packed(run: Path) -> None:
    """``--check-packed``: one training forward + backward of the run's LLM with LoRA (random adapters, fp32,
    random node embeddings, left-padded rows, a 30-token prefix) through the shipped path and the packed one;
    prints the loss of each and the largest relative gradient difference (inputs, LoRA weights)."""
    import torch

    import mlaga_fast.models.graph_llm as graph_llm
    from mlaga_fast.config import RUN_CONFIG, load_config
    from mlaga_fast.llm.forward import PrefixKV, llm_parts
    from mlaga_fast.llm.loading import LLMOptions, load_llm
    from mlaga_fast.train.instruct_config import InstructConfig

    cfg = load_config(InstructConfig, run / "runs" / "instruct" / RUN_CONFIG)
    torch.manual_seed(0)
    model, _, _ = load_llm(cfg.llm, LLMOptions(dtype="float32", lora=True, lora_r=cfg.lora_r,
                                               lora_alpha=cfg.lora_alpha, progress=False))
    lora = [p for p in model.parameters() if p.requires_grad]
    for p in lora:
        torch.nn.init.normal_(p, std=0.02)  # peft starts B at zero: give the adapters a path to differ on
    parts = llm_parts(model)
    B, T, P = 16, 40, 30
    embeds = (0.05 * torch.randn(B, T, parts.hidden)).requires_grad_()  # [B, T, H]
    mask = torch.ones(B, T, dtype=torch.long)
    for b in range(B):
        mask[b, :(3 * b) % 12] = 0  # left padding of 0-11 columns
    prefix = list(range(100, 100 + P))
    shipped = graph_llm.forward_hidden
    _pack_prefix()
    out = {}
    for name, fn in (("shipped", shipped), ("packed", graph_llm.forward_hidden)):
        embeds.grad = None
        for p in lora:
            p.grad = None
        hidden, _ = fn(parts, embeds, mask, prefix, PrefixKV(parts))
        loss = hidden[:, -4:].pow(2).mean()  # a loss on the last positions, as Stage 2's answers are
        loss.backward()
        out[name] = (loss.item(), [embeds.grad.clone()] + [p.grad.clone() for p in lora])
    graph_llm.forward_hidden = shipped
    rel = max(float((a - b).norm() / b.norm().clamp(min=1e-30)) for a, b in zip(out["packed"][1], out["shipped"][1]))
    print(f"loss shipped {out['shipped'][0]:.8f} packed {out['packed'][0]:.8f}; largest relative gradient difference "
          f"{rel:.2e} (inputs and {len(lora)} LoRA tensors)")


def _spawn(run: str, threads: int, batch: int, steps: int, no_prefix_grad: bool = False, packed: bool = False,
           precision: str = "run") -> subprocess.Popen:
    cmd = [sys.executable, __file__, "--worker", "--run", run, "--threads", str(threads), "--batch", str(batch),
           "--steps", str(steps), "--precision", precision] + (["--no-prefix-grad"] if no_prefix_grad else []) \
        + (["--packed"] if packed else [])
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})


def _result(p: subprocess.Popen) -> dict:
    out, _ = p.communicate()
    if p.returncode != 0:
        raise SystemExit(f"a timing process failed (exit {p.returncode}); run it alone with --worker to see why")
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True,
                    help="a finished demo's folder (demo_out, or demo_out/seedN after --seeds)")
    ap.add_argument("--steps", type=int, default=30, help="instruct steps per mode")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (each mode's best is reported)")
    ap.add_argument("--threads", type=int, default=2, help="cores given to Stage 2")
    ap.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    ap.add_argument("--precision", choices=("run", "fp32", "bf16"), default="run",
                    help="Stage 2's precision: the demo run's (default) or forced")
    ap.add_argument("--batch", type=int, default=16, help=argparse.SUPPRESS)
    ap.add_argument("--packed", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--check-packed", action="store_true",
                    help="compare the packed path's loss and gradients with the shipped path's, then exit")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--no-prefix-grad", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return _worker(args)
    run = Path(args.run)
    if not (run / "runs" / "instruct" / "manifest.json").is_file():
        raise SystemExit(f"--run: {run} holds no finished demo Stage 2 (runs/instruct/manifest.json)")
    if args.check_packed:
        return _check_packed(run)
    modes = [m for m in args.modes.split(",") if m]
    bad = [m for m in modes if m not in MODES]
    if bad or args.steps < 10 or args.threads < 2 or args.rounds < 1:
        raise SystemExit(f"--modes {bad} not of {list(MODES)}" if bad else
                         "--steps must be >= 10 (the first 3 are not timed), --threads >= 2 and --rounds >= 1")
    T, n = args.threads, args.steps
    rows: dict[str, tuple[float, float, str]] = {}  # mode -> (s/step, prompts/s, layout) of its best round
    for r in range(args.rounds):
        for mode in (modes if r % 2 == 0 else modes[::-1]):
            if mode == "procs":
                half = [_spawn(str(run), T // 2, 8, n, precision=args.precision) for _ in range(2)]
                res = [_result(p) for p in half]
                step, batch = max(x["step_s"] for x in res), 16  # a data-parallel step waits for the slower rank
                what = (f"two processes, {T // 2} thread(s) and batch 8 each "
                        f"({res[0]['step_s']:.3f} / {res[1]['step_s']:.3f} s)")
            else:
                batch = 32 if mode == "batch32" else 16
                step = _result(_spawn(str(run), T, batch, n, no_prefix_grad=mode == "noprefix",
                                      packed=mode == "packed", precision=args.precision))["step_s"]
                what = f"one process, {T} threads, batch {batch}"
                what += {"noprefix": ", prefix without gradient",
                         "packed": ", prefix packed with the rows"}.get(mode, "")
            if mode not in rows or batch / step > rows[mode][1]:
                rows[mode] = (step, batch / step, what)
            print(f"round {r + 1}: {mode} {step:.3f} s/step", file=sys.stderr, flush=True)
    peer = rows.get("threads")
    print(f"Stage 2 instruct steps on {run} ({n} steps per mode, best of {args.rounds} rounds)")
    print(f"{'mode':<10} {'s/step':>8} {'prompts/s':>10} {'vs threads':>11}  layout")
    for mode in modes:
        step, rate, what = rows[mode]
        ratio = f"{rate / peer[1]:.2f}x" if peer else "-"
        print(f"{mode:<10} {step:>8.3f} {rate:>10.2f} {ratio:>11}  {what}")
    RESULTS.mkdir(exist_ok=True)
    ident = cpu_identity()
    rec = {"run": str(run.resolve()), "steps": n, "rounds": args.rounds, "threads": T, "precision": args.precision,
           "cpu": ident["cpu"],
           "native_bf16": cpu_has_native_bf16(), "torch": ident["torch"],
           "modes": {m: {"s_per_step": rows[m][0], "prompts_per_s": rows[m][1], "layout": rows[m][2]} for m in modes}}
    (RESULTS / "stage2_lanes.json").write_text(json.dumps(rec, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

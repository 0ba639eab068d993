"""How Stage 2 should use two cores once the demo's second process is done: the demo gives the MLaGA Stage 2
both cores as two threads of one process (mlaga_fast.demo.pipeline, HANDOFF). This times that layout against
the alternatives on a finished demo's own run, each a real ``train_instruct`` on its prompts and node tokens:

  threads   one process, --threads threads, batch 16                           (what the demo does; the peer)
  procs     two processes at once, --threads / 2 threads each, batch 8 each: the compute of a two-rank
            data-parallel step with the same global batch, without its gradient all-reduce (an upper bound)
  batch32   one process, --threads threads, batch 32 (half the optimizer steps for the same prompts)
  twocalls  as "threads", with the shared prompt prefix run as its own decoder call (batch 1, with gradient)
            before the rows, as Stage 2 did before it packed the prefix with the rows (mlaga_fast.llm.forward)
  noprefix  as "twocalls", with the prefix's call without gradient under LoRA: the forward is the same, the
            LoRA gradient through the prefix's keys and values is dropped (not shipped: inexact)

Each mode trains ``--steps`` instruct-phase steps (no warm-up, so LoRA trains from the first step) in the
run's precision (or ``--precision fp32|bf16``), and reports seconds per step (the mean after the first 3
steps), prompts per second and the ratio to "threads"; the table also goes to
benchmarks/results/stage2_lanes.json. The modes run one after another in ``--rounds`` alternating rounds (the
order reversed every other round), and each reports its best round, so that a machine whose speed drifts hits
every mode alike.

    python benchmarks/bench_stage2_lanes.py --run demo_out [--steps 30] [--rounds 3] [--threads 2]
        [--modes threads,procs,batch32,twocalls,noprefix] [--precision run|fp32|bf16]
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

MODES = ("threads", "procs", "batch32", "twocalls", "noprefix")
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
    if args.two_calls or args.no_prefix_grad:
        _unpacked()
    if args.no_prefix_grad:
        from mlaga_fast.llm import forward

        compute = forward.PrefixKV._compute

        def no_grad_compute(self, ids, device):
            with torch.no_grad():
                return compute(self, ids, device)

        forward.PrefixKV._compute = no_grad_compute
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


def _unpacked() -> None:
    """Stage 2 as before the prefix was packed with the rows: every LLM's parts keep the two decoder calls."""
    from mlaga_fast.llm import forward

    init = forward.LLMParts.__init__

    def two_calls(self, model):
        init(self, model)
        self.packed_prefix = False

    forward.LLMParts.__init__ = two_calls


def _check_packed(run: Path) -> None:
    """``--check-packed``: one training forward + backward of the run's LLM with LoRA (random adapters, fp32,
    random node embeddings, left-padded rows, a 30-token prefix), packed and in two decoder calls; prints the
    loss of each and the largest relative gradient difference (inputs, LoRA weights)."""
    import torch

    from mlaga_fast.config import RUN_CONFIG, load_config
    from mlaga_fast.llm.forward import PrefixKV, forward_hidden, llm_parts
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
    if not parts.packed_prefix:
        raise SystemExit(f"{cfg.llm}: this model keeps two decoder calls (sliding window or attention "
                         f"{parts.config._attn_implementation!r})")
    B, T, P = 16, 40, 30
    embeds = (0.05 * torch.randn(B, T, parts.hidden)).requires_grad_()  # [B, T, H]
    mask = torch.ones(B, T, dtype=torch.long)
    for b in range(B):
        mask[b, :(3 * b) % 12] = 0  # left padding of 0-11 columns
    prefix = list(range(100, 100 + P))
    out = {}
    for name in ("packed", "two calls"):
        parts.packed_prefix = name == "packed"
        embeds.grad = None
        for p in lora:
            p.grad = None
        hidden, _ = forward_hidden(parts, embeds, mask, prefix, PrefixKV(parts))
        loss = hidden[:, -4:].pow(2).mean()  # a loss on the last positions, as Stage 2's answers are
        loss.backward()
        out[name] = (loss.item(), [embeds.grad.clone()] + [p.grad.clone() for p in lora])
    pairs = zip(out["packed"][1], out["two calls"][1])
    rel = max(float((a - b).norm() / b.norm().clamp(min=1e-30)) for a, b in pairs)
    print(f"loss packed {out['packed'][0]:.8f} two calls {out['two calls'][0]:.8f}; largest relative gradient "
          f"difference {rel:.2e} (inputs and {len(lora)} LoRA tensors)")


def _spawn(run: str, threads: int, batch: int, steps: int, mode: str = "threads",
           precision: str = "run") -> subprocess.Popen:
    flag = {"noprefix": ["--no-prefix-grad"], "twocalls": ["--two-calls"]}.get(mode, [])
    cmd = [sys.executable, __file__, "--worker", "--run", run, "--threads", str(threads), "--batch", str(batch),
           "--steps", str(steps), "--precision", precision] + flag
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
    ap.add_argument("--two-calls", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--check-packed", action="store_true",
                    help="compare the packed path's loss and gradients with the two-call path's, then exit")
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
                step = _result(_spawn(str(run), T, batch, n, mode, precision=args.precision))["step_s"]
                what = f"one process, {T} threads, batch {batch}"
                what += {"noprefix": ", prefix in its own call, without gradient",
                         "twocalls": ", prefix in its own call"}.get(mode, "")
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

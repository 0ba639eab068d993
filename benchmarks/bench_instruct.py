"""Stage 2 training throughput on the demo's prompts: the forward + backward path as it was (the HF
model call with ``logits_to_keep``, prompts padded as they come) against each change of
mlaga_fast.llm.forward / mlaga_fast.prompts.batch (read through mlaga_fast.models.graph_llm.GraphLLM),
in one run:

  A  HF causal-LM forward (lm_head on a 3-D slice), full prompts, random batches   (the old path)
  B  A + the LM head on the answer positions flattened to 2-D
  C  B + the shared prefix's keys/values computed once (PrefixKV)
  D  C + length-bucketed batches (plan_batches)                                      (the new path)

and the precisions of path D side by side on this CPU (``--precision``, mlaga_fast.runtime.precision):

  fp32            fp32 weights and activations
  bf16 autocast   fp32 weights, bf16 autocast (the weights are cast again at every call), math attention
  bf16 weights    the frozen LLM cast to bf16 once (what --precision bf16 is on a CPU with native bf16),
                  attention through the math backend in training (Precision.context)
  bf16 w, fused   the same with torch's fused flash attention kernel (the path before)

run in alternating rounds (best of ``--rounds``, so that load changes on a shared machine hit every mode),
each with tokens/s, the achieved GFLOP/s and its fraction of this machine's matmul peak in that dtype
(a large fp32 and a large bf16 ``torch.mm`` timed in the same run), the ratio against fp32, the loss /
gradient agreement with fp32, and the decision ``--precision auto`` takes here (its synthetic step timed
as mlaga_fast.runtime.autotune does). FLOPs counted: the tokens the LLM actually runs (padded batch rows
after the memoised shared prefix), 4 per weight of its decoder layers' linear maps per token (forward,
and the backward to the inputs, as Stage 2 does: no weight gradients), the causal attention's score and
value products (x3 for the backward), and the LM head on the answer positions. Prompts: the demo
catalogue's warm-up, NC (PPR-style demonstrations) and LP prompts with the compact templates; node tokens
are random (speed does not depend on their values). Prints tables and writes
benchmarks/results/instruct_cpu.json.

    python benchmarks/bench_instruct.py [--llm smollm2] [--steps 6] [--batch 16] [--rounds 3] [--precision-only]
        [--precision-prompts warm-up,nc]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from mlaga_fast.runtime.precision import Precision


def build(args):
    from mlaga_fast.data.synth import make_catalogue
    from mlaga_fast.llm.loading import LLMOptions, load_llm
    from mlaga_fast.models.projector import ProjectorConfig, Projectors
    from mlaga_fast.prompts import PromptBuilder, TruncationPolicy
    from mlaga_fast.prompts.demos import LinkPairs
    from mlaga_fast.prompts.batch import NodeInputs

    g = make_catalogue(None, nodes=2000, classes=8, homophily=0.75, image_mismatch=0.15, text_mismatch=0.05, seed=0)
    model, tok, _ = load_llm(args.llm, LLMOptions(progress=False))
    rng = np.random.default_rng(0)
    inputs = [NodeInputs(rng.normal(size=(g.num_nodes, 4, 128)).astype(np.float16),
                         rng.normal(size=(g.num_nodes, 1280)).astype(np.float32))]
    torch.manual_seed(0)
    H = model.get_input_embeddings().weight.shape[1]
    proj = Projectors(ProjectorConfig(graph_dim=128, out_dim=H, kind="modality", image_dim=1280))
    b = PromptBuilder(tok, 4, g.texts, g.class_names, TruncationPolicy(384, 0, 0), image_tokens=1)
    labels = np.asarray(g.labels)
    train = np.asarray(g.train)
    n = args.batch * args.steps
    pick = rng.choice(train, n)
    demo = [list(rng.choice(train, 3)) for _ in range(n)]
    ex = {"warm-up": [b.nc(int(v), [], [], label=int(labels[v])) for v in pick],
          "nc": [b.nc(int(v), d, [int(labels[x]) for x in d], label=int(labels[v])) for v, d in zip(pick, demo)]}
    pairs, y = LinkPairs(g).train_pairs(n, rng)
    ex["lp"] = [b.lp(int(a), int(c), None, label=int(t)) for (a, c), t in zip(pairs.T, y)]
    return model, tok, proj, inputs, ex


def old_loss(gl, batch_ex, inputs):
    """The path before this change: the whole prompt through the HF model, lm_head via logits_to_keep."""
    from mlaga_fast.prompts.batch import collate

    model = gl.model
    batch = collate(batch_ex, gl.tokenizer.pad_token_id, inputs, with_answer=True, use_prefix=False)
    emb = gl.embed(batch)
    pos = (batch.mask.cumsum(1) - 1).clamp(min=0)
    out = model(inputs_embeds=emb, attention_mask=batch.mask, position_ids=pos, logits_to_keep=batch.keep,
                use_cache=False)
    return torch.nn.functional.cross_entropy(out.logits.float().reshape(-1, out.logits.shape[-1]),
                                             batch.labels.reshape(-1), ignore_index=-100)


def graph_llm(model, tok, proj, precision=None):
    from mlaga_fast.models.graph_llm import GraphLLM

    return GraphLLM(model, tok, proj, precision or Precision("fp32", "float32", None), "cpu")


def run(mode, model, tok, proj, inputs, exs, batch: int, precision=None):
    from mlaga_fast.prompts.batch import collate, plan_batches

    gl = graph_llm(model, tok, proj, precision)
    if mode == "D":
        order = plan_batches(exs, batch, seed=0, epoch=0)
    else:
        idx = np.random.default_rng(1).permutation(len(exs))
        order = [idx[i:i + batch].tolist() for i in range(0, len(exs), batch)]
    tokens = prompts = 0
    t0 = time.perf_counter()
    for bidx in order:
        bex = [exs[i] for i in bidx]
        if mode == "A":
            with gl.precision.context("cpu"):
                loss = old_loss(gl, bex, inputs)
        else:
            batch_ = collate(bex, tok.pad_token_id, inputs, with_answer=True, use_prefix=mode in ("C", "D"))
            loss = gl.loss(batch_)
        loss.backward()
        proj.zero_grad()
        prompts += len(bex)
        tokens += sum(len(e.prompt_ids) + len(e.answer_ids) - 1 for e in bex)
    dt = time.perf_counter() - t0
    return {"prompts_per_s": prompts / dt, "tokens_per_s": tokens / dt, "seconds": dt}


def agreement(model, tok, proj, inputs, exs, mode: str) -> dict:
    from mlaga_fast.models.graph_llm import bf16_agreement
    from mlaga_fast.prompts.batch import collate

    return bf16_agreement(graph_llm(model, tok, proj), collate(exs[:16], tok.pad_token_id, inputs, with_answer=True),
                          mode=mode)


def matmul_peak(n: int = 2048, rounds: int = 3) -> dict:
    """GFLOP/s of an n x n x n torch.mm in fp32 and in bf16, best of ``rounds``, alternating."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    pairs = {"float32": (a, b), "bfloat16": (a.bfloat16(), b.bfloat16())}
    best = dict.fromkeys(pairs, float("inf"))
    for x, y in pairs.values():
        torch.mm(x, y)  # warm-up
    for _ in range(rounds):
        for k, (x, y) in pairs.items():
            t0 = time.perf_counter()
            torch.mm(x, y)
            best[k] = min(best[k], time.perf_counter() - t0)
    return {k: 2 * n ** 3 / t / 1e9 for k, t in best.items()}


def flops_per_batch(model, batch) -> float:
    """Hardware FLOPs of one Stage-2 step on ``batch`` (see the module docstring)."""
    cfg = model.config
    H, V, L = cfg.hidden_size, cfg.vocab_size, cfg.num_hidden_layers
    lin = sum(m.weight.numel() for name, m in model.named_modules()
              if isinstance(m, torch.nn.Linear) and ".layers." in name and "lora_" not in name)
    B, T = batch.input_ids.shape
    P = len(batch.prefix)
    attn = 3 * 4 * B * T * (P + T) * H * L  # QK^T and AV forward (2 * 2 * T * keys * H), backward ~2x
    head = 4 * B * batch.keep * V * H
    return 4 * lin * B * T + attn + head


def run_precision(gls: dict, exs, inputs, batch: int, rounds: int) -> dict:
    """{mode: {"seconds", "prompts_per_s", "tokens_per_s", "gflops"}}: path D over ``exs`` per mode, modes
    alternating round by round, each the best of ``rounds``."""
    from mlaga_fast.prompts.batch import collate, plan_batches

    any_gl = next(iter(gls.values()))
    tok = any_gl.tokenizer
    order = plan_batches(exs, batch, seed=0, epoch=0)
    batches = [collate([exs[i] for i in b], tok.pad_token_id, inputs, with_answer=True) for b in order]
    flops = sum(flops_per_batch(any_gl.model, b) for b in batches)
    tokens = sum(len(exs[i].prompt_ids) + len(exs[i].answer_ids) - 1 for b in order for i in b)
    best = dict.fromkeys(gls, float("inf"))
    for gl in gls.values():  # warm-up: kernel selection, allocator, prefix memo
        gl.loss(batches[0]).backward()
    for _ in range(rounds):
        for mode, gl in gls.items():
            t0 = time.perf_counter()
            for b in batches:
                gl.loss(b).backward()
            best[mode] = min(best[mode], time.perf_counter() - t0)
            gl.projectors.zero_grad()
    return {m: {"seconds": t, "prompts_per_s": len(exs) / t, "tokens_per_s": tokens / t, "gflops": flops / t / 1e9}
            for m, t in best.items()}


class FusedAttention(Precision):
    """bf16 weights with the attention backend left to torch (its fused flash kernel), as before
    Precision.context chose the math backend for bf16 training steps on a CPU: the peer of "bf16 weights"."""

    def context(self, device_type: str):
        return torch.autocast(device_type, enabled=False)


def main() -> None:
    import copy

    from mlaga_fast.models.graph_llm import frozen_to_bf16
    from mlaga_fast.runtime.autotune import Workload, measure_step_seconds
    from mlaga_fast.runtime.precision import cpu_has_native_bf16

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--llm", default="smollm2")
    ap.add_argument("--steps", type=int, default=6, help="batches per measurement")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of the precision comparison (best of)")
    ap.add_argument("--precision-only", action="store_true", help="skip the A-D path table")
    ap.add_argument("--precision-prompts", default="warm-up,nc",
                    help="comma-separated prompt kinds of the precision comparison (warm-up, nc, lp)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "instruct_cpu.json"))
    args = ap.parse_args()
    model, tok, proj, inputs, ex = build(args)
    rows = []
    for kind, exs in ({} if args.precision_only else ex).items():
        run("D", model, tok, proj, inputs, exs[:args.batch], args.batch)  # warm-up: allocator, prefix memo
        res = {m: run(m, model, tok, proj, inputs, exs, args.batch) for m in "ABCD"}
        rows.append({"prompts": kind, **{f"{m}_prompts_per_s": round(r["prompts_per_s"], 2) for m, r in res.items()},
                     "D_tokens_per_s": round(res["D"]["tokens_per_s"], 1),
                     "speedup_D_over_A": round(res["D"]["prompts_per_s"] / res["A"]["prompts_per_s"], 2)})
    if rows:
        print(f"{'prompts':<8} {'A (old)':>9} {'B +2-D head':>12} {'C +prefix':>10} {'D +buckets':>11} {'D/A':>6}  "
              "prompts/s")
        for r in rows:
            print(f"{r['prompts']:<8} {r['A_prompts_per_s']:>9.2f} {r['B_prompts_per_s']:>12.2f} "
                  f"{r['C_prompts_per_s']:>10.2f} {r['D_prompts_per_s']:>11.2f} {r['speedup_D_over_A']:>6.2f}")

    # --- precisions, path D ---
    native = cpu_has_native_bf16()
    peak = matmul_peak()
    bf16_model = frozen_to_bf16(copy.deepcopy(model))
    gls = {"fp32": graph_llm(model, tok, proj),
           "bf16 autocast": graph_llm(model, tok, proj, Precision("bf16", "float32", "bfloat16")),
           "bf16 weights": graph_llm(bf16_model, tok, proj, Precision("bf16", "bfloat16", None)),
           "bf16 w, fused": graph_llm(bf16_model, tok, proj, FusedAttention("bf16", "bfloat16", None))}
    peak_of = {"fp32": peak["float32"], **{m: peak["bfloat16"] for m in gls if m != "fp32"}}
    prec_rows = []
    for kind in args.precision_prompts.split(","):
        res = run_precision(gls, ex[kind], inputs, args.batch, args.rounds)
        for mode, r in res.items():
            prec_rows.append({"prompts": kind, "mode": mode, "s_per_step": r["seconds"] / args.steps,
                              "prompts_per_s": r["prompts_per_s"], "tokens_per_s": r["tokens_per_s"],
                              "gflops": r["gflops"], "peak_fraction": r["gflops"] / peak_of[mode],
                              "vs_fp32": res["fp32"]["seconds"] / r["seconds"]})
    agree = {m: agreement(model, tok, proj, inputs, ex["nc"], m) for m in ("autocast", "weights")}
    H = model.config.hidden_size
    proxy = Workload.llm(H, model.config.intermediate_size, model.config.num_attention_heads)
    p32, p16 = measure_step_seconds(proxy)

    print(f"\nmatmul peak (2048^3 torch.mm, {torch.get_num_threads()} threads): fp32 {peak['float32']:.0f} GFLOP/s, "
          f"bf16 {peak['bfloat16']:.0f} GFLOP/s; native bf16 on this CPU: {native}")
    print(f"{'prompts':<8} {'precision':<14} {'s/step':>7} {'prompts/s':>10} {'tokens/s':>9} {'GFLOP/s':>8} "
          f"{'of peak':>8} {'vs fp32':>8}")
    for r in prec_rows:
        print(f"{r['prompts']:<8} {r['mode']:<14} {r['s_per_step']:>7.2f} {r['prompts_per_s']:>10.2f} "
              f"{r['tokens_per_s']:>9.0f} {r['gflops']:>8.0f} {r['peak_fraction']:>8.0%} {r['vs_fp32']:>7.2f}x")
    for m, a in agree.items():
        print(f"bf16 {m} vs fp32 (NC prompts): loss rel. diff {a['loss_rel_diff']:.2e}, projector-grad rel. error "
              f"{a['grad_rel_err']:.2e}, cosine {a['grad_cosine']:.5f}")
    print(f"--precision auto's synthetic step ({proxy.key()}): fp32 {p32 * 1e3:.1f} ms, bf16 weights "
          f"{p16 * 1e3:.1f} ms, x{p32 / p16:.2f} -> {'bf16' if p32 / p16 >= 1.2 else 'fp32'}")
    result = {"llm": args.llm, "batch": args.batch, "steps": args.steps, "rounds": args.rounds, "rows": rows,
              "matmul_peak_gflops": peak, "native_bf16": native, "precision": prec_rows, "agreement": agree,
              "autotune_proxy": {"workload": proxy.key(), "fp32_s": p32, "bf16_s": p16},
              "torch_threads": torch.get_num_threads(), "torch": torch.__version__}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

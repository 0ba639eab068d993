"""Stage 2 training throughput on the demo's prompts: the forward + backward path as it was (the HF
model call with ``logits_to_keep``, prompts padded as they come) against each change of
mlaga_fast.llm.forward / mlaga_fast.prompts.batch (read through mlaga_fast.models.graph_llm.GraphLLM),
in one run:

  A  HF causal-LM forward (lm_head on a 3-D slice), full prompts, random batches   (the old path)
  B  A + the LM head on the answer positions flattened to 2-D
  C  B + the shared prefix's keys/values computed once (PrefixKV)
  D  C + length-bucketed batches (plan_batches)                                      (the new path)

plus bf16 autocast against fp32 on this CPU (speed, and the loss / input-gradient agreement that the
``--precision auto`` policy relies on). Prompts: the demo catalogue's warm-up, NC (PPR-style
demonstrations) and LP prompts with the compact templates; node tokens are random (speed does not
depend on their values). Prints a table and writes benchmarks/results/instruct_cpu.json.

    python benchmarks/bench_instruct.py [--llm smollm2] [--steps 6] [--batch 16]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


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
    from mlaga_fast.runtime.precision import Precision

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


def bf16_agreement(model, tok, proj, inputs, exs) -> dict:
    from mlaga_fast.models.graph_llm import bf16_agreement as agreement
    from mlaga_fast.prompts.batch import collate

    return agreement(graph_llm(model, tok, proj), collate(exs[:16], tok.pad_token_id, inputs, with_answer=True))


def main() -> None:
    from mlaga_fast.runtime.precision import Precision, cpu_has_native_bf16

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--llm", default="smollm2")
    ap.add_argument("--steps", type=int, default=6, help="batches per measurement")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "instruct_cpu.json"))
    args = ap.parse_args()
    model, tok, proj, inputs, ex = build(args)
    rows = []
    for kind, exs in ex.items():
        run("D", model, tok, proj, inputs, exs[:args.batch], args.batch)  # warm-up: allocator, prefix memo
        res = {m: run(m, model, tok, proj, inputs, exs, args.batch) for m in "ABCD"}
        rows.append({"prompts": kind, **{f"{m}_prompts_per_s": round(r["prompts_per_s"], 2) for m, r in res.items()},
                     "D_tokens_per_s": round(res["D"]["tokens_per_s"], 1),
                     "speedup_D_over_A": round(res["D"]["prompts_per_s"] / res["A"]["prompts_per_s"], 2)})
    native = cpu_has_native_bf16()
    bf16 = run("D", model, tok, proj, inputs, ex["warm-up"][:2 * args.batch], args.batch,
               precision=Precision("bf16", "float32", "bfloat16"))
    fp32 = run("D", model, tok, proj, inputs, ex["warm-up"][:2 * args.batch], args.batch)
    agree = bf16_agreement(model, tok, proj, inputs, ex["nc"])
    print(f"{'prompts':<8} {'A (old)':>9} {'B +2-D head':>12} {'C +prefix':>10} {'D +buckets':>11} {'D/A':>6}  prompts/s")
    for r in rows:
        print(f"{r['prompts']:<8} {r['A_prompts_per_s']:>9.2f} {r['B_prompts_per_s']:>12.2f} {r['C_prompts_per_s']:>10.2f} "
              f"{r['D_prompts_per_s']:>11.2f} {r['speedup_D_over_A']:>6.2f}")
    print(f"bf16 autocast vs fp32 (warm-up prompts, D): {bf16['prompts_per_s']:.2f} vs {fp32['prompts_per_s']:.2f} "
          f"prompts/s (x{bf16['prompts_per_s'] / fp32['prompts_per_s']:.2f}); native bf16 on this CPU: {native}; "
          f"loss rel. diff {agree['loss_rel_diff']:.2e}, input-grad cosine {agree['grad_cosine']:.5f}")
    result = {"llm": args.llm, "batch": args.batch, "steps": args.steps, "rows": rows,
              "bf16": {"prompts_per_s": bf16["prompts_per_s"], "fp32_prompts_per_s": fp32["prompts_per_s"],
                       "native_bf16": native, **agree},
              "torch_threads": torch.get_num_threads()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

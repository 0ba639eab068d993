"""Evaluate a Stage-2 run on a dataset (seen or unseen: transfer needs no tuning) for NC or LP.

NC accuracy is reported two ways: constrained scoring (argmax log-likelihood over every class name)
and free generation with strict string match. LP accuracy uses the split's balanced positive and
negative pairs. Outputs (when ``out`` is given): OUT.json (the shared result format of
mlaga_fast.eval.report for constrained scoring, with the generation result under
extra.generation), OUT.png (confusion matrix), OUT.gen.png, OUT.md (accuracy table + per-class).

Ablations at evaluation time: ``demos`` = "none" | "random" | "ppr" overrides the run's choice.
The "raw features" ablation is a separately trained run (train --node-source raw); eval reads the
node source from the run's manifest.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass
class EvalOptions:
    task: str = "nc"
    split: str = "test"
    features: str | None = None  # default DATA/features
    demos: str | None = None  # None = as trained
    max_examples: int = 0  # 0 = every labelled node / pair of the split (seeded subsample otherwise)
    batch_size: int = 8
    generate: bool = True
    device: str = "auto"
    seed: int = 0
    method: str | None = None  # name in tables; default mlaga-<llm>[+ablation]


def _subsample(n: int, k: int, seed: int) -> np.ndarray:
    if k <= 0 or k >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng([seed, 5]).choice(n, k, replace=False))


def load_run(run_dir, device: str, llm=None):
    """(manifest, model, tokenizer, projector) of a finished Stage-2 run, checked for consistency.

    llm: an already loaded (model, tokenizer) of the same LLM, to evaluate several runs (e.g. the
    ablations) without loading the LLM again; not allowed for LoRA runs (their adapters differ)."""
    from mlaga_fast.llm.loading import LLMOptions, hidden_size, load_llm
    from mlaga_fast.models.projector import load_projector
    from mlaga_fast.train.instruct import templates_fingerprint
    from mlaga_fast.train.manifest import read_stage_manifest

    run_dir = Path(run_dir)
    man = read_stage_manifest(run_dir, "instruct")
    cfg = man["config"]
    if man.get("templates_fingerprint") != templates_fingerprint():
        raise ValueError(f"{run_dir} was trained with other prompt templates (fingerprint "
                         f"{man.get('templates_fingerprint')}, now {templates_fingerprint()}); retrain Stage 2")
    if llm is not None and not cfg.get("lora"):
        model, tok = llm
    else:
        model, tok, _ = load_llm(cfg["llm"], LLMOptions(dtype=cfg["dtype"], device=device,
                                                       flash_attn=cfg["flash_attn"]))
    H = hidden_size(model)
    if H != man["dims"]["hidden"]:
        raise ValueError(f"llm {cfg['llm']}: hidden size {H}, but the run was trained with {man['dims']['hidden']}")
    if cfg.get("lora"):
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(run_dir / "lora"))
        model.eval()
    proj = load_projector(run_dir / "projector.safetensors").to(device).eval()
    if proj.cfg.in_dim != man["dims"]["d"] or proj.cfg.out_dim != H:
        raise ValueError(f"{run_dir}/projector.safetensors dims {proj.cfg} disagree with the manifest dims")
    return man, model, tok, proj


def evaluate(run_dir, data_dir, opts: EvalOptions, out: str | Path | None = None, *, progress: bool = True,
             loaded=None) -> dict:
    """Returns the constrained-scoring result dict (generation result in extra.generation)."""
    from tqdm.auto import tqdm

    from mlaga_fast.eval.report import make_result
    from mlaga_fast.eval.scoring import match_generation, score_batch
    from mlaga_fast.prompts import TruncationPolicy
    from mlaga_fast.prompts.demos import DEMO_MODES, LinkPairs, NCDemos, ppr_demo_table
    from mlaga_fast.train.distributed import pick_device
    from mlaga_fast.train.instruct_batch import lp_examples, make_builder, nc_examples
    from mlaga_fast.train.instruct_data import demo_cache_dir, load_dataset_inputs

    if opts.task not in ("nc", "lp"):
        raise ValueError(f"task: {opts.task!r} is not one of ['nc', 'lp']")
    if opts.split not in ("val", "test", "train"):
        raise ValueError(f"split: {opts.split!r} is not one of ['train', 'val', 'test']")
    if opts.demos is not None and opts.demos not in DEMO_MODES:
        raise ValueError(f"demos: {opts.demos!r} is not one of {list(DEMO_MODES)}")
    t0 = time.time()
    device = pick_device(opts.device)
    man, model, tok, proj = loaded if loaded is not None else load_run(run_dir, str(device))
    cfg = man["config"]
    align = (man["inputs"].get("align") or {}).get("run")
    ds = load_dataset_inputs(data_dir, opts.features, source=cfg["node_source"], align_dir=align,
                             allow_unseen=True, device=str(device), progress=progress)
    if tuple(ds.tokens.shape[1:]) != (man["dims"]["nq"], man["dims"]["d"]):
        raise ValueError(f"{data_dir}: node tokens {tuple(ds.tokens.shape[1:])} do not match the run's "
                         f"(nq, d) = ({man['dims']['nq']}, {man['dims']['d']})")
    trained_on = [r["graph_fingerprint"] for r in man["inputs"]["datasets"]]
    transfer = ds.graph.fingerprint not in trained_on
    tr = man["truncation"]
    builder = make_builder(tok, ds.graph, man["dims"]["nq"],
                           TruncationPolicy(tr["max_length"], tr["target_text_tokens"], tr["demo_text_tokens"]))
    demos_mode = opts.demos or (cfg["demos"] if cfg["num_demos"] > 0 else "none")
    g = ds.graph

    if opts.task == "nc":
        nodes = np.asarray(getattr(g, opts.split), dtype=np.int64)
        nodes = nodes[np.asarray(g.labels)[nodes] >= 0]
        nodes = nodes[_subsample(nodes.size, opts.max_examples, opts.seed)]
        table = (ppr_demo_table(g, k=cfg["ppr_k"], alpha=cfg["ppr_alpha"], eps=cfg["ppr_eps"],
                                cache_dir=demo_cache_dir(ds), progress=progress) if demos_mode == "ppr" else None)
        demos = NCDemos(g, demos_mode, cfg["num_demos"], opts.seed, table)
        examples = nc_examples(g, builder, nodes, demos, with_label=False)
        cands, names = builder.nc_answers, list(g.class_names)
    else:
        if opts.split == "train":
            raise ValueError("split: LP evaluation uses the val or test pairs")
        links = LinkPairs(g, seed=opts.seed)
        pairs, y = links.eval_pairs(opts.split)
        # Subsample positives and negatives separately so the pairs stay balanced.
        pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
        half = opts.max_examples // 2 if opts.max_examples > 0 else 0
        keep = np.concatenate([pos[_subsample(pos.size, half, opts.seed)], neg[_subsample(neg.size, half, opts.seed + 1)]])
        use_demo = cfg.get("lp_demo", True) and demos_mode != "none"
        examples = lp_examples(builder, pairs[:, keep], y[keep], links if use_demo else None, with_label=False)
        cands, names = builder.lp_answers, ["No", "Yes"]
    if not examples:
        raise ValueError(f"{data_dir}: no {opts.task} examples in split {opts.split!r}")

    cand_text = [tok.decode(c[:-1], skip_special_tokens=True).strip() for c in cands]
    y_true = np.array([ex.target for ex in examples], dtype=np.int64)
    y_con = np.empty_like(y_true)
    y_gen = np.full_like(y_true, -1)
    for lo in tqdm(range(0, len(examples), opts.batch_size), desc=f"eval {opts.task}", disable=not progress):
        chunk = examples[lo:lo + opts.batch_size]
        scores, gen = score_batch(model, proj, chunk, [ds.tokens], cands, tok.pad_token_id, tok.eos_token_id,
                                  device, generate=opts.generate)
        y_con[lo:lo + len(chunk)] = scores.argmax(1).numpy()
        if gen is not None:
            y_gen[lo:lo + len(chunk)] = [match_generation(tok, gi, cand_text, tok.eos_token_id) for gi in gen]

    method = opts.method or _method_name(cfg, demos_mode)
    info = {"run": str(Path(run_dir).resolve()), "demos": demos_mode, "node_source": cfg["node_source"],
            "num_demos": cfg["num_demos"], "llm": cfg["llm"], "transfer": transfer,
            "trained_on": [r["name"] for r in man["inputs"]["datasets"]], "options": asdict(opts),
            "chance": _chance(y_true, len(names))}
    gen_res = make_result(task=opts.task, method=method + " (generation)", dataset=g.name, y_true=y_true,
                          y_pred=y_gen, class_names=names, split=opts.split, extra=dict(info))
    info.update(generation=gen_res if opts.generate else None, wall_s=round(time.time() - t0, 2))
    res = make_result(task=opts.task, method=method, dataset=g.name, y_true=y_true, y_pred=y_con,
                      class_names=names, split=opts.split, extra=info)
    if out is not None:
        write_outputs(res, out)
    return res


def _chance(y_true: np.ndarray, c: int) -> float:
    """Accuracy of always answering the most frequent class of this evaluation set."""
    return float(np.bincount(y_true, minlength=c).max() / max(y_true.size, 1))


def _method_name(cfg: dict, demos_mode: str) -> str:
    name = f"mlaga-{Path(str(cfg['llm'])).name}"
    if cfg["node_source"] == "raw":
        name += "+raw-features"
    if demos_mode != cfg["demos"]:
        name += f"+{demos_mode}-demos"
    return name


def write_outputs(res: dict, out: str | Path) -> None:
    from mlaga_fast.eval.report import plot_confusion, results_table_markdown, write_result_json
    from mlaga_fast.utils.io import atomic_write_text

    out = Path(out)
    # FILE.json -> FILE.json, FILE.png, FILE.gen.png, FILE.md; only a final ".json" is replaced, so
    # dotted names such as "run.lp.json" keep every part.
    stem = out.with_name(out.name[:-len(".json")] if out.name.endswith(".json") else out.name)

    def sibling(suffix: str) -> Path:
        return stem.with_name(stem.name + suffix)

    write_result_json(sibling(".json"), res)
    plot_confusion(res, sibling(".png"))
    gen = res["extra"].get("generation")
    rows = [res] + ([gen] if gen else [])
    if gen:
        plot_confusion(gen, sibling(".gen.png"))
    md = [f"# {res['method']} on {res['dataset']} ({res['task'].upper()}, {res['split']})", "",
          results_table_markdown(rows),
          f"Chance (majority class): {100 * res['extra']['chance']:.2f}%; examples: {res['num_examples']}; "
          f"generation answers that matched no class: {gen['num_invalid'] if gen else '-'}", "",
          "| class | constrained | generation |", "|---|---:|---:|"]
    for name, acc in res["per_class_accuracy"].items():
        g = gen["per_class_accuracy"].get(name) if gen else None
        md.append(f"| {name} | {_pct(acc)} | {_pct(g)} |")
    atomic_write_text(sibling(".md"), "\n".join(md) + "\n")


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.2f}"

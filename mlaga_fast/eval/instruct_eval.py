"""Evaluate a Stage-2 run on a dataset (seen or unseen: transfer needs no tuning) for NC or LP.

Protocols:
- ``constrained`` (default): the argmax log-likelihood over every class name (NC) or over Yes/No (LP);
  it can never fail to parse. With ``generate`` the free (greedy) generation is scored too, by strict
  string match, and its answers are saved.
- ``paper``: the released evaluation: sampled generation at temperature 0.2 (seeded here, so it
  reproduces), NC correct when the lower-cased answer equals the class name, LP "Yes" when the answer
  contains "Yes".
LP uses the split's balanced positive and negative pairs.

Outputs (when ``out`` is given): OUT.json (the shared result format of mlaga_fast.eval.report, the
generation result under extra.generation), OUT.png (confusion matrix), OUT.gen.png, OUT.gen.jsonl (every
generated answer with its query and truth) and OUT.md (accuracy table + per-class).

Ablations at evaluation time: ``demos`` = "none" | "random" | "ppr" overrides the run's choice. The
"raw features" ablation is a separately trained run (train --node-source raw).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mlaga_fast.assistant import MLaGA
from mlaga_fast.data import load
from mlaga_fast.eval.report import make_result, plot_confusion, results_table_markdown, write_result_json
from mlaga_fast.features.extract import graph_fingerprint
from mlaga_fast.features.source import is_online
from mlaga_fast.features.store import read_manifest
from mlaga_fast.prompts.answers import answer_text, match_generation, match_paper_protocol
from mlaga_fast.prompts.demos import DEMO_MODES, LinkPairs
from mlaga_fast.runs.card import write_model_card
from mlaga_fast.utils.io import atomic_write_text

PROTOCOLS = ("constrained", "paper")
CALIBRATIONS = ("none", "mean")  # mean: NC option scores minus their mean over the evaluated nodes (no label used)
TASKS = ("nc", "lp", "describe")  # describe: generated node descriptions, scored by whether they name the category
WORDINGS = ("trained", "held-out")
DESCRIPTION_TOKENS = 16  # longest generated description (the category comes first, then the title)
PAPER_TEMPERATURE = 0.2


@dataclass
class EvalOptions:
    task: str = "nc"
    split: str = "test"
    features: str | None = None  # default DATA/features
    demos: str | None = None  # None = as trained
    max_examples: int = 0  # 0 = every labelled node / pair of the split (seeded subsample otherwise)
    batch_size: int = 8
    generate: bool = False  # also score free (greedy) generation
    protocol: str = "constrained"
    device: str = "auto"
    seed: int = 0
    method: str | None = None  # name in tables; default mlaga-<llm>[+ablation]
    wording: str = "trained"  # the task's own prompt, or ask's layout with the held-out wordings (never trained on)
    verify: bool = True  # check the run's checksums when loading it (False: --no-verify)
    calibrate: str = "none"  # NC: "mean" also reports the constrained reading calibrated (calibrate_scores)

    def validate(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task: {self.task!r} is not one of {list(TASKS)}")
        if self.wording not in WORDINGS:
            raise ValueError(f"wording: {self.wording!r} is not one of {list(WORDINGS)}")
        if self.task == "describe" and self.protocol != "constrained":
            raise ValueError("protocol: descriptions are free generation already; use the default protocol")
        if self.split not in ("val", "test", "train"):
            raise ValueError(f"split: {self.split!r} is not one of ['train', 'val', 'test']")
        if self.task == "lp" and self.split == "train":
            raise ValueError("split: LP evaluation uses the val or test pairs")
        if self.demos is not None and self.demos not in DEMO_MODES:
            raise ValueError(f"demos: {self.demos!r} is not one of {list(DEMO_MODES)}")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol: {self.protocol!r} is not one of {list(PROTOCOLS)}")
        if self.calibrate not in CALIBRATIONS:
            raise ValueError(f"calibrate: {self.calibrate!r} is not one of {list(CALIBRATIONS)}")
        if self.calibrate != "none" and (self.task != "nc" or self.protocol != "constrained"):
            raise ValueError("calibrate: only NC's constrained scores are calibrated (--task nc, --protocol "
                             "constrained)")
        if self.batch_size < 1 or self.max_examples < 0:
            raise ValueError("batch_size must be >= 1 and max_examples >= 0")


def _subsample(n: int, k: int, seed: int) -> np.ndarray:
    if k <= 0 or k >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng([seed, 5]).choice(n, k, replace=False))


def calibrate_scores(scores: np.ndarray) -> np.ndarray:
    """[N, C] option scores minus each option's mean over the N evaluated nodes. A label-free correction of the
    LLM's prior toward some names, which on category names it never saw can outweigh the node (on toys 9-16 the
    uncalibrated zero-shot reading put most nodes on two of eight names): each name is then read relative to
    how strongly it is preferred on average. Uses the scored set itself, so it needs a batch of nodes, not one.
    Measured in docs/transfer.md."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[0] < 2:
        raise ValueError(f"calibrate: needs scores of at least 2 nodes, [N, C]; got shape {scores.shape}")
    return scores - scores.mean(axis=0, keepdims=True)


def eval_examples(m, ds, opts: EvalOptions) -> list:
    """The labelled prompts of the split (a seeded, class-balanced-for-LP subsample when asked)."""
    g = ds.graph
    if opts.task in ("nc", "describe"):
        nodes = np.asarray(getattr(g, opts.split), dtype=np.int64)
        nodes = nodes[np.asarray(g.labels)[nodes] >= 0]
        nodes = nodes[_subsample(nodes.size, opts.max_examples, opts.seed)]
        if opts.task == "describe":
            return m.description_examples(ds, nodes, m.questions("describe", opts.wording, len(nodes)))
        questions = m.questions("nc", opts.wording, len(nodes)) if opts.wording == "held-out" else None
        return m.nc_examples(ds, nodes, opts.demos, opts.seed, questions=questions)
    pairs, y = LinkPairs(g, seed=opts.seed).eval_pairs(opts.split)
    # Subsample positives and negatives separately so the pairs stay balanced.
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    half = opts.max_examples // 2 if opts.max_examples > 0 else 0
    keep = np.concatenate([pos[_subsample(pos.size, half, opts.seed)], neg[_subsample(neg.size, half, opts.seed + 1)]])
    questions = m.questions("lp", opts.wording, keep.size) if opts.wording == "held-out" else None
    examples = m.lp_examples(ds, pairs[:, keep], opts.demos, opts.seed, questions=questions)
    for ex, t in zip(examples, y[keep]):
        ex.target = int(t)
    return examples


def check_inputs(data_dir, features) -> None:
    """Fail fast, with the loaders' one-line errors, on a dataset or features folder that cannot be read
    (online features are checked when the encoder is loaded)."""
    load(data_dir)
    if not is_online(features):
        read_manifest(Path(features) if features else Path(data_dir) / "features")


def evaluate(run_dir, data_dir, opts: EvalOptions, out: str | Path | None = None, *, progress: bool = True,
             loaded=None) -> dict:
    """Returns the result dict (constrained scoring, or the paper protocol; generation under extra)."""
    opts.validate()
    t0 = time.time()
    if loaded is None:  # the dataset and its features are checked before the LLM is loaded
        check_inputs(data_dir, opts.features)
    m = loaded if loaded is not None else MLaGA.from_pretrained(run_dir, device=opts.device, progress=progress,
                                                                    verify=opts.verify)
    ds = m.dataset(data_dir, opts.features, progress=progress)
    examples = eval_examples(m, ds, opts)
    if not examples:
        raise ValueError(f"{data_dir}: no {opts.task} examples in split {opts.split!r}")
    cfg = m.config
    demos_mode = opts.demos or (cfg["demos"] if cfg["num_demos"] > 0 else "none")
    if opts.task == "describe":
        return _evaluate_descriptions(m, ds, examples, opts, t0)
    names = list(ds.graph.class_names) if opts.task == "nc" else ["No", "Yes"]
    paper = opts.protocol == "paper"
    gen_on = opts.generate or paper
    scores, gens = m.score(ds, examples, batch_size=opts.batch_size, generate=gen_on,
                           temperature=PAPER_TEMPERATURE if paper else 0.0, seed=opts.seed, progress=progress)
    y_true = np.array([ex.target for ex in examples], dtype=np.int64)
    y_con = scores.argmax(1)
    eos = m.tokenizer.eos_token_id
    if gen_on:
        match = ((lambda g: match_paper_protocol(m.tokenizer, g, names, eos, opts.task)) if paper
                 else (lambda g: match_generation(m.tokenizer, g, names, eos)))
        y_gen = np.array([match(g) for g in gens], dtype=np.int64)

    method = opts.method or _method_name(cfg, demos_mode) + (" (unseen wordings)" if opts.wording == "held-out" else "")
    info = {"run": str(Path(m.run_dir).resolve()), "demos": demos_mode, "node_source": cfg["node_source"],
            "num_demos": cfg["num_demos"], "llm": cfg["llm"], "transfer": m.is_transfer(ds),
            "graph_fingerprint": graph_fingerprint(ds.graph, ds.dir),
            "protocol": opts.protocol, "trained_on": [r["name"] for r in m.manifest["inputs"]["datasets"]],
            "options": asdict(opts), "chance": _chance(y_true, len(names))}
    gen_res = None
    if gen_on:
        gen_name = method + (" (paper protocol)" if paper else " (generation)")
        gen_res = make_result(task=opts.task, method=gen_name, dataset=ds.graph.name, y_true=y_true, y_pred=y_gen,
                              class_names=names, split=opts.split, extra=dict(info))
    con_res = make_result(task=opts.task, method=method, dataset=ds.graph.name, y_true=y_true, y_pred=y_con,
                          class_names=names, split=opts.split, extra=dict(info))
    res = gen_res if paper else con_res
    res["extra"].update(generation=None if paper else gen_res, constrained=con_res if paper else None,
                        wall_s=round(time.time() - t0, 2))
    if opts.calibrate != "none":  # the same scores, read relative to each option's mean
        res["extra"]["calibrated"] = make_result(
            task=opts.task, method=method + " (calibrated)", dataset=ds.graph.name, y_true=y_true,
            y_pred=calibrate_scores(scores).argmax(1), class_names=names, split=opts.split,
            extra={**info, "calibration": opts.calibrate})
    res["extra"]["integrity"] = m.integrity
    _record(m.run_dir, res, opts)
    if out is not None:
        answers = ([{"query": list(ex.query), "target": names[int(t)], "answer": answer_text(m.tokenizer, g, eos),
                     "prediction": names[int(p)] if p >= 0 else None}
                    for ex, t, g, p in zip(examples, y_true, gens, y_gen)] if gen_on else None)
        write_outputs(res, out, answers)
    return res


def _evaluate_descriptions(m, ds, examples: list, opts: EvalOptions, t0: float) -> dict:
    """Generated node descriptions, greedy: correct when the answer names the node's category (case-insensitive),
    reported in the NC column (its classes) with the descriptions under extra.answers."""
    names = list(ds.graph.class_names)
    _, gens = m.score(ds, examples, batch_size=opts.batch_size, generate=True, seed=opts.seed,
                      max_new_tokens=DESCRIPTION_TOKENS, candidates=False)
    texts = [answer_text(m.tokenizer, g, m.tokenizer.eos_token_id) for g in gens]
    y_true = np.array([ex.target for ex in examples], dtype=np.int64)
    y_pred = np.array([t if names[t].lower() in text.lower() else -1 for t, text in zip(y_true, texts)], np.int64)
    method = opts.method or _method_name(m.config, "none") + " description names the category"
    info = {"run": str(Path(m.run_dir).resolve()), "kind": "describe", "wording": opts.wording,
            "transfer": m.is_transfer(ds), "graph_fingerprint": graph_fingerprint(ds.graph, ds.dir),
            "protocol": "generation", "trained_on": [r["name"] for r in m.manifest["inputs"]["datasets"]],
            "options": asdict(opts), "chance": 0.0, "demos": "none",
            "answers": [{"node": ex.query[0], "category": names[t], "answer": a}
                        for ex, t, a in zip(examples, y_true, texts)], "wall_s": round(time.time() - t0, 2),
            "integrity": m.integrity}
    res = make_result(task="nc", method=method, dataset=ds.graph.name, y_true=y_true, y_pred=y_pred,
                      class_names=names, split=opts.split, extra=info)
    _record(m.run_dir, res, opts)
    return res


def _record(run_dir: Path, res: dict, opts: EvalOptions) -> None:
    """Append the result's summary to RUN2/evaluations.jsonl and refresh the model card (best effort: a
    read-only run folder only loses this record)."""
    rec = {"dataset": res["dataset"], "task": res["task"], "split": res["split"], "protocol": opts.protocol,
           "demos": res["extra"]["demos"], "method": res["method"], "accuracy": res["accuracy"],
           "num_examples": res["num_examples"], "transfer": res["extra"]["transfer"],
           "integrity": res["extra"]["integrity"]}
    path = Path(run_dir) / "evaluations.jsonl"
    try:
        old = path.read_text(encoding="utf-8") if path.is_file() else ""
        atomic_write_text(path, old + json.dumps(rec) + "\n")
        write_model_card(run_dir)
    except OSError:
        pass


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


def write_outputs(res: dict, out: str | Path, answers: list[dict] | None = None) -> None:
    out = Path(out)
    # FILE.json -> FILE.json, FILE.png, FILE.gen.png, FILE.gen.jsonl, FILE.md; only a final ".json" is
    # replaced, so dotted names such as "run.lp.json" keep every part.
    stem = out.with_name(out.name[:-len(".json")] if out.name.endswith(".json") else out.name)

    def sibling(suffix: str) -> Path:
        return stem.with_name(stem.name + suffix)

    write_result_json(sibling(".json"), res)
    plot_confusion(res, sibling(".png"))
    gen = res["extra"].get("generation")
    rows = [res] + ([gen] if gen else [])
    if gen:
        plot_confusion(gen, sibling(".gen.png"))
    if answers is not None:
        atomic_write_text(sibling(".gen.jsonl"), "".join(json.dumps(a) + "\n" for a in answers))
    md = [f"# {res['method']} on {res['dataset']} ({res['task'].upper()}, {res['split']})", "",
          results_table_markdown(rows),
          f"Chance (majority class): {100 * res['extra']['chance']:.2f}%; examples: {res['num_examples']}; "
          f"generated answers that matched no class: {gen['num_invalid'] if gen else res['num_invalid']}", "",
          "| class | accuracy | generation |", "|---|---:|---:|"]
    for name, acc in res["per_class_accuracy"].items():
        g = gen["per_class_accuracy"].get(name) if gen else None
        md.append(f"| {name} | {_pct(acc)} | {_pct(g)} |")
    atomic_write_text(sibling(".md"), "\n".join(md) + "\n")


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.2f}"

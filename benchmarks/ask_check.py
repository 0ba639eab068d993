"""``ask`` as a user calls it, on test nodes: does the LLM answer, and does the answer name the node's category?

    python benchmarks/ask_check.py RUN2 DATA [--features DIR] [--nodes 50] [--seed 0]

RUN2 is a finished Stage-2 run (the demo's ``demo_out/runs/instruct``), DATA its catalogue (``demo_out/data``).
For ``--nodes`` seeded test nodes, ``MLaGA.ask`` is asked three kinds of free question, each cycling through
its wordings node by node:

- ``asks for the category``: the templates' held-out NC wordings (never in a training prompt);
- ``free description``: the templates' held-out description wordings (never in a training prompt);
- ``readme``: the README's example, "What kind of product is this?".

Reported per kind: the share of nodes where the LLM answered on its own (``ask`` did not fall back to the
run's constrained reading, which it marks in brackets), the share of non-empty answers (``ask`` never returns
an empty string, so this must be 100%), and the share naming the node's category (case-insensitive). The
reference is the node's label in DATA. Results: stdout and, with --out, a JSON file with every answer.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from mlaga_fast.assistant import NO_FREE_ANSWER, MLaGA
from mlaga_fast.prompts.builder import load_templates
from mlaga_fast.prompts.examples import cycle_wordings

README_QUESTION = "What kind of product is this?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("data")
    ap.add_argument("--features", default=None)
    ap.add_argument("--nodes", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="JSON file for every answer")
    args = ap.parse_args()
    if args.nodes < 1:
        raise SystemExit(f"ask_check: --nodes must be at least 1, got {args.nodes}")

    try:
        m = MLaGA.from_pretrained(args.run, device="cpu", progress=False)
        ds = m.dataset(args.data, args.features)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"ask_check: {e}")
    test = np.asarray(ds.graph.test, dtype=np.int64)
    if test.size == 0:
        raise SystemExit(f"ask_check: {args.data} has no test nodes")
    rng = np.random.default_rng(args.seed)
    nodes = np.sort(rng.choice(test, size=min(args.nodes, test.size), replace=False))  # [n]
    labels = np.asarray(ds.graph.labels)
    names = list(ds.graph.class_names)
    words = load_templates()["wordings"]
    kinds = {"asks for the category": cycle_wordings(words["nc_held_out"], nodes.size),
             "free description": cycle_wordings(words["describe_held_out"], nodes.size),
             "readme": [README_QUESTION] * nodes.size}
    trained = m.manifest.get("wordings", {}).get("trained", {})
    print(f"run {args.run}: trained wordings "
          f"{ {k: len(v) for k, v in trained.items()} if trained else 'none (one prompt per task)'}; "
          f"{nodes.size} test nodes of {args.data}")
    report = {"run": str(Path(args.run).resolve()), "data": str(Path(args.data).resolve()), "nodes": nodes.tolist(),
              "kinds": {}}
    print(f"{'question':<24} {'LLM answered':>13} {'non-empty':>10} {'names the category':>19}")
    for kind, questions in kinds.items():
        rows = []
        for node, q in zip(nodes.tolist(), questions):
            answer = m.ask(args.data, node, q, features=args.features, seed=args.seed)
            truth = names[int(labels[node])]
            rows.append({"node": node, "question": q, "answer": answer, "category": truth,
                         "own": NO_FREE_ANSWER not in answer, "names": truth.lower() in answer.lower()})
        share = {k: 100.0 * np.mean([r[k] for r in rows]) for k in ("own", "names")}
        nonempty = 100.0 * np.mean([bool(r["answer"].strip()) for r in rows])
        print(f"{kind:<24} {share['own']:>12.1f}% {nonempty:>9.1f}% {share['names']:>18.1f}%")
        report["kinds"][kind] = {"llm_answered": share["own"], "non_empty": nonempty,
                                 "names_category": share["names"], "answers": rows}
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

"""What NC can reach from the categories of its PPR demonstrations alone: the ceiling of the compact NC prompt,
which shows its demonstrations by their category names only (``Related items: Dolls; Dolls; Puzzles;``).

    python benchmarks/transfer_votes.py DATA [DATA ...] [--demos 1,3,5,8] [--nodes 200] [--seed 0]

For each dataset (a source catalogue, or the targets of ``mlaga-fast demo --transfer``) and each number of
demonstrations m, on the test nodes the evaluation scores (the same seeded sample of ``--nodes``), it prints
the accuracy of the demonstrations' majority category (ties go to the most relevant one, as the prompt lists
them) and how often the node's own category is among them. PPR settings are the demo's (``InstructConfig``).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from mlaga_fast.data import load
from mlaga_fast.eval.instruct_eval import _subsample
from mlaga_fast.prompts.demos import NCDemos, ppr_demo_table
from mlaga_fast.train.instruct_config import InstructConfig


def votes(data: Path, ms: list[int], nodes: int, seed: int) -> list[tuple[int, float, float]]:
    """[(m, majority accuracy, truth among the m)] on the evaluation's test nodes of ``data``."""
    g = load(data)
    labels = np.asarray(g.labels)
    cfg = InstructConfig()
    table = ppr_demo_table(g, k=max(ms + [cfg.ppr_k]), alpha=cfg.ppr_alpha, eps=cfg.ppr_eps, cache_dir=None,
                           progress=False)
    test = np.asarray(g.test, dtype=np.int64)
    test = test[labels[test] >= 0]
    test = test[_subsample(test.size, nodes, seed)]
    rows = []
    for m in ms:
        demos = NCDemos(g, "ppr", m, seed, table)
        hit, among = [], []
        for v in test.tolist():
            _, ys = demos(v)
            if not ys:
                hit.append(False), among.append(False)
                continue
            count = np.bincount(ys)
            pick = next(y for y in ys if count[y] == count.max())  # ties: the most relevant first
            hit.append(pick == labels[v]), among.append(labels[v] in ys)
        rows.append((m, 100 * float(np.mean(hit)), 100 * float(np.mean(among))))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", type=Path, nargs="+", help="dataset folders")
    ap.add_argument("--demos", default="1,3,5,8", help="numbers of demonstrations, comma-separated")
    ap.add_argument("--nodes", type=int, default=200, help="test nodes (the evaluation's seeded sample)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    ms = [int(x) for x in args.demos.split(",")]
    print("| dataset | demonstrations | majority category (%) | the node's category among them (%) |")
    print("|---|---:|---:|---:|")
    for d in args.data:
        for m, acc, among in votes(d, ms, args.nodes, args.seed):
            print(f"| {d.name} | {m} | {acc:.1f} | {among:.1f} |")


if __name__ == "__main__":
    main()

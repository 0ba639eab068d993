"""Zero-shot link prediction by similarity alone: how much of a catalogue's LP signal survives a move to a
graph no model was trained on, in the raw features and in a Stage-1 aligner's vectors.

    python benchmarks/lp_similarity.py --source DATA [--target DATA ...] [--align RUN ...] [--run RUN ...]
                                       [--max-pairs 0] [--seed 0]

Every dataset needs a ``features/`` folder (as ``mlaga-fast demo`` and ``demo --transfer`` leave them). For
each dataset, its balanced LP test pairs (``LinkPairs(graph, seed).eval_pairs("test")``, the pairs the
evaluations score) are scored by the cosine of two node vectors:

- ``raw``: the frozen encoders' pooled features (``FeatureStore.pooled``: image and text token means), each
  modality centred on the dataset's own mean (no label used) and scaled to unit length;
- ``raw smoothed``: the same, averaged half and half with the mean of the node's neighbours in the
  training graph (validation and test links removed), a parameter-free propagation;
- ``aligner RUN``: the pooled vectors of a Stage-1 run (``encode_all``), trained on the source or on a mix.

A pair is called linked when its cosine is above a threshold fitted on the *source's* validation pairs, so a
target is scored exactly as a zero-shot model would be. None of these is MLaGA; they show whether a notion of
similarity transfers at all. ``--run`` adds a Stage-2 run as a scorer (``MLaGA.predict_lp``, no
demonstrations): its AUC from the margin log P(Yes) - log P(No), its accuracy from its own answers. Prints AUC
and accuracy (%) per dataset and scorer; ``--max-pairs N`` scores a seeded sample of N test pairs per dataset.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.metrics import roc_auc_score

from mlaga_fast.assistant import MLaGA
from mlaga_fast.data import load
from mlaga_fast.features import FeatureStore
from mlaga_fast.models.aligner import Aligner
from mlaga_fast.models.encode import encode_all
from mlaga_fast.prompts.demos import LinkPairs


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def vectors(data_dir: Path, aligners: dict[str, object]) -> dict[str, np.ndarray]:
    """{scorer: unit vectors [N, D]} of one dataset."""
    g = load(data_dir)
    store = FeatureStore(data_dir / "features")
    pooled = store.pooled().astype(np.float64)  # [N, Di + Dt]: image token mean, then text token mean
    # each modality centred on the dataset's mean and scaled to unit length, so both weigh the same
    raw = np.concatenate([_unit(m - m.mean(0)) for m in np.split(pooled, [store.image_dim], axis=1) if m.shape[1]],
                         axis=1)
    raw = _unit(raw)
    indptr, indices = g.train_graph()
    n = g.num_nodes
    adj = sp.csr_matrix((np.ones(len(indices)), np.asarray(indices), np.asarray(indptr)), shape=(n, n))
    deg = np.asarray(adj.sum(1)).ravel()
    mean_nbr = sp.diags(1.0 / np.maximum(deg, 1)) @ adj @ raw  # [N, D]; an isolated node keeps only itself
    out = {"raw": raw, "raw smoothed": _unit(np.where(deg[:, None] > 0, 0.5 * raw + 0.5 * mean_nbr, raw))}
    for name, model in aligners.items():
        _, pooled = encode_all(model, store, device="cpu")
        out[f"aligner {name}"] = _unit(pooled.astype(np.float64))
    return out


def pair_scores(data_dir: Path, aligners: dict, runs: dict, seed: int,
                max_pairs: int = 0) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """{split: {scorer: (scores [P], labels [P])}} for the val and test pairs of one dataset (the Stage-2 runs on
    the test pairs only)."""
    g = load(data_dir)
    vec = vectors(data_dir, aligners)
    links = LinkPairs(g, seed=seed)
    out = {}
    for split in ("val", "test"):
        (a, b), y = links.eval_pairs(split)
        y = np.asarray(y)
        if split == "test" and 0 < max_pairs < len(y):
            keep = np.sort(np.random.default_rng(seed).choice(len(y), max_pairs, replace=False))
            a, b, y = a[keep], b[keep], y[keep]
        out[split] = {k: ((v[a] * v[b]).sum(1), y) for k, v in vec.items()}
        if split == "test":
            for name, model in runs.items():
                pred = model.predict_lp(data_dir, np.stack([a, b]), features=data_dir / "features", demos="none",
                                        batch_size=32, seed=seed)
                out[split][f"MLaGA {name}"] = (pred.scores[:, 1] - pred.scores[:, 0], y)  # log P(Yes) - log P(No)
    return out


def _short(run: str) -> str:
    """A run's name in the table: its last two folders (demo_out/runs/align -> runs/align)."""
    return "/".join(Path(run).resolve().parts[-2:])


def best_threshold(s: np.ndarray, y: np.ndarray) -> float:
    """The cosine cut that maximises accuracy on (s, y): scanned over the scores' quantiles."""
    cuts = np.quantile(s, np.linspace(0.005, 0.995, 199))
    return float(cuts[np.argmax([((s > c) == y).mean() for c in cuts])])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", required=True, type=Path, help="the dataset the thresholds are fitted on")
    ap.add_argument("--target", type=Path, action="append", default=[], help="a dataset scored zero-shot")
    ap.add_argument("--align", action="append", default=[], help="a finished Stage-1 run (repeatable)")
    ap.add_argument("--run", action="append", default=[], help="a finished Stage-2 run (repeatable)")
    ap.add_argument("--max-pairs", type=int, default=0, help="test pairs per dataset (0: all)")
    ap.add_argument("--seed", type=int, default=0, help="the evaluation's pair seed")
    args = ap.parse_args()
    aligners = {_short(r): Aligner.from_pretrained(r) for r in args.align}
    runs = {_short(r): MLaGA.from_pretrained(r, device="cpu", progress=False) for r in args.run}
    if len(aligners) < len(args.align) or len(runs) < len(args.run):
        raise SystemExit("--align / --run: two runs end in the same two folder names; give distinct runs")
    src = pair_scores(args.source, aligners, runs, args.seed, args.max_pairs)
    cuts = {k: best_threshold(*v) for k, v in src["val"].items()}
    cuts.update({f"MLaGA {name}": 0.0 for name in runs})  # a run answers Yes when P(Yes) > P(No)
    print(f"{'dataset':<28} {'scorer':<32} {'AUC':>6} {'acc %':>6}")
    for d in [args.source] + args.target:
        test = (src if d == args.source else pair_scores(d, aligners, runs, args.seed, args.max_pairs))["test"]
        label = f"source {d.name}" if d == args.source else d.name
        for k, (s, y) in test.items():
            print(f"{label:<28} {k:<32} {roc_auc_score(y, s):6.3f} {100 * ((s > cuts[k]) == y).mean():6.2f}")


if __name__ == "__main__":
    main()

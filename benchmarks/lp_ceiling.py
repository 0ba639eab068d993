"""How well can *any* model do on a catalogue's LP test pairs? Two oracles that read the true labels.

    python benchmarks/lp_ceiling.py DATA [DATA ...] [--seed 0]

For each dataset (a ``data synth`` catalogue, a dressed MAGB graph, anything ``mlaga_fast.data.load`` reads),
the balanced test pairs the evaluation scores (``LinkPairs(graph, seed).eval_pairs("test")``, the pairs
``mlaga-fast eval --task lp`` and the demo's transfer rows draw from) are answered by:

- ``same label``: "linked" exactly when both nodes carry the same true label. A model that recognises every
  node's category perfectly, and nothing else, reaches this.
- ``label + degree``: a logistic regression on [same label, log degrees, their product, same label x log
  degrees], fitted on the validation pairs and scored on the test pairs (degrees in the training graph, test
  and validation links removed). The synthetic catalogues draw links from a degree-corrected block model, so
  beyond the labels only the degrees carry signal; this is close to the Bayes rate there.

Neither oracle is a method (both read the test nodes' labels); they bound what zero-shot LP on an unseen
category set can reach. Prints one line per dataset: the pairs, the share of positive and of negative pairs
that join same-label nodes, and both accuracies (%).
"""
from __future__ import annotations

import argparse

import numpy as np
from sklearn.linear_model import LogisticRegression

from mlaga_fast.data import load
from mlaga_fast.prompts.demos import LinkPairs


def pair_features(y: np.ndarray, deg: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """[n_pairs, 4]: same label, log-degree sum, log-degree product, same label x log-degree sum."""
    a, b = pairs
    same = (y[a] == y[b]).astype(float)
    la, lb = np.log1p(deg[a]), np.log1p(deg[b])
    return np.stack([same, la + lb, la * lb, same * (la + lb)], axis=1)


def ceilings(data_dir: str, seed: int = 0) -> dict:
    g = load(data_dir)
    y = np.asarray(g.labels)
    indptr, _ = g.train_graph()
    deg = np.diff(np.asarray(indptr)).astype(float)
    links = LinkPairs(g, seed=seed)
    (pv, tv), (pt, tt) = links.eval_pairs("val"), links.eval_pairs("test")
    same = y[pt[0]] == y[pt[1]]
    clf = LogisticRegression(max_iter=1000).fit(pair_features(y, deg, pv), tv)
    return {"dataset": g.name, "pairs": int(tt.size), "pos_same": float(same[tt == 1].mean()),
            "neg_same": float(same[tt == 0].mean()), "same_label": float((same == (tt == 1)).mean()),
            "label_degree": float((clf.predict(pair_features(y, deg, pt)) == tt).mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", nargs="+", help="dataset directories")
    ap.add_argument("--seed", type=int, default=0, help="the evaluation's pair seed")
    args = ap.parse_args()
    print(f"{'dataset':<28} {'pairs':>6} {'pos same':>9} {'neg same':>9} {'same label':>11} {'label+degree':>13}")
    for d in args.data:
        try:
            r = ceilings(d, args.seed)
        except (OSError, ValueError) as e:
            raise SystemExit(f"lp_ceiling: {d}: {e}") from None
        print(f"{r['dataset']:<28} {r['pairs']:>6} {r['pos_same']:>9.2f} {r['neg_same']:>9.2f} "
              f"{100 * r['same_label']:>11.2f} {100 * r['label_degree']:>13.2f}")


if __name__ == "__main__":
    main()

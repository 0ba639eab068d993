"""Training and evaluation of the baselines for node classification (NC) and link prediction (LP).

Both tasks train full-batch on the training graph (graph.train_graph(): val/test positive edges
removed), select the epoch with the best validation score, and report test results in the shared
format of mlaga_fast.eval.report, so they line up with Stage 2's `eval`.

NC: cross-entropy on graph.train nodes; model selection by val accuracy.
LP: an encoder plus an EdgeScorer, trained with binary cross-entropy on link_split.train_pos
against uniformly sampled non-edges of the training graph (fresh each epoch); model selection by
val AUC; the decision threshold is the one maximising accuracy on the balanced val_pos/val_neg,
then applied to test_pos/test_neg. AUC is reported too.
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mlaga_fast.baselines.config import BaselineConfig
from mlaga_fast.baselines.labelprop import label_propagation
from mlaga_fast.baselines.models import EdgeScorer, build_encoder, graph_operand
from mlaga_fast.data.graph import pairs_in_csr
from mlaga_fast.eval.report import make_result


# ----------------------------------------------------------------------------- metrics


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve = P(score of a random positive > a random negative), ties 1/2.

    Computed from average ranks (Mann-Whitney U), O(n log n).
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("labels: AUC needs at least one positive and one negative")
    order = np.argsort(scores, kind="mergesort")
    s = scores[order]
    ranks = np.empty(len(s), dtype=np.float64)
    # Tied scores share the mean of the ranks they span.
    start = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    end = np.r_[start[1:], len(s)]
    mean_rank = (start + end + 1) / 2.0  # 1-based ranks start+1 .. end
    ranks[order] = np.repeat(mean_rank, end - start)
    u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def best_threshold(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Threshold t maximising accuracy of (score > t) against 0/1 labels; returns (t, accuracy).

    Candidates are midpoints between consecutive distinct scores plus one below the minimum
    (everything positive); ties between candidates go to the smallest t.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    if scores.size == 0:
        raise ValueError("scores: empty")
    order = np.argsort(scores, kind="mergesort")
    s, y = scores[order], labels[order]
    # Cutting after sorted position i (predict positive for positions > i): correct =
    # negatives at or below i + positives above i.
    neg_le = np.cumsum(~y)
    pos_gt = int(y.sum()) - np.cumsum(y)
    last_of_value = np.r_[s[1:] != s[:-1], True]  # only cut between distinct values
    correct = np.r_[int(y.sum()), (neg_le + pos_gt)[last_of_value]]
    cuts = np.r_[s[0] - 1.0, np.r_[(s[1:] + s[:-1]) / 2.0, s[-1] + 1.0][last_of_value]]
    k = int(np.argmax(correct))
    return float(cuts[k]), float(correct[k] / len(s))


# ----------------------------------------------------------------------------- data checks


def _check_nodes(ids: Any, num_nodes: int, field: str) -> np.ndarray:
    ids = np.asarray(ids, dtype=np.int64)
    bad = np.flatnonzero((ids < 0) | (ids >= num_nodes))
    if bad.size:
        raise ValueError(f"{field}: node {int(ids[bad[0]])} at index {int(bad[0])} is outside "
                         f"[0, {num_nodes})")
    return ids


def _check_labelled(ids: np.ndarray, labels: np.ndarray, num_classes: int, field: str) -> None:
    y = labels[ids]
    bad = np.flatnonzero((y < 0) | (y >= num_classes))
    if bad.size:
        raise ValueError(f"{field}: node {int(ids[bad[0]])} at index {int(bad[0])} has label "
                         f"{int(y[bad[0]])}, outside [0, {num_classes})")


def _check_pairs(pairs: Any, num_nodes: int, field: str) -> np.ndarray:
    pairs = np.asarray(pairs, dtype=np.int64)
    if pairs.ndim != 2 or pairs.shape[0] != 2:
        raise ValueError(f"{field}: expected shape [2, M], got {tuple(pairs.shape)}")
    if pairs.shape[1] == 0:
        raise ValueError(f"{field}: no edges")
    bad = np.flatnonzero(((pairs < 0) | (pairs >= num_nodes)).any(axis=0))
    if bad.size:
        raise ValueError(f"{field}: pair {bad[0]} = ({pairs[0, bad[0]]}, {pairs[1, bad[0]]}) has "
                         f"a node outside [0, {num_nodes})")
    return pairs


def prepare_features(features: Any, num_nodes: int, standardize: bool) -> torch.Tensor:
    """float32 [N, D] tensor from pooled features, checked for shape and non-finite values."""
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] != num_nodes:
        raise ValueError(f"features: expected shape [{num_nodes}, D], got {tuple(x.shape)}")
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        raise ValueError(f"features: non-finite value in row {int(np.flatnonzero(~finite)[0])}")
    if standardize:
        x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-6)
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def sample_negatives(indptr: np.ndarray, indices: np.ndarray, num: int,
                     rng: np.random.Generator) -> np.ndarray:
    """`num` uniform node pairs (u != v) that are not edges of the CSR graph: int64 [2, num]."""
    n = len(indptr) - 1
    if n < 2:
        raise ValueError("graph: negative sampling needs at least 2 nodes")
    if len(indices) >= n * (n - 1):
        raise ValueError("graph: complete graph, there are no non-edges to sample")
    out: list[np.ndarray] = []
    have = 0
    for _ in range(1000):  # rejection sampling; each round keeps >= 1 - density of its draws
        m = int((num - have) * 1.25) + 16
        pairs = rng.integers(0, n, (2, m), dtype=np.int64)
        keep = (pairs[0] != pairs[1]) & ~pairs_in_csr(indptr, indices, pairs)
        out.append(pairs[:, keep][:, : num - have])
        have += out[-1].shape[1]
        if have >= num:
            return np.concatenate(out, axis=1)
    raise RuntimeError("sample_negatives: graph too dense to find enough non-edges")


# ----------------------------------------------------------------------------- NC


def _seed_all(seed: int) -> np.random.Generator:
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def _progress(cfg: BaselineConfig, desc: str):
    from tqdm.auto import tqdm

    return tqdm(range(1, cfg.epochs + 1), desc=desc, disable=not cfg.progress, leave=False)


def run_nc(graph, features, cfg: BaselineConfig, meta: dict | None = None) -> dict:
    """Train/evaluate one NC baseline; returns a result dict (mlaga_fast.eval.report format)."""
    cfg.validate()
    n = graph.num_nodes
    labels = np.asarray(graph.labels, dtype=np.int64)
    if labels.shape != (n,):
        raise ValueError(f"labels: expected shape ({n},), got {labels.shape}")
    class_names = list(graph.class_names)
    c = len(class_names)
    split = {}
    for name in ("train", "val", "test"):
        split[name] = _check_nodes(getattr(graph, name), n, name)
        if split[name].size == 0:
            raise ValueError(f"{name}: empty split")
        _check_labelled(split[name], labels, c, name)
    indptr, indices = graph.train_graph()
    t0 = time.perf_counter()
    extra: dict[str, Any] = {"seed": cfg.seed, "config": asdict(cfg), **(meta or {})}

    if cfg.model == "labelprop":
        lp = label_propagation(indptr, indices, labels, split["train"], c, alpha=cfg.alpha,
                               tol=cfg.tol, max_iter=cfg.max_iter)
        pred = lp.pred
        extra.update(iterations=lp.iterations, converged=lp.converged, unreached=lp.unreached,
                     val_accuracy=float((pred[split["val"]] == labels[split["val"]]).mean()))
    else:
        _seed_all(cfg.seed)
        dev = torch.device(cfg.device)
        x = prepare_features(features, n, cfg.standardize).to(dev)  # [N, D]
        edge_index = graph_operand(cfg.model, indptr, indices, n).to(dev)  # [2, E] (sage: CSR [N, N])
        model = build_encoder(cfg.model, x.shape[1], cfg.hidden, c, cfg.dropout, cfg.heads).to(dev)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        y = torch.from_numpy(labels).to(dev)
        tr = torch.from_numpy(split["train"]).to(dev)
        va = torch.from_numpy(split["val"]).to(dev)
        best = (-1.0, 0, None)  # (val acc, epoch, state)
        epoch = 0
        bar = _progress(cfg, f"{cfg.model} nc")
        for epoch in bar:
            model.train()
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x, edge_index)[tr], y[tr])
            loss.backward()
            opt.step()
            model.eval()
            with torch.no_grad():
                val_acc = float((model(x, edge_index)[va].argmax(-1) == y[va]).float().mean())
            if val_acc > best[0]:
                best = (val_acc, epoch, copy.deepcopy(model.state_dict()))
            bar.set_postfix(loss=f"{loss.item():.3f}", val=f"{val_acc:.3f}")
            if cfg.patience and epoch - best[1] >= cfg.patience:
                break
        model.load_state_dict(best[2])
        model.eval()
        with torch.no_grad():
            pred = model(x, edge_index).argmax(-1).cpu().numpy()
        extra.update(val_accuracy=best[0], best_epoch=best[1], epochs_run=epoch,
                     num_params=sum(p.numel() for p in model.parameters()))
    extra["train_seconds"] = round(time.perf_counter() - t0, 3)
    te = split["test"]
    return make_result(task="nc", method=cfg.model, dataset=graph.name, y_true=labels[te],
                       y_pred=pred[te], class_names=class_names, extra=extra)


# ----------------------------------------------------------------------------- LP


def run_lp(graph, features, cfg: BaselineConfig, meta: dict | None = None, targets: tuple = ()) -> dict:
    """Train/evaluate one LP baseline; returns a result dict (mlaga_fast.eval.report format).

    ``targets``: (graph, features) pairs of graphs it was not trained on; the trained model (and the
    source's validation threshold) scores each one's balanced test pairs on that graph's own training
    edges, and the results, marked ``extra.transfer``, come back under ``extra["targets"]``."""
    cfg.validate()
    ls = graph.link_split
    if ls is None:
        raise ValueError(f"link_split: graph {graph.name!r} has none; link prediction needs "
                         "train_pos / val_pos / val_neg / test_pos / test_neg")
    n = graph.num_nodes
    pairs = {name: _check_pairs(getattr(ls, name), n, f"link_split.{name}")
             for name in ("train_pos", "val_pos", "val_neg", "test_pos", "test_neg")}
    indptr, indices = graph.train_graph()
    indptr = np.asarray(indptr, dtype=np.int64)
    indices = np.asarray(indices, dtype=np.int64)
    rng = _seed_all(cfg.seed)
    dev = torch.device(cfg.device)
    t0 = time.perf_counter()

    x = prepare_features(features, n, cfg.standardize).to(dev)  # [N, D]
    edge_index = graph_operand(cfg.model, indptr, indices, n).to(dev)  # [2, E] (sage: CSR [N, N])
    encoder = build_encoder(cfg.model, x.shape[1], cfg.hidden, cfg.hidden, cfg.dropout,
                            cfg.heads).to(dev)
    scorer = EdgeScorer(cfg.scorer, cfg.hidden).to(dev)
    params = list(encoder.parameters()) + list(scorer.parameters())
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    pos = torch.from_numpy(pairs["train_pos"]).to(dev)  # [2, P]
    val_pairs = torch.from_numpy(np.concatenate([pairs["val_pos"], pairs["val_neg"]], 1)).to(dev)
    val_y = np.r_[np.ones(pairs["val_pos"].shape[1]), np.zeros(pairs["val_neg"].shape[1])]

    def scores(p: torch.Tensor) -> np.ndarray:
        encoder.eval()
        scorer.eval()
        with torch.no_grad():
            return scorer(encoder(x, edge_index), p).float().cpu().numpy()

    best = (-1.0, 0, None)  # (val AUC, epoch, state)
    epoch = 0
    bar = _progress(cfg, f"{cfg.model} lp")
    for epoch in bar:
        encoder.train()
        scorer.train()
        neg = torch.from_numpy(sample_negatives(indptr, indices, pos.shape[1] * cfg.neg_ratio,
                                                rng)).to(dev)
        opt.zero_grad(set_to_none=True)
        h = encoder(x, edge_index)  # [N, hidden]
        logits = torch.cat([scorer(h, pos), scorer(h, neg)])
        target = torch.cat([torch.ones(pos.shape[1]), torch.zeros(neg.shape[1])]).to(dev)
        loss = F.binary_cross_entropy_with_logits(logits, target)
        loss.backward()
        opt.step()
        val_auc = roc_auc(scores(val_pairs), val_y)
        if val_auc > best[0]:
            state = (copy.deepcopy(encoder.state_dict()), copy.deepcopy(scorer.state_dict()))
            best = (val_auc, epoch, state)
        bar.set_postfix(loss=f"{loss.item():.3f}", val_auc=f"{val_auc:.3f}")
        if cfg.patience and epoch - best[1] >= cfg.patience:
            break
    encoder.load_state_dict(best[2][0])
    scorer.load_state_dict(best[2][1])

    val_s = scores(val_pairs)
    thr, val_acc = best_threshold(val_s, val_y)
    test_pairs = torch.from_numpy(np.concatenate([pairs["test_pos"], pairs["test_neg"]], 1))
    test_s = scores(test_pairs.to(dev))
    test_y = np.r_[np.ones(pairs["test_pos"].shape[1]), np.zeros(pairs["test_neg"].shape[1])]
    extra: dict[str, Any] = {
        "seed": cfg.seed, "config": asdict(cfg), **(meta or {}),
        "auc": roc_auc(test_s, test_y), "val_auc": best[0], "val_accuracy": val_acc,
        "threshold": thr, "best_epoch": best[1], "epochs_run": epoch, "scorer": cfg.scorer,
        "num_params": sum(p.numel() for p in params),
        "train_seconds": round(time.perf_counter() - t0, 3),
    }
    extra["targets"] = [_lp_on(tg, tf, cfg, encoder, scorer, thr, dev) for tg, tf in targets]
    return make_result(task="lp", method=cfg.model, dataset=graph.name,
                       y_true=test_y.astype(np.int64), y_pred=(test_s > thr).astype(np.int64),
                       extra=extra)


def _lp_on(graph, features, cfg: BaselineConfig, encoder, scorer, thr: float, dev) -> dict:
    """A trained LP baseline applied, without tuning, to another graph's balanced test pairs."""
    ls = graph.link_split
    if ls is None:
        raise ValueError(f"link_split: target graph {graph.name!r} has none")
    n = graph.num_nodes
    indptr, indices = graph.train_graph()
    x = prepare_features(features, n, cfg.standardize).to(dev)  # [N', D]
    edge_index = graph_operand(cfg.model, indptr, indices, n).to(dev)  # [2, E] (sage: CSR [N, N])
    pos = _check_pairs(ls.test_pos, n, "link_split.test_pos")
    neg = _check_pairs(ls.test_neg, n, "link_split.test_neg")
    encoder.eval()
    scorer.eval()
    with torch.no_grad():
        s = scorer(encoder(x, edge_index), torch.from_numpy(np.concatenate([pos, neg], 1)).to(dev)).float().cpu().numpy()
    y = np.r_[np.ones(pos.shape[1]), np.zeros(neg.shape[1])]
    return make_result(task="lp", method=cfg.model, dataset=graph.name, y_true=y.astype(np.int64),
                       y_pred=(s > thr).astype(np.int64),
                       extra={"seed": cfg.seed, "auc": roc_auc(s, y), "threshold": thr, "transfer": True})


def run_baseline(graph, features, cfg: BaselineConfig, meta: dict | None = None, targets: tuple = ()) -> dict:
    """Dispatch on cfg.task. `features` is float32 [N, D] (ignored by labelprop, may be None). ``targets``:
    LP only, (graph, features) of graphs to apply the trained model to untuned (see ``run_lp``)."""
    if targets and cfg.task != "lp":
        raise ValueError("targets: only an LP baseline applies to another graph (label sets differ)")
    cfg.validate()
    if cfg.model != "labelprop" and features is None:
        raise ValueError(f"features: model {cfg.model!r} needs pooled node features")
    old = torch.get_num_threads()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    try:
        return run_nc(graph, features, cfg, meta) if cfg.task == "nc" else run_lp(graph, features, cfg, meta, targets)
    finally:
        torch.set_num_threads(old)

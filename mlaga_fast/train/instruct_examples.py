"""Stage 2's training prompts: the warm-up and instruct examples of every dataset, seeded by the run.

The mix: NC prompts come from the datasets of ``task_datasets(cfg, "nc")`` and LP prompts from those of
``task_datasets(cfg, "lp")`` (the release tunes NC on some graphs and LP on others). Without weights each
feeding dataset gives ``nc_per_dataset`` / ``lp_per_dataset`` prompts; with ``data_weights`` a task's
``per_dataset x its datasets`` prompts are split among them by a multinomial draw in the weights'
proportions (a dataset asked for more NC prompts than it has training nodes repeats some). Each
dataset keeps its own PPR table, demonstrations and link pairs: nothing is drawn across graphs.
"""
from __future__ import annotations

import numpy as np

from mlaga_fast.models.node_inputs import demo_cache_dir
from mlaga_fast.prompts.demos import LinkPairs, NCDemos, ppr_demo_table, train_label_pool
from mlaga_fast.prompts.examples import (asked_lp_examples, asked_nc_examples, builder_for, cycle_wordings,
                                         description_examples, lp_examples, nc_examples)
from mlaga_fast.train.instruct_config import InstructConfig, task_datasets
from mlaga_fast.utils.progress import progress as bar_of

__all__ = ["build_phase_examples", "example_counts", "mix_counts"]


def mix_counts(cfg: InstructConfig, task: str, per_dataset: int) -> dict[int, int]:
    """{dataset index: prompts of ``task``} for the weighted mix (cfg.data_weights set); seeded by cfg.seed."""
    idx = task_datasets(cfg, task)
    w = np.array([cfg.data_weights[i] for i in idx], dtype=np.float64)
    rng = np.random.default_rng([cfg.seed, 11, 0 if task == "nc" else 1])
    counts = rng.multinomial(per_dataset * len(idx), w / w.sum())
    return {i: int(k) for i, k in zip(idx, counts)}


def _choose(rng: np.random.Generator, pool: np.ndarray, count: int) -> np.ndarray:
    """``count`` distinct pool nodes, or every node then random repeats when count exceeds the pool."""
    if count <= pool.size:
        return rng.choice(pool, count, replace=False)
    return np.concatenate([rng.permutation(pool), rng.choice(pool, count - pool.size, replace=True)])


def build_phase_examples(cfg: InstructConfig, datasets, tokenizer, nq: int, image_tokens: int,
                         progress: bool = True) -> tuple[list, list]:
    """(warm-up examples, instruct examples) of all datasets, seeded by cfg.seed."""
    warm, instruct = [], []
    nc_sets, lp_sets = set(task_datasets(cfg, "nc")), set(task_datasets(cfg, "lp"))
    weighted = bool(cfg.data_weights)
    nc_count = mix_counts(cfg, "nc", cfg.nc_per_dataset) if weighted and nc_sets else {}
    lp_count = mix_counts(cfg, "lp", cfg.lp_per_dataset) if weighted and lp_sets else {}
    for di, ds in enumerate(bar_of(datasets, desc="prompts", enabled=progress)):
        rng = np.random.default_rng([cfg.seed, di, 7])
        wrng = np.random.default_rng([cfg.seed, di, 13])  # varied wordings draw from their own stream: with
        # paraphrase_ratio 0 and no descriptions every other prompt is what it was before they existed
        builder = builder_for(cfg, tokenizer, ds.graph, nq, image_tokens)
        words = builder.wordings
        pool = train_label_pool(ds.graph)
        n_nc = 0
        if di in nc_sets:
            if pool.size == 0:
                raise ValueError(f"dataset {ds.name}: no labelled training nodes for task nc")
            if cfg.warmup_examples:
                wb = builder_for(cfg, tokenizer, ds.graph, nq, image_tokens, warmup=True)
                share = -(-cfg.warmup_examples // len(nc_sets))
                reps = -(-share // pool.size)  # every pool node once per round, each round reshuffled
                wt = np.concatenate([rng.permutation(pool) for _ in range(reps)])[:share]
                warm += nc_examples(ds.graph, wb, wt, NCDemos(ds.graph, "none"), with_label=True, dataset=di)
            if weighted:
                targets = _choose(rng, pool, nc_count[di])
            else:
                targets = pool if cfg.nc_per_dataset <= 0 else rng.choice(pool, min(cfg.nc_per_dataset, pool.size),
                                                                           replace=False)
            mode = cfg.demos if cfg.num_demos > 0 else "none"
            table = (ppr_demo_table(ds.graph, k=max(cfg.ppr_k, cfg.num_demos), alpha=cfg.ppr_alpha, eps=cfg.ppr_eps,
                                    cache_dir=demo_cache_dir(ds), progress=progress) if mode == "ppr" else None)
            drop = rng.random(len(targets)) < cfg.nc_demo_dropout
            nc_demos = NCDemos(ds.graph, mode, cfg.num_demos, cfg.seed, table)
            # drawn in target order for the prompts that show demonstrations, as without varied wordings
            shown = {v: nc_demos(v) for v, off in zip(targets.tolist(), drop) if not off}
            demos = lambda v: shown.get(v, ([], []))  # noqa: E731
            asked = _asked(wrng, len(targets), cfg.paraphrase_ratio)
            relabel = _relabelled(cfg, di, drop[~asked], len(ds.graph.class_names))
            instruct += nc_examples(ds.graph, builder, targets[~asked], demos, with_label=True, dataset=di,
                                    drop_demos=drop[~asked], relabel=relabel)
            instruct += asked_nc_examples(ds.graph, builder, targets[asked], demos,
                                          cycle_wordings(words["nc_train"], int(asked.sum()), wrng), with_label=True,
                                          dataset=di)
            if cfg.describe_per_dataset:
                nodes = wrng.choice(pool, min(cfg.describe_per_dataset, pool.size), replace=False)
                instruct += description_examples(ds.graph, builder, nodes,
                                                 cycle_wordings(words["describe_train"], len(nodes), wrng),
                                                 with_label=True, dataset=di)
            n_nc = len(targets)
        if di in lp_sets:
            links = LinkPairs(ds.graph, seed=cfg.seed)
            if weighted:
                count = lp_count[di]
            else:
                # Default: as many LP prompts as NC prompts would be, so the two tasks weigh the same.
                n_default = ((pool.size or links.train_pos.shape[1]) if cfg.nc_per_dataset <= 0
                             else cfg.nc_per_dataset)
                count = cfg.lp_per_dataset if cfg.lp_per_dataset > 0 else max(n_nc, n_default, 2)
            if count:
                pairs, y = links.train_pairs(count, rng)
                asked = _asked(wrng, pairs.shape[1], cfg.paraphrase_ratio)
                instruct += lp_examples(builder, pairs[:, ~asked], y[~asked], links if cfg.lp_demo else None,
                                        with_label=True, dataset=di)
                instruct += asked_lp_examples(builder, pairs[:, asked], y[asked],
                                              cycle_wordings(words["lp_train"], int(asked.sum()), wrng),
                                              with_label=True, dataset=di)
    return warm, instruct


def _relabelled(cfg: InstructConfig, dataset: int, dropped: np.ndarray, classes: int) -> dict[int, np.ndarray] | None:
    """{prompt j: a random permutation [classes]} for about ``cfg.nc_relabel`` of the prompts that show
    demonstrations (``dropped`` [n] bool: those that do not); None when nc_relabel is 0 (no draw at all, so
    every other prompt stays what it was). Seeded per dataset from a stream of its own."""
    if cfg.nc_relabel <= 0 or cfg.num_demos <= 0:
        return None
    rng = np.random.default_rng([cfg.seed, dataset, 17])
    pick = (rng.random(dropped.size) < cfg.nc_relabel) & ~dropped
    return {int(j): rng.permutation(classes) for j in np.flatnonzero(pick)}


def _asked(rng: np.random.Generator, n: int, ratio: float) -> np.ndarray:
    """[n] bool: which prompts are asked in a varied wording (no draw at all when ratio is 0)."""
    return rng.random(n) < ratio if ratio > 0 else np.zeros(n, dtype=bool)


def example_counts(datasets, warm: list, instruct: list) -> list[dict]:
    """Per dataset: its name and fingerprint and how many warm-up, NC and LP prompts it gave (for the manifest)."""
    out = [{"name": ds.name, "graph_fingerprint": ds.graph.fingerprint, "warmup": 0, "nc": 0, "lp": 0}
           for ds in datasets]
    for ex in warm:
        out[ex.dataset]["warmup"] += 1
    for ex in instruct:
        out[ex.dataset][ex.task] += 1
    return out


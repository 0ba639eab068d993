"""Stage 1 trainer: the aligner on cached features with a graph-contrastive objective (the released
MLaGA loss by default, or our InfoNCE; ``mlaga_fast.models.contrastive``).

    mlaga-fast train align --data DIR --features FEATDIR --out RUN [--preset paper] [--config FILE] [--resume]
    mlaga-fast train align --data A,B --features FA,FB --out RUN     (one aligner for several graphs)
    torchrun --nproc-per-node P -m mlaga_fast train align ...      (DDP: NCCL on GPUs, gloo on CPU)

RUN/ holds config.json (resolved config), metrics.jsonl, checkpoints/step_*.pt, and, once training
has finished, model.safetensors and manifest.json (stage "align"; written last, so its presence
means the run is complete).

Data order is a pure function of (seed, epoch, batch index): every epoch is a seeded permutation
of all nodes cut into global batches of ``batch_size`` anchors (the remainder is dropped); rank r
of P takes the r-th contiguous slice of each global batch; positives are drawn from a generator
seeded by (seed, epoch, batch). This is what makes ``--resume`` exact and a P-process run see the
same global batches as a 1-process run. Negatives are gathered from all ranks with gradient
(``all_gather_with_grad``), so the loss equals the single-process loss over the global batch.

The settings are in ``align_config`` (import-light, for the CLI); this module is the trainer.
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import save as st_save

from mlaga_fast._version import __version__
from mlaga_fast.config import check_resume_config, config_to_dict, save_config
from mlaga_fast.data import load
from mlaga_fast.features.source import features_arg, open_features
from mlaga_fast.features.union import FeatureUnion, union_csr
from mlaga_fast.models.aligner import Aligner, input_stats
from mlaga_fast.models.aligner_mlaga import MLaGAAligner
from mlaga_fast.models.contrastive import contrastive_stats, graph_infonce, mlaga_objective, sample_positives
from mlaga_fast.runs.manifest import features_record, write_stage_manifest
from mlaga_fast.runs.open import ALIGN_ARTIFACTS, CHECKSUMS, record_checksums
from mlaga_fast.runtime.autotune import Workload, time_steps
from mlaga_fast.runtime.precision import Precision, resolve_precision
from mlaga_fast.train import distributed as D
from mlaga_fast.train.align_config import RESUMABLE_CHANGES, AlignConfig
from mlaga_fast.train.checkpoint import find_latest
from mlaga_fast.train.loop import finished_run, run_loop, warmup_steps_for
from mlaga_fast.train.schedule import cosine_warmup_factor
from mlaga_fast.utils.arrays import used_columns
from mlaga_fast.utils.io import atomic_write_bytes

__all__ = ["train_align", "StepBatches", "build_aligner"]


class StepBatches:
    """Map-style dataset: item j = this rank's slice of global micro-batch ``start + j``.

    Returns the features of the unique nodes among anchors and positives (so a node that is both is
    encoded once) and index maps into them. Only those rows are read from the memory maps.
    """

    def __init__(self, store: Any, indptr: np.ndarray, indices: np.ndarray, *, batch_size: int, num_positives: int,
                 seed: int, rank: int, world_size: int, start: int, stop: int):
        self.store, self.indptr, self.indices = store, indptr, indices
        self.n = int(indptr.shape[0] - 1)
        self.B, self.k, self.seed = batch_size, num_positives, seed
        self.per_epoch = self.n // batch_size
        self.local = batch_size // world_size
        self.rank = rank
        self.start, self.stop = start, stop
        self._perm_epoch, self._perm = -1, None

    def __len__(self) -> int:
        return self.stop - self.start

    def global_batch(self, micro: int) -> tuple[np.ndarray, np.ndarray]:
        """(anchors [B], positives [B, k]) of global micro-batch ``micro``."""
        epoch, b = divmod(micro, self.per_epoch)
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, 0, epoch]).permutation(self.n)
            self._perm_epoch = epoch
        anchors = self._perm[b * self.B:(b + 1) * self.B]
        pos = sample_positives(self.indptr, self.indices, anchors, self.k,
                               np.random.default_rng([self.seed, 1, epoch, b]))
        return anchors, pos

    def __getitem__(self, j: int) -> dict[str, Any]:
        micro = self.start + j
        anchors, pos = self.global_batch(micro)
        sl = slice(self.rank * self.local, (self.rank + 1) * self.local)
        anchors, pos = anchors[sl], pos[sl]  # [b], [b, k]
        uniq, inv = np.unique(np.concatenate([anchors, pos.ravel()]), return_inverse=True)
        b = anchors.shape[0]
        batch = trim_text(self.store.get(uniq))  # image [U, Li, Di] fp16, image_mask, text [U, Lt', Dt], text_mask
        batch.update(
            anchor_ids=torch.from_numpy(anchors.copy()),
            positive_ids=torch.from_numpy(pos.copy()),
            anchor_index=torch.from_numpy(inv[:b].astype(np.int64)),
            positive_index=torch.from_numpy(inv[b:].reshape(b, self.k).astype(np.int64)),
            micro=micro,
        )
        return batch


def trim_text(batch: dict[str, Any]) -> dict[str, Any]:
    """Drop the text columns that are padding in every row of the batch ([U, Lt, Dt] -> [U, Lt', Dt]): they
    are masked as keys everywhere and never read, so outputs do not change, but each costs a full token's
    compute (MiniLM pads to 64 tokens; the catalogue's texts use about 40)."""
    mask = batch.get("text_mask")
    if mask is None or mask.numel() == 0:
        return batch
    keep = used_columns(mask)
    if keep < mask.shape[1]:
        batch = dict(batch, text=batch["text"][:, :keep].contiguous(), text_mask=mask[:, :keep].contiguous())
    return batch


def _param_groups(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    # No decay on biases, norms, queries and modality embeddings: decaying them only shrinks scales.
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 and name not in ("queries", "modality_emb") else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay, "lr": 1.0},
            {"params": no_decay, "weight_decay": 0.0, "lr": 1.0}]


def _load_inputs(data_dir: Path, features_dir: str, device: str) -> tuple[Any, Any, str | None]:
    graph = load(data_dir)
    store = open_features(features_dir, data_dir=data_dir, graph=graph, device=device)
    if store.num_nodes != graph.num_nodes:
        raise ValueError(f"features at {features_dir} have {store.num_nodes} nodes, dataset {data_dir} has "
                         f"{graph.num_nodes}: they are not for the same graph")
    gfp = None
    gj = data_dir / "graph.json"
    if gj.is_file():
        gfp = json.loads(gj.read_text(encoding="utf-8")).get("fingerprint")
    ffp = store.manifest.get("graph_fingerprint")
    if gfp and ffp and gfp != ffp:
        raise ValueError(f"features at {features_dir} were extracted from graph {ffp}, but dataset {data_dir} is "
                         f"{gfp}: re-run `mlaga-fast features` on this dataset")
    return graph, store, gfp


class AlignStage:
    """Stage 1's part of the training loop (``mlaga_fast.train.loop``): one optimizer step = grad_accum
    micro-batches of the contrastive objective, negatives gathered from every rank."""

    def __init__(self, cfg: AlignConfig, info, model, store, indptr, indices, total_steps: int):
        self.cfg, self.info, self.model, self.store = cfg, info, model, store
        self.indptr, self.indices = indptr, indices
        self.total_steps = total_steps
        # auto on a CPU times this aligner on real nodes (up to 2048 tokens of the rank's share of a batch)
        nodes = cfg.batch_size // info.world_size * (1 + cfg.num_positives)
        workload = Workload.aligner(cfg.dim, cfg.mlp_ratio, cfg.num_heads,
                                    store.image_len + store.text_len + cfg.num_queries, nodes,
                                    layers=cfg.num_layers, arch=f"aligner-{cfg.arch}")
        with D.main_first():  # rank 0 measures and caches the decision; the others read it
            self.precision = resolve_precision(cfg.precision, info.device.type, frozen_weights=False,
                                               workload=workload, measure=self._measure)
        self.scaler = torch.amp.GradScaler("cuda") if self.precision.autocast == "float16" else None
        self.ddp = model
        if info.world_size > 1:
            self.ddp = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[info.device.index] if info.device.type == "cuda" else None)
        self._it = None
        self._warned_collapse = False

    def _measure(self, w: Workload) -> tuple[float, float]:
        """--precision auto's timer for Stage 1: forward + backward of a copy of this aligner on the store's first
        ``w.tokens // w.seq`` nodes, in fp32 and under bf16 autocast, each in its precision's context (so bf16
        takes the attention backend the training step takes). A synthetic layer is a poor proxy here: it ran
        1.77x faster in bf16 on a 2-core Zen 4 where the demo's aligner steps ran at 0.85x with the fused
        attention kernel (its masked attention, layer norms and input projections). In eval mode and on a
        forked RNG: the run's dropout masks never depend on whether a decision was measured or read from the
        cache."""
        with torch.random.fork_rng(devices=[]):
            model = copy.deepcopy(self.model).eval()
            ids = np.arange(min(max(1, w.tokens // w.seq), self.store.num_nodes))
            batch = {k: v.to(self.info.device) for k, v in trim_text(self.store.get(ids)).items()
                     if isinstance(v, torch.Tensor)}

            def step(p: Precision):
                def run() -> None:
                    with p.context(self.info.device.type):  # as the training step runs it
                        _, pooled = model(batch)  # [U, d]
                    pooled.float().pow(2).mean().backward()
                    model.zero_grad(set_to_none=True)
                return run

            return time_steps({"fp32": step(Precision("fp32", "float32", None)),
                               "bf16": step(Precision("bf16", "float32", "bfloat16"))})

    # --- the loop's interface ---
    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state)

    def param_groups(self) -> list[dict]:
        return _param_groups(self.model, self.cfg.weight_decay)

    def clip_params(self) -> list:
        return list(self.model.parameters())

    def lr_at(self, step: int) -> float:
        cfg = self.cfg
        return cfg.lr * cosine_warmup_factor(step, warmup_steps_for(cfg, self.total_steps), self.total_steps,
                                             cfg.min_lr_ratio)

    def _batches(self, step: int):
        """This rank's micro-batches from optimizer step ``step`` on (a loader started where a resume starts)."""
        cfg, info = self.cfg, self.info
        data = StepBatches(self.store, self.indptr, self.indices, batch_size=cfg.batch_size,
                           num_positives=cfg.num_positives, seed=cfg.seed, rank=info.rank, world_size=info.world_size,
                           start=step * cfg.grad_accum, stop=self.total_steps * cfg.grad_accum)
        return iter(torch.utils.data.DataLoader(
            data, batch_size=None, shuffle=False, num_workers=cfg.num_workers, pin_memory=info.device.type == "cuda",
            # its own generator: the loader draws a base seed when it starts, which must not shift the global
            # RNG that dropout uses (otherwise a resumed run would diverge from an uninterrupted one)
            generator=torch.Generator().manual_seed(cfg.seed)))

    def step(self, step: int) -> dict[str, float]:
        cfg, info = self.cfg, self.info
        if self._it is None:
            self._it = self._batches(step)
            self.model.train()
        acc: dict[str, float] = {}
        for micro in range(cfg.grad_accum):
            batch = next(self._it)
            dev = {k: v.to(info.device, non_blocking=True) for k, v in batch.items() if isinstance(v, torch.Tensor)}
            sync = micro == cfg.grad_accum - 1
            ctx = self.ddp.no_sync() if (info.world_size > 1 and not sync) else contextlib.nullcontext()
            with ctx:
                with self.precision.context(info.device.type):
                    _, pooled = self.ddp(dev)  # [U, d]
                # index_select, not pooled[idx]: the backward of advanced indexing with repeated rows
                # accumulates with atomics on CPU, so the same seed gave different weights from run to run
                # (measured: 1 process in 5); index_select's backward adds the rows in order.
                pidx = dev["positive_index"]  # [b, k]
                anchor = pooled.index_select(0, dev["anchor_index"]).float()  # [b, d]
                positives = pooled.index_select(0, pidx.reshape(-1)).view(*pidx.shape, -1).float()  # [b, k, d]
                all_anchor = D.all_gather_with_grad(anchor)  # [B, d]
                all_ids = D.all_gather_no_grad(dev["anchor_ids"])  # [B]
                if cfg.objective == "mlaga":
                    loss = mlaga_objective(anchor, positives, tau=cfg.tau, all_anchor=all_anchor)
                else:
                    loss = graph_infonce(anchor, positives, dev["anchor_ids"], dev["positive_ids"], tau=cfg.tau,
                                         tau_mode=cfg.tau_mode, all_anchor=all_anchor, all_anchor_ids=all_ids)
                scaled = loss / cfg.grad_accum
                (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            stats = contrastive_stats(anchor, positives, dev["anchor_ids"], all_anchor, all_ids)
            for key, v in {"loss": loss.detach(), **stats}.items():
                acc[key] = acc.get(key, 0.0) + float(D.all_reduce_mean(v.reshape(1)).item()) / cfg.grad_accum
        if acc["spread"] < cfg.collapse_threshold and not self._warned_collapse and info.is_main:
            warnings.warn(f"align: embedding spread {acc['spread']:.4f} < {cfg.collapse_threshold} at step "
                          f"{step + 1}: the pooled vectors are collapsing (try a higher tau or lower lr)",
                          RuntimeWarning, stacklevel=2)
            self._warned_collapse = True
        per_epoch = self.store.num_nodes // cfg.batch_size
        return {**acc, "epoch": (step * cfg.grad_accum) // per_epoch, "collapse": float(acc["spread"] < cfg.collapse_threshold),
                "anchors": float(cfg.batch_size * cfg.grad_accum)}


def build_aligner(cfg: AlignConfig, store: Any):
    """The aligner of ``cfg.arch`` for the store's modalities."""
    cls = MLaGAAligner if cfg.arch == "mlaga" else Aligner
    return cls(image_dim=store.image_dim, text_dim=store.text_dim, **cfg.model_kwargs())


def _as_list(x: Any) -> list:
    return [x] if isinstance(x, (str, os.PathLike)) else list(x)


def train_align(cfg: AlignConfig, data_dir: str | os.PathLike | Sequence[str | os.PathLike],
                features_dir: str | os.PathLike | Sequence[str | os.PathLike], out_dir: str | os.PathLike, *,
                resume: bool = False, show_progress: bool = True) -> dict[str, Any]:
    """Train (or resume) a Stage 1 run; returns a summary dict. Works alone or under torchrun.

    ``data_dir`` / ``features_dir`` may list several datasets (one features source each, same encoder and
    token dims): one aligner then trains on all of them, each node's positives drawn from its own graph
    (``mlaga_fast.features.union``)."""
    cfg.validate()
    data_dirs = [Path(d).resolve() for d in _as_list(data_dir)]
    feature_dirs = [features_arg(f) for f in _as_list(features_dir)]
    if not data_dirs or len(data_dirs) != len(feature_dirs):
        raise ValueError(f"train align: {len(data_dirs)} dataset(s) but {len(feature_dirs)} features source(s); "
                         "give one features source per dataset, in the same order")
    run = Path(out_dir)
    owns_group = not (dist.is_available() and dist.is_initialized())
    info = D.init_distributed(cfg.device)
    try:
        if cfg.batch_size % info.world_size:
            raise ValueError(f"config field 'batch_size' ({cfg.batch_size}) must be divisible by the number of "
                             f"processes ({info.world_size})")
        ckpt_dir = run / "checkpoints"
        if resume:
            check_resume_config(cfg, run, RESUMABLE_CHANGES)
            done = finished_run(run)
            if done is not None and (run / "model.safetensors").is_file():  # nothing left to do
                return {"run": str(run), "steps": done["train"]["steps"], "final": done["train"].get("final", {}),
                        "manifest": done if info.is_main else {}, "already_complete": True}
        elif (run / "manifest.json").exists() or find_latest(ckpt_dir) is not None:
            raise ValueError(f"{run} already holds a run; pass --resume to continue it or choose a new --out")
        loaded = [_load_inputs(d, f, str(info.device)) for d, f in zip(data_dirs, feature_dirs)]
        if len(loaded) == 1:
            store = loaded[0][1]
            indptr, indices = loaded[0][0].train_graph()
        else:  # one node range over every dataset; positives never cross graphs (block-diagonal adjacency)
            store = FeatureUnion([s for _, s, _ in loaded], names=feature_dirs)
            indptr, indices = union_csr([g.train_graph() for g, _, _ in loaded])
        per_epoch = store.num_nodes // cfg.batch_size
        if per_epoch < 1:
            raise ValueError(f"config field 'batch_size' ({cfg.batch_size}) exceeds the number of nodes "
                             f"({store.num_nodes})")
        total_steps = cfg.max_steps or max(1, cfg.epochs * per_epoch // cfg.grad_accum)
        ckpt_path = find_latest(ckpt_dir) if resume else None
        if info.is_main:
            run.mkdir(parents=True, exist_ok=True)
            save_config(cfg, run / "config.json")
        D.barrier()

        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed % (2**32))
        model = build_aligner(cfg, store)
        if ckpt_path is None and getattr(model, "uses_input_stats", True):
            # on resume the statistics come back with the checkpoint's weights
            model.set_input_stats(**input_stats(store, seed=cfg.seed))
        model = model.to(info.device)
        stage = AlignStage(cfg, info, model, store, indptr, indices, total_steps)
        last = run_loop(stage, cfg, run, info, resume_from=ckpt_path, show_progress=show_progress, desc="align",
                        betas=(0.9, 0.98))

        # --- final artifacts: weights, then the manifest (its presence marks a finished run) ---
        manifest: dict[str, Any] = {}
        if info.is_main:
            tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
            atomic_write_bytes(run / "model.safetensors",
                               st_save(tensors, metadata={"stage": "align", "mlaga_fast_version": __version__}))
            dims = dict(model.arch, image_len=store.image_len, text_len=store.text_len)
            # data_dir, features_dir, features...: the first dataset's, where embed, probe and plot look by
            # default; "datasets" lists every one, and Stage 2 accepts the features of any of them
            _, first_store, first_fp = loaded[0]
            records = [features_record(s) for _, s, _ in loaded]
            manifest = write_stage_manifest(
                run, "align", config=config_to_dict(cfg),
                inputs={"data_dir": str(data_dirs[0]), "graph_fingerprint": first_fp, "features_dir": feature_dirs[0],
                        "features": records[0] if len(records) == 1 else records,
                        "features_manifest": {k: v for k, v in first_store.manifest.items() if k != "shards"},
                        "datasets": [{"name": g.name, "data_dir": str(d), "graph_fingerprint": fp,
                                      "features_dir": f, "num_nodes": int(g.num_nodes)}
                                     for (g, _, fp), d, f in zip(loaded, data_dirs, feature_dirs)]},
                dims=dims,
                extra={"precision": stage.precision.to_dict(),
                       CHECKSUMS: record_checksums(run, ALIGN_ARTIFACTS),
                       "train": {"steps": total_steps, "total_steps": total_steps, "world_size": info.world_size,
                                 "final": last}})
        D.barrier()
        return {"run": str(run), "steps": total_steps, "final": last, "manifest": manifest, "already_complete": False}
    finally:
        if owns_group:
            D.cleanup_distributed()

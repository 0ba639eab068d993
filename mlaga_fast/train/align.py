"""Stage 1 trainer: the aligner on cached features with the graph-contrastive InfoNCE.

    mlaga-fast train align --data DIR --features FEATDIR --out RUN [--preset paper] [--config FILE] [--resume]
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

torch is imported inside functions: the CLI imports this module for ``AlignConfig`` and must stay fast.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np

from mlaga_fast.config import check_resume_config, config_to_dict, resolve_config, save_config

__all__ = ["AlignConfig", "PRESETS", "train_align", "check_features_match", "StepBatches"]


@dataclass
class AlignConfig:
    # --- model (every size is a field; the paper's sizes are the "paper" preset) ---
    # named `dim`, not `d`: torchrun's argument parser would take `--d` for an abbreviation of its own options
    dim: int = field(default=128, metadata={"help": "aligner width d"})
    num_layers: int = field(default=2, metadata={"help": "self-attention layers"})
    num_heads: int = field(default=4, metadata={"help": "attention heads (d must be divisible by it)"})
    num_queries: int = field(default=8, metadata={"help": "learnable queries nq = aligned tokens per node"})
    cross_attention_every: int = field(default=1, metadata={"help": "queries cross-attend at layers 0, k, 2k, ..."})
    mlp_ratio: float = field(default=4.0, metadata={"help": "FFN hidden width / d"})
    dropout: float = field(default=0.0, metadata={"help": "dropout in attention outputs and FFNs"})
    # --- loss ---
    num_positives: int = field(default=5, metadata={"help": "1-hop positives sampled per anchor"})
    tau: float = field(default=0.1, metadata={"help": "InfoNCE temperature"})
    tau_mode: Literal["both", "negatives_only"] = field(
        default="both", metadata={"help": "apply tau to positives and negatives (both) or, like the "
                                          "reference code, to negatives only"})
    # --- optimisation ---
    batch_size: int = field(default=64, metadata={"help": "global anchors per micro-batch (split over ranks)"})
    grad_accum: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate (AdamW)"})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay (not on biases/norms)"})
    warmup_steps: int = field(default=50, metadata={"help": "linear warmup steps before cosine decay"})
    min_lr_ratio: float = field(default=0.0, metadata={"help": "final LR as a fraction of the peak"})
    epochs: int = field(default=10, metadata={"help": "passes over all nodes (ignored when max_steps is set)"})
    max_steps: Optional[int] = field(default=None, metadata={"help": "optimizer steps (overrides epochs)"})
    grad_clip: float = field(default=1.0, metadata={"help": "max global grad norm (0 = off)"})
    precision: Literal["auto", "fp32", "bf16", "fp16"] = field(
        default="auto", metadata={"help": "autocast dtype; auto = bf16 (or fp16) on GPU, fp32 on CPU"})
    # --- runtime (may change on --resume) ---
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N"})
    seed: int = field(default=0, metadata={"help": "seed for init, data order and positives"})
    num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes"})
    log_every: int = field(default=10, metadata={"help": "steps between metrics.jsonl records"})
    checkpoint_every: int = field(default=500, metadata={"help": "steps between checkpoints (one at the end too)"})
    keep_checkpoints: int = field(default=2, metadata={"help": "newest checkpoints kept"})
    collapse_threshold: float = field(default=0.05, metadata={"help": "warn when the embedding spread falls below"})
    attn_backend: Literal["auto", "triton", "sdpa", "reference"] = field(
        default="auto", metadata={"help": "cross-attention backend (auto dispatches)"})

    def validate(self) -> None:
        positive = ("dim", "num_layers", "num_heads", "num_queries", "cross_attention_every", "num_positives",
                    "batch_size", "grad_accum", "epochs", "log_every", "checkpoint_every", "keep_checkpoints")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"config field {name!r} must be >= 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"config field 'max_steps' must be >= 1, got {self.max_steps}")
        if self.dim % self.num_heads:
            raise ValueError(f"config field 'dim' ({self.dim}) must be divisible by num_heads ({self.num_heads})")
        for name in ("tau", "lr", "mlp_ratio"):
            if getattr(self, name) <= 0:
                raise ValueError(f"config field {name!r} must be > 0, got {getattr(self, name)}")
        for name in ("weight_decay", "grad_clip", "warmup_steps", "num_workers", "collapse_threshold"):
            if getattr(self, name) < 0:
                raise ValueError(f"config field {name!r} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.dropout < 1 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError("config fields 'dropout' must be in [0, 1) and 'min_lr_ratio' in [0, 1]")

    def model_kwargs(self) -> dict[str, Any]:
        return {"d": self.dim, "num_layers": self.num_layers, "num_heads": self.num_heads,
                "num_queries": self.num_queries, "cross_attention_every": self.cross_attention_every,
                "mlp_ratio": self.mlp_ratio, "dropout": self.dropout,
                "attn_backend": None if self.attn_backend == "auto" else self.attn_backend}


# The paper's reference aligner: 32 queries, 6 layers, cross-attention every 2nd layer, d = 1024, 8 heads.
PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {},
    "paper": {"dim": 1024, "num_layers": 6, "num_heads": 8, "num_queries": 32, "cross_attention_every": 2},
}

# Fields that may differ between a run and its resumption without changing the maths.
RESUMABLE_CHANGES = ("device", "num_workers", "log_every", "checkpoint_every", "keep_checkpoints",
                     "collapse_threshold", "attn_backend")


def build_config(cli_values: dict[str, Any] | None = None, *, config_file: str | None = None,
                 preset: str | None = None, base: dict[str, Any] | None = None) -> AlignConfig:
    """defaults < base (a resumed run's saved config) < preset < file < CLI."""
    cfg = resolve_config(AlignConfig, cli_values or {}, config_file=config_file, preset=preset, presets=PRESETS,
                         base=base)
    cfg.validate()
    return cfg


def check_features_match(run_manifest: dict[str, Any], feature_store: Any) -> None:
    """Stage 2 calls this: ValueError unless ``feature_store`` holds the features the run was trained on."""
    from mlaga_fast.train.manifest import check_features_match as _check

    _check(run_manifest, feature_store)


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
        from mlaga_fast.models.contrastive import sample_positives

        pos = sample_positives(self.indptr, self.indices, anchors, self.k,
                               np.random.default_rng([self.seed, 1, epoch, b]))
        return anchors, pos

    def __getitem__(self, j: int) -> dict[str, Any]:
        import torch

        micro = self.start + j
        anchors, pos = self.global_batch(micro)
        sl = slice(self.rank * self.local, (self.rank + 1) * self.local)
        anchors, pos = anchors[sl], pos[sl]  # [b], [b, k]
        uniq, inv = np.unique(np.concatenate([anchors, pos.ravel()]), return_inverse=True)
        b = anchors.shape[0]
        batch = self.store.get(uniq)  # image [U, Li, Di] fp16, image_mask, text [U, Lt, Dt], text_mask
        batch.update(
            anchor_ids=torch.from_numpy(anchors.copy()),
            positive_ids=torch.from_numpy(pos.copy()),
            anchor_index=torch.from_numpy(inv[:b].astype(np.int64)),
            positive_index=torch.from_numpy(inv[b:].reshape(b, self.k).astype(np.int64)),
            micro=micro,
        )
        return batch


def _resolve_precision(precision: str, device: Any) -> Any:
    import torch

    if device.type != "cuda":
        if precision == "fp16":
            raise ValueError("precision 'fp16' needs a GPU; use fp32 (or bf16) on CPU")
        return torch.bfloat16 if precision == "bf16" else None
    if precision == "fp32":
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def _param_groups(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    # No decay on biases, norms, queries and modality embeddings: decaying them only shrinks scales.
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 and name not in ("queries", "modality_emb") else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _load_inputs(data_dir: Path, features_dir: Path) -> tuple[Any, Any, str | None]:
    from mlaga_fast.data import load
    from mlaga_fast.features import FeatureStore

    graph = load(data_dir)
    store = FeatureStore(features_dir)
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


def train_align(cfg: AlignConfig, data_dir: str | os.PathLike, features_dir: str | os.PathLike,
                out_dir: str | os.PathLike, *, resume: bool = False, show_progress: bool = True) -> dict[str, Any]:
    """Train (or resume) a Stage 1 run; returns a summary dict. Works alone or under torchrun."""
    import torch
    import torch.distributed as dist

    from mlaga_fast.models.aligner import Aligner, input_stats
    from mlaga_fast.models.contrastive import graph_infonce
    from mlaga_fast.train import distributed as D
    from mlaga_fast.train.checkpoint import find_latest, list_checkpoints, load_checkpoint, save_checkpoint
    from mlaga_fast.train.manifest import features_record, write_stage_manifest
    from mlaga_fast.train.metrics import JsonlLogger, progress
    from mlaga_fast.train.schedule import cosine_with_warmup

    cfg.validate()
    data_dir, features_dir, run = Path(data_dir).resolve(), Path(features_dir).resolve(), Path(out_dir)
    owns_group = not (dist.is_available() and dist.is_initialized())
    info = D.init_distributed(cfg.device)
    try:
        if cfg.batch_size % info.world_size:
            raise ValueError(f"config field 'batch_size' ({cfg.batch_size}) must be divisible by the number of "
                             f"processes ({info.world_size})")
        graph, store, graph_fp = _load_inputs(data_dir, features_dir)
        indptr, indices = graph.train_graph()
        n = graph.num_nodes
        per_epoch = n // cfg.batch_size
        if per_epoch < 1:
            raise ValueError(f"config field 'batch_size' ({cfg.batch_size}) exceeds the number of nodes ({n})")
        total_steps = cfg.max_steps or max(1, cfg.epochs * per_epoch // cfg.grad_accum)

        # --- run directory: fresh or resumed ---
        ckpt_dir = run / "checkpoints"
        ckpt_path = find_latest(ckpt_dir) if resume else None
        if resume:
            check_resume_config(cfg, run, RESUMABLE_CHANGES)
        if resume and (run / "manifest.json").is_file() and (run / "model.safetensors").is_file():
            done = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
            if done.get("train", {}).get("steps") == total_steps:  # nothing left to do
                return {"run": str(run), "steps": total_steps, "final": done["train"].get("final", {}),
                        "manifest": done if info.is_main else {}}
        if not resume and ((run / "manifest.json").exists() or find_latest(ckpt_dir) is not None):
            raise ValueError(f"{run} already holds a run; pass --resume to continue it or choose a new --out")
        if info.is_main:
            run.mkdir(parents=True, exist_ok=True)
            save_config(cfg, run / "config.json")
        D.barrier()

        # --- model, optimizer, schedule ---
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed % (2**32))
        model = Aligner(image_dim=store.image_dim, text_dim=store.text_dim, **cfg.model_kwargs())
        if ckpt_path is None:  # on resume the statistics come back with the checkpoint's weights
            model.set_input_stats(**input_stats(store, seed=cfg.seed))
        model = model.to(info.device)
        amp_dtype = _resolve_precision(cfg.precision, info.device)
        opt = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.98),
                                foreach=info.device.type == "cuda")
        sched = cosine_with_warmup(opt, cfg.warmup_steps, total_steps, cfg.min_lr_ratio)
        scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
        step = 0
        if ckpt_path is not None:
            state = load_checkpoint(ckpt_path, model=model, optimizer=opt, scheduler=sched, scaler=scaler,
                                    map_location=info.device)
            step = int(state["step"])
        ddp = model
        if info.world_size > 1:
            ddp = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[info.device.index] if info.device.type == "cuda" else None)

        data = StepBatches(store, indptr, indices, batch_size=cfg.batch_size, num_positives=cfg.num_positives,
                           seed=cfg.seed, rank=info.rank, world_size=info.world_size,
                           start=step * cfg.grad_accum, stop=total_steps * cfg.grad_accum)
        loader = torch.utils.data.DataLoader(data, batch_size=None, shuffle=False, num_workers=cfg.num_workers,
                                             pin_memory=info.device.type == "cuda",
                                             # its own generator: the loader draws a base seed when it starts,
                                             # which must not shift the global RNG that dropout uses
                                             # (otherwise a resumed run would diverge from an uninterrupted one)
                                             generator=torch.Generator().manual_seed(cfg.seed))
        logger = JsonlLogger(run / "metrics.jsonl", enabled=info.is_main,
                             resume_step=step if ckpt_path is not None else None)
        bar = progress(total=total_steps, initial=step, desc="align", enabled=info.is_main and show_progress)

        def checkpoint(at: int) -> None:
            if info.is_main:
                save_checkpoint(ckpt_dir, at, model=model, optimizer=opt, scheduler=sched, scaler=scaler,
                                extra={"micro": at * cfg.grad_accum, "total_steps": total_steps},
                                keep=cfg.keep_checkpoints)
            D.barrier()

        model.train()
        warned_collapse = False
        acc: dict[str, float] = {}
        micro_in_step = 0
        t0, nodes_seen = time.perf_counter(), 0
        last: dict[str, Any] = {}
        for batch in loader:
            if step >= total_steps:
                break
            dev_batch = {k: v.to(info.device, non_blocking=True) for k, v in batch.items()
                         if isinstance(v, torch.Tensor)}
            micro_in_step += 1
            sync = micro_in_step == cfg.grad_accum
            ctx = ddp.no_sync() if (info.world_size > 1 and not sync) else contextlib.nullcontext()
            with ctx:
                with torch.autocast(info.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                    _, pooled = ddp(dev_batch)  # [U, d]
                anchor = pooled[dev_batch["anchor_index"]].float()  # [b, d]
                positives = pooled[dev_batch["positive_index"]].float()  # [b, k, d]
                all_anchor = D.all_gather_with_grad(anchor)  # [B, d]
                all_ids = D.all_gather_no_grad(dev_batch["anchor_ids"])  # [B]
                loss, stats = graph_infonce(anchor, positives, dev_batch["anchor_ids"], dev_batch["positive_ids"],
                                            tau=cfg.tau, tau_mode=cfg.tau_mode, all_anchor=all_anchor,
                                            all_anchor_ids=all_ids)
                scaled = loss / cfg.grad_accum
                (scaler.scale(scaled) if scaler is not None else scaled).backward()
            for key, v in {"loss": loss.detach(), **stats}.items():
                acc[key] = acc.get(key, 0.0) + float(D.all_reduce_mean(v.reshape(1)).item()) / cfg.grad_accum
            nodes_seen += cfg.batch_size
            if not sync:
                continue

            # --- optimizer step ---
            if scaler is not None:
                scaler.unscale_(opt)
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(),
                                                       cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
            lr = opt.param_groups[0]["lr"]
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            micro_in_step = 0
            if not np.isfinite(acc["loss"]):
                raise FloatingPointError(f"align: loss became {acc['loss']} at step {step}; lower --lr or use fp32")
            if acc["spread"] < cfg.collapse_threshold and not warned_collapse and info.is_main:
                warnings.warn(f"align: embedding spread {acc['spread']:.4f} < {cfg.collapse_threshold} at step "
                              f"{step}: the pooled vectors are collapsing (try a higher tau or lower lr)",
                              RuntimeWarning, stacklevel=2)
                warned_collapse = True
            bar.update(1)
            bar.set_postfix(loss=f"{acc['loss']:.4f}", gap=f"{acc['gap']:.3f}", refresh=False)
            if step % cfg.log_every == 0 or step == total_steps:
                elapsed = time.perf_counter() - t0
                last = {**acc, "lr": lr, "grad_norm": float(grad_norm), "epoch": (step * cfg.grad_accum) // per_epoch,
                        "anchors_per_s": nodes_seen / max(elapsed, 1e-9),  # global anchors, not encoded nodes
                        "collapse": acc["spread"] < cfg.collapse_threshold}
                logger.log(last, step=step)
                t0, nodes_seen = time.perf_counter(), 0
            acc = {}
            if step % cfg.checkpoint_every == 0 and step < total_steps:
                checkpoint(step)
        bar.close()
        ckpts = list_checkpoints(ckpt_dir)
        if not ckpts or ckpts[-1][0] != step:
            checkpoint(step)

        # --- final artifacts: weights, then the manifest (its presence marks a finished run) ---
        manifest: dict[str, Any] = {}
        if info.is_main:
            from safetensors.torch import save as st_save

            from mlaga_fast.utils.io import atomic_write_bytes
            from mlaga_fast._version import __version__

            tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
            atomic_write_bytes(run / "model.safetensors",
                               st_save(tensors, metadata={"stage": "align", "mlaga_fast_version": __version__}))
            dims = dict(model.arch, image_len=store.image_len, text_len=store.text_len)
            manifest = write_stage_manifest(
                run, "align", config=config_to_dict(cfg),
                inputs={"data_dir": str(data_dir), "graph_fingerprint": graph_fp, "features_dir": str(features_dir),
                        "features": features_record(store),
                        "features_manifest": {k: v for k, v in store.manifest.items() if k != "shards"}},
                dims=dims,
                extra={"train": {"steps": step, "total_steps": total_steps, "world_size": info.world_size,
                                 "final": {k: v for k, v in last.items() if isinstance(v, (int, float))}}})
        D.barrier()
        return {"run": str(run), "steps": step, "final": last, "manifest": manifest}
    finally:
        if owns_group:
            D.cleanup_distributed()


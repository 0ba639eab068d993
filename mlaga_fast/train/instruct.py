"""Stage 2: instruction tuning of the projectors (and optional LoRA adapters) into a frozen causal LLM.

    mlaga-fast train instruct --data DIR --align RUN1 --out RUN2 [--preset paper] [--config FILE] [--resume]

Two phases, one run, one loop (``mlaga_fast.train.loop``):

1. **warm-up** (feature alignment, as LLaVA's first stage): ``warmup_examples`` short NC prompts, the
   target node's tokens and the question only (no demonstrations, no text); only the projectors train.
   It teaches the projectors to put node tokens where the frozen LLM reads them as their category.
2. **instruct**: the task prompts (NC with PPR demonstrations, LP pairs), mixed by batch; the projectors
   and, with ``--lora``, LoRA adapters train (LoRA starts here, so the warm-up is projector-only).
   When the LP graph projector is task-specific it starts as a copy of the warmed-up NC one.

RUN2/ holds config.json (resolved InstructConfig), manifest.json (stage "instruct": aligner identity,
per-dataset graph/feature records, LLM, projector config, template-set fingerprint, truncation policy,
precision, and a "train" record), metrics.jsonl (the loss of every step), checkpoints/step_*.pt,
projectors.safetensors and, with LoRA, lora/ (a peft adapter folder).

Batches: one (dataset, task) per global batch of world * batch_size prompts, cut from length-sorted
windows (``instruct_batch.plan_batches``); rank r takes the r-th slice. Each rank sums its answer-token
losses and divides by the answer tokens of all ranks, and gradients are averaged over ranks, so a step
equals one process with the whole global batch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlaga_fast.config import check_resume_config, config_to_dict, resolve_config, save_config
from mlaga_fast.train.loop import LOOP_RUNTIME_FIELDS, LoopConfig, validate_loop

__all__ = ["InstructConfig", "PRESETS", "build_config", "train_instruct", "build_phase_examples",
           "templates_fingerprint"]


@dataclass
class InstructConfig(LoopConfig):
    # --- inputs ---
    data: list[str] = field(default_factory=list, metadata={"help": "dataset dirs (mlaga_fast.data.save)"})
    features: list[str] = field(default_factory=list,
                                metadata={"help": "features dir or online:ENCODER per dataset (default: DIR/features)"})
    align: str = field(default="", metadata={"help": "Stage-1 run dir (not needed for --node-source raw)"})
    llm: str = field(default="smollm2", metadata={"help": "hub id, local folder, *.gguf, or alias smollm2/vicuna"})
    tasks: list[str] = field(default_factory=lambda: ["nc", "lp"], metadata={"help": "nc, lp or both"})
    node_source: str = field(default="aligner", metadata={
        "help": "aligner tokens, or raw pooled encoder features (ablation)", "choices": ["aligner", "raw"]})
    # --- prompts ---
    template_set: str = field(default="compact", metadata={
        "help": "prompt templates: compact (short, ours) or paper (the released structure)",
        "choices": ["compact", "paper"]})
    chat_template: str = field(default="none", metadata={
        "help": "wrap prompts in the tokenizer's chat template (auto = when it has one)", "choices": ["auto", "none"]})
    demos: str = field(default="ppr", metadata={"help": "NC demonstrations", "choices": ["ppr", "random", "none"]})
    num_demos: int = field(default=3, metadata={"help": "NC demonstrations per prompt (m)"})
    nc_demo_dropout: float = field(default=0.1, metadata={
        "help": "fraction of NC training prompts shown without demonstrations (keeps the no-demonstration "
                "prompt in the instruct phase)"})
    lp_demo: bool = field(default=False, metadata={"help": "show one LP demonstration pair"})
    ppr_k: int = field(default=8, metadata={"help": "PPR candidates cached per node"})
    ppr_alpha: float = field(default=0.15, metadata={"help": "PPR restart probability"})
    ppr_eps: float = field(default=1e-4, metadata={"help": "PPR push tolerance"})
    nc_per_dataset: int = field(default=0, metadata={"help": "NC training prompts per dataset (0 = all train nodes)"})
    lp_per_dataset: int = field(default=0, metadata={"help": "LP training prompts per dataset (0 = as many as NC)"})
    max_length: int = field(default=384, metadata={"help": "max prompt + answer tokens (see the truncation policy)"})
    target_text_tokens: int = field(default=0, metadata={"help": "text tokens kept per question node"})
    demo_text_tokens: int = field(default=0, metadata={"help": "text tokens kept per demonstration node"})
    # --- projectors ---
    projector: str = field(default="modality", metadata={
        "help": "modality: image projector + task-specific graph projectors (the paper's); single: one graph "
                "projector", "choices": ["modality", "single"]})
    shared_graph_projector: bool = field(default=False, metadata={"help": "modality: one graph projector for NC and LP"})
    cross_task_attention: bool = field(default=False, metadata={
        "help": "modality: cross-task attention between the NC and LP projections"})
    projector_hidden: int = field(default=0, metadata={"help": "projector hidden width (0 = LLM hidden)"})
    # --- phases and optimisation (the shared loop fields are in LoopConfig) ---
    warmup_examples: int = field(default=0, metadata={
        "help": "warm-up phase: NC prompts without demonstrations or text, projectors only (0 = no warm-up)"})
    warmup_lr: float = field(default=3e-3, metadata={"help": "peak learning rate of the warm-up phase"})
    batch_size: int = field(default=16, metadata={"help": "prompts per step (per process)"})
    projector_lr_scale: float = field(default=1.0, metadata={
        "help": "instruct phase: the projectors' LR as a fraction of --lr (LoRA adapters get --lr itself)"})
    lora: bool = field(default=False, metadata={"help": "train LoRA adapters on the LLM in the instruct phase (peft)"})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "recompute LLM activations"})
    flash_attn: str = field(default="auto", metadata={"help": "flash-attn 2", "choices": ["auto", "on", "off"]})
    allow_unseen_features: bool = field(default=False, metadata={
        "help": "allow datasets whose features the aligner was not trained on (same encoder and dims)"})
    # LoopConfig defaults that differ for Stage 2
    lr: float = field(default=3e-3, metadata={"help": "peak learning rate of the instruct phase (AdamW)"})
    warmup_ratio: float = field(default=0.05, metadata={"help": "linear LR warmup as a fraction of each phase"})
    min_lr_ratio: float = field(default=0.1, metadata={"help": "final LR of each phase's cosine, as a fraction of its peak"})
    checkpoint_every: int = field(default=200, metadata={"help": "steps between checkpoints (one at the end too)"})


# The released model's Stage 2 (see docs/paper_model.md): Vicuna-7B-16K, its chat format, the paper's
# templates with full texts, modality-aware projectors with cross-task attention, lr 2e-5, no weight
# decay, warmup ratio 0.03, cosine to 0, batch 8, 4 epochs, one LP demonstration pair, no warm-up.
PRESETS: dict[str, dict] = {
    "cpu": {},
    "paper": {"llm": "vicuna", "template_set": "paper", "chat_template": "auto", "projector": "modality",
              "cross_task_attention": True, "lr": 2e-5, "weight_decay": 0.0, "warmup_ratio": 0.03,
              "min_lr_ratio": 0.0, "batch_size": 8, "epochs": 4, "warmup_examples": 0, "lora": False,
              "num_demos": 3, "nc_demo_dropout": 0.0, "lp_demo": True, "max_length": 4096,
              "target_text_tokens": 256, "demo_text_tokens": 128},
}

# Fields that may differ on --resume: where and how the same computation runs, and what it logs.
RESUMABLE_CHANGES = LOOP_RUNTIME_FIELDS + ("flash_attn", "gradient_checkpointing")


def build_config(cli_values: dict | None = None, *, config_file: str | None = None, preset: str | None = None,
                 base: dict | None = None) -> InstructConfig:
    """defaults < base (a resumed run's saved config) < preset < file < CLI."""
    cfg = resolve_config(InstructConfig, cli_values or {}, config_file=config_file, preset=preset, presets=PRESETS,
                         base=base)
    check_config(cfg)
    return cfg


def check_config(cfg: InstructConfig) -> None:
    validate_loop(cfg)
    if not cfg.data:
        raise ValueError("data: at least one dataset dir is needed (--data DIR[,DIR...])")
    if cfg.features and len(cfg.features) != len(cfg.data):
        raise ValueError(f"features: {len(cfg.features)} dirs given for {len(cfg.data)} datasets")
    bad = [t for t in cfg.tasks if t not in ("nc", "lp")]
    if bad or not cfg.tasks:
        raise ValueError(f"tasks: {bad[0] if bad else 'empty'!r} is not one of ['nc', 'lp']")
    if cfg.node_source == "aligner" and not cfg.align:
        raise ValueError("align: a Stage-1 run is needed unless --node-source raw")
    for name in ("batch_size", "max_length", "lora_r", "lora_alpha"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"config field {name!r} must be >= 1, got {getattr(cfg, name)}")
    for name in ("num_demos", "warmup_examples", "target_text_tokens", "demo_text_tokens", "nc_per_dataset",
                 "lp_per_dataset", "projector_hidden"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"config field {name!r} must be >= 0, got {getattr(cfg, name)}")
    if not 0 <= cfg.projector_lr_scale <= 1:
        raise ValueError(f"config field 'projector_lr_scale' must be in [0, 1], got {cfg.projector_lr_scale}")
    if not 0 <= cfg.nc_demo_dropout <= 1:
        raise ValueError(f"config field 'nc_demo_dropout' must be in [0, 1], got {cfg.nc_demo_dropout}")
    if not (math.isfinite(cfg.warmup_lr) and 0 < cfg.warmup_lr <= 10):
        raise ValueError(f"config field 'warmup_lr' must be in (0, 10], got {cfg.warmup_lr}")
    if cfg.warmup_examples and "nc" not in cfg.tasks:
        raise ValueError("warmup_examples: the warm-up phase uses NC prompts; add nc to --tasks or set it to 0")


def templates_fingerprint(template_set: str = "compact") -> str:
    from mlaga_fast.prompts import load_templates
    from mlaga_fast.utils.io import fingerprint

    return fingerprint(load_templates()[template_set])


def _policy(cfg: InstructConfig, *, warmup: bool = False):
    from mlaga_fast.prompts import TruncationPolicy

    if warmup:  # the node's tokens and the question only
        return TruncationPolicy(cfg.max_length, 0, 0)
    return TruncationPolicy(cfg.max_length, cfg.target_text_tokens, cfg.demo_text_tokens)


def make_builder(cfg: InstructConfig | dict, tokenizer, graph, nq: int, image_tokens: int, *, warmup: bool = False):
    """The prompt builder of a run's settings (``cfg`` may be the run's saved config dict)."""
    from mlaga_fast.prompts import PromptBuilder

    c = cfg if isinstance(cfg, dict) else config_to_dict(cfg)
    policy = _policy(InstructConfig(**{k: c[k] for k in ("max_length", "target_text_tokens", "demo_text_tokens")}),
                     warmup=warmup)
    meta = getattr(graph, "meta", None) or {}
    return PromptBuilder(tokenizer, nq, graph.texts, graph.class_names, policy, template_set=c["template_set"],
                         image_tokens=image_tokens, chat=c["chat_template"] == "auto",
                         domain=str(meta.get("domain") or graph.name))


def build_phase_examples(cfg: InstructConfig, datasets, tokenizer, nq: int, image_tokens: int,
                         progress: bool = True) -> tuple[list, list]:
    """(warm-up examples, instruct examples) of all datasets, seeded by cfg.seed."""
    from tqdm.auto import tqdm

    from mlaga_fast.prompts.demos import LinkPairs, NCDemos, ppr_demo_table, train_label_pool
    from mlaga_fast.train.instruct_batch import lp_examples, nc_examples
    from mlaga_fast.models.node_inputs import demo_cache_dir

    warm, instruct = [], []
    for di, ds in enumerate(tqdm(datasets, desc="prompts", disable=not progress)):
        rng = np.random.default_rng([cfg.seed, di, 7])
        builder = make_builder(cfg, tokenizer, ds.graph, nq, image_tokens)
        pool = train_label_pool(ds.graph)
        n_nc = 0
        if "nc" in cfg.tasks:
            if pool.size == 0:
                raise ValueError(f"dataset {ds.name}: no labelled training nodes for task nc")
            if cfg.warmup_examples:
                wb = make_builder(cfg, tokenizer, ds.graph, nq, image_tokens, warmup=True)
                share = -(-cfg.warmup_examples // len(datasets))
                reps = -(-share // pool.size)  # every pool node once per round, each round reshuffled
                wt = np.concatenate([rng.permutation(pool) for _ in range(reps)])[:share]
                warm += nc_examples(ds.graph, wb, wt, NCDemos(ds.graph, "none"), with_label=True, dataset=di)
            targets = pool if cfg.nc_per_dataset <= 0 else rng.choice(pool, min(cfg.nc_per_dataset, pool.size),
                                                                       replace=False)
            mode = cfg.demos if cfg.num_demos > 0 else "none"
            table = (ppr_demo_table(ds.graph, k=max(cfg.ppr_k, cfg.num_demos), alpha=cfg.ppr_alpha, eps=cfg.ppr_eps,
                                    cache_dir=demo_cache_dir(ds), progress=progress) if mode == "ppr" else None)
            drop = rng.random(len(targets)) < cfg.nc_demo_dropout
            instruct += nc_examples(ds.graph, builder, targets, NCDemos(ds.graph, mode, cfg.num_demos, cfg.seed, table),
                                    with_label=True, dataset=di, drop_demos=drop)
            n_nc = len(targets)
        if "lp" in cfg.tasks:
            links = LinkPairs(ds.graph, seed=cfg.seed)
            # Default: as many LP prompts as NC prompts would be, so the two tasks weigh the same.
            n_default = pool.size if cfg.nc_per_dataset <= 0 else cfg.nc_per_dataset
            count = cfg.lp_per_dataset if cfg.lp_per_dataset > 0 else max(n_nc, n_default, 2)
            pairs, y = links.train_pairs(count, rng)
            instruct += lp_examples(builder, pairs, y, links if cfg.lp_demo else None, with_label=True, dataset=di)
    return warm, instruct


def train_instruct(cfg: InstructConfig, out: str | Path, *, resume: bool = False, progress: bool = True) -> dict:
    """Run Stage 2; returns a summary (run dir, steps, final loss, seconds, whether it was already complete).
    Safe to interrupt: --resume continues from the last checkpoint, exactly.

    Under torchrun with W processes and per-process batch B, every step takes the same W*B prompts and
    the same gradient (the mean over all their answer tokens) as one process with batch W*B; only rank 0
    writes files (the run dir and the datasets' node-token and PPR caches).
    """
    import time

    import torch.distributed as tdist

    from mlaga_fast.train import distributed as dist
    from mlaga_fast.train.checkpoint import find_latest
    from mlaga_fast.train.loop import finished_run
    from mlaga_fast.runs.manifest import MANIFEST_NAME

    check_config(cfg)
    out = Path(out)
    t0 = time.perf_counter()
    latest = find_latest(out / "checkpoints") if resume else None
    if resume:
        check_resume_config(cfg, out, RESUMABLE_CHANGES)
        done = finished_run(out)
        if done is not None:
            return {"out": str(out), "steps": done["train"]["steps"], "complete": True, "already_complete": True,
                    "final": done["train"].get("final", {}), "seconds": 0.0}
    if not resume and ((out / MANIFEST_NAME).exists() or latest is not None or find_latest(out / "checkpoints")):
        raise ValueError(f"out: {out} already holds a Stage-2 run; pass --resume or choose another --out")
    owns_group = not (tdist.is_available() and tdist.is_initialized())
    info = dist.init_distributed(cfg.device)
    try:
        from mlaga_fast.train.instruct_stage import run_instruct

        summary = run_instruct(cfg, out, info, latest, progress)
    finally:
        if owns_group:
            dist.cleanup_distributed()
    return {"out": str(out), **summary, "already_complete": False, "seconds": round(time.perf_counter() - t0, 1)}


"""Stage 2's settings: ``InstructConfig`` (every field is a ``mlaga-fast train instruct`` option), its
presets, and the checks a config must pass before anything loads."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from mlaga_fast.config import resolve_config
from mlaga_fast.train.loop import LOOP_RUNTIME_FIELDS, LoopConfig, validate_loop

__all__ = ["InstructConfig", "PRESETS", "RESUMABLE_CHANGES", "build_config", "check_config", "check_mix",
           "task_datasets"]


@dataclass
class InstructConfig(LoopConfig):
    # --- inputs ---
    data: list[str] = field(default_factory=list, metadata={"help": "dataset dirs (mlaga_fast.data.save)"})
    features: list[str] = field(default_factory=list,
                                metadata={"help": "features dir or online:ENCODER per dataset (default: DIR/features)"})
    align: str = field(default="", metadata={"help": "Stage-1 run dir (not needed for --node-source raw)"})
    llm: str = field(default="smollm2", metadata={"help": "hub id, local folder, *.gguf, or alias smollm2/vicuna"})
    tasks: list[str] = field(default_factory=lambda: ["nc", "lp"], metadata={"help": "nc, lp or both"})
    # --- the mix (the release tunes NC on some datasets and LP on others) ---
    nc_data: list[str] = field(default_factory=list, metadata={
        "help": "the --data dirs whose NC prompts train (empty = all of them)"})
    lp_data: list[str] = field(default_factory=list, metadata={
        "help": "the --data dirs whose LP prompts train (empty = all of them)"})
    data_weights: list[float] = field(default_factory=list, metadata={
        "help": "sampling weight per --data dir: each task's prompts (nc_per_dataset / lp_per_dataset times its "
                "datasets) are drawn from its datasets in these proportions (empty = the same count from each)"})
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
    nc_relabel: float = field(default=0.0, metadata={
        "help": "fraction of the NC training prompts with demonstrations whose category names are permuted at "
                "random, the same way for the demonstrations and the answer: they can only be answered from the "
                "demonstrations, as prompts on categories the run never saw (transfer) must be"})
    lp_demo: bool = field(default=False, metadata={"help": "show one LP demonstration pair"})
    ppr_k: int = field(default=8, metadata={"help": "PPR candidates cached per node"})
    ppr_alpha: float = field(default=0.15, metadata={"help": "PPR restart probability"})
    ppr_eps: float = field(default=1e-4, metadata={"help": "PPR push tolerance"})
    nc_per_dataset: int = field(default=0, metadata={"help": "NC training prompts per dataset (0 = all train nodes)"})
    lp_per_dataset: int = field(default=0, metadata={"help": "LP training prompts per dataset (0 = as many as NC)"})
    paraphrase_ratio: float = field(default=0.0, metadata={
        "help": "fraction of NC and LP training prompts asked in ask's layout with a varied wording (the "
                "templates' wordings.*_train; the *_held_out ones are never trained on)"})
    describe_per_dataset: int = field(default=0, metadata={
        "help": "node-description prompts per dataset (ask's layout; answer: the node's category and title)"})
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
    lp_grouping: str = field(default="separate", metadata={
        "help": "LP prompts: each node of the pair in its own slots (separate, ours), or the pair's tokens as one "
                "2*nq sequence in one graph slot, and both pictures in one image slot, so that cross-task "
                "attention sees both nodes (paired, the release's)", "choices": ["separate", "paired"]})
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
              "cross_task_attention": True, "lp_grouping": "paired", "lr": 2e-5, "weight_decay": 0.0, "warmup_ratio": 0.03,
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
    check_mix(cfg)
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
    if not 0 <= cfg.paraphrase_ratio <= 1:
        raise ValueError(f"config field 'paraphrase_ratio' must be in [0, 1], got {cfg.paraphrase_ratio}")
    if cfg.describe_per_dataset < 0:
        raise ValueError(f"config field 'describe_per_dataset' must be >= 0, got {cfg.describe_per_dataset}")
    if cfg.describe_per_dataset and "nc" not in cfg.tasks:
        raise ValueError("describe_per_dataset: descriptions name the node's category; add nc to --tasks or set it to 0")
    if not 0 <= cfg.nc_relabel <= 1:
        raise ValueError(f"config field 'nc_relabel' must be in [0, 1], got {cfg.nc_relabel}")
    if not 0 <= cfg.nc_demo_dropout <= 1:
        raise ValueError(f"config field 'nc_demo_dropout' must be in [0, 1], got {cfg.nc_demo_dropout}")
    if not (math.isfinite(cfg.warmup_lr) and 0 < cfg.warmup_lr <= 10):
        raise ValueError(f"config field 'warmup_lr' must be in (0, 10], got {cfg.warmup_lr}")
    if cfg.warmup_examples and "nc" not in cfg.tasks:
        raise ValueError("warmup_examples: the warm-up phase uses NC prompts; add nc to --tasks or set it to 0")


def _same_dir(a: str) -> str:
    return str(Path(a).expanduser().resolve())


def task_datasets(cfg: InstructConfig, task: str) -> list[int]:
    """Indices into cfg.data of the datasets that feed ``task`` ("nc" or "lp"); [] when the task is off."""
    if task not in cfg.tasks:
        return []
    chosen = cfg.nc_data if task == "nc" else cfg.lp_data
    if not chosen:
        return list(range(len(cfg.data)))
    wanted = {_same_dir(d) for d in chosen}
    return [i for i, d in enumerate(cfg.data) if _same_dir(d) in wanted]


def check_mix(cfg: InstructConfig) -> None:
    """nc_data / lp_data name --data dirs of a task that is on; data_weights has one positive weight per dir."""
    known = {_same_dir(d) for d in cfg.data}
    for task, chosen in (("nc", cfg.nc_data), ("lp", cfg.lp_data)):
        if chosen and task not in cfg.tasks:
            raise ValueError(f"{task}_data: task {task} is not in --tasks {cfg.tasks}")
        missing = [d for d in chosen if _same_dir(d) not in known]
        if missing:
            raise ValueError(f"{task}_data: {missing[0]!r} is not one of the --data dirs")
    used = set(task_datasets(cfg, "nc")) | set(task_datasets(cfg, "lp"))
    idle = [cfg.data[i] for i in range(len(cfg.data)) if i not in used]
    if idle:
        raise ValueError(f"data: {idle[0]!r} feeds no task; name it in --nc-data or --lp-data, or drop it")
    if cfg.data_weights:
        if len(cfg.data_weights) != len(cfg.data):
            raise ValueError(f"data_weights: {len(cfg.data_weights)} weights given for {len(cfg.data)} datasets")
        if not all(math.isfinite(w) and w > 0 for w in cfg.data_weights):
            raise ValueError(f"data_weights: every weight must be a positive number, got {cfg.data_weights}")
        for task, per in (("nc", cfg.nc_per_dataset), ("lp", cfg.lp_per_dataset)):
            if task in cfg.tasks and per <= 0:
                raise ValueError(f"data_weights: set {task}_per_dataset > 0 (the weights share "
                                 f"{task}_per_dataset x datasets prompts)")

"""The demo's settings: one typed config holding each stage's own config, and two presets (full and --fast).

``align`` is Stage 1's ``AlignConfig`` and ``instruct`` Stage 2's ``InstructConfig``, with the demo's
defaults and under their own field names: ``--align.dim``, ``--instruct.lr``, a ``[instruct]`` table in
a config file. The demo fills in what it decides itself for every run: the datasets, features and
Stage-1 run, the node source and tasks (the raw-feature ablation trains NC on raw pooled features), the
device (cpu) and the seed (``seed`` below, one for every stage).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from mlaga_fast.train.align_config import AlignConfig
from mlaga_fast.train.instruct_config import InstructConfig

__all__ = ["DemoConfig", "PRESETS", "SET_BY_DEMO", "check_demo_config", "demo_align_config", "demo_instruct_config"]

# Stage fields the demo sets for every run it makes: they have no option, and a config file may not set them.
SET_BY_DEMO = {"align": ("seed", "device"),
               "instruct": ("data", "features", "align", "node_source", "tasks", "nc_data", "lp_data", "data_weights",
                            "seed", "device")}


def demo_align_config() -> AlignConfig:
    """Stage 1 as the demo trains it: 3 epochs of a 128-wide aligner with 4 tokens per node."""
    return AlignConfig(dim=128, num_queries=4, epochs=3, num_positives=5, warmup_steps=10, checkpoint_every=10_000,
                       device="cpu")


def demo_instruct_config() -> InstructConfig:
    """Stage 2 as the demo trains it: SmolLM2 with modality-aware projectors, 800 warm-up prompts, then 800 NC
    prompts (PPR demonstrations) and 1,600 LP prompts with LoRA adapters. A quarter of the NC and LP prompts are
    asked in ``ask``'s layout in varied wordings (so about 600 NC prompts keep the task's own layout, as before
    ``ask`` learnt wordings), and 200 node descriptions are added, so that ``ask`` answers free questions."""
    return InstructConfig(llm="smollm2", projector="modality", warmup_examples=800, nc_per_dataset=800,
                          lp_per_dataset=1600, paraphrase_ratio=0.25, describe_per_dataset=200, batch_size=16,
                          warmup_lr=3e-3, lr=3e-3, projector_lr_scale=0.1, lora=True, checkpoint_every=10_000,
                          device="cpu")


@dataclass
class DemoConfig:
    # --- data ---
    nodes: int = field(default=2000, metadata={"help": "synthetic catalogue size"})
    classes: int = field(default=8, metadata={"help": "product categories"})
    homophily: float = field(default=0.75, metadata={"help": "edge homophily of the catalogue graph"})
    image_mismatch: float = field(default=0.15, metadata={"help": "fraction of nodes showing another class's image"})
    text_mismatch: float = field(default=0.05, metadata={"help": "fraction of nodes with another class's text"})
    encoder: str = field(default="offline@128", metadata={
        "help": "feature encoder spec; 'offline@128' = MiniLM text + EfficientNet-Lite0 image at 128 px (real "
                "weights; the 64 px synthetic pictures lose nothing at 128 px)"})
    # --- the two stages, each in its own config ---
    align: AlignConfig = field(default_factory=demo_align_config, metadata={"fixed": SET_BY_DEMO["align"]})
    instruct: InstructConfig = field(default_factory=demo_instruct_config, metadata={"fixed": SET_BY_DEMO["instruct"]})
    # --- evaluation and baselines ---
    eval_nc: int = field(default=200, metadata={"help": "test nodes scored per NC variant"})
    eval_lp: int = field(default=200, metadata={"help": "test pairs scored per LP variant"})
    generate: bool = field(default=False, metadata={"help": "also score free generation (slower)"})
    baseline_epochs: int = field(default=100, metadata={"help": "full-batch epochs of the GNN/MLP baselines"})
    # --- runtime ---
    seed: int = field(default=0, metadata={"help": "one seed for every stage (the stages' own seed fields are set "
                                                   "from it)"})
    threads: int = field(default=0, metadata={
        "help": "torch CPU threads in all (0 = all cores); from 2 on, half of them run the raw-feature ablation, "
                "the baselines and the t-SNE map in a second process beside Stage 2"})


PRESETS: dict[str, dict] = {
    "full": {},
    # A sanity run for CI: every stage runs and writes its outputs, at a size that fits in ~3 minutes.
    "fast": {"nodes": 400, "align": {"epochs": 2},
             "instruct": {"warmup_examples": 32, "nc_per_dataset": 16, "lp_per_dataset": 16,
                          "describe_per_dataset": 16},
             "eval_nc": 16, "eval_lp": 16, "baseline_epochs": 30},
}


def check_demo_config(cfg: DemoConfig) -> None:
    """Refuse stage fields the demo sets itself (SET_BY_DEMO), so that none is ignored without a word."""
    default = DemoConfig()
    for stage, names in SET_BY_DEMO.items():
        for name in names:
            if getattr(getattr(cfg, stage), name) != getattr(getattr(default, stage), name):
                raise ValueError(f"{stage}.{name}: the demo sets it for every run (the seed from --seed, the data "
                                 "and the runs from its own steps, the device: cpu); remove it")


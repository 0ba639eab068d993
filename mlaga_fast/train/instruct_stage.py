"""Stage 2's part of the training loop: the warm-up and instruct phases' steps, and the final artifacts.

See mlaga_fast/train/instruct.py for the phases and the run layout; mlaga_fast/train/loop.py runs the
steps this module defines; the model they train is ``mlaga_fast.models.graph_llm.GraphLLM``.
"""
from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from mlaga_fast.config import config_to_dict, save_config
from mlaga_fast.llm.loading import LLMOptions, layer_shape
from mlaga_fast.models.graph_llm import GraphLLM
from mlaga_fast.models.node_inputs import aligner_identity, load_dataset_inputs
from mlaga_fast.prompts.batch import NodeInputs, answer_token_count, collate, plan_batches
from mlaga_fast.prompts.builder import load_templates
from mlaga_fast.prompts.examples import templates_fingerprint
from mlaga_fast.runs.card import write_model_card
from mlaga_fast.runs.manifest import write_stage_manifest
from mlaga_fast.runs.open import CHECKSUMS, INSTRUCT_ARTIFACTS, record_checksums
from mlaga_fast.runtime.autotune import Workload
from mlaga_fast.runtime.precision import resolve_precision
from mlaga_fast.train import distributed as dist
from mlaga_fast.train.instruct_config import InstructConfig
from mlaga_fast.train.instruct_examples import build_phase_examples, example_counts
from mlaga_fast.train.loop import run_loop, warmup_steps_for
from mlaga_fast.train.schedule import cosine_warmup_factor

__all__ = ["InstructStage", "node_modalities", "run_instruct"]


class InstructStage:
    """Warm-up steps [0, W) then instruct steps [W, total); see ``mlaga_fast.train.loop.Stage``."""

    def __init__(self, cfg: InstructConfig, info, model: GraphLLM, inputs: list[NodeInputs], warm: list,
                 instruct: list):
        self.cfg, self.info, self.model = cfg, info, model
        self.inputs, self.warm, self.instruct = inputs, warm, instruct
        self.world = info.world_size
        self.global_batch = cfg.batch_size * self.world
        self.warm_plan = plan_batches(warm, self.global_batch, cfg.seed, 0) if warm else []
        self.per_epoch = len(plan_batches(instruct, self.global_batch, cfg.seed, 0)) if instruct else 0
        self.warm_steps = len(self.warm_plan)
        self.instruct_steps = (cfg.max_steps or cfg.epochs * self.per_epoch) if instruct else 0
        self.total_steps = self.warm_steps + self.instruct_steps
        if self.total_steps < 1:
            raise ValueError("no training prompts were built (empty train split?)")
        self.lora = model.lora
        model.set_lora_trainable(False)
        self._plan_epoch, self._plan = -1, None

    # --- the loop's interface ---------------------------------------------------------------------
    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state)

    def trainable(self) -> list:
        return self.model.trainable()

    def param_groups(self) -> list[dict]:
        groups = [{"params": list(self.model.projectors.parameters()), "lr": 1.0}]
        return groups + ([{"params": self.lora, "lr": 1.0}] if self.lora else [])

    def lr_lambdas(self) -> list:
        """Per group: the projectors follow the warm-up schedule, then projector_lr_scale * the instruct one;
        LoRA adapters train only in the instruct phase, at its full rate."""
        proj = (lambda s: self.lr_at(s) * (1.0 if s < self.warm_steps else self.cfg.projector_lr_scale))
        lora = (lambda s: 0.0 if s < self.warm_steps else self.lr_at(s))
        return [proj] + ([lora] if self.lora else [])

    def clip_params(self) -> list:
        return self.trainable()

    def lr_at(self, step: int) -> float:
        cfg = self.cfg
        if step < self.warm_steps:
            W = self.warm_steps
            return cfg.warmup_lr * cosine_warmup_factor(step, warmup_steps_for(cfg, W), W, cfg.min_lr_ratio)
        n = max(self.instruct_steps, 1)
        return cfg.lr * cosine_warmup_factor(step - self.warm_steps, warmup_steps_for(cfg, n), n, cfg.min_lr_ratio)

    def step(self, step: int) -> dict:
        warm = step < self.warm_steps
        if step == self.warm_steps and self.warm_steps and "lp" in self.cfg.tasks:
            self.model.projectors.copy_task("nc", "lp")  # the LP projector starts where the warm-up left NC
        self.model.set_lora_trainable(not warm)
        examples, plan = (self.warm, self.warm_plan[step]) if warm else (self.instruct, self._instruct_batch(step))
        mine = plan[self.info.rank * self.cfg.batch_size:(self.info.rank + 1) * self.cfg.batch_size]
        real = bool(mine)
        # A rank whose slice of the last global batch is empty runs the batch's first prompt with weight 0,
        # so that the collectives line up and the step's gradient is the other ranks' alone.
        # HF drops KV caches under activation checkpointing, so such runs go without the shared prefix.
        batch = collate([examples[i] for i in (mine or plan[:1])], self.model.tokenizer.pad_token_id, self.inputs,
                        with_answer=True, use_prefix=not self.cfg.gradient_checkpointing)
        loss_sum = self.model.loss(batch, reduction="sum")  # []: summed over this rank's answer tokens
        n_tok = answer_token_count(batch) if real else 0
        if not real:
            loss_sum = loss_sum * 0.0
        # [2]: the step's loss sum and answer-token count over all ranks, in one all_reduce
        totals = dist.all_reduce_sum(torch.tensor([float(loss_sum.detach()), n_tok], dtype=torch.float64,
                                                  device=self.info.device))
        n_all = float(totals[1])
        step_loss = float(totals[0]) / n_all  # mean over the answer tokens of all ranks
        if math.isfinite(step_loss):
            # Averaging the ranks' gradients after scaling each rank's sum by world / n_all gives the
            # gradient of the global token mean; in one process it is the plain mean.
            (loss_sum * self.world / n_all).backward()
            dist.all_reduce_grads_mean(self.trainable())
        return {"loss": step_loss, f"loss_{batch.task}": step_loss, "phase": 0 if warm else 1}

    # --- helpers ----------------------------------------------------------------------------------
    def _instruct_batch(self, step: int) -> list[int]:
        epoch, pos = divmod(step - self.warm_steps, self.per_epoch)
        if epoch != self._plan_epoch:
            self._plan_epoch, self._plan = epoch, plan_batches(self.instruct, self.global_batch, self.cfg.seed,
                                                               epoch + 1)
        return self._plan[pos]


def _trained_wordings(cfg: InstructConfig) -> dict:
    """What the manifest records of the varied wordings the run trained on (evaluation of held-out wordings
    refuses a run that trained on one of them)."""
    words = load_templates()["wordings"]
    trained = {}
    if cfg.paraphrase_ratio > 0:
        trained.update({t: words[f"{t}_train"] for t in ("nc", "lp") if t in cfg.tasks})
    if cfg.describe_per_dataset:
        trained["describe"] = words["describe_train"]
    return {"paraphrase_ratio": cfg.paraphrase_ratio, "describe_per_dataset": cfg.describe_per_dataset,
            "trained": trained}


def node_modalities(datasets: list) -> list[str]:
    """The node modalities the datasets' features hold, e.g. ["text", "image"]; every dataset must hold the
    same ones (an aligner reads one layout)."""
    kinds = {tuple(m for m, dim in (("text", ds.store.text_dim), ("image", ds.store.image_dim)) if dim)
             for ds in datasets}
    if len(kinds) != 1:
        raise ValueError(f"datasets' features hold different modalities {sorted(kinds)}; train on datasets that "
                         "have the same ones")
    return list(kinds.pop())


def run_instruct(cfg: InstructConfig, out: Path, info, latest: Path | None, progress: bool,
                 on_step: Callable[[int, int, dict], None] | None = None) -> dict:
    main = info.is_main
    modality = cfg.projector == "modality"
    with dist.main_first():  # rank 0 fills the node-token caches; the other ranks then read them
        datasets = [load_dataset_inputs(d, cfg.features[i] if cfg.features else None, source=cfg.node_source,
                                        align_dir=cfg.align or None, allow_unseen=cfg.allow_unseen_features,
                                        device=str(info.device), progress=progress and main, images=modality)
                    for i, d in enumerate(cfg.data)]
    shapes = {tuple(ds.tokens.shape[1:]) for ds in datasets}
    if len(shapes) != 1:
        raise ValueError(f"datasets give node tokens of different shapes {sorted(shapes)}; use one aligner/encoder")
    nq, d = shapes.pop()
    modalities = node_modalities(datasets)
    image_dims = {0 if ds.image is None else ds.image.shape[1] for ds in datasets}
    if modality and len(image_dims) != 1:
        raise ValueError("projector 'modality' needs every dataset's features to have the same image modality "
                         f"(image dims {sorted(image_dims)}); train on datasets that all have images or none do, "
                         "or use --projector single")
    image_dim = image_dims.pop() if modality else 0
    if modality and not image_dim and main:
        # A graph without pictures: the modality projectors lose their image slot rather than read zeros.
        print(f"instruct: the features hold no images (modalities: {', '.join(modalities)}), so projector "
              "'modality' runs without its image projector: no <image> token in the prompts; the task-specific "
              "graph projectors train as usual", file=sys.stderr, flush=True)

    workload = None
    if cfg.precision == "auto" and info.device.type == "cpu":  # auto times a step of this LLM's layer shape
        workload = Workload.llm(**layer_shape(cfg.llm))
    with dist.main_first():  # rank 0 measures (if auto on CPU) and caches the decision; the others read it
        precision = resolve_precision(cfg.precision, info.device.type, frozen_weights=True, workload=workload)
    # Seeded here, not earlier: filling a cache runs the aligner, and the initial projector / LoRA weights
    # must not depend on whether this process found a cache.
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    opts = LLMOptions(dtype=precision.weights, device=str(info.device), lora=cfg.lora, lora_r=cfg.lora_r,
                      lora_alpha=cfg.lora_alpha, gradient_checkpointing=cfg.gradient_checkpointing,
                      flash_attn=cfg.flash_attn, progress=progress and main)
    model, spec = GraphLLM.build(cfg.llm, opts, precision, config_to_dict(cfg), graph_dim=d, image_dim=image_dim)
    projectors, parts = model.projectors, model.parts
    with dist.main_first():  # rank 0 fills the PPR demonstration caches
        warm, instruct = build_phase_examples(cfg, datasets, model.tokenizer, nq, projectors.image_tokens,
                                              progress=progress and main)
    inputs = [NodeInputs(ds.tokens, ds.image) for ds in datasets]
    stage = InstructStage(cfg, info, model, inputs, warm, instruct)
    dist.broadcast_params(stage.trainable())  # every rank starts from rank 0's initial weights
    if main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.json")
    projectors.train()
    last = run_loop(stage, cfg, out, info, resume_from=latest, show_progress=progress, desc="instruct",
                    on_step=on_step)
    projectors.eval()

    if main:
        model.save(out)
        write_stage_manifest(
            out, "instruct", config=config_to_dict(cfg),
            inputs={"align": ({"run": str(Path(cfg.align).resolve()), "identity": aligner_identity(cfg.align)}
                              if cfg.node_source == "aligner" else None),
                    "datasets": [ds.record() for ds in datasets]},
            dims={"nq": int(nq), "d": int(d), "hidden": int(parts.hidden), "image_dim": int(image_dim),
                  "projector_hidden": cfg.projector_hidden},
            extra={"llm": {"name": spec.name, "source": spec.source, "gguf_file": spec.gguf_file,
                           "hidden_size": int(parts.hidden), "vocab_size": int(parts.embed.weight.shape[0])},
                   "projector": projectors.cfg.to_dict(),
                   "modalities": {"features": modalities, "image_token": bool(projectors.image_tokens)},
                   "templates": {"set": cfg.template_set, "fingerprint": templates_fingerprint(cfg.template_set),
                                 "chat_template": cfg.chat_template},
                   "truncation": {"max_length": cfg.max_length, "target_text_tokens": cfg.target_text_tokens,
                                  "demo_text_tokens": cfg.demo_text_tokens},
                   "precision": precision.to_dict(),
                   CHECKSUMS: record_checksums(out, INSTRUCT_ARTIFACTS),
                   "num_examples": {"warmup": len(warm), "instruct": len(instruct),
                                    "per_dataset": example_counts(datasets, warm, instruct)},
                   "wordings": _trained_wordings(cfg),
                   "train": {"steps": stage.total_steps, "total_steps": stage.total_steps,
                             "warmup_steps": stage.warm_steps, "world_size": info.world_size,
                             "global_batch_size": stage.global_batch, "final": last}})
        write_model_card(out)
    dist.barrier()
    return {"steps": stage.total_steps, "warmup_steps": stage.warm_steps, "final": last}

"""Stage 2: instruction tuning of the projector into a frozen causal LLM, on NC and LP prompts.

RUN2/ holds config.json (resolved InstructConfig), manifest.json (stage "instruct": aligner run
identity, per-dataset features/graph records, LLM spec and hidden size, projector dims, template
fingerprint, truncation policy, and as in Stage 1 a "train" record with the steps and world size),
metrics.jsonl (the loss is the mean over all ranks' answer tokens), checkpoints/step_*.pt,
projector.safetensors and, with LoRA, lora/ (a peft adapter folder).

Batches mix tasks and datasets: all examples are built up front (cheap: token ids only), shuffled
per epoch with a seeded generator, and cut into batches; under torchrun rank r takes every
world-th batch, and each rank's summed answer loss is scaled by world / (answer tokens of all ranks),
so DDP's gradient average is the gradient of the token mean over the union of the ranks' batches:
the same step as one process with a world times larger batch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlaga_fast.config import check_resume_config, config_to_dict, save_config


@dataclass
class InstructConfig:
    data: list[str] = field(default_factory=list, metadata={"help": "dataset dirs (mlaga_fast.data.save)"})
    features: list[str] = field(default_factory=list,
                                metadata={"help": "features dir per dataset (default: DIR/features)"})
    align: str = field(default="", metadata={"help": "Stage-1 run dir (not needed for --node-source raw)"})
    llm: str = field(default="smollm2", metadata={"help": "hub id, local folder, *.gguf, or alias smollm2/vicuna"})
    tasks: list[str] = field(default_factory=lambda: ["nc", "lp"], metadata={"help": "nc, lp or both"})
    node_source: str = field(default="aligner", metadata={
        "help": "aligner tokens, or raw pooled encoder features (ablation)", "choices": ["aligner", "raw"]})
    demos: str = field(default="ppr", metadata={"help": "NC demonstrations", "choices": ["ppr", "random", "none"]})
    num_demos: int = field(default=3, metadata={"help": "NC demonstrations per prompt (m)"})
    lp_demo: bool = field(default=True, metadata={"help": "show one LP demonstration pair"})
    ppr_k: int = field(default=8, metadata={"help": "PPR candidates cached per node"})
    ppr_alpha: float = field(default=0.15, metadata={"help": "PPR restart probability"})
    ppr_eps: float = field(default=1e-4, metadata={"help": "PPR push tolerance"})
    nc_per_dataset: int = field(default=0, metadata={"help": "NC training prompts per dataset (0 = all train nodes)"})
    lp_per_dataset: int = field(default=0, metadata={"help": "LP training prompts per dataset (0 = as many as NC)"})
    epochs: int = field(default=1, metadata={"help": "passes over the training prompts"})
    max_steps: int = field(default=0, metadata={"help": "stop after this many steps (0 = epochs decide)"})
    batch_size: int = field(default=8, metadata={"help": "prompts per step (per process)"})
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    warmup_ratio: float = field(default=0.05, metadata={"help": "fraction of steps in linear warmup"})
    min_lr_ratio: float = field(default=0.1, metadata={"help": "final LR as a fraction of the peak"})
    grad_clip: float = field(default=1.0, metadata={"help": "max grad norm (0 = off)"})
    max_length: int = field(default=384, metadata={"help": "max prompt + answer tokens"})
    target_text_tokens: int = field(default=24, metadata={"help": "text tokens kept per question node"})
    demo_text_tokens: int = field(default=12, metadata={"help": "text tokens kept per demonstration node"})
    projector_hidden: int = field(default=0, metadata={"help": "projector hidden width (0 = LLM hidden)"})
    lora: bool = field(default=False, metadata={"help": "train LoRA adapters on the LLM too (peft)"})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "recompute LLM activations"})
    dtype: str = field(default="auto", metadata={"help": "LLM dtype", "choices": ["auto", "float32", "bfloat16", "float16"]})
    flash_attn: str = field(default="auto", metadata={"help": "flash-attn 2", "choices": ["auto", "on", "off"]})
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda"})
    allow_unseen_features: bool = field(default=False, metadata={
        "help": "allow datasets whose features the aligner was not trained on (same encoder and dims)"})
    save_every: int = field(default=200, metadata={"help": "checkpoint every N steps"})
    log_every: int = field(default=10, metadata={"help": "log metrics every N steps"})
    seed: int = field(default=0, metadata={"help": "seed for sampling, order and init"})


def templates_fingerprint() -> str:
    from mlaga_fast.prompts import load_templates
    from mlaga_fast.utils.io import fingerprint

    return fingerprint(load_templates())


def _policy(cfg):
    from mlaga_fast.prompts import TruncationPolicy

    return TruncationPolicy(cfg.max_length, cfg.target_text_tokens, cfg.demo_text_tokens)


def build_training_examples(cfg: InstructConfig, datasets, tokenizer, nq: int, progress: bool = True) -> list:
    """All training prompts of all datasets and tasks (token ids + node ids), seeded by cfg.seed."""
    from tqdm.auto import tqdm

    from mlaga_fast.prompts.demos import LinkPairs, NCDemos, ppr_demo_table, train_label_pool
    from mlaga_fast.train.instruct_batch import lp_examples, make_builder, nc_examples
    from mlaga_fast.train.instruct_data import demo_cache_dir

    examples = []
    for di, ds in enumerate(tqdm(datasets, desc="prompts", disable=not progress)):
        rng = np.random.default_rng([cfg.seed, di, 7])
        builder = make_builder(tokenizer, ds.graph, nq, _policy(cfg))
        n_nc = 0
        if "nc" in cfg.tasks:
            pool = train_label_pool(ds.graph)
            if pool.size == 0:
                raise ValueError(f"dataset {ds.name}: no labelled training nodes for task nc")
            targets = pool if cfg.nc_per_dataset <= 0 else rng.choice(pool, min(cfg.nc_per_dataset, pool.size),
                                                                       replace=False)
            table = (ppr_demo_table(ds.graph, k=cfg.ppr_k, alpha=cfg.ppr_alpha, eps=cfg.ppr_eps,
                                    cache_dir=demo_cache_dir(ds), progress=progress)
                     if cfg.demos == "ppr" and cfg.num_demos > 0 else None)
            demos = NCDemos(ds.graph, cfg.demos if cfg.num_demos > 0 else "none", cfg.num_demos, cfg.seed, table)
            examples += nc_examples(ds.graph, builder, targets, demos, with_label=True, dataset=di)
            n_nc = len(targets)
        if "lp" in cfg.tasks:
            links = LinkPairs(ds.graph, seed=cfg.seed)
            # Default: as many LP prompts as NC prompts would be, so the two tasks weigh the same.
            n_default = len(train_label_pool(ds.graph)) if cfg.nc_per_dataset <= 0 else cfg.nc_per_dataset
            count = cfg.lp_per_dataset if cfg.lp_per_dataset > 0 else max(n_nc, n_default, 2)
            pairs, y = links.train_pairs(count, rng)
            examples += lp_examples(builder, pairs, y, links if cfg.lp_demo else None, with_label=True,
                                    dataset=di)
    return examples


def _check_cfg(cfg: InstructConfig) -> None:
    if not cfg.data:
        raise ValueError("data: at least one dataset dir is needed (--data DIR[,DIR...])")
    if cfg.features and len(cfg.features) != len(cfg.data):
        raise ValueError(f"features: {len(cfg.features)} dirs given for {len(cfg.data)} datasets")
    bad = [t for t in cfg.tasks if t not in ("nc", "lp")]
    if bad or not cfg.tasks:
        raise ValueError(f"tasks: {bad[0] if bad else 'empty'!r} is not one of ['nc', 'lp']")
    if cfg.node_source == "aligner" and not cfg.align:
        raise ValueError("align: a Stage-1 run is needed unless --node-source raw")
    for name in ("batch_size", "epochs", "max_length"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name}: must be >= 1, got {getattr(cfg, name)}")


# Fields that may differ on --resume: where and how the same computation runs, and what it logs.
RESUMABLE_CHANGES = ("device", "save_every", "log_every", "flash_attn", "gradient_checkpointing")


def train_instruct(cfg: InstructConfig, out: str | Path, *, resume: bool = False, progress: bool = True) -> Path:
    """Run Stage 2; returns the run dir. Safe to interrupt: --resume continues from the last checkpoint.

    Under torchrun with W processes and per-process batch B, every step takes the same W*B prompts and
    the same gradient (the mean over all their answer tokens) as one process with batch W*B; only rank 0
    writes files (the run dir and the datasets' node-token and PPR caches).
    """
    import torch.distributed as tdist

    from mlaga_fast.train import distributed as dist
    from mlaga_fast.train.checkpoint import find_latest
    from mlaga_fast.train.manifest import MANIFEST_NAME

    _check_cfg(cfg)
    out = Path(out)
    ckpt_dir = out / "checkpoints"
    latest = find_latest(ckpt_dir) if resume else None
    if resume:
        check_resume_config(cfg, out, RESUMABLE_CHANGES)
    if not resume and ((out / MANIFEST_NAME).exists() or find_latest(ckpt_dir) is not None):
        raise ValueError(f"out: {out} already holds a Stage-2 run; pass --resume or choose another --out")
    owns_group = not (tdist.is_available() and tdist.is_initialized())
    info = dist.init_distributed(cfg.device)
    try:
        _train(cfg, out, info, latest, progress)
    finally:
        if owns_group:
            dist.cleanup_distributed()
    return out


def _train(cfg: InstructConfig, out: Path, info, latest: Path | None, progress: bool) -> None:
    import torch

    from mlaga_fast.llm.loading import LLMOptions, hidden_size, load_llm, trainable_llm_state
    from mlaga_fast.models.projector import Projector, ProjectorConfig, save_projector
    from mlaga_fast.train import distributed as dist
    from mlaga_fast.train.checkpoint import load_checkpoint, save_checkpoint
    from mlaga_fast.train.instruct_batch import answer_loss, answer_token_count, collate, gather_node_tokens
    from mlaga_fast.train.instruct_data import aligner_identity, load_dataset_inputs
    from mlaga_fast.train.manifest import write_stage_manifest
    from mlaga_fast.train.metrics import JsonlLogger, progress as pbar
    from mlaga_fast.train.schedule import cosine_with_warmup

    main = info.is_main
    with dist.main_first():  # rank 0 fills the node-token caches; the other ranks then read them
        datasets = [load_dataset_inputs(d, cfg.features[i] if cfg.features else None, source=cfg.node_source,
                                        align_dir=cfg.align or None, allow_unseen=cfg.allow_unseen_features,
                                        device=str(info.device), progress=progress and main)
                    for i, d in enumerate(cfg.data)]
    shapes = {tuple(ds.tokens.shape[1:]) for ds in datasets}
    if len(shapes) != 1:
        raise ValueError(f"datasets give node tokens of different shapes {sorted(shapes)}; use one aligner/encoder")
    nq, d = shapes.pop()

    # Seeded here, not earlier: filling a cache runs the aligner, which draws from the RNG, and the
    # initial projector / LoRA weights must not depend on whether this process found a cache.
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    opts = LLMOptions(dtype=cfg.dtype, device=str(info.device), lora=cfg.lora, lora_r=cfg.lora_r,
                      lora_alpha=cfg.lora_alpha, gradient_checkpointing=cfg.gradient_checkpointing,
                      flash_attn=cfg.flash_attn)
    model, tok, spec = load_llm(cfg.llm, opts)
    if cfg.gradient_checkpointing:
        model.train()  # HF only checkpoints in training mode; Llama-family dropouts are 0
    H = hidden_size(model)
    proj = Projector(ProjectorConfig(d, H, cfg.projector_hidden)).to(info.device)
    with dist.main_first():  # rank 0 fills the PPR demonstration caches
        examples = build_training_examples(cfg, datasets, tok, nq, progress=progress and main)
    if not examples:
        raise ValueError("no training prompts were built (empty train split?)")

    world = info.world_size
    batches_per_epoch = math.ceil(len(examples) / cfg.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / world)  # == ceil(len(examples) / (world * batch_size))
    total = cfg.max_steps if cfg.max_steps > 0 else steps_per_epoch * cfg.epochs
    lora_params = [p for p in model.parameters() if p.requires_grad]  # [] without LoRA
    params = list(proj.parameters()) + lora_params
    ddp_proj = proj
    if world > 1:
        # DDP broadcasts rank 0's projector now and averages its gradients in backward; the LoRA
        # adapters are not wrapped (peft model), so they get the same two things by hand.
        ddp_proj = torch.nn.parallel.DistributedDataParallel(proj, device_ids=[info.device] if info.device.type == "cuda" else None)
        dist.broadcast_params(lora_params)
    optim = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = cosine_with_warmup(optim, int(cfg.warmup_ratio * total), total, cfg.min_lr_ratio)

    step = 0
    if latest is not None:  # every rank loads the same checkpoint
        state = load_checkpoint(latest, model=proj, optimizer=optim, scheduler=sched)
        step = int(state["step"])
        lora_state = state["extra"].get("lora") or {}
        if lora_state:
            named = dict(model.named_parameters())
            with torch.no_grad():
                for k, v in lora_state.items():
                    named[k].copy_(v)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.json")
    logger = JsonlLogger(out / "metrics.jsonl", enabled=main, resume_step=step if latest is not None else None)

    pad = tok.pad_token_id
    tokens = [ds.tokens for ds in datasets]
    bar = pbar(total=total, desc="instruct", enabled=main and progress, initial=step)
    run_loss, run_n = 0.0, 0
    while step < total:
        epoch, pos = divmod(step, steps_per_epoch)
        order = np.random.default_rng([cfg.seed, epoch, 11]).permutation(len(examples))
        b = pos * world + info.rank  # this rank's batch index within the epoch
        # Uneven tail: a rank with no batch left in the epoch runs batch 0 again so that DDP's collectives
        # line up, but with weight 0, so the step's gradient comes from the other ranks' batches alone:
        # the same prompts that one process with batch world * batch_size takes in its last step.
        real = b < batches_per_epoch
        b = b if real else 0
        batch_ex = [examples[i] for i in order[b * cfg.batch_size:(b + 1) * cfg.batch_size]]
        batch = collate(batch_ex, pad, with_answer=True)
        loss_sum = answer_loss(model, ddp_proj, batch, gather_node_tokens(batch_ex, tokens), info.device,
                               reduction="sum")  # []: summed over this rank's answer tokens
        n_tok = answer_token_count(batch) if real else 0
        if not real:
            loss_sum = loss_sum * 0.0
        # [2]: the step's loss sum and answer-token count over all ranks, in one all_reduce
        totals = dist.all_reduce_sum(torch.tensor([float(loss_sum.detach()), n_tok], dtype=torch.float64,
                                                  device=info.device))
        n_all = float(totals[1])
        step_loss = float(totals[0]) / n_all  # mean over the answer tokens of all ranks
        if not math.isfinite(step_loss):  # the same value on every rank, so all of them stop
            raise ValueError(f"step {step}: loss is {step_loss} (lower --lr, or check dtype {cfg.dtype})")
        # DDP (and the LoRA all-reduce) average the ranks' gradients, so scaling each rank's sum by
        # world / n_all gives the gradient of the global token mean; in one process it is the plain mean.
        loss = loss_sum * world / n_all
        optim.zero_grad(set_to_none=True)
        loss.backward()
        if world > 1 and lora_params:
            dist.all_reduce_grads_mean(lora_params)
        gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip) if cfg.grad_clip > 0 else torch.tensor(0.0)
        optim.step()
        sched.step()
        step += 1
        run_loss += step_loss
        run_n += 1
        bar.update(1)
        bar.set_postfix(loss=f"{step_loss:.3f}")
        if step % cfg.log_every == 0 or step == total:
            logger.log({"loss": run_loss / run_n, "lr": sched.get_last_lr()[0], "grad_norm": float(gnorm),
                        "epoch": epoch}, step=step)
            run_loss, run_n = 0.0, 0
        if main and (step % cfg.save_every == 0 or step == total):
            save_checkpoint(out / "checkpoints", step, model=proj, optimizer=optim, scheduler=sched,
                            extra={"lora": trainable_llm_state(model)})
    bar.close()

    if main:
        save_projector(proj, out / "projector.safetensors")
        if cfg.lora:
            model.save_pretrained(out / "lora")
        write_stage_manifest(
            out, "instruct", config=config_to_dict(cfg),
            inputs={"align": ({"run": str(Path(cfg.align).resolve()), "identity": aligner_identity(cfg.align)}
                              if cfg.node_source == "aligner" else None),
                    "datasets": [ds.record() for ds in datasets]},
            dims={"nq": int(nq), "d": int(d), "hidden": int(H), "projector_hidden": cfg.projector_hidden},
            extra={"llm": {"name": spec.name, "source": spec.source, "gguf_file": spec.gguf_file,
                           "hidden_size": int(H), "vocab_size": int(model.get_input_embeddings().weight.shape[0])},
                   "templates_fingerprint": templates_fingerprint(),
                   "truncation": {"max_length": cfg.max_length, "target_text_tokens": cfg.target_text_tokens,
                                  "demo_text_tokens": cfg.demo_text_tokens},
                   "num_examples": len(examples), "steps": int(total),
                   "train": {"steps": int(total), "world_size": world, "global_batch_size": world * cfg.batch_size}})
    dist.barrier()

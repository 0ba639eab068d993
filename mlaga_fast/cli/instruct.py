"""`mlaga-fast train instruct` (Stage 2) and `mlaga-fast eval` (NC / LP accuracy of a Stage-2 run)."""
from __future__ import annotations

import json

import click

from mlaga_fast.config import config_options, resolve_config, saved_run_config
from mlaga_fast.train.instruct import InstructConfig


@click.command("instruct")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Stage-2 run dir (RUN2)")
@click.option("--resume", is_flag=True, help="continue from RUN2/checkpoints")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="YAML/TOML/JSON file with InstructConfig fields (CLI options win)")
@click.option("--no-progress", is_flag=True, help="hide progress bars")
@config_options(InstructConfig)
def instruct_cmd(out_dir: str, resume: bool, config_file: str | None, no_progress: bool, **kw) -> None:
    """Train the projector into a frozen LLM on NC and LP prompts (torchrun-ready)."""
    from mlaga_fast.train.instruct import train_instruct
    from mlaga_fast.utils.lock import exclusive_output

    # `--resume` starts from the run's own resolved config; options given with it override fields
    # that may change mid-run (e.g. --device) and anything else is refused by train_instruct.
    base = saved_run_config(out_dir) if resume else None
    cfg = resolve_config(InstructConfig, kw, config_file=config_file, base=base)
    with exclusive_output(out_dir, "train instruct"):
        out = train_instruct(cfg, out_dir, resume=resume, progress=not no_progress)
    click.echo(json.dumps({"out": str(out)}))


@click.command("eval")
@click.option("--run", "run_dir", required=True, type=click.Path(exists=True, file_okay=False), help="Stage-2 run")
@click.option("--data", "data_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="dataset dir (seen or unseen: transfer needs no tuning)")
@click.option("--task", type=click.Choice(["nc", "lp"]), required=True, help="node classification or link prediction")
@click.option("--split", type=click.Choice(["val", "test"]), default="test", show_default=True,
              help="which split's nodes (NC) or pairs (LP)")
@click.option("--features", default=None, help="features dir [default: DATA/features]")
@click.option("--demos", type=click.Choice(["ppr", "random", "none"]), default=None,
              help="ablation: override the run's demonstrations [default: as trained]")
@click.option("--max-examples", type=int, default=0, show_default=True, help="seeded subsample (0 = all)")
@click.option("--batch-size", type=int, default=8, show_default=True, help="prompts per LLM forward pass")
@click.option("--no-generate", is_flag=True, help="skip free generation (constrained scoring only)")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or N (= cuda:N)")
@click.option("--seed", type=int, default=0, show_default=True, help="seed of --max-examples and random demos")
@click.option("--method", default=None, help="name for tables [default: mlaga-<llm>[+ablation]]")
@click.option("--out", "out_file", default=None, type=click.Path(dir_okay=False),
              help="FILE.json (+ FILE.png, FILE.gen.png, FILE.md)")
@click.option("--no-progress", is_flag=True, help="hide progress bars")
def eval_cmd(run_dir, data_dir, task, split, features, demos, max_examples, batch_size, no_generate, device, seed,
             method, out_file, no_progress) -> None:
    """Accuracy of a Stage-2 run: NC (constrained scoring + free generation) or LP (balanced pairs)."""
    from mlaga_fast.eval.instruct_eval import EvalOptions, evaluate

    opts = EvalOptions(task=task, split=split, features=features, demos=demos, max_examples=max_examples,
                       batch_size=batch_size, generate=not no_generate, device=device, seed=seed, method=method)
    res = evaluate(run_dir, data_dir, opts, out=out_file, progress=not no_progress)
    gen = res["extra"].get("generation")
    click.echo(json.dumps({
        "method": res["method"], "dataset": res["dataset"], "task": task, "split": split,
        "accuracy": round(res["accuracy"], 4),
        "generation_accuracy": round(gen["accuracy"], 4) if gen else None,
        "generation_invalid": gen["num_invalid"] if gen else None,
        "chance": round(res["extra"]["chance"], 4), "num_examples": res["num_examples"],
        "transfer": res["extra"]["transfer"], "wall_s": res["extra"]["wall_s"], "out": out_file,
    }))

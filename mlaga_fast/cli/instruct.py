"""`mlaga-fast train instruct` (Stage 2), `eval` (NC / LP accuracy of a Stage-2 run), `predict` (per-node or
per-pair outputs) and `ask` (free questions about a node)."""
from __future__ import annotations

import json

import click

from mlaga_fast.config import config_options
from mlaga_fast.train.instruct_config import PRESETS, InstructConfig


@click.command("instruct")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Stage-2 run dir (RUN2)")
@click.option("--resume", is_flag=True, help="continue from RUN2/checkpoints")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="YAML/TOML/JSON file with InstructConfig fields (CLI options win)")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default=None,
              help="named field set: 'paper' = the released model's Stage 2 (Vicuna-7B-16K, its chat format, the "
                   "paper's templates, modality-aware projectors with cross-task attention, lr 2e-5, batch 8, "
                   "4 epochs); 'cpu' = the defaults")
@click.option("--no-progress", is_flag=True, help="hide progress bars")
@config_options(InstructConfig)
def instruct_cmd(out_dir: str, resume: bool, config_file: str | None, preset: str | None, no_progress: bool,
                 **kw) -> None:
    """Train the projectors (and LoRA adapters) into a frozen LLM on NC and LP prompts (torchrun-ready)."""
    from mlaga_fast.config import saved_run_config
    from mlaga_fast.train.instruct import train_instruct
    from mlaga_fast.train.instruct_config import build_config
    from mlaga_fast.utils.lock import exclusive_output

    # `--resume` starts from the run's own resolved config; options given with it override fields
    # that may change mid-run (e.g. --device) and anything else is refused by train_instruct.
    base = saved_run_config(out_dir) if resume else None
    cfg = build_config(kw, config_file=config_file, preset=preset, base=base)
    with exclusive_output(out_dir, "train instruct"):
        summary = train_instruct(cfg, out_dir, resume=resume, progress=not no_progress)
    if summary.get("already_complete"):
        click.echo(f"{out_dir} is already complete ({summary['steps']} steps); nothing to do.")
        return
    loss = summary.get("final", {}).get("loss")
    click.echo(f"trained {summary['steps']} steps ({summary['warmup_steps']} warm-up) in {summary['seconds']:.0f} s"
               + (f", final loss {loss:.4f}" if loss is not None else "") + f"; run: {out_dir}")
    click.echo(f"next: mlaga-fast eval --run {out_dir} --data {cfg.data[0]} --task {cfg.tasks[0]}")


def _common_eval_options(fn):
    fn = click.option("--features", default=None, help="features dir or online:ENCODER [default: DATA/features]")(fn)
    fn = click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N")(fn)
    fn = click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
                      help="prompts scored together")(fn)
    fn = click.option("--no-progress", is_flag=True, help="hide progress bars")(fn)
    return _no_verify_option(fn)


def _no_verify_option(fn):
    return click.option("--no-verify", is_flag=True,
                        help="skip the run's sha256 checksums (for runs edited on purpose; the model card notes "
                             "evaluations made so)")(fn)


@click.command("eval")
@click.option("--run", "run_dir", required=True, type=click.Path(exists=True, file_okay=False), help="Stage-2 run")
@click.option("--data", "data_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="dataset dir (seen or unseen: transfer needs no tuning)")
@click.option("--task", type=click.Choice(["nc", "lp", "describe"]), required=True,
              help="node classification, link prediction, or node descriptions (generated; correct when they name "
                   "the node's category)")
@click.option("--split", type=click.Choice(["val", "test"]), default="test", show_default=True,
              help="which split's nodes (NC) or pairs (LP)")
@click.option("--wording", type=click.Choice(["trained", "held-out"]), default="trained", show_default=True,
              help="the task's own prompt, or ask's layout with the templates' held-out wordings (never trained on)")
@click.option("--demos", type=click.Choice(["ppr", "random", "none"]), default=None,
              help="ablation: override the run's demonstrations [default: as trained]")
@click.option("--max-examples", type=click.IntRange(min=0), default=0, show_default=True,
              help="seeded subsample (0 = all)")
@click.option("--generate", is_flag=True, help="also score free (greedy) generation and save the answers")
@click.option("--protocol", type=click.Choice(["constrained", "paper"]), default="constrained", show_default=True,
              help="constrained = argmax over the answers; paper = sampled generation at T 0.2 (seeded) with the "
                   "released matching rules")
@click.option("--seed", type=int, default=0, show_default=True, help="subsample, random demonstrations, sampling")
@click.option("--method", default=None, help="name for tables [default: mlaga-<llm>[+ablation]]")
@click.option("--calibrate", type=click.Choice(["none", "mean"]), default="none", show_default=True,
              help="NC: also report the accuracy with each category's score taken relative to its mean over the "
                   "evaluated nodes (no label used; for category names the run never saw)")
@click.option("--out", "out_file", default=None, type=click.Path(dir_okay=False),
              help="FILE.json (+ FILE.png, FILE.gen.png, FILE.gen.jsonl, FILE.md)")
@_common_eval_options
def eval_cmd(run_dir, data_dir, task, split, wording, demos, max_examples, generate, protocol, seed, method, calibrate,
             out_file, features, device, batch_size, no_progress, no_verify) -> None:
    """Accuracy of a Stage-2 run: NC or LP, constrained scoring (default) or the paper's protocol."""
    from mlaga_fast.eval.instruct_eval import EvalOptions, evaluate

    opts = EvalOptions(task=task, split=split, features=features, demos=demos, max_examples=max_examples,
                       batch_size=batch_size, generate=generate, protocol=protocol, device=device, seed=seed,
                       method=method, wording=wording, verify=not no_verify, calibrate=calibrate)
    res = evaluate(run_dir, data_dir, opts, out=out_file, progress=not no_progress)
    gen, cal = res["extra"].get("generation"), res["extra"].get("calibrated")
    click.echo(json.dumps({
        "method": res["method"], "dataset": res["dataset"], "task": task, "split": split, "wording": wording,
        "protocol": protocol,
        "accuracy": round(res["accuracy"], 4),
        "generation_accuracy": round(gen["accuracy"], 4) if gen else None,
        "generation_invalid": gen["num_invalid"] if gen else None,
        "calibrated_accuracy": round(cal["accuracy"], 4) if cal else None,
        "chance": round(res["extra"]["chance"], 4), "num_examples": res["num_examples"],
        "transfer": res["extra"]["transfer"], "wall_s": res["extra"]["wall_s"], "out": out_file,
    }))


@click.command("predict")
@click.option("--run", "run_dir", required=True, type=click.Path(exists=True, file_okay=False), help="Stage-2 run")
@click.option("--data", "data_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="dataset dir (seen or unseen)")
@click.option("--task", type=click.Choice(["nc", "lp"]), required=True, help="node classification or link prediction")
@click.option("--nodes", default="test", show_default=True,
              help="NC: all | train | val | test | a file of node ids (one per line, or .npy)")
@click.option("--pairs", "pairs_file", default=None, type=click.Path(exists=True, dir_okay=False),
              help="LP: a file of node-id pairs (two per line, or .npy [n, 2]) [default: the test pairs]")
@click.option("--demos", type=click.Choice(["ppr", "random", "none"]), default=None,
              help="NC demonstrations [default: as trained]")
@click.option("--seed", type=int, default=0, show_default=True, help="seed of random demonstrations")
@click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False),
              help="FILE.csv, FILE.jsonl or FILE.parquet")
@_common_eval_options
def predict_cmd(run_dir, data_dir, task, nodes, pairs_file, demos, seed, out_file, features, device, batch_size,
                no_progress, no_verify) -> None:
    """Write one row per node (NC: predicted class and every class's score) or per pair (LP: P(Yes)).
    Resumable: rerunning the same command after an interruption continues where it stopped."""
    from mlaga_fast.eval.predict import run_predict
    from mlaga_fast.utils.lock import exclusive_output

    with exclusive_output(out_file, "predict", is_file=True):
        n = run_predict(run_dir, data_dir, task, out_file, nodes=nodes, pairs_file=pairs_file, demos=demos,
                        seed=seed, features=features, device=device, batch_size=batch_size,
                        progress=not no_progress, verify=not no_verify)
    click.echo(json.dumps({"out": out_file, "rows": n, "task": task}))


@click.command("ask")
@click.option("--run", "run_dir", required=True, type=click.Path(exists=True, file_okay=False), help="Stage-2 run")
@click.option("--data", "data_dir", required=True, type=click.Path(exists=True, file_okay=False), help="dataset dir")
@click.option("--node", "nodes", type=int, multiple=True, required=True,
              help="node id; give it twice (--node A --node B) to ask about a pair")
@click.option("--demos", type=click.Choice(["ppr", "random", "none"]), default="none", show_default=True,
              help="demonstrations shown with a single node")
@click.option("--seed", type=int, default=0, show_default=True, help="seeds demonstrations and sampling")
@click.option("--temperature", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="0 = greedy decoding")
@click.option("--max-new-tokens", type=click.IntRange(1, 512), default=48, show_default=True,
              help="longest answer, in tokens")
@click.option("--features", default=None, help="features dir or online:ENCODER [default: DATA/features]")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N")
@_no_verify_option
@click.argument("question", required=False)
def ask_cmd(run_dir, data_dir, nodes, demos, seed, temperature, max_new_tokens, features, device, no_verify,
            question) -> None:
    """Ask the assistant about a node (or a pair). Without QUESTION: an interactive prompt (empty line quits)."""
    from mlaga_fast.assistant import MLaGA
    from mlaga_fast.eval.instruct_eval import check_inputs

    check_inputs(data_dir, features)  # before the LLM is loaded
    m = MLaGA.from_pretrained(run_dir, device=device, progress=False, verify=not no_verify)

    def answer(q: str) -> str:
        return m.ask(data_dir, list(nodes) if len(nodes) > 1 else nodes[0], q, features=features, demos=demos,
                     seed=seed, temperature=temperature, max_new_tokens=max_new_tokens)

    if question:
        click.echo(answer(question))
        return
    while True:
        q = click.prompt("question", default="", show_default=False)
        if not q.strip():
            return
        click.echo(answer(q))


@click.command("export")
@click.option("--run", "run_dir", required=True, type=click.Path(exists=True, file_okay=False), help="Stage-2 run")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="new folder to write")
@_no_verify_option
def export_cmd(run_dir, out_dir, no_verify) -> None:
    """Copy a Stage-2 run (projectors, LoRA adapter, the Stage-1 aligner, configs, manifest, model card) into a
    folder that `MLaGA.from_pretrained` loads on another machine (the frozen LLM is named, not copied)."""
    from mlaga_fast.export import export_run

    out = export_run(run_dir, out_dir, verify=not no_verify)
    click.echo(json.dumps({"export": str(out)}))

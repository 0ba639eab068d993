"""RUN2/model_card.md: what a Stage-2 run is, what it was trained on, and how it scored, from its manifest."""
from __future__ import annotations

import json
from pathlib import Path

from mlaga_fast.utils.io import atomic_write_text

__all__ = ["write_model_card"]


def _integrity_line(m: dict) -> str:
    sums = m.get("checksums")
    if not sums:
        return ("- Integrity: no checksums recorded (written before mlaga_fast recorded them): its files cannot "
                "be verified.")
    line = (f"- Integrity: sha256 of {len(sums)} files ({', '.join(sorted(sums))}) in manifest.json, checked "
            "whenever the run is opened (`--no-verify` skips it).")
    src = (m.get("integrity") or {}).get("exported_from")
    if src and src != "verified":
        line += f" Exported from a run whose files were {src}: these checksums are of the copies."
    return line


def write_model_card(run_dir: str | Path) -> Path:
    """RUN2/model_card.md from the run's manifest (and RUN2/evaluations.jsonl, if evaluations were run)."""
    run_dir = Path(run_dir)
    m = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    cfg, train = m["config"], m.get("train", {})
    evals = []
    if (run_dir / "evaluations.jsonl").is_file():
        evals = [json.loads(x) for x in (run_dir / "evaluations.jsonl").read_text(encoding="utf-8").splitlines() if x]
    lines = [
        f"# MLaGA Stage-2 run `{run_dir.name}`", "",
        "A frozen causal LLM read through trained projectors (MLaGA, arXiv 2506.02568), made with mlaga_fast "
        f"{m['mlaga_fast_version']} (torch {m.get('torch_version')}) on {m.get('created')}.", "",
        "## What it is",
        f"- LLM: `{m['llm']['name']}` ({m['llm']['source']}), frozen; hidden size {m['dims']['hidden']}.",
        f"- Projectors: {m['projector']['kind']} (image projector: {m['projector']['kind'] == 'modality'}, "
        f"cross-task attention: {m['projector']['cross_task']}); LoRA adapters: {bool(cfg.get('lora'))}.",
        f"- Node tokens: {cfg['node_source']} ({m['dims']['nq']} x {m['dims']['d']} per node)"
        + (f" from the Stage-1 run {m['inputs']['align']['identity']}." if m["inputs"].get("align") else "."),
        f"- Prompts: template set `{m['templates']['set']}` ({m['templates']['fingerprint']}), chat template "
        f"{m['templates']['chat_template']}, NC demonstrations {cfg['demos']} x {cfg['num_demos']}.",
        f"- Precision: {m['precision']['name']}.",
        _integrity_line(m), "",
        "## Training data",
        "| dataset | graph fingerprint | features | encoder | classes |", "|---|---|---|---|---:|",
    ]
    for d in m["inputs"]["datasets"]:
        lines.append(f"| {d['name']} | `{d['graph_fingerprint']}` | `{d['features']['fingerprint']}` | "
                     f"`{d['features'].get('encoder')}` | {len(d['class_names'])} |")
    final = train.get("final", {})
    lines += ["", "## Training",
              f"- {train.get('steps')} steps ({train.get('warmup_steps', 0)} warm-up), global batch "
              f"{train.get('global_batch_size')}, {train.get('world_size')} process(es); tasks {', '.join(cfg['tasks'])}.",
              f"- Final training loss: {final.get('loss', float('nan')):.4f}." if final else "- Final loss: n/a.", ""]
    lines += ["## Evaluations"]
    if evals:
        lines += ["| dataset | task | split | protocol | accuracy | examples | transfer | run files |",
                  "|---|---|---|---|---:|---:|---|---|"]
        lines += [f"| {e['dataset']} | {e['task']} | {e['split']} | {e['protocol']} | {100 * e['accuracy']:.2f} | "
                  f"{e['num_examples']} | {e['transfer']} | {e.get('integrity', 'n/a')} |" for e in evals]
        if any(e.get("integrity") == "unverified" for e in evals):
            lines += ["", "Rows with run files \"unverified\" were evaluated with `--no-verify`: the run's files "
                          "were not checked against their checksums, so they may differ from what was trained."]
    else:
        lines += ["None recorded (`mlaga-fast eval --run` adds them here)."]
    lines += ["", "## Intended use",
              "Node classification among the training graph's classes and Yes/No link prediction on multimodal "
              "graphs with the same feature encoder, including graphs the run never saw (transfer). Free answers "
              "(`mlaga-fast ask`) come from a small frozen LLM read through trained projectors: check them. "
              "Not for decisions about people.", ""]
    path = run_dir / "model_card.md"
    atomic_write_text(path, "\n".join(lines))
    return path

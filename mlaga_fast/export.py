"""Model cards and ``mlaga-fast export``: a Stage-2 run as a folder that loads anywhere.

An export holds everything but the frozen LLM (named in the manifest; the machine that loads the export
must have it: a hub id in its cache, the `smollm2` package, or the same local path):

  EXPORT/
    projectors.safetensors   the trained projectors (config in the file's metadata)
    lora/                    the peft adapter, if the run trained one
    aligner/                 the Stage-1 run's model.safetensors, manifest.json and config.json
    config.json, manifest.json (inputs.align.run = "aligner"), model_card.md

``MLaGA.from_pretrained(EXPORT)`` uses the bundled aligner; node tokens of any dataset are computed
from its features as in the original run (the same aligner identity keys the token cache).
"""
from __future__ import annotations

import shutil
from pathlib import Path

from mlaga_fast.runs.card import write_model_card
from mlaga_fast.runs.manifest import BUNDLED_ALIGNER, bundled_aligner, read_stage_manifest
from mlaga_fast.utils.io import atomic_dir, atomic_write_json

__all__ = ["export_run"]


def export_run(run_dir: str | Path, out: str | Path) -> Path:
    """Write EXPORT (see the module docstring) from a finished Stage-2 run; returns its path."""
    run_dir, out = Path(run_dir), Path(out)
    m = read_stage_manifest(run_dir, "instruct")
    align = bundled_aligner(run_dir, m)
    if out.exists():
        raise ValueError(f"export: {out} already exists; choose a new folder")
    with atomic_dir(out) as tmp:
        for name in ("projectors.safetensors", "config.json"):
            shutil.copy2(run_dir / name, tmp / name)
        if (run_dir / "lora").is_dir():
            shutil.copytree(run_dir / "lora", tmp / "lora")
        if (run_dir / "evaluations.jsonl").is_file():
            shutil.copy2(run_dir / "evaluations.jsonl", tmp / "evaluations.jsonl")
        if align:
            (tmp / BUNDLED_ALIGNER).mkdir()
            for name in ("model.safetensors", "manifest.json", "config.json"):
                shutil.copy2(Path(align) / name, tmp / BUNDLED_ALIGNER / name)
            m["inputs"]["align"]["run"] = BUNDLED_ALIGNER
        atomic_write_json(tmp / "manifest.json", m)
        write_model_card(tmp)
    return out

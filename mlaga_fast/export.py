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

from mlaga_fast.models.aligner import load_aligner
from mlaga_fast.models.projector import load_projectors
from mlaga_fast.runs.card import write_model_card
from mlaga_fast.runs.manifest import BUNDLED_ALIGNER
from mlaga_fast.runs.open import ALIGN_ARTIFACTS, CHECKSUMS, INSTRUCT_ARTIFACTS, open_run, record_checksums
from mlaga_fast.utils.io import atomic_dir, atomic_write_json

__all__ = ["export_run"]


def export_run(run_dir: str | Path, out: str | Path, *, verify: bool = True) -> Path:
    """Write EXPORT (see the module docstring) from a finished Stage-2 run; returns its path.

    The run is opened as every reader opens it (``mlaga_fast.runs.open``: headers, shapes, the LoRA config,
    the aligner, and the checksums unless ``verify`` is False), so a damaged run is refused, not passed on.
    The export's manifest carries the run's checksums (and its aligner's, as ``aligner/model.safetensors``).
    A run opened unverified, or one that records none, gets checksums of the copies, and the manifest and
    model card say so (``integrity.exported_from``). A failed write (e.g. a full disk) leaves no EXPORT."""
    run_dir, out = Path(run_dir), Path(out)
    run = open_run(run_dir, "instruct", verify=verify)
    m = run.manifest
    load_projectors(run_dir / "projectors.safetensors", expected=m["projector"])  # shapes, before copying
    align = run.aligner
    if align is not None:
        load_aligner(align.path, verify=verify)
    if out.exists():
        raise ValueError(f"export: {out} already exists; choose a new folder")
    try:
        with atomic_dir(out) as tmp:
            for name in ("projectors.safetensors", "config.json"):
                shutil.copy2(run_dir / name, tmp / name)
            if (run_dir / "lora").is_dir():
                shutil.copytree(run_dir / "lora", tmp / "lora")
            if (run_dir / "evaluations.jsonl").is_file():
                shutil.copy2(run_dir / "evaluations.jsonl", tmp / "evaluations.jsonl")
            if align is not None:
                (tmp / BUNDLED_ALIGNER).mkdir()
                for name in ("model.safetensors", "manifest.json", "config.json"):
                    shutil.copy2(align.path / name, tmp / BUNDLED_ALIGNER / name)
                m["inputs"]["align"]["run"] = BUNDLED_ALIGNER
            m[CHECKSUMS], m["integrity"] = _export_checksums(run, tmp)
            atomic_write_json(tmp / "manifest.json", m)
            write_model_card(tmp)
    except OSError as e:
        raise OSError(e.errno, f"export: cannot write {out} ({e.strerror or e}); nothing was written, "
                               f"{run_dir} is unchanged") from None
    return out


def _export_checksums(run, tmp: Path) -> tuple[dict, dict]:
    """(checksums of the export's artifacts, its integrity record). Verified sums are carried over; the
    rest are computed from the copies, and the record names the part that was not verified."""
    sums, unverified = {}, []
    if run.verified:
        sums.update(run.manifest[CHECKSUMS])
    else:
        sums.update(record_checksums(tmp, INSTRUCT_ARTIFACTS))
        unverified.append(f"{run.path} ({run.integrity})")
    al = run.aligner
    if al is not None:
        name = f"{BUNDLED_ALIGNER}/{ALIGN_ARTIFACTS[0]}"
        if al.verified:
            sums[name] = al.manifest[CHECKSUMS][ALIGN_ARTIFACTS[0]]
        else:
            sums.update(record_checksums(tmp, [name]))
            unverified.append(f"{al.path} ({al.integrity})")
    rec = {"exported_from": "verified" if not unverified else "not verified: " + ", ".join(unverified)}
    return sums, rec

"""Stage manifests: what produced a run, so the next stage can refuse a mismatch with a clear message.

``RUN/manifest.json``::

    {"stage": "align", "mlaga_fast_version": "0.1.0", "torch_version": "...", "created": "...Z",
     "config": {...resolved config...},
     "inputs": {"features": {"fingerprint": ..., "encoder": ..., "image": {...}, "text": {...},
                             "num_nodes": N, "graph_fingerprint": ...}, ...},
     "dims": {"d": 128, "nq": 8, ...},
     ...stage-specific extras...}

The package version must agree on major.minor: a 0.1.x run loads in 0.1.y, not in 0.2.
"""
from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import Any, Mapping

from mlaga_fast._version import __version__
from mlaga_fast.utils.io import atomic_write_json

__all__ = [
    "MANIFEST_NAME",
    "write_stage_manifest",
    "read_stage_manifest",
    "check_version",
    "diff_fields",
    "require_match",
    "features_record",
    "check_features_match",
    "BUNDLED_ALIGNER",
    "bundled_aligner",
]

MANIFEST_NAME = "manifest.json"
BUNDLED_ALIGNER = "aligner"  # an export's copy of its Stage-1 run


def write_stage_manifest(
    run_dir: str | os.PathLike,
    stage: str,
    *,
    config: Mapping[str, Any],
    inputs: Mapping[str, Any] | None = None,
    dims: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    import torch

    manifest: dict[str, Any] = {
        "stage": stage,
        "mlaga_fast_version": __version__,
        "torch_version": torch.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "config": dict(config),
        "inputs": dict(inputs or {}),
        "dims": dict(dims or {}),
    }
    for k, v in (extra or {}).items():
        if k in manifest:
            raise ValueError(f"manifest extra key {k!r} clashes with a reserved key")
        manifest[k] = v
    atomic_write_json(Path(run_dir) / MANIFEST_NAME, manifest)
    return manifest


def check_version(manifest: Mapping[str, Any], where: str = "run") -> None:
    theirs = str(manifest.get("mlaga_fast_version", "?"))
    if theirs.split(".")[:2] != __version__.split(".")[:2]:
        raise ValueError(
            f"{where} was written by mlaga_fast {theirs}, but this is mlaga_fast {__version__}: "
            "major.minor versions differ, so its format may not match; re-run that stage with this version"
        )


def read_stage_manifest(run_dir: str | os.PathLike, stage: str | None = None) -> dict[str, Any]:
    """Load RUN/manifest.json, checking the stage name and version compatibility."""
    path = Path(run_dir) / MANIFEST_NAME
    if not path.is_file():
        raise ValueError(f"{run_dir} has no {MANIFEST_NAME}: not a finished mlaga_fast run (or the wrong folder)")
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{path} must hold a JSON object, got a JSON {type(manifest).__name__}")
    if stage is not None and manifest.get("stage") != stage:
        raise ValueError(f"{run_dir} is a {manifest.get('stage')!r} run, expected a {stage!r} run")
    check_version(manifest, where=str(run_dir))
    return manifest


def diff_fields(expected: Mapping[str, Any], actual: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Human-readable differences for the keys of ``expected`` (nested mappings are walked)."""
    out = []
    for k, v in expected.items():
        name = f"{prefix}{k}"
        if k not in actual:
            out.append(f"{name}: expected {v!r}, missing")
        elif isinstance(v, Mapping) and isinstance(actual[k], Mapping):
            out.extend(diff_fields(v, actual[k], prefix=f"{name}."))
        elif v != actual[k]:
            out.append(f"{name}: expected {v!r}, got {actual[k]!r}")
    return out


def require_match(expected: Mapping[str, Any], actual: Mapping[str, Any], *, what: str) -> None:
    diffs = diff_fields(expected, actual)
    if diffs:
        raise ValueError(f"{what} mismatch: " + "; ".join(diffs))


# what one aligner needs of every features source it reads: its input projections are sized by these
ALIGNER_INPUT_KEYS = ("encoder", "image_len", "image_dim", "text_len", "text_dim")


def feature_records(run_manifest: Mapping[str, Any], what: str = "run") -> list[dict[str, Any]]:
    """The features records a run manifest holds (``inputs.features``): one, or one per dataset for a Stage-1
    run on several datasets."""
    rec = run_manifest.get("inputs", {}).get("features")
    if rec is None:
        raise ValueError(f"{what} manifest records no features (inputs.features missing)")
    return list(rec) if isinstance(rec, list) else [rec]


def features_record(feature_store: Any) -> dict[str, Any]:
    """What a run records about the features it was trained on (from a FeatureStore)."""
    m = feature_store.manifest
    return {
        "fingerprint": feature_store.fingerprint,
        "encoder": m.get("encoder"),
        "num_nodes": int(feature_store.num_nodes),
        "image_len": int(feature_store.image_len),
        "image_dim": int(feature_store.image_dim),
        "text_len": int(feature_store.text_len),
        "text_dim": int(feature_store.text_dim),
        "graph_fingerprint": m.get("graph_fingerprint"),
    }


def check_features_match(run_manifest: Mapping[str, Any], feature_store: Any) -> None:
    """Raise ValueError if ``feature_store`` is not the feature set the run was trained on (one of them, for a
    Stage-1 run on several datasets).

    Dims and the encoder are compared first (they explain the likely mistake, e.g. a ViT-L run fed
    tiny features), then the content fingerprint.
    """
    recs = feature_records(run_manifest)  # several for a Stage-1 run on several datasets: any, else vs the first
    rec = next((r for r in recs if r.get("fingerprint") == feature_store.fingerprint), recs[0])
    actual = features_record(feature_store)
    order = ["encoder", "image_len", "image_dim", "text_len", "text_dim", "num_nodes", "graph_fingerprint",
             "fingerprint"]
    diffs = [f"{k}: run was trained on {rec.get(k)!r}, these features have {actual[k]!r}"
             for k in order if k in rec and rec.get(k) != actual[k]]
    if diffs:
        path = getattr(feature_store, "path", "?")
        raise ValueError(f"features at {path} do not match the run: " + "; ".join(diffs))


def bundled_aligner(run_dir: str | Path, manifest: dict) -> str | None:
    """The Stage-1 run a Stage-2 run reads: its bundled copy in an export, else the recorded path."""
    local = Path(run_dir) / BUNDLED_ALIGNER
    if (local / "manifest.json").is_file():
        return str(local)
    return (manifest["inputs"].get("align") or {}).get("run")

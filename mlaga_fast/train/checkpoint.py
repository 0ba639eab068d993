"""Atomic training checkpoints that make ``--resume`` continue exactly.

A checkpoint is one file ``<dir>/step_<step:09d>.pt`` holding: the model state (DDP wrapper removed),
optimizer, LR scheduler, AMP grad scaler, the RNG states (python, numpy, torch CPU, every CUDA
device), the step and a free ``extra`` dict (epoch, data-order position, ...). It is written through
atomic writes so a crash or a full disk mid-write leaves the previous checkpoint intact, and it is loadable
with ``torch.load(weights_only=True)``: the numpy RNG state is stored as tensors, not pickled arrays. Its
sha256 is written beside it (``step_<step:09d>.pt.sha256``) and checked, streamed, before a resume reads it.

Only the main rank should call ``save_checkpoint`` in multi-process runs (the caller decides; the
model and optimizer states are identical on every rank under DDP).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import random
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlaga_fast.utils.io import atomic_write_bytes, atomic_write_text, sha256_file

__all__ = [
    "capture_rng_state",
    "restore_rng_state",
    "save_checkpoint",
    "load_checkpoint",
    "find_latest",
    "list_checkpoints",
    "unwrap_model",
    "verify_checkpoint",
    "digest_path",
]

_NAME = re.compile(r"^step_(\d+)\.pt$")
DIGEST_SUFFIX = ".sha256"


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside DDP / torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, torch.nn.Module):
            model = model._orig_mod
        else:
            return model


def capture_rng_state() -> dict[str, Any]:
    py = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        # python: (version, tuple of 625 ints, gauss_next) -- plain ints are weights_only-safe
        "python": [py[0], list(py[1]), py[2]],
        "numpy": {
            "name": np_state[0],
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def checkpoint_path(ckpt_dir: str | os.PathLike, step: int) -> Path:
    return Path(ckpt_dir) / f"step_{int(step):09d}.pt"


def list_checkpoints(ckpt_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, path) pairs sorted by step; temp files of interrupted writes are ignored."""
    d = Path(ckpt_dir)
    if not d.is_dir():
        return []
    out = []
    for p in d.iterdir():
        m = _NAME.match(p.name)
        if m and p.is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def find_latest(ckpt_dir: str | os.PathLike) -> Path | None:
    ckpts = list_checkpoints(ckpt_dir)
    return ckpts[-1][1] if ckpts else None


def save_checkpoint(
    ckpt_dir: str | os.PathLike,
    step: int,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    scaler: Any | None = None,
    extra: dict[str, Any] | None = None,
    keep: int | None = 2,
) -> Path:
    """Write a checkpoint atomically and prune all but the ``keep`` newest (None keeps all)."""
    state = {
        "format": "mlaga_fast.checkpoint/1",
        "step": int(step),
        "model": unwrap_model(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": capture_rng_state(),
        "extra": dict(extra or {}),
    }
    path = checkpoint_path(ckpt_dir, step)
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    try:
        # The digest first: a checkpoint whose digest file is missing is refused on resume, so the pair is
        # never half-written in a way that reads as valid (a stale digest for a new file fails to match).
        atomic_write_text(digest_path(path), hashlib.sha256(data).hexdigest() + "\n")
        atomic_write_bytes(path, data)
    except OSError as e:
        with contextlib.suppress(OSError):  # a digest whose checkpoint was not written must not remain
            digest_path(path).unlink()
        prev = list_checkpoints(ckpt_dir)
        raise OSError(e.errno, f"checkpoint {path} could not be written ({e.strerror or e}); "
                      + (f"the previous checkpoint {prev[-1][1].name} is kept" if prev else "no earlier checkpoint")
                      ) from None
    if keep is not None and keep > 0:
        for _, old in list_checkpoints(ckpt_dir)[:-keep]:
            for f in (old, digest_path(old)):
                with contextlib.suppress(OSError):
                    f.unlink()
    return path


def digest_path(path: str | os.PathLike) -> Path:
    """The sha256 of checkpoint ``path``, written beside it (``step_000000010.pt.sha256``)."""
    path = Path(path)
    return path.with_name(path.name + DIGEST_SUFFIX)


def verify_checkpoint(path: str | os.PathLike) -> None:
    """Refuse a checkpoint whose bytes do not match the sha256 written with it (streamed). A checkpoint
    written before digests were recorded has none and passes with a one-line warning."""
    path = Path(path)
    dig = digest_path(path)
    if not dig.is_file():
        print(f"Warning: {path} has no {dig.name} (written before mlaga_fast recorded checksums): it cannot "
              "be verified", file=sys.stderr)
        return
    want = dig.read_text(encoding="utf-8", errors="replace").strip()
    got = sha256_file(path)
    if got != want:
        raise ValueError(f"checkpoint {path} does not match its checksum ({dig.name}): the file was damaged "
                         "after it was written; delete it to resume from the one before")


def load_checkpoint(
    path: str | os.PathLike,
    *,
    model: torch.nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    scaler: Any | None = None,
    restore_rng: bool = True,
    map_location: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Restore whatever objects are passed; returns the raw checkpoint dict (``step``, ``extra``...)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint not found: {path}")
    verify_checkpoint(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise ValueError(f"checkpoint {path} cannot be read (corrupt or not a mlaga_fast checkpoint): {e}") from e
    if not isinstance(state, dict) or state.get("format") != "mlaga_fast.checkpoint/1":
        raise ValueError(f"checkpoint {path} is not a mlaga_fast checkpoint (format field missing or wrong)")
    if model is not None:
        try:
            unwrap_model(model).load_state_dict(state["model"])
        except (RuntimeError, KeyError, TypeError) as e:
            raise ValueError(f"checkpoint {path} does not fit this model ({' '.join(str(e).split())[:300]})") from None
    if optimizer is not None:
        if state["optimizer"] is None:
            raise ValueError(f"checkpoint {path} holds no optimizer state")
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state["scaler"] is not None:
        scaler.load_state_dict(state["scaler"])
    if restore_rng:
        restore_rng_state(state["rng"])
    return state

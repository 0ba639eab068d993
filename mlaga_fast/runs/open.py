"""Opening a run folder that may have travelled: every file is checked before anything reads it.

Run folders are input like any dataset (they are copied, mailed, edited), so ``open_run`` treats them so:

- the manifest must be a JSON object of the right stage and a compatible version (``read_stage_manifest``);
- every artifact the run recorded a sha256 for (``manifest["checksums"]``: projectors, LoRA weights and
  config, the aligner's weights) is hashed, streamed in 1 MiB chunks, and compared. A mismatch names the
  file. ``verify=False`` (``--no-verify``) skips this, for runs edited on purpose; runs written before
  checksums were recorded open with a one-line warning that they cannot be verified;
- each safetensors file must have a sound header whose tensors cover the file exactly (a truncated or
  overwritten header is refused here, not deep in the loader); the models then compare its tensor
  shapes with the architecture the manifest records (``models/projector.py``, ``models/aligner.py``);
- a LoRA adapter config must be a JSON object with the keys peft reads, of the right types;
- a Stage-2 run opens the Stage-1 run it reads (its bundled copy in an export) the same way.

Every failure is a ValueError naming the file and what is wrong: the CLI prints it as one ``Error:`` line
and exits 2. The digests of verified files are remembered for the process by (path, inode, size, mtime),
so a run opened twice (``MLaGA.from_pretrained``, then the aligner for node tokens) is hashed once; a
file that changes afterwards has a new mtime and is hashed again.
"""
from __future__ import annotations

import json
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from mlaga_fast.runs.manifest import BUNDLED_ALIGNER, read_stage_manifest
from mlaga_fast.utils.io import sha256_file

__all__ = ["OpenedRun", "open_run", "record_checksums", "verify_checksums", "safetensors_header",
           "check_peft_config", "check_tensor_shapes", "CHECKSUMS", "INSTRUCT_ARTIFACTS", "ALIGN_ARTIFACTS",
           "NO_VERIFY_HINT"]

CHECKSUMS = "checksums"  # manifest key: {relative path: sha256 hex}
ALIGN_ARTIFACTS = ("model.safetensors",)
INSTRUCT_ARTIFACTS = ("projectors.safetensors", "lora/adapter_model.safetensors", "lora/adapter_config.json")
NO_VERIFY_HINT = "pass --no-verify (verify=False) only if it was edited on purpose"

# safetensors dtype names -> bytes per element
_ST_DTYPES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
              "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
_MAX_HEADER = 100 << 20  # the safetensors format's own limit on the JSON header

# (realpath, inode, size, mtime_ns) -> the sha256 the file was found to have
_CHECKED: dict[tuple, str] = {}
_WARNED: set[str] = set()  # runs already warned about (no checksums), once per process


@dataclass
class OpenedRun:
    """A run folder whose files passed the checks. ``verified``: True when every recorded checksum matched,
    False when checking was skipped (``verify=False``), None when the run records no checksums."""
    path: Path
    manifest: dict
    verified: bool | None
    aligner: "OpenedRun | None" = None

    @property
    def integrity(self) -> str:
        """How the run was opened, as the model card and evaluation records say it."""
        return {True: "verified", False: "unverified", None: "no checksums"}[self.verified]


def _key(path: Path) -> tuple:
    st = path.stat()
    return (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)


def record_checksums(run_dir: str | Path, names: Iterable[str]) -> dict[str, str]:
    """{name: sha256} of the files ``names`` (paths relative to ``run_dir``) that exist."""
    run_dir = Path(run_dir)
    out = {}
    for name in names:
        p = run_dir / name
        if p.is_file():
            out[name] = _CHECKED[_key(p)] = sha256_file(p)
    return out


def verify_checksums(run_dir: str | Path, manifest: Mapping[str, Any], *, verify: bool = True,
                     warn_missing: bool = True) -> bool | None:
    """Compare the run's files with the sha256 its manifest records (streamed). Returns True (all
    matched), False (``verify=False``: skipped) or None (nothing recorded: warned once on stderr)."""
    run_dir = Path(run_dir)
    sums = manifest.get(CHECKSUMS)
    if not verify:
        return False
    if sums is None:
        if warn_missing and str(run_dir.resolve()) not in _WARNED:
            _WARNED.add(str(run_dir.resolve()))
            print(f"Warning: {run_dir} records no checksums (written before mlaga_fast recorded them): its files "
                  "cannot be verified", file=sys.stderr)
        return None
    if not isinstance(sums, dict) or not all(isinstance(k, str) and isinstance(v, str) and len(v) == 64
                                             for k, v in sums.items()):
        raise ValueError(f"{run_dir / 'manifest.json'}: {CHECKSUMS} must map file names to sha256 hex strings")
    for name, want in sorted(sums.items()):
        p = run_dir / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise ValueError(f"{run_dir / 'manifest.json'}: {CHECKSUMS} names {name!r}, outside the run")
        if not p.is_file():
            raise ValueError(f"{p} is missing: the run recorded it (sha256 {want[:12]}...) but it is not there")
        key = _key(p)
        if _CHECKED.get(key) == want:
            continue
        got = sha256_file(p)
        if got != want:
            raise ValueError(f"{p} does not match its checksum (sha256 {got[:12]}..., the run recorded "
                             f"{want[:12]}...): the file was damaged or changed after the run wrote it; "
                             f"{NO_VERIFY_HINT}")
        _CHECKED[key] = got
    return True


def safetensors_header(path: str | Path) -> tuple[dict[str, tuple[str, tuple[int, ...]]], dict[str, str]]:
    """({tensor: (dtype, shape)}, metadata) of a safetensors file, after checking that its header is sound
    and that its tensors cover the data exactly (no gap, no overlap, nothing missing or trailing). Reads
    the header only."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} is missing")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{path} is truncated: {size} bytes, too short for a safetensors header")
        (n,) = struct.unpack("<Q", head)
        if n > _MAX_HEADER or 8 + n > size:
            raise ValueError(f"{path} is damaged or truncated: its header length field says {n} bytes, the file "
                             f"holds {size}")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is damaged: its safetensors header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path} is damaged: its safetensors header is a JSON {type(header).__name__}, not an object")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise ValueError(f"{path} is damaged: its __metadata__ is not a map of strings")
    tensors, spans = {}, []
    for name, t in header.items():
        ok = (isinstance(t, dict) and t.get("dtype") in _ST_DTYPES and isinstance(t.get("shape"), list)
              and all(isinstance(s, int) and s >= 0 for s in t["shape"])
              and isinstance(t.get("data_offsets"), list) and len(t["data_offsets"]) == 2
              and all(isinstance(o, int) and o >= 0 for o in t["data_offsets"]))
        if not ok:
            raise ValueError(f"{path} is damaged: the header entry of tensor {name!r} is malformed")
        a, b = t["data_offsets"]
        need = _ST_DTYPES[t["dtype"]]
        for s in t["shape"]:
            need *= s
        if b - a != need:
            raise ValueError(f"{path} is damaged: tensor {name!r} is {t['dtype']} {t['shape']} ({need} bytes) but "
                             f"its data span holds {b - a}")
        tensors[name] = (t["dtype"], tuple(t["shape"]))
        spans.append((a, b, name))
    end = 0
    for a, b, name in sorted(spans):
        if a != end:
            raise ValueError(f"{path} is damaged: tensor {name!r} starts at byte {a} of the data, expected {end}")
        end = b
    data = size - 8 - n
    if end != data:
        raise ValueError(f"{path} is {'truncated' if data < end else 'damaged'}: its header declares {end} bytes "
                         f"of tensor data, the file holds {data}")
    return tensors, meta


def check_tensor_shapes(path: str | Path, have: Mapping[str, tuple], want: Mapping[str, tuple], what: str) -> None:
    """Refuse a weight file whose tensors (``have``: {name: (dtype, shape)}) are not exactly ``want``
    ({name: shape}, from the architecture ``what`` the run's manifest records)."""
    missing = sorted(set(want) - set(have))
    extra = sorted(set(have) - set(want))
    if missing or extra:
        parts = ([f"lacks {missing[0]!r}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")]
                 if missing else []) + ([f"has unexpected {extra[0]!r}"] if extra else [])
        raise ValueError(f"{path} does not hold the tensors of {what}: it " + ", ".join(parts))
    for name, shape in want.items():
        if tuple(have[name][1]) != tuple(shape):
            raise ValueError(f"{path}: tensor {name!r} has shape {list(have[name][1])}, but {what} needs "
                             f"{list(shape)}")


_PEFT_KEYS = {  # key -> (accepted types, what it must be)
    "peft_type": ((str,), "a string"),
    "r": ((int,), "a positive integer"),
    "lora_alpha": ((int, float), "a number"),
    "target_modules": ((str, list), "a module name or a list of them"),
}


def check_peft_config(path: str | Path) -> dict:
    """The LoRA adapter config at ``path`` (adapter_config.json), refused unless it is a JSON object with
    the keys peft reads to rebuild the adapter, of the right types."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} is missing: the run trained LoRA adapters but their config is not there")
    try:
        cfg = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{path} must hold a JSON object, got a JSON {type(cfg).__name__}")
    for key, (types, what) in _PEFT_KEYS.items():
        v = cfg.get(key)
        if key not in cfg:
            raise ValueError(f"{path} lacks {key!r} (peft needs it to rebuild the adapter)")
        bad = isinstance(v, bool) or not isinstance(v, types)
        if key == "r" and not bad:
            bad = v < 1
        if key == "target_modules" and isinstance(v, list) and not bad:
            bad = not v or not all(isinstance(x, str) for x in v)
        if bad:
            raise ValueError(f"{path}: {key} must be {what}, got {v!r}")
    if cfg["peft_type"] != "LORA":
        raise ValueError(f"{path}: peft_type is {cfg['peft_type']!r}; mlaga_fast runs train LORA adapters")
    return cfg


def _check_lora(run_dir: Path) -> None:
    lora = run_dir / "lora"
    if not lora.is_dir():
        raise ValueError(f"{run_dir} was trained with LoRA but has no lora/ folder")
    cfg = check_peft_config(lora / "adapter_config.json")
    tensors, _ = safetensors_header(lora / "adapter_model.safetensors")
    if not tensors:
        raise ValueError(f"{lora / 'adapter_model.safetensors'} holds no tensors")
    r = cfg["r"]
    for name, (_, shape) in tensors.items():
        rank = shape[0] if "lora_A" in name else shape[1] if "lora_B" in name and len(shape) > 1 else None
        if rank is not None and (len(shape) != 2 or rank != r):
            raise ValueError(f"{lora / 'adapter_model.safetensors'}: tensor {name!r} has shape {list(shape)}, which "
                             f"does not fit the adapter's rank r={r} ({lora / 'adapter_config.json'})")


def open_run(run_dir: str | Path, stage: str, *, verify: bool = True, warn_missing: bool = True) -> OpenedRun:
    """Check a finished run folder of ``stage`` ("align" or "instruct") before anything reads it (see the
    module docstring); returns its manifest and how it was verified. A Stage-2 run that reads a Stage-1 run
    opens it too (``aligner``)."""
    run_dir = Path(run_dir)
    manifest = read_stage_manifest(run_dir, stage)
    weights = "model.safetensors" if stage == "align" else "projectors.safetensors"
    if not (run_dir / weights).is_file():
        raise ValueError(f"{run_dir} has no {weights} (training did not finish?)")
    verified = verify_checksums(run_dir, manifest, verify=verify, warn_missing=warn_missing)
    if stage == "align":
        safetensors_header(run_dir / "model.safetensors")
        return OpenedRun(run_dir, manifest, verified)
    for key in ("config", "projector", "dims", "inputs"):
        if not isinstance(manifest.get(key), dict):
            raise ValueError(f"{run_dir / 'manifest.json'} has no {key!r} object: not a Stage-2 run manifest")
    safetensors_header(run_dir / "projectors.safetensors")
    if manifest["config"].get("lora"):
        _check_lora(run_dir)
    aligner = None
    align = _aligner_dir(run_dir, manifest)
    if align is not None:
        # An export's checksums cover its bundled aligner's weights; a folder copied without them still warns.
        covered = f"{BUNDLED_ALIGNER}/model.safetensors" in (manifest.get(CHECKSUMS) or {})
        aligner = open_run(align, "align", verify=verify, warn_missing=warn_missing and not covered)
    return OpenedRun(run_dir, manifest, verified, aligner)


def _aligner_dir(run_dir: Path, manifest: Mapping[str, Any]) -> Path | None:
    if manifest["config"].get("node_source", "aligner") != "aligner":
        return None
    local = run_dir / BUNDLED_ALIGNER
    if local.is_dir():
        return local
    rec = (manifest["inputs"].get("align") or {}).get("run")
    if not rec:
        raise ValueError(f"{run_dir / 'manifest.json'} records no Stage-1 run (inputs.align.run)")
    if not Path(rec).is_dir():
        raise ValueError(f"{run_dir}: its Stage-1 run {rec} is not on this machine; export the run "
                         "(`mlaga-fast export`) to carry it along")
    return Path(rec)


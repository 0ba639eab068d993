"""A converted copy of a GGUF LLM, so that only the first load pays for reading the GGUF.

Loading a GGUF through transformers parses its metadata (the whole vocabulary and merge list) once for
the config, once for the tokenizer and once for the weights, then de-quantises every tensor: about 40 s
for the 98 MB SmolLM2-135M file on 2 CPU cores, against about 1 s for the same model saved as a plain
folder (config, fp32 safetensors, tokenizer files). The first load of a GGUF file therefore saves what
it loaded with ``save_pretrained`` into a cache folder, and every later load reads that folder. That
first conversion parses the file once (``_parse_once``): 21 s instead of 39 s.

- The folder is named by the GGUF file's sha256 and the transformers version that converted it, so an
  edited file or another converter gets its own copy. It is written under a temporary name and renamed
  into place, under a blocking lock on a sibling file, so that of several processes starting at once
  (torchrun ranks) one converts and the others wait for it and read its copy.
- Weights are stored in fp32, the dtype de-quantisation produces, so a later cast to the run's dtype
  gives the same tensors as loading the GGUF directly with that dtype.
- Where: ``$MLAGA_FAST_CACHE/llm``, else ``$XDG_CACHE_HOME/mlaga_fast/llm``, else ``~/.cache/mlaga_fast/llm``.
- Which files: GGUF files up to 1 GiB (small models, where the parsing dominates and the fp32 copy is a
  few GB at most). ``MLAGA_FAST_GGUF_CACHE=0`` turns the cache off, ``=1`` uses it for any size.
- A cache folder that cannot be written (no permission, or too little free disk for the fp32 copy) is
  not an error: the GGUF is loaded directly, with a warning.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import os
import shutil
import warnings
from pathlib import Path

__all__ = ["cache_root", "cached_folder", "wants_cache"]

MAX_CACHED_BYTES = 1 << 30
_DONE = "converted.ok"  # written last, so a folder without it is never read
_DECLINED: set[Path] = set()  # folders this process failed to write: load_llm asks twice, try once


def cache_root() -> Path:
    base = os.environ.get("MLAGA_FAST_CACHE")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        base = os.path.join(xdg, "mlaga_fast")
    return Path(base) / "llm"


def wants_cache(gguf_path: Path) -> bool:
    mode = os.environ.get("MLAGA_FAST_GGUF_CACHE", "auto")
    if mode not in ("auto", "0", "1"):
        raise ValueError(f"MLAGA_FAST_GGUF_CACHE: expected 0, 1 or auto, got {mode!r}")
    return mode == "1" or (mode == "auto" and gguf_path.stat().st_size <= MAX_CACHED_BYTES)


def _key(gguf_path: Path) -> str:
    import transformers

    st = gguf_path.stat()
    digest = _sha256(str(gguf_path.resolve()), st.st_size, st.st_mtime_ns)
    return f"{gguf_path.stem}-{digest[:16]}-tf{transformers.__version__}"


@functools.lru_cache(maxsize=8)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    """The file's sha256, hashed once per process per (path, size, mtime): load_llm asks for the tokenizer
    and the weights separately, and a run may load the same LLM more than once."""
    from mlaga_fast.utils.io import sha256_file

    return sha256_file(path)


def cached_folder(source: str, gguf_file: str) -> Path | None:
    """The plain-folder copy of ``source/gguf_file`` (converted now if missing), or None when the cache
    is off for this file or cannot be written."""
    gguf_path = Path(source) / gguf_file
    if not wants_cache(gguf_path):
        return None
    folder = cache_root() / _key(gguf_path)
    if (folder / _DONE).is_file():
        return folder
    if folder in _DECLINED:
        return None
    from safetensors import SafetensorError  # what safetensors raises for a failed write

    try:
        _convert(source, gguf_file, folder)
    except (OSError, SafetensorError) as e:
        _DECLINED.add(folder)
        warnings.warn(f"GGUF cache: cannot write {folder} ({e}); loading {gguf_file} directly each time",
                      stacklevel=2)
        return None
    return folder


def _convert(source: str, gguf_file: str, folder: Path) -> None:
    import fcntl

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mlaga_fast.utils.io import atomic_dir, atomic_write_text

    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.with_name(f".{folder.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also on a crash
        if (folder / _DONE).is_file():  # another process converted it while this one waited
            return
        with _parse_once():
            tok = AutoTokenizer.from_pretrained(source, gguf_file=gguf_file)
            model = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf_file, dtype=torch.float32)
        # The weights are de-quantised already; transformers refuses to save a model still marked as
        # GGUF-quantised, so drop the marks and save it as the plain fp32 model it now is.
        model.hf_quantizer, model.is_quantized = None, False
        del model.config.quantization_config
        # bytes of the copy; tied weights (embedding = LM head) share storage and are saved once
        need = sum({t.data_ptr(): t.numel() * t.element_size() for t in model.state_dict().values()}.values())
        free = shutil.disk_usage(folder.parent).free
        if free < 2 * need:  # the copy, and room left for whatever the run writes next
            raise OSError(errno.ENOSPC, f"{free / 2**20:.0f} MiB free, the fp32 copy needs "
                          f"{need / 2**20:.0f} MiB (twice that is asked)")
        with atomic_dir(folder) as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            tok.save_pretrained(tmp)
            atomic_write_text(tmp / _DONE, f"converted from {Path(source) / gguf_file}\n")


@contextlib.contextmanager
def _parse_once():
    """Within the block, transformers' GGUF loader parses the file once and builds gguf's tensor-name map
    once. Unpatched it parses the metadata (a 49k-entry vocabulary and merge list for SmolLM2) for the
    tokenizer, the config and the weights separately, and rebuilds the same ``TensorNameMap`` for every
    submodule of the model: 18 of the conversion's 39.5 s measured on 2 cores. Both are read-only after
    construction and transformers imports them from ``gguf`` at call time, so memoising them there is
    exact; the originals are restored on exit."""
    import gguf

    reader_cls, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    readers: dict = {}

    def reader(path, mode="r"):
        key = (os.path.realpath(path), mode)
        if key not in readers:
            readers[key] = reader_cls(path, mode)
        return readers[key]

    gguf.GGUFReader, gguf.get_tensor_name_map = reader, functools.lru_cache(maxsize=None)(name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader_cls, name_map

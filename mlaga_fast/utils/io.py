"""Atomic writes: every checkpoint, cache and dataset goes through here.

A file is written to a temporary sibling, flushed to disk, then renamed over the target, so a
reader sees either the old complete file or the new complete one, never a partial write.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

import numpy as np


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp/mkdtemp create owner-only entries; published files get the usual umask-based modes.
_FILE_MODE = 0o666 & ~_umask()
_DIR_MODE = 0o777 & ~_umask()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Run ``write`` on a temporary sibling file, fsync it, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    _atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def atomic_np_save(path: str | os.PathLike, arr: np.ndarray) -> None:
    """Save one array as .npy (readable with np.load(mmap_mode='r'))."""
    _atomic_write(path, lambda f: np.lib.format.write_array(f, np.asanyarray(arr), allow_pickle=False))


def npy_header(path: str | os.PathLike, name: str | None = None) -> tuple[tuple, np.dtype]:
    """(shape, dtype) of a .npy file, after checking that the header is sound and that the file holds
    exactly the bytes the header declares; a ValueError names the file (as ``name``, default its base
    name) otherwise. Reads the header only, so nothing is allocated from its sizes."""
    path = Path(path)
    name = name or path.name
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read_header(f)
            data_start = f.tell()
        size = path.stat().st_size
    except (ValueError, OSError, EOFError, SyntaxError) as e:
        raise ValueError(f"{name} is not a readable .npy file ({' '.join(str(e).split())})") from None
    if dtype.hasobject:
        raise ValueError(f"{name} holds Python objects ({dtype}); only plain numeric arrays are read")
    need = dtype.itemsize
    for s in shape:
        need *= int(s)
    have = size - data_start
    if have != need:
        raise ValueError(f"{name} is {'truncated' if have < need else 'damaged'}: its header declares "
                         f"{dtype} {list(shape)} ({need} bytes of data), but the file holds {max(have, 0)}")
    return shape, dtype


def read_npy(path: str | os.PathLike, *, mmap_bytes: int | None = 1 << 20, name: str | None = None) -> np.ndarray:
    """Load a .npy file checked by ``npy_header`` first (a truncated or corrupt file is refused by a
    ValueError naming it, before anything is allocated). Files over ``mmap_bytes`` (None: never) are
    memory-mapped read-only."""
    path = Path(path)
    name = name or path.name
    shape, _ = npy_header(path, name)
    mmap = mmap_bytes is not None and path.stat().st_size > mmap_bytes and all(shape)  # no mmap of 0 bytes
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"{name} cannot be read ({' '.join(str(e).split())})") from None


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Build a directory under a temporary sibling name and move it into place on success.

    On an exception the temporary directory is removed and ``final`` is left as it was. An existing
    ``final`` is replaced only after the new one is complete (it is moved aside, then deleted).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    os.chmod(tmp, _DIR_MODE)
    try:
        yield tmp
        _fsync_dir(tmp)
        old = None
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
        os.replace(tmp, final)
        _fsync_dir(final.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def fingerprint(obj: Any, length: int = 16) -> str:
    """Short stable hash of a JSON-able object (sorted keys)."""
    blob = json.dumps(obj, sort_keys=True, default=_json_default).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:length]

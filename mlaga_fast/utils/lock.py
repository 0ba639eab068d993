"""One writer per output: an exclusive, non-blocking lock on an output folder (or file).

Features extraction, the PPR table writer and the training runs each hold this lock while they write,
so a second process aimed at the same output is refused at once with a message naming the holder,
instead of mixing its files with the first one's or deleting its temporary files.

The lock is ``flock`` (advisory, per open file description): the kernel drops it when the holder's
descriptor closes, so a killed process (SIGKILL, OOM) never leaves a stale lock behind. A folder is
locked through a descriptor on the folder itself, so nothing is added to it; a file target is locked
through a hidden sibling ``.<name>.lock``, which is left in place (deleting it on release would let a
third process lock a new inode while a second still waits on the old one). Under torchrun only rank
0 writes, so only rank 0 (environment RANK unset or 0) takes the lock.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import warnings
from pathlib import Path
from typing import Iterator


class OutputLocked(RuntimeError):
    """Another process holds the output's lock."""


@contextlib.contextmanager
def exclusive_output(path: str | os.PathLike, what: str, *, is_file: bool = False) -> Iterator[Path]:
    """Hold an exclusive lock on output ``path`` (a folder, created if missing, or with ``is_file`` a
    file) for the duration of the block; raise OutputLocked at once if another process holds it.

    ``what`` names the writer in the refusal message, e.g. "features" or "train align"."""
    path = Path(path)
    if os.environ.get("RANK", "0") != "0":  # a torchrun worker: rank 0 holds the lock for the job
        yield path
        return
    if is_file:  # the file itself is replaced by an atomic rename, so the lock lives on a sibling
        path.parent.mkdir(parents=True, exist_ok=True)
        target = path.parent / f".{path.name}.lock"
        fd = os.open(target, os.O_RDWR | os.O_CREAT, 0o666)
    else:
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputLocked(
                f"{path} is being written by another mlaga-fast process; wait for it to finish, or choose "
                f"another output (two writers on one {what} output would mix or delete each other's files)"
            ) from None
        except OSError as e:
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP):
                raise
            # A filesystem without locks (some network mounts): write unguarded rather than not at all.
            warnings.warn(f"{path}: this filesystem has no file locks ({e.strerror}); nothing stops a second "
                          f"writer on this {what} output", stacklevel=3)
        yield path
    finally:
        os.close(fd)  # releases the lock

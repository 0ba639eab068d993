"""release_free_heap: freed holes of the heap go back to the OS (what keeps embed's memory flat)."""
from __future__ import annotations

import sys

import numpy as np
import pytest


def _anon_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssAnon")) / 1024


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RssAnon and malloc_trim are Linux/glibc")
def test_freed_heap_blocks_are_returned():
    from mlaga_fast.utils.heap import _malloc_trim, release_free_heap

    if _malloc_trim() is None:
        pytest.skip("this libc has no malloc_trim")
    # 2,000 blocks of 96 KiB: under glibc's smallest mmap threshold, so they come from the heap; the last one
    # stays alive and pins the heap's top, so free() alone cannot give the 190 MiB of holes below it back.
    blocks = [np.ones(96 * 1024 // 8) for _ in range(2000)]
    top = blocks[-1]
    del blocks[-1]
    blocks.clear()
    before = _anon_mib()
    assert release_free_heap() is True
    after = _anon_mib()
    assert before - after > 100, (before, after)
    assert top.sum() == top.size  # still alive and intact
    assert release_free_heap() in (True, False)  # nothing left to return is not an error

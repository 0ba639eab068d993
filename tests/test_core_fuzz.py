"""Issue 16's bad input, replayed: every case ends in a clear exception or the right answer.

The cases live in tests/helpers/core_fuzz.py and run in a subprocess per group, so that a crash
(segfault, abort) or a hang (a timeout here) fails the test instead of taking pytest down.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

HELPERS = Path(__file__).resolve().parent / "helpers"


def _run_group(group: str, tmp_path: Path) -> list[dict]:
    proc = subprocess.run([sys.executable, str(HELPERS / "core_fuzz.py"), group], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path, env={**os.environ, "PYTHONSAFEPATH": "1"})
    assert proc.returncode == 0, f"the {group} cases crashed (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("group", ["api", "core", "graph"])
def test_every_case_is_a_clear_error_or_the_right_answer(group, tmp_path):
    results = _run_group(group, tmp_path)
    assert results, "no case ran"
    failed = [f"{r['case']}: {r['why']}" for r in results if not r["ok"]]
    errors = sum(r.get("outcome") == "clear_error" for r in results)
    print(f"\n{group}: {len(results)} cases, {errors} clear errors, "
          f"{len(results) - errors - len(failed)} correct results, {len(failed)} left")
    assert not failed, "\n".join(failed)


def test_mutating_the_graph_during_a_query_cannot_crash(tmp_path):
    # Another thread scribbles out-of-range ids into the caller's arrays while queries run with the
    # GIL released. Each query works on the private copy it validated: it either refuses the graph
    # (the scribble was seen while copying) or returns the answer of a valid graph; it never crashes.
    code = textwrap.dedent("""
        import threading, numpy as np
        from mlaga_fast.ppr import ppr_topk
        rng = np.random.default_rng(0)
        n = 20000
        src = rng.integers(0, n, 200000); dst = rng.integers(0, n, 200000)
        key = np.unique(np.concatenate([src * n + dst, dst * n + src]))
        indptr = np.zeros(n + 1, np.int64); np.cumsum(np.bincount(key // n, minlength=n), out=indptr[1:])
        indices = key % n
        stop = False
        def scribble():
            i = 0
            while not stop:
                indices[(i * 7919) % indices.size] = 10**12 if i % 2 else -5
                indptr[1 + (i % n)] = 0 if i % 3 == 0 else indptr[1 + (i % n)]
                i += 1
        t = threading.Thread(target=scribble); t.start()
        refused = answered = 0
        for _ in range(30):
            try:
                idx, val = ppr_topk(indptr, indices, np.arange(0, n, 97), k=8)
                assert idx.shape == (len(range(0, n, 97)), 8) and np.all(idx < n)
                answered += 1
            except ValueError:
                refused += 1
        stop = True; t.join()
        print(refused, answered)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    refused, answered = map(int, proc.stdout.split())
    assert refused + answered == 30

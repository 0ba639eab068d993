"""Ctrl-C (SIGINT) stops a long PPR call within a second: the kernels poll Python's signal handlers."""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pytest

# A 1000-node ring with alpha = 1e-5 and eps = 1e-7: legal (work bound 1e12 edge pushes per
# source) but minutes of pushing, so only Ctrl-C can end it within the test.
LONG_CALL = {
    "topk": "ppr_topk(indptr, indices, [0, 500], alpha=1e-5, eps=1e-7, num_threads=2)",
    "dense": "ppr_dense(indptr, indices, [0, 500], alpha=1e-5, eps=1e-7, num_threads=2)",
    "bounded": "bounded_topk_host(indptr, indices, [0], alpha=1e-5, eps=1e-7, capacity=4096)",
}


@pytest.mark.parametrize("call", sorted(LONG_CALL))
def test_ctrl_c_stops_a_long_call_within_a_second(call, tmp_path):
    code = textwrap.dedent(f"""
        import signal, sys, time, numpy as np
        from mlaga_fast.ppr import bounded_topk_host, ppr_dense, ppr_topk
        # Start from a terminal's state. A pytest started as a background job of a non-interactive shell
        # (`pytest &`, as CI scripts do) has SIGINT ignored (POSIX: asynchronous commands ignore SIGINT
        # and SIGQUIT when job control is off); the child inherits SIG_IGN and Python then installs no
        # handler, so the call would run to its end. Measured: SigIgn 0x1001006 in such a pytest.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {{signal.SIGINT}})
        signal.signal(signal.SIGINT, signal.default_int_handler)
        n = 1000
        nxt, prv = (np.arange(n) + 1) % n, (np.arange(n) - 1) % n
        indptr = np.arange(0, 2 * n + 1, 2, dtype=np.int64)
        indices = np.stack([np.minimum(nxt, prv), np.maximum(nxt, prv)], axis=1).ravel()
        print("running", flush=True)
        try:
            {LONG_CALL[call]}
        except KeyboardInterrupt:
            print("interrupted", time.monotonic(), flush=True)
            sys.exit(3)
        print("finished", flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path)
    try:
        assert proc.stdout.readline().strip() == "running"
        time.sleep(1.5)  # well inside the kernel by now
        sent = time.monotonic()  # CLOCK_MONOTONIC: one clock for both processes
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 3, f"exit {proc.returncode}: {out} {err[-2000:]}"
    stopped = float(out.split()[1])
    assert stopped - sent < 1.0

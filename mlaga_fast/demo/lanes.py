"""A second lane for the demo: one job in a spawned process beside this one, each on its share of the cores.

On CPU a second thread speeds the demo's stages up by only 1.3-1.5x (measured on 2 cores: Stage 1 173 s
on one thread vs 116 s on two; Stage 2 steps 1.3x), because their matrices are small and every op pays
a fixed dispatch cost. Two independent jobs side by side, one core each, therefore finish sooner than
the same jobs one after the other on both cores.

The results stay deterministic: each lane's thread count follows from the core count alone, never from
timing, so a seed gives the same numbers on every run of a machine.
"""
from __future__ import annotations

import multiprocessing
import traceback
from typing import Any, Callable

__all__ = ["split_threads", "SideLane", "new_gate"]


def split_threads(total: int) -> tuple[int, int] | None:
    """(threads here, threads in the side lane) for ``total`` cores; None below 2 (then nothing runs beside)."""
    if total < 2:
        return None
    side = total // 2
    return total - side, side


def new_gate() -> Any:
    """An event one process sets and the other waits on: a side lane's job waits (``gate.wait()``) for this
    process, or this process (``SideLane.wait(gate)``) for the job; made in the context the side lane spawns
    with. A job waiting on a gate its parent never sets ends with the parent (``SideLane.stop``, or the daemon
    process dying with it)."""
    return multiprocessing.get_context("spawn").Event()


def _child(conn, threads: int, fn: Callable[..., Any], args: tuple) -> None:
    import torch

    torch.set_num_threads(threads)
    try:
        out = ("ok", fn(*args))
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent, which re-raises it
        out = ("error", (exc, traceback.format_exc()))
    try:
        conn.send(out)
    except Exception as exc:  # an exception or result that does not pickle
        conn.send(("error", (RuntimeError(f"{type(exc).__name__}: {exc}"), traceback.format_exc())))
    conn.close()


class SideLane:
    """``fn(*args)`` in a spawned process with ``threads`` torch threads; ``result()`` waits and returns its value
    (or raises its exception here; later calls give the same answer again), ``done`` says whether it has been
    received, ``stop()`` ends it early. ``fn`` and ``args`` must pickle."""

    def __init__(self, fn: Callable[..., Any], *args: Any, threads: int):
        ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked OpenMP or torch state
        self._conn, child = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=_child, args=(child, threads, fn, args), daemon=True)
        self._proc.start()
        child.close()
        self._out: tuple[str, Any] | None = None

    @property
    def done(self) -> bool:
        return self._out is not None

    def result(self) -> Any:
        if self._out is None:
            try:
                out = self._conn.recv()
            except EOFError:
                self._proc.join()
                raise RuntimeError(f"the side process ended without a result (exit code {self._proc.exitcode})"
                                   ) from None
            self._proc.join()
            self._out = out
        status, value = self._out
        if status == "error":
            exc, tb = value
            raise exc from RuntimeError("in the side process:\n" + tb)
        return value

    def wait(self, gate: Any, poll_s: float = 1.0) -> None:
        """Wait until the side lane's job sets ``gate`` (an event from ``new_gate`` passed to it); if the job ends
        first, raise its error here (or say that it ended without setting the gate), so a failed job never
        leaves this process waiting."""
        while not gate.wait(poll_s):
            if not self._proc.is_alive() or self._conn.poll():
                self.result()  # raises the job's error
                if not gate.is_set():
                    raise RuntimeError("the side process finished without setting the gate this process waits on")

    def stop(self) -> None:
        if self._proc.is_alive():
            self._proc.terminate()
        self._proc.join()

"""Two-or-more-process gloo groups on the CPU for the distributed tests.

``run_ranks`` plays torchrun's part: this (the pytest) process hosts the rendezvous store on a port the
kernel picks (bound to port 0 and held for the whole run, so no other process can take it between the
choice and the use), and each spawned rank joins it as a client, the way torchrun's workers join their
agent's store (TORCHELASTIC_USE_AGENT_STORE). A rank that raises or dies fails the run at once; ranks
still alive after ``timeout`` seconds fail it too; and whatever happens, each rank's process group
(the rank and anything it started) is killed before ``run_ranks`` returns or raises, so nothing
outlives the test.
"""
from __future__ import annotations

import datetime
import os
import signal
import time
from typing import Callable

HOST = "127.0.0.1"


def rank_env(rank: int, world: int, port: int) -> None:
    """Inside a spawned worker: the environment torchrun would set, and one thread per process."""
    import torch

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR=HOST, MASTER_PORT=str(port), OMP_NUM_THREADS="1",
                      # the store at MASTER_ADDR:MASTER_PORT is served by the parent: every rank is a client
                      TORCHELASTIC_USE_AGENT_STORE="True", TORCHELASTIC_RESTART_COUNT="0")
    torch.set_num_threads(1)


def _rank_main(rank: int, world: int, port: int, pg_timeout: float, init_group: bool, fn: Callable,
               args: tuple) -> None:
    os.setpgid(0, 0)  # a process group of its own: the parent kills it, and what it started, as one
    rank_env(rank, world, port)
    import torch.distributed as tdist

    if init_group:
        # env:// against the parent's store; a collective that waits longer than pg_timeout raises
        tdist.init_process_group("gloo", rank=rank, world_size=world,
                                 timeout=datetime.timedelta(seconds=pg_timeout))
    try:
        fn(rank, *args)
    finally:
        if tdist.is_initialized():
            tdist.destroy_process_group()


def _kill_rank_groups(processes) -> None:
    own = os.getpgrp()
    for p in processes:
        if p.pid is None:
            continue
        if p.pid != own:
            try:
                os.killpg(p.pid, signal.SIGKILL)  # the rank's group (gone already if the rank never set it)
            except (ProcessLookupError, PermissionError):
                pass
        if p.is_alive():
            p.kill()
        p.join(timeout=10)


def run_ranks(fn: Callable, *args, world: int = 2, timeout: float, pg_timeout: float = 60.0,
              init_group: bool = True) -> None:
    """Run ``fn(rank, *args)`` in ``world`` spawned processes under torchrun's environment variables.

    With ``init_group`` each rank first joins one gloo group whose collectives time out after
    ``pg_timeout`` seconds (code that finds a group already started uses it); without it, ``fn`` starts
    the group itself (env://). Raises the first failing rank's error, or TimeoutError when the ranks have
    not all finished within ``timeout`` seconds."""
    import torch.distributed as tdist
    import torch.multiprocessing as mp

    store = tdist.TCPStore(HOST, 0, world_size=None, is_master=True, wait_for_workers=False,
                           timeout=datetime.timedelta(seconds=pg_timeout))
    ctx = mp.start_processes(_rank_main, args=(world, store.port, pg_timeout, init_group, fn, args), nprocs=world,
                             join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    try:
        # join() raises as soon as one rank exits non-zero (after stopping the others)
        while not ctx.join(timeout=min(5.0, max(0.0, deadline - time.monotonic())), grace_period=1.0):
            if time.monotonic() >= deadline:
                alive = [p.pid for p in ctx.processes if p.is_alive()]
                raise TimeoutError(f"{world} gloo ranks: processes {alive} still running after {timeout:.0f} s")
    finally:
        _kill_rank_groups(ctx.processes)
        del store

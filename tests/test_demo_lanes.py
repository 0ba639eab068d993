"""The demo's second lane (mlaga_fast.demo.lanes): the thread split, and a spawned job's result, thread
count, exception, death and early stop, and this process waiting on a gate the job sets."""
import os
import time

import pytest
import torch

from mlaga_fast.demo.lanes import SideLane, new_gate, split_threads


def test_split_threads_gives_each_lane_its_share():
    assert split_threads(1) is None and split_threads(0) is None
    assert split_threads(2) == (1, 1)
    assert split_threads(3) == (2, 1)
    assert split_threads(16) == (8, 8)


def test_side_lane_runs_in_another_process_with_its_threads():
    lane = SideLane(os.getpid, threads=1)
    assert lane.result() != os.getpid()
    assert SideLane(torch.get_num_threads, threads=1).result() == 1
    assert SideLane(sorted, [3, 1, 2], threads=1).result() == [1, 2, 3]
    lane = SideLane(sorted, [2, 1], threads=1)
    assert not lane.done
    assert lane.result() == [1, 2] and lane.done and lane.result() == [1, 2]  # asked again: the same answer


def test_side_lane_reraises_the_job_exception_here():
    with pytest.raises(ValueError, match="invalid literal"):
        SideLane(int, "not a number", threads=1).result()


def test_side_lane_reports_a_process_that_dies():
    with pytest.raises(RuntimeError, match="exit code 3"):
        SideLane(os._exit, 3, threads=1).result()


def test_side_lane_stop_ends_a_running_job():
    lane = SideLane(time.sleep, 600, threads=1)
    lane.stop()
    assert not lane._proc.is_alive()
    assert lane._proc.exitcode is not None and lane._proc.exitcode != 0


def test_waiting_on_a_gate_the_job_sets_and_on_a_job_that_never_sets_it():
    gate = new_gate()
    lane = SideLane(gate.set, threads=1)  # the job sets the gate and returns None
    lane.wait(gate, poll_s=0.05)
    assert gate.is_set() and lane.result() is None
    # a job that fails, or ends, before setting the gate: its error, or a one-line report, instead of a hang
    with pytest.raises(ValueError, match="invalid literal"):
        SideLane(int, "not a number", threads=1).wait(new_gate(), poll_s=0.05)
    with pytest.raises(RuntimeError, match="without setting the gate"):
        SideLane(sorted, [2, 1], threads=1).wait(new_gate(), poll_s=0.05)
    with pytest.raises(RuntimeError, match="exit code 3"):
        SideLane(os._exit, 3, threads=1).wait(new_gate(), poll_s=0.05)

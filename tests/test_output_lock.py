"""One writer per output folder (mlaga_fast/utils/lock.py): the two ways two `features` runs on one folder
used to go wrong, the same refusal for PPR tables and training runs, and the lock's release when its
holder is killed."""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from mlaga_fast.utils.lock import OutputLocked, exclusive_output


def run_cli(args):
    from click.testing import CliRunner

    from mlaga_fast.cli.main import cli

    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from mlaga_fast.data.synth import make_catalogue

    d = tmp_path_factory.mktemp("lock") / "ds"
    make_catalogue(d, nodes=48, classes=3, image_size=16, mean_degree=4.0, seed=0)
    return d


def _features_args(dataset, out, *extra):
    return ["features", "--data", dataset, "--out", out, "--device", "cpu", "--shard-size", 16, "--batch-size", 16,
            "--no-progress", *extra]


def _refused(res) -> None:
    assert res.exit_code == 1, res.output  # a valid command that cannot run now: the runtime code
    assert "is being written by another mlaga-fast process" in res.output
    assert "Traceback" not in res.output


def test_overwrite_run_is_refused_while_another_run_writes(dataset, tmp_path, one_torch_thread):
    """Run A (tiny) pauses after its first shard; run B (tiny:1 --overwrite) on the same folder used to
    wipe A's shards, write its own, and both exited 0 with a manifest saying 'tiny, complete'. Now B
    is refused while A runs, and A's folder is whole and all A's."""
    from mlaga_fast.data import load
    from mlaga_fast.features import FeatureStore
    from mlaga_fast.features.extract import FeatureConfig, extract_features, graph_fingerprint

    out = tmp_path / "feat"
    seen = []

    def during_a(shard):  # A is paused here, between two shards, holding its lock
        if not seen:
            seen.append(run_cli(_features_args(dataset, out, "--encoder", "tiny:1", "--overwrite")))

    g = load(dataset)
    extract_features(g, out, FeatureConfig(encoder="tiny", device="cpu", shard_size=16, batch_size=16),
                     graph_fp=graph_fingerprint(g, dataset), on_shard_done=during_a, progress=False)
    _refused(seen[0])
    st = FeatureStore(out)
    assert st.encoder == "tiny" and st.num_shards == 3
    ref = tmp_path / "ref"  # an uninterrupted run: A's folder must hold exactly its bytes
    assert run_cli(_features_args(dataset, ref, "--encoder", "tiny")).exit_code == 0
    for i in range(3):
        for part in ("image", "text", "text_mask"):
            name = f"shard_{i:05d}.{part}.npy"
            np.testing.assert_array_equal(np.load(out / name), np.load(ref / name))
    # Once A is done, B may replace the folder.
    assert run_cli(_features_args(dataset, out, "--encoder", "tiny:1", "--overwrite")).exit_code == 0
    assert FeatureStore(out).encoder == "tiny:1"


def test_identical_second_run_does_not_delete_the_first_runs_temp_files(dataset, tmp_path, one_torch_thread):
    """With identical settings, B's start-up cleanup used to delete A's in-progress temporary file and A
    died with a traceback. Now B is refused and A's temporary file survives until A renames it."""
    from mlaga_fast.data import load
    from mlaga_fast.features import FeatureStore
    from mlaga_fast.features.extract import FeatureConfig, extract_features, graph_fingerprint

    out = tmp_path / "feat"
    seen = []

    def during_a(shard):
        if not seen:
            tmp = out / ".shard_00001.image.npy.inprogress.tmp"  # what an interrupted atomic write leaves
            tmp.write_bytes(b"partial")
            seen.append((run_cli(_features_args(dataset, out, "--encoder", "tiny")), tmp.exists()))
            tmp.unlink()

    g = load(dataset)
    extract_features(g, out, FeatureConfig(encoder="tiny", device="cpu", shard_size=16, batch_size=16),
                     graph_fp=graph_fingerprint(g, dataset), on_shard_done=during_a, progress=False)
    res, tmp_survived = seen[0]
    _refused(res)
    assert tmp_survived
    assert FeatureStore(out).num_shards == 3


def test_ppr_table_and_training_runs_refuse_a_second_writer(dataset, tmp_path):
    table = tmp_path / "t.npz"
    with exclusive_output(table, "PPR table", is_file=True):
        _refused(run_cli(["ppr", "--data", dataset, "--out", table, "--no-progress"]))
    assert not table.exists()
    res = run_cli(["ppr", "--data", dataset, "--out", table, "--no-progress", "--k", 4])
    assert res.exit_code == 0, res.output
    run = tmp_path / "run"
    with exclusive_output(run, "train align"):
        _refused(run_cli(["train", "align", "--data", dataset, "--features", tmp_path, "--out", run]))
        _refused(run_cli(["train", "instruct", "--data", dataset, "--node-source", "raw", "--out", run]))
    assert list(run.iterdir()) == []  # nothing was written by the refused runs


def test_lock_is_released_when_its_holder_is_killed(tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from mlaga_fast.utils.lock import exclusive_output
        with exclusive_output({str(out)!r}, "test"):
            print("locked", flush=True)
            time.sleep(600)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputLocked, match="another mlaga-fast process"):
            with exclusive_output(out, "test"):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    with exclusive_output(out, "test"):  # no stale lock after SIGKILL
        pass
    assert list(out.iterdir()) == []  # locking a folder adds nothing to it


def test_torchrun_workers_leave_the_lock_to_rank_0(tmp_path, monkeypatch):
    out = tmp_path / "run"
    with exclusive_output(out, "train align"):
        monkeypatch.setenv("RANK", "1")
        with exclusive_output(out, "train align"):  # rank 1 of the same job: not refused
            pass

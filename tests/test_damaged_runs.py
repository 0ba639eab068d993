"""Run folders that travel: every damaged Stage-1 run, Stage-2 run, export and features folder gives one
`Error:` line naming the file and the problem (exit 2), or a correct result; sha256 checksums catch
damage that leaves the structure sound; interrupted writes (kill -9 during predict, a full disk during a
checkpoint or an export) leave the previous state whole.

The runs are built once per module with the tiny setup (tests/helpers/instruct_inputs.py: 120 nodes,
tiny CLIP, a 2-step aligner, a tiny Llama) and a 1-step LoRA Stage-2 run; each case damages a copy."""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

pytestmark = pytest.mark.slow

NODES = [0, 7, 19, 42, 101]


def run_cli(args):
    from click.testing import CliRunner

    from mlaga_fast.cli.main import cli

    return CliRunner().invoke(cli, [str(a) for a in args])


def one_error(res, exit_code: int = 2) -> str:
    """The one `Error:` line of a failed command (asserting there is exactly one, and no traceback)."""
    errors = [line for line in res.output.splitlines() if line.startswith("Error: ")]
    assert res.exit_code == exit_code, res.output
    assert isinstance(res.exception, SystemExit), res.exception
    assert "Traceback" not in res.output, res.output
    assert len(errors) == 1, res.output
    return errors[0]


@pytest.fixture(scope="module")
def world(tmp_path_factory, one_torch_thread):
    """ROOT/{data, align, llm} (tiny setup), ROOT/run2 (a 1-step Stage-2 run with LoRA), ROOT/export,
    ROOT/nodes.txt (5 node ids) and ROOT/want.csv (predict on the intact run)."""
    from helpers.instruct_inputs import build_instruct_inputs
    from mlaga_fast.config import resolve_config
    from mlaga_fast.export import export_run
    from mlaga_fast.train.instruct import train_instruct
    from mlaga_fast.train.instruct_config import InstructConfig

    root = build_instruct_inputs(tmp_path_factory.mktemp("runs"), hidden=32, layers=1)
    cfg = resolve_config(InstructConfig, {"data": [str(root / "data")], "align": str(root / "align"),
                                          "llm": str(root / "llm"), "tasks": ["nc"], "max_steps": 1,
                                          "lora": True, "lora_r": 4, "device": "cpu", "batch_size": 4})
    train_instruct(cfg, root / "run2", progress=False)
    export_run(root / "run2", root / "export")
    (root / "nodes.txt").write_text("\n".join(map(str, NODES)) + "\n")
    res = run_cli(predict_args(root, root / "run2", root / "want.csv"))
    assert res.exit_code == 0, res.output
    return root


def predict_args(root: Path, run: Path, out: Path, *extra, data: Path | None = None) -> list:
    return ["predict", "--run", run, "--data", data or root / "data", "--task", "nc", "--nodes", root / "nodes.txt",
            "--out", out, "--device", "cpu", "--no-progress", *extra]


# --- the checksums are recorded ------------------------------------------------------------------------
def test_manifests_record_sha256_of_every_artifact(world):
    from mlaga_fast.utils.io import sha256_file

    for run, names in ((world / "align", ["model.safetensors"]),
                       (world / "run2", ["lora/adapter_config.json", "lora/adapter_model.safetensors",
                                         "projectors.safetensors"]),
                       (world / "export", ["aligner/model.safetensors", "lora/adapter_config.json",
                                           "lora/adapter_model.safetensors", "projectors.safetensors"])):
        sums = json.loads((run / "manifest.json").read_text())["checksums"]
        assert sorted(sums) == names, run
        for name, digest in sums.items():
            assert digest == sha256_file(run / name)  # hashlib over the whole file, independently
    done = json.loads((world / "data" / "features" / "shard_00000.done.json").read_text())
    for part, digest in done["sha256"].items():
        assert digest == sha256_file(world / "data" / "features" / f"shard_00000.{part}.npy")
    card = (world / "export" / "model_card.md").read_text()
    assert "Integrity: sha256 of 4 files" in card


# --- the damage table ----------------------------------------------------------------------------------
def _flip(path: Path, offset: int) -> None:
    b = bytearray(path.read_bytes())
    b[offset % len(b)] ^= 0x01
    path.write_bytes(bytes(b))


def _truncate(path: Path, size: int) -> None:
    path.write_bytes(path.read_bytes()[:size])


def _zero_in_data(path: Path, n: int = 16) -> None:
    b = bytearray(path.read_bytes())
    start = 8 + int.from_bytes(b[:8], "little")
    mid = start + (len(b) - start) // 2
    b[mid:mid + n] = bytes(n)
    path.write_bytes(bytes(b))


def _garbage_header(path: Path) -> None:
    b = bytearray(path.read_bytes())
    b[8:24] = b"\xff" * 16
    path.write_bytes(bytes(b))


def _edit_json(path: Path, edit) -> None:
    obj = json.loads(path.read_text())
    obj = edit(obj)
    path.write_text(json.dumps(obj))


def _shape_lie(path: Path) -> None:
    """Rewrite a safetensors header so that its first tensor claims another (consistent) shape: the file
    is sound, but its shapes do not fit the recorded architecture."""
    from safetensors.torch import load_file, save_file

    t = load_file(str(path))
    k = next(k for k in sorted(t) if t[k].ndim >= 2)
    t[k] = t[k].reshape(-1)  # same bytes, shape [n] instead of [a, b]
    save_file(t, str(path), metadata=_st_meta(path))


def _st_meta(path: Path):
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return f.metadata()


# name -> (where: "run2" | "export" | "align", damage(folder), file the error names, problem it states,
#          problem stated under --no-verify (None: the command succeeds, the damage is invisible to structure))
P, A = "projectors.safetensors", "model.safetensors"
LC, LW = "lora/adapter_config.json", "lora/adapter_model.safetensors"
DAMAGE = {
    "projectors truncated to 64 bytes": ("run2", lambda d: _truncate(d / P, 64), P, "checksum", "truncated"),
    "projectors garbage header": ("run2", lambda d: _garbage_header(d / P), P, "checksum", "not valid JSON"),
    "projectors 16 zero bytes in tensor data": ("run2", lambda d: _zero_in_data(d / P), P, "checksum", None),
    "projectors tensor shape rewritten": ("run2", lambda d: _shape_lie(d / P), P, "checksum", "has shape"),
    "projectors deleted": ("run2", lambda d: (d / P).unlink(), P, "no projectors.safetensors",
                           "no projectors.safetensors"),
    "lora config r='eight'": ("run2", lambda d: _edit_json(d / LC, lambda c: {**c, "r": "eight"}), LC, "checksum",
                              "r must be a positive integer"),
    "lora config is {'r': 'eight'}": ("run2", lambda d: (d / LC).write_text('{"r": "eight"}'), LC, "checksum",
                                      "lacks 'peft_type'"),
    "lora config holds a list": ("run2", lambda d: (d / LC).write_text("[1]"), LC, "checksum", "JSON object"),
    "lora config rank 5 (weights rank 4)": ("run2", lambda d: _edit_json(d / LC, lambda c: {**c, "r": 5}), LC,
                                            "checksum", "rank r=5"),
    "lora weights truncated": ("run2", lambda d: _truncate(d / LW, (d / LW).stat().st_size // 2), LW, "checksum",
                               "truncated"),
    "lora/ deleted": ("run2", lambda d: shutil.rmtree(d / "lora"), "lora", "missing", "no lora/ folder"),
    "manifest.json empty": ("run2", lambda d: (d / "manifest.json").write_text(""), "manifest.json",
                            "not valid JSON", "not valid JSON"),
    "manifest.json holds a list": ("run2", lambda d: (d / "manifest.json").write_text("[]"), "manifest.json",
                                   "JSON object", "JSON object"),
    "manifest.json deleted": ("run2", lambda d: (d / "manifest.json").unlink(), "manifest.json",
                              "not a finished", "not a finished"),
    "checksum list damaged": ("run2", lambda d: _edit_json(d / "manifest.json",
                                                           lambda m: {**m, "checksums": {P: "abc"}}),
                              "manifest.json", "sha256 hex", None),
    "export: projectors byte flipped": ("export", lambda d: _flip(d / P, -1), P, "checksum", None),
    "export: bundled aligner truncated": ("export", lambda d: _truncate(d / "aligner" / A, 100), "aligner/" + A,
                                          "checksum", "truncated"),
    "export: bundled aligner manifest deleted": ("export", lambda d: (d / "aligner" / "manifest.json").unlink(),
                                                 "aligner", "not a finished", "not a finished"),
    "stage 1: weights truncated": ("align", lambda d: _truncate(d / A, 1000), A, "checksum", "truncated"),
    "stage 1: weights garbage header": ("align", lambda d: _garbage_header(d / A), A, "checksum", "not valid JSON"),
    "stage 1: a byte flipped in the weights": ("align", lambda d: _flip(d / A, -3), A, "checksum", None),
    "stage 1: tensor shape rewritten": ("align", lambda d: _shape_lie(d / A), A, "checksum", "has shape"),
    "stage 1: dims say d=32": ("align", lambda d: _edit_json(d / "manifest.json",
                                                             lambda m: {**m, "dims": {**m["dims"], "d": 32}}),
                               A, "has shape", "has shape"),
    "stage 1: weights deleted": ("align", lambda d: (d / A).unlink(), "align", "no model.safetensors",
                                 "no model.safetensors"),
}


def _damaged_run(world: Path, tmp: Path, where: str, damage) -> Path:
    """A copy of run2 (or of the export) with the damage applied to it, or to its Stage-1 run."""
    run = tmp / "run"
    shutil.copytree(world / ("export" if where == "export" else "run2"), run)
    if where == "align":
        shutil.copytree(world / "align", tmp / "align")
        _edit_json(run / "manifest.json", lambda m: {**m, "inputs": {**m["inputs"], "align": {
            **m["inputs"]["align"], "run": str(tmp / "align")}}})
        damage(tmp / "align")
    else:
        damage(run)
    return run


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damaged_run_gives_one_line_error(world, tmp_path, case, capsys):
    """Every row: `predict` refuses the damaged run with one line naming the file and the problem; with
    --no-verify the structural checks still refuse what cannot be read, and what can be read predicts."""
    where, damage, file, problem, unverified_problem = DAMAGE[case]
    run = _damaged_run(world, tmp_path, where, damage)
    res = run_cli(predict_args(world, run, tmp_path / "p.csv"))
    line = one_error(res)
    assert file in line and problem in line, line
    print(f"| {case} | {line} |", file=sys.__stderr__)  # the damage table of the report (pytest -s)
    res = run_cli(predict_args(world, run, tmp_path / "q.csv", "--no-verify"))
    if unverified_problem is None:
        assert res.exit_code == 0, res.output
        assert (tmp_path / "q.csv").read_text().count("\n") == len(NODES) + 1
    else:
        line = one_error(res)
        assert file in line and unverified_problem in line, line
        print(f"| {case} (--no-verify) | {line} |", file=sys.__stderr__)


@pytest.mark.parametrize("name", ["projectors.safetensors", "lora/adapter_model.safetensors",
                                  "lora/adapter_config.json", "aligner/model.safetensors"])
def test_a_flipped_byte_anywhere_is_caught_by_the_checksum(world, tmp_path, name):
    """A flip in the header, the first tensor's first byte, the middle, or the last byte of every
    artifact of an export: opening it names the file and the checksum."""
    from mlaga_fast.runs.open import open_run

    path = world / "export" / name
    size = path.stat().st_size
    first = 8 + int.from_bytes(path.read_bytes()[:8], "little") if name.endswith(".safetensors") else 1
    for offset in (3, 12, first, size // 2, size - 1):
        run = tmp_path / f"e{offset}"
        shutil.copytree(world / "export", run)
        _flip(run / name, offset)
        with pytest.raises(ValueError, match="does not match its checksum") as e:
            open_run(run, "instruct")
        assert str(run / name) in str(e.value) and "\n" not in str(e.value)


def test_intact_export_and_unverified_runs_predict_like_the_run(world, tmp_path, capsys):
    """The export predicts exactly what the run predicts; so does a run written before checksums were
    recorded (with a one-line warning), and a run opened with --no-verify."""
    want = (world / "want.csv").read_text()
    assert run_cli(predict_args(world, world / "export", tmp_path / "e.csv")).exit_code == 0
    assert (tmp_path / "e.csv").read_text() == want
    old = tmp_path / "old"
    shutil.copytree(world / "run2", old)
    _edit_json(old / "manifest.json", lambda m: {k: v for k, v in m.items() if k != "checksums"})
    res = run_cli(predict_args(world, old, tmp_path / "o.csv"))
    assert res.exit_code == 0, res.output
    assert (tmp_path / "o.csv").read_text() == want
    warn = [x for x in res.stderr.splitlines() if "records no checksums" in x]
    assert warn == [f"Warning: {old} records no checksums (written before mlaga_fast recorded them): its files "
                    "cannot be verified"]
    res = run_cli(predict_args(world, world / "run2", tmp_path / "n.csv", "--no-verify"))
    assert res.exit_code == 0 and (tmp_path / "n.csv").read_text() == want


def test_eval_and_export_of_an_unverified_run_say_so(world, tmp_path):
    """`eval --no-verify` of an edited run records it in evaluations.jsonl and the model card; `export
    --no-verify` writes checksums of the copies and says the source was not verified; the export then
    opens verified. Without --no-verify both refuse the edited run."""
    run = tmp_path / "edited"
    shutil.copytree(world / "run2", run)
    _zero_in_data(run / P)
    ev = ["eval", "--run", run, "--data", world / "data", "--task", "nc", "--max-examples", 4, "--device", "cpu",
          "--no-progress"]
    assert "checksum" in one_error(run_cli(ev))
    res = run_cli([*ev, "--no-verify"])
    assert res.exit_code == 0, res.output
    rec = [json.loads(x) for x in (run / "evaluations.jsonl").read_text().splitlines()]
    assert [r["integrity"] for r in rec] == ["unverified"]
    card = (run / "model_card.md").read_text()
    assert "| unverified |" in card and "evaluated with `--no-verify`" in card
    assert "checksum" in one_error(run_cli(["export", "--run", run, "--out", tmp_path / "x"]))
    assert not (tmp_path / "x").exists()
    res = run_cli(["export", "--run", run, "--out", tmp_path / "x", "--no-verify"])
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "x" / "manifest.json").read_text())
    assert m["integrity"]["exported_from"].startswith("not verified: ")
    assert "Exported from a run whose files were not verified" in (tmp_path / "x" / "model_card.md").read_text()
    from mlaga_fast.runs.open import open_run

    assert open_run(tmp_path / "x", "instruct").verified is True
    res = run_cli(["eval", "--run", world / "run2", "--data", world / "data", "--task", "nc", "--max-examples", 4,
                   "--device", "cpu", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "| verified |" in (world / "run2" / "model_card.md").read_text()


def test_mlaga_from_pretrained_verify_flag(world, tmp_path):
    from mlaga_fast import MLaGA

    run = tmp_path / "r"
    shutil.copytree(world / "run2", run)
    _flip(run / LW, -1)
    with pytest.raises(ValueError, match="adapter_model.safetensors does not match its checksum"):
        MLaGA.from_pretrained(run, device="cpu", progress=False)
    m = MLaGA.from_pretrained(run, device="cpu", progress=False, verify=False)
    assert m.integrity == "unverified"
    assert MLaGA.from_pretrained(world / "run2", device="cpu", progress=False).integrity == "verified"


def test_stage1_loaders_check_the_run(world, tmp_path):
    from mlaga_fast.models.aligner import Aligner, load_aligner

    run = tmp_path / "a"
    shutil.copytree(world / "align", run)
    _flip(run / A, -1)
    with pytest.raises(ValueError, match="model.safetensors does not match its checksum"):
        Aligner.from_pretrained(run)
    model = Aligner.from_pretrained(run, verify=False)
    ref, _ = load_aligner(world / "align")
    diff = [k for k, v in model.state_dict().items() if not (v == ref.state_dict()[k]).all()]
    assert len(diff) == 1  # the flipped byte changed exactly one tensor, and nothing else noticed
    res = run_cli(["embed", "--run", run, "--out", tmp_path / "emb", "--device", "cpu"])
    assert "checksum" in one_error(res)


# --- features folders ----------------------------------------------------------------------------------
def test_features_checksums(world, tmp_path, capsys):
    """Opening a store checks sizes and headers (cheap); a flipped byte inside the data passes that and is
    caught by the full check (FeatureStore(verify=True), `mlaga-fast features --verify`); a folder
    extracted before checksums were recorded verifies with a warning."""
    from mlaga_fast.features.store import FeatureStore

    data = tmp_path / "data"
    shutil.copytree(world / "data", data)
    feats = data / "features"
    assert FeatureStore(feats, verify=True).verify() is True
    f = feats / "shard_00000.image.npy"
    _flip(f, -2)
    FeatureStore(feats)  # the structure is intact
    with pytest.raises(ValueError, match="shard_00000.image.npy does not match its checksum"):
        FeatureStore(feats, verify=True)
    res = run_cli(["features", "--data", data, "--encoder", "tiny", "--device", "cpu", "--batch-size", 64,
                   "--no-progress", "--verify"])
    line = one_error(res)
    assert "shard_00000.image.npy" in line and "checksum" in line, line
    print(f"| features: a byte flipped in an image shard (--verify) | {line} |", file=sys.__stderr__)
    _truncate(f, 200)
    line = one_error(run_cli(predict_args(world, world / "run2", tmp_path / "p.csv", data=data)))
    assert "shard_00000.image.npy" in line and "truncated" in line, line
    print(f"| features: image shard truncated (predict) | {line} |", file=sys.__stderr__)
    old = tmp_path / "old"
    shutil.copytree(world / "data" / "features", old)
    for d in old.glob("shard_*.done.json"):
        _edit_json(d, lambda r: {k: v for k, v in r.items() if k != "sha256"})
    capsys.readouterr()
    assert FeatureStore(old).verify() is False
    assert "cannot be verified" in capsys.readouterr().err


# --- checkpoints ---------------------------------------------------------------------------------------
def _enospc_after_half(monkeypatch, module) -> None:
    """Make ``module.atomic_write_bytes`` write half of its bytes through the real atomic writer, then
    fail as a full disk does."""
    from mlaga_fast.utils import io as uio

    def full_disk(path, data):
        def write(f):
            f.write(data[:len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

        uio._atomic_write(path, write)

    monkeypatch.setattr(module, "atomic_write_bytes", full_disk)


def test_checkpoint_full_disk_and_flipped_byte(tmp_path, monkeypatch):
    import torch

    from mlaga_fast.train import checkpoint as ck

    model = torch.nn.Linear(4, 3)
    p1 = ck.save_checkpoint(tmp_path, 1, model=model)
    before = p1.read_bytes()
    with torch.no_grad():
        model.weight.add_(1.0)
    with monkeypatch.context() as mp:
        _enospc_after_half(mp, ck)
        with pytest.raises(OSError) as e:
            ck.save_checkpoint(tmp_path, 2, model=model)
    msg = str(e.value)
    assert e.value.errno == errno.ENOSPC and "step_000000002.pt" in msg and "step_000000001.pt is kept" in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_000000001.pt", "step_000000001.pt.sha256"]
    assert p1.read_bytes() == before
    fresh = torch.nn.Linear(4, 3)
    ck.load_checkpoint(ck.find_latest(tmp_path), model=fresh)
    assert not torch.equal(fresh.weight, model.weight)  # the step-1 weights, whole
    for offset in (40, len(before) // 2, len(before) - 1):
        _flip(p1, offset)
        with pytest.raises(ValueError, match="does not match its checksum"):
            ck.load_checkpoint(p1, model=fresh)
        _flip(p1, offset)
    ck.load_checkpoint(p1, model=fresh)


def test_train_instruct_full_disk_keeps_the_checkpoint_and_resumes(world, tmp_path, monkeypatch):
    """`train instruct` whose second checkpoint hits a full disk: one `Error:` line (exit 1), the first
    checkpoint whole; `--resume` then finishes the run."""
    from mlaga_fast.train import checkpoint as ck

    args = ["train", "instruct", "--data", world / "data", "--align", world / "align", "--llm", world / "llm",
            "--tasks", "nc", "--max-steps", 2, "--checkpoint-every", 1, "--batch-size", 4, "--out", tmp_path / "r",
            "--no-progress", "--device", "cpu"]
    real, calls = ck.atomic_write_bytes, []

    def second_fails(path, data):
        calls.append(path)
        if len(calls) == 2:
            f = path.parent / ".enospc-probe"
            f.write_bytes(data[:len(data) // 2])
            f.unlink()
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(ck, "atomic_write_bytes", second_fails)
    line = one_error(run_cli(args), exit_code=1)
    assert "step_000000002.pt could not be written" in line and "step_000000001.pt is kept" in line, line
    print(f"| checkpoint write on a full disk | {line} |", file=sys.__stderr__)
    monkeypatch.setattr(ck, "atomic_write_bytes", real)
    ckpts = tmp_path / "r" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["step_000000001.pt", "step_000000001.pt.sha256"]
    res = run_cli([*args, "--resume"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "r" / "manifest.json").is_file()


# --- exports -------------------------------------------------------------------------------------------
def test_export_full_disk_leaves_nothing(world, tmp_path, monkeypatch):
    import mlaga_fast.export as ex

    real, calls = shutil.copy2, []

    def copy_then_full(src, dst, **kw):
        calls.append(src)
        if len(calls) == 3:  # a few files in: half of this one, then the disk is full
            Path(dst).write_bytes(Path(src).read_bytes()[:100])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst, **kw)

    monkeypatch.setattr(ex.shutil, "copy2", copy_then_full)
    before = {p.name: p.read_bytes() for p in (world / "run2").iterdir() if p.is_file()}
    line = one_error(run_cli(["export", "--run", world / "run2", "--out", tmp_path / "x"]), exit_code=1)
    assert "export: cannot write" in line and "nothing was written" in line, line
    print(f"| export on a full disk | {line} |", file=sys.__stderr__)
    assert sorted(os.listdir(tmp_path)) == []  # no EXPORT, no temporary folder
    after = {p.name: p.read_bytes() for p in (world / "run2").iterdir() if p.is_file()}
    assert after == before


# --- predict killed with SIGKILL -----------------------------------------------------------------------
KILLED = textwrap.dedent("""
    import sys, time
    import torch
    torch.set_num_threads(1)
    import mlaga_fast.eval.predict as P
    P.CHUNK = 16
    real, n = P.atomic_write_text, [0]
    def write(path, text):
        real(path, text)
        if path.name.startswith("chunk_"):
            n[0] += 1
            if n[0] == 3:
                open(sys.argv[4], "w").close()
                time.sleep(600)  # killed here, with 3 chunks written
    P.atomic_write_text = write
    P.run_predict(sys.argv[1], sys.argv[2], "nc", sys.argv[3], nodes="all", device="cpu", batch_size=8,
                  progress=False)
""")


def test_predict_killed_then_rerun_matches_an_uninterrupted_run(world, tmp_path, monkeypatch):
    import mlaga_fast.eval.predict as P
    from mlaga_fast.assistant import MLaGA

    out, marker = tmp_path / "p.jsonl", tmp_path / "killed-here"
    env = {**os.environ, "PYTHONSAFEPATH": "1"}
    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(world / "run2"), str(world / "data"), str(out),
                             str(marker)], env=env, cwd=tmp_path, stderr=subprocess.PIPE)
    t0 = time.time()
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() - t0 < 600, "the predict subprocess did not reach its third chunk"
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    part = out.with_name(out.name + ".partial")
    assert not out.exists() and len(list(part.glob("chunk_*.jsonl"))) == 3

    monkeypatch.setattr(P, "CHUNK", 16)
    scored = []
    real = MLaGA.predict_nc

    def counting(self, data, nodes, **kw):
        scored.append(len(nodes))
        return real(self, data, nodes, **kw)

    monkeypatch.setattr(MLaGA, "predict_nc", counting)
    n = P.run_predict(world / "run2", world / "data", "nc", out, nodes="all", device="cpu", batch_size=8,
                      progress=False)
    assert n == 120 and sum(scored) == 120 - 3 * 16 and not part.exists()  # only the missing rows, once
    scored.clear()
    P.run_predict(world / "run2", world / "data", "nc", tmp_path / "ref.jsonl", nodes="all", device="cpu",
                  batch_size=8, progress=False)
    assert sum(scored) == 120
    assert out.read_bytes() == (tmp_path / "ref.jsonl").read_bytes()
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["node"] for r in rows] == list(range(120))
    assert np.isfinite([v for r in rows for k, v in r.items() if k.startswith("score_")]).all()

"""Every command that reads a dataset, run on every kind of damaged dataset (and the commands that read
a features folder on damaged features): each must print one line, `Error: ...`, naming the damaged file
and the problem, and exit with 2 (bad input), never a traceback. See tests/helpers/corrupt.py for the
kinds of damage. Commands run in-process (click's CliRunner) on a 64-node dataset with tiny models."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers.corrupt import DATASET_DAMAGE, FEATURES_DAMAGE, damaged_copy  # noqa: E402


def run_cli(args):
    from click.testing import CliRunner

    from mlaga_fast.cli.main import cli

    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_one_line_error(res, file: str, problem: str, exit_code: int = 2) -> None:
    errors = [line for line in res.output.splitlines() if line.startswith("Error: ")]
    assert res.exit_code == exit_code, res.output
    assert isinstance(res.exception, SystemExit), res.exception  # not an escaped exception
    assert "Traceback" not in res.output, res.output
    assert len(errors) == 1, res.output
    assert file in errors[0] and problem in errors[0], errors[0]


@pytest.fixture(scope="module")
def world(tmp_path_factory, one_torch_thread):
    """A dataset with features, a finished Stage-1 run and a finished Stage-2 run on it."""
    from helpers.tiny_llm import build_tiny_llm
    from mlaga_fast.config import resolve_config
    from mlaga_fast.data.synth import make_catalogue
    from mlaga_fast.features.extract import FeatureConfig, extract_features, graph_fingerprint
    from mlaga_fast.train.align import train_align
    from mlaga_fast.train.align_config import AlignConfig
    from mlaga_fast.train.instruct import train_instruct
    from mlaga_fast.train.instruct_config import InstructConfig

    root = tmp_path_factory.mktemp("world")
    ds = root / "ds"
    g = make_catalogue(ds, nodes=64, classes=4, image_size=16, mean_degree=4.0, seed=0)
    extract_features(g, ds / "features", FeatureConfig(encoder="tiny", device="cpu"), graph_fp=graph_fingerprint(g, ds),
                     progress=False)
    train_align(AlignConfig(dim=16, num_heads=2, num_layers=1, num_queries=2, batch_size=32, max_steps=2,
                            device="cpu", attn_backend="sdpa"), ds, ds / "features", root / "run1",
                show_progress=False)
    llm = build_tiny_llm(root / "llm", list(g.texts) + list(g.class_names), hidden=32, layers=1)
    cfg = resolve_config(InstructConfig, {"data": [str(ds)], "align": str(root / "run1"), "llm": str(llm),
                                          "tasks": ["nc"], "max_steps": 1, "device": "cpu"})
    train_instruct(cfg, root / "run2", progress=False)
    return root


def _commands(root: Path, bad: Path) -> dict[str, list]:
    """Each dataset-reading command, pointed at the damaged copy ``bad``; outputs go to fresh paths."""
    out = root / "out"
    shutil.rmtree(out, ignore_errors=True)
    # `plot embeddings` reads the dataset its run recorded: a copy of the run that records `bad`.
    shutil.rmtree(out / "run1", ignore_errors=True)
    shutil.copytree(root / "run1", out / "run1")
    man = json.loads((out / "run1" / "manifest.json").read_text())
    man["inputs"]["data_dir"] = str(bad)
    (out / "run1" / "manifest.json").write_text(json.dumps(man))
    feats, cpu = root / "ds" / "features", ["--device", "cpu"]
    return {
        "data inspect": ["data", "inspect", bad],
        "data split-links": ["data", "split-links", bad],
        "features": ["features", "--data", bad, "--encoder", "tiny", "--out", out / "f", "--no-progress", *cpu],
        "ppr": ["ppr", "--data", bad, "--out", out / "t.npz", "--no-progress"],
        "train align": ["train", "align", "--data", bad, "--features", feats, "--out", out / "a", "--max-steps", 1,
                        "--no-progress", *cpu],
        "probe": ["probe", "--run", root / "run1", "--data", bad, *cpu],
        "plot embeddings": ["plot", "embeddings", "--run", out / "run1", "--out", out / "e.png", *cpu],
        "baseline": ["baseline", "--data", bad, "--model", "labelprop", "--task", "nc"],
        "train instruct": ["train", "instruct", "--data", bad, "--align", root / "run1", "--llm", root / "llm",
                           "--tasks", "nc", "--max-steps", 1, "--out", out / "i", "--no-progress", *cpu],
        "eval": ["eval", "--run", root / "run2", "--data", bad, "--task", "nc", "--no-progress", *cpu],
    }


DATASET_COMMANDS = ["data inspect", "data split-links", "features", "ppr", "train align", "probe", "plot embeddings",
                    "baseline", "train instruct", "eval"]


@pytest.mark.parametrize("kind", sorted(DATASET_DAMAGE))
def test_damaged_dataset_gives_one_line_error_in_every_command(world, kind):
    bad = world / "bad"
    file, problem = damaged_copy(world / "ds", bad, kind, DATASET_DAMAGE)
    cmds = _commands(world, bad)
    assert sorted(cmds) == sorted(DATASET_COMMANDS)
    for name in DATASET_COMMANDS:
        res = run_cli(cmds[name])
        try:
            assert_one_line_error(res, file, problem)
        except AssertionError as e:
            raise AssertionError(f"`mlaga-fast {name}` on a dataset with {kind}: {e}") from None


@pytest.mark.parametrize("kind", sorted(FEATURES_DAMAGE))
def test_damaged_features_give_one_line_error(world, kind):
    bad = world / "bad_features"
    file, problem = damaged_copy(world / "ds" / "features", bad, kind, FEATURES_DAMAGE)
    ds, out = world / "ds", world / "out_f"
    shutil.rmtree(out, ignore_errors=True)
    cmds = {
        "train align": ["train", "align", "--data", ds, "--features", bad, "--out", out / "a", "--max-steps", 1,
                        "--device", "cpu", "--no-progress"],
        "embed": ["embed", "--run", world / "run1", "--features", bad, "--out", out / "e", "--device", "cpu"],
        "baseline": ["baseline", "--data", ds, "--features", bad, "--model", "mlp", "--task", "nc"],
        "train instruct": ["train", "instruct", "--data", ds, "--features", bad, "--align", world / "run1",
                           "--llm", world / "llm", "--tasks", "nc", "--max-steps", 1, "--out", out / "i",
                           "--device", "cpu", "--no-progress"],
    }
    for name, args in cmds.items():
        res = run_cli(args)
        try:
            assert_one_line_error(res, file, problem)
        except AssertionError as e:
            raise AssertionError(f"`mlaga-fast {name}` on features with {kind}: {e}") from None


def test_feature_store_refuses_each_damage_directly(world):
    from mlaga_fast.features import FeatureStore

    FeatureStore(world / "ds" / "features")  # the undamaged store opens
    for kind in FEATURES_DAMAGE:
        bad = world / "bad_store"
        file, problem = damaged_copy(world / "ds" / "features", bad, kind, FEATURES_DAMAGE)
        with pytest.raises(ValueError, match=problem) as e:
            FeatureStore(bad)
        assert file in str(e.value)

"""What the CLI checks and says on the README's own-graph journey (issues #16 and #18): sizes read from a
file are bounded before anything is allocated, `prepare` says what a dataset lacks, `features` checks
the data before the weights, runs and datasets are matched by fingerprint, Stage 1 resumes from what the
run recorded, the preset/file/command-line order, device spellings, and `info` on a machine without a
GPU."""
from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mlaga_fast.cli.main import cli
from mlaga_fast.data.dgl_format import dgl_graph_bytes


def run_cli(args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _error_line(res) -> str:
    lines = [line for line in res.output.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1 and "Traceback" not in res.output, res.output
    return lines[0]


# ------------------------------------------------------------------ sizes bounded by what the file holds


def test_flipped_bytes_in_the_real_toys_graph_are_refused(magb_dir, tmp_path):
    """#16 item 5: 16 bytes flipped at 95% of ToysGraph.pt turned a label into ~1e18; `data prepare` then
    built a class-name list of that length until the OOM killer stopped it. Now the label is refused."""
    raw = bytearray((magb_dir / "ToysGraph.pt").read_bytes())
    at = int(len(raw) * 0.95)
    raw[at:at + 16] = b"\x0f" * 16  # lands in the label tensor: int64 labels near 1.1e18, however aligned
    (tmp_path / "Toys").mkdir()
    (tmp_path / "Toys" / "ToysGraph.pt").write_bytes(bytes(raw))
    res = run_cli(["data", "prepare", "--format", "magb", "--root", tmp_path, "--name", "Toys",
                   "--out", tmp_path / "ds", "--no-progress"])
    assert res.exit_code == 2
    line = _error_line(res)
    assert "ToysGraph.pt node data 'label'" in line and "cannot be a class id in a graph of 20695 nodes" in line


def test_label_and_node_count_bounds():
    from mlaga_fast.data.bounds import check_class_ids, node_count_from_edges

    check_class_ids(np.array([-1, 0, 4]), 5, "f")  # the largest id a 5-node graph can have
    with pytest.raises(ValueError, match=r"f: label 1100000000000 of node 1 cannot be a class id"):
        check_class_ids(np.array([0, 1_100_000_000_000]), 5, "f")
    with pytest.raises(ValueError, match=r"label -3 of node 0 is not a class id"):
        check_class_ids(np.array([-3, 1]), 5, "f")
    assert node_count_from_edges(np.array([[0, 1], [2, 3]]), "e") == 4
    with pytest.raises(ValueError, match=r"node id 1099511627776 in a list of 2 edges"):
        node_count_from_edges(np.array([[0, 1], [2, 1 << 40]]), "e")


def test_dgl_counts_are_bounded_by_the_bytes_that_follow(tmp_path):
    from mlaga_fast.data.dgl_format import read_dgl_graph

    raw = bytearray(dgl_graph_bytes(np.array([0, 1]), np.array([1, 2]), 3))
    raw[24:32] = struct.pack("<Q", 1 << 39)  # "number of graphs": far more than the file could list
    (tmp_path / "g.pt").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"implausible number of graphs 549755813888 .* bytes follow"):
        read_dgl_graph(tmp_path / "g.pt")
    (tmp_path / "h.pt").write_bytes(dgl_graph_bytes(np.array([0]), np.array([1]), 10**9))
    with pytest.raises(ValueError, match="declares 1000000000 nodes but holds 1 edges and no node data"):
        read_dgl_graph(tmp_path / "h.pt")


# ------------------------------------------------------------------ what prepare and features say


@pytest.fixture
def structure_only(tmp_path):
    """A MAGB folder with only the graph file (labels inside it): no CSV, no images."""
    n = 30
    src = np.arange(n)
    d = tmp_path / "Ring"
    d.mkdir()
    (d / "RingGraph.pt").write_bytes(dgl_graph_bytes(src, (src + 1) % n, n, ndata={"label": src % 3}))
    res = run_cli(["data", "prepare", "--format", "magb", "--root", tmp_path, "--name", "Ring",
                   "--out", tmp_path / "ds", "--no-progress"])
    assert res.exit_code == 0, res.output
    return tmp_path / "ds", res.output


def test_prepare_says_what_is_missing_and_what_then_works(structure_only):
    ds, output = structure_only
    text = " ".join(output.split())
    assert "note: no node texts and no images were found" in text
    assert "mlaga-fast baseline --model labelprop" in text
    assert "class names are placeholders (class_0 .. class_2)" in text
    res = run_cli(["baseline", "--data", ds, "--model", "labelprop", "--task", "nc"])  # ... and it works
    assert res.exit_code == 0, res.output


def test_features_checks_the_data_before_the_weights(structure_only, tmp_path, monkeypatch):
    ds, _ = structure_only
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))  # the README's encoder is absent
    for encoder in ("open_clip:ViT-L-14/openai", "tiny"):
        res = run_cli(["features", "--data", ds, "--encoder", encoder, "--device", "cpu"])
        assert res.exit_code == 2
        line = _error_line(res)
        assert "has neither node texts nor images, so there is nothing to encode" in line, line
        assert "weights" not in line and "tower" not in line


def test_split_links_says_it_replaces_a_split(tmp_path):
    from mlaga_fast.data.synth import make_catalogue

    make_catalogue(tmp_path / "ds", nodes=40, classes=2, image_size=8, mean_degree=4.0, seed=0)  # has a split
    res = run_cli(["data", "split-links", tmp_path / "ds", "--seed", 3])
    assert res.exit_code == 0, res.output
    assert res.output.startswith(f"replaced the link split {tmp_path / 'ds'} had (train_pos ")


# ------------------------------------------------------------------ runs and datasets


@pytest.fixture(scope="module")
def two_graphs(tmp_path_factory, one_torch_thread):
    """Two synthetic graphs of the same size and name (the issue's syn / syn2), features for both, and a
    short Stage-1 run on the first."""
    from mlaga_fast.data.synth import make_catalogue
    from mlaga_fast.features.extract import FeatureConfig, extract_features, graph_fingerprint

    root = tmp_path_factory.mktemp("two")
    for seed in (0, 1):
        d = root / f"syn{seed}"
        g = make_catalogue(d, nodes=64, classes=4, image_size=16, mean_degree=4.0, seed=seed)
        extract_features(g, d / "features", FeatureConfig(encoder="tiny", device="cpu"),
                         graph_fp=graph_fingerprint(g, d), progress=False)
    res = run_cli(["train", "align", "--data", root / "syn0", "--features", root / "syn0" / "features",
                   "--out", root / "run", "--dim", 16, "--num-heads", 2, "--num-layers", 1, "--num-queries", 2,
                   "--batch-size", 32, "--max-steps", 4, "--checkpoint-every", 2, "--device", "cpu",
                   "--attn-backend", "sdpa", "--no-progress"])
    assert res.exit_code == 0, res.output
    return root


def test_probe_refuses_another_graph_of_the_same_size(two_graphs):
    """#18 item 1: probe paired the run's features for `syn` with `syn2`'s labels and printed accuracies
    below chance. Now it compares the fingerprints the run recorded."""
    root = two_graphs
    ok = run_cli(["probe", "--run", root / "run", "--data", root / "syn0", "--device", "cpu"])
    assert ok.exit_code == 0, ok.output
    res = run_cli(["probe", "--run", root / "run", "--data", root / "syn1", "--device", "cpu"])
    assert res.exit_code == 2
    line = _error_line(res)
    assert f"dataset {root / 'syn1'}" in line and "is not the graph this run's features were extracted from" in line


def test_plot_refuses_a_dataset_changed_since_the_run(two_graphs, tmp_path):
    root = two_graphs
    run = tmp_path / "run"
    shutil.copytree(root / "run", run)
    data = tmp_path / "syn0"
    shutil.copytree(root / "syn0", data)
    man = json.loads((run / "manifest.json").read_text())
    man["inputs"]["data_dir"] = str(data)
    (run / "manifest.json").write_text(json.dumps(man))
    assert run_cli(["data", "split-links", data, "--seed", 5]).exit_code == 0  # a new fingerprint
    res = run_cli(["plot", "embeddings", "--run", run, "--out", tmp_path / "e.png", "--device", "cpu"])
    assert res.exit_code == 2 and "is not the graph this run's features were extracted from" in _error_line(res)


def test_align_resume_needs_no_data_or_features(two_graphs, tmp_path):
    """#18 item 9: `train align --out RUN --resume` continues from what the run recorded."""
    root = two_graphs
    run = tmp_path / "run"
    shutil.copytree(root / "run", run)
    for f in ("manifest.json", "model.safetensors"):  # as if killed after the step-2 checkpoint
        (run / f).unlink()
    for ck in (run / "checkpoints").glob("*"):
        if "4" in ck.name:
            ck.unlink()
    res = run_cli(["train", "align", "--out", run, "--resume", "--no-progress"])
    assert res.exit_code == 0, res.output
    man = json.loads((run / "manifest.json").read_text())
    assert man["train"]["steps"] == 4 and man["inputs"]["data_dir"] == str((root / "syn0").resolve())
    again = run_cli(["train", "align", "--out", run, "--resume", "--no-progress"])  # a finished run: says so
    assert again.exit_code == 0 and f"{run} is already complete (4 steps); nothing to do." in again.output
    fresh = run_cli(["train", "align", "--out", tmp_path / "new", "--no-progress"])
    assert fresh.exit_code == 2 and "--data and --features are required for a new run" in fresh.output


def test_preset_config_file_and_options_resolve_in_order(two_graphs, tmp_path):
    """#18 item 6: --preset < --config FILE < options, and the command says which preset values the
    file or an option replaced."""
    root = two_graphs
    f = tmp_path / "sizes.yaml"
    f.write_text("dim: 16\nnum_layers: 2\nnum_heads: 2\n")
    res = run_cli(["train", "align", "--data", root / "syn0", "--features", root / "syn0" / "features",
                   "--out", tmp_path / "run", "--preset", "paper", "--config", f, "--num-queries", 4,
                   "--batch-size", 32, "--max-steps", 1, "--device", "cpu", "--attn-backend", "sdpa",
                   "--no-progress"])
    assert res.exit_code == 0, res.output
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    # file: dim, layers, heads; option: queries; preset (paper) alone: cross-attention every 2nd layer
    assert (cfg["dim"], cfg["num_layers"], cfg["num_heads"], cfg["num_queries"], cfg["cross_attention_every"]) \
        == (16, 2, 2, 4, 2)
    assert "note: batch_size, dim, num_heads, num_layers, num_queries from --config / the command line replace --preset " \
           "paper's values" in res.output


# ------------------------------------------------------------------ devices and info


def test_device_spellings():
    import torch

    from mlaga_fast.runtime.device import pick_device

    assert pick_device("cpu:0") == torch.device("cpu", 0) and pick_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="'meta' devices are not supported"):
        pick_device("meta")
    with pytest.raises(ValueError, match="'banana' is not a device"):
        pick_device("banana")
    if torch.cuda.is_available():
        assert pick_device("0") == pick_device(0) == torch.device("cuda", 0)
    else:
        for spelling in ("0", 0, "cuda:0"):
            with pytest.raises(ValueError, match="CUDA is not available"):
                pick_device(spelling)


def test_cli_accepts_cpu_0(tmp_path):
    from mlaga_fast.data.synth import make_catalogue

    make_catalogue(tmp_path / "ds", nodes=40, classes=2, image_size=8, mean_degree=4.0, seed=0)
    for cmd in (["ppr", "--data", tmp_path / "ds", "--out", tmp_path / "t.npz", "--k", 4, "--no-progress"],
                ["baseline", "--data", tmp_path / "ds", "--model", "labelprop", "--task", "nc"]):
        res = run_cli([*cmd, "--device", "cpu:0"])
        assert res.exit_code == 0, res.output


def test_info_without_a_gpu_says_so():
    from mlaga_fast.info import cuda_unusable_reason, report

    assert "built without CUDA" in cuda_unusable_reason({"built_with_cuda": False})
    rep = report()
    if rep["core"].get("built_with_cuda") and not rep["cuda_device_usable"] \
            and not Path("/proc/driver/nvidia/version").exists():
        assert rep["cuda_unusable_reason"] == "no NVIDIA GPU or driver was found on this machine"
        out = run_cli(["info"]).output
        assert "CUDA device usable: no (no NVIDIA GPU or driver was found on this machine)" in out
        assert "insufficient" not in out


# ------------------------------------------------------------------ help texts and the error convention


def _all_commands():
    import click

    def walk(cmd, path):
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                yield from walk(sub, path + [name])
        else:
            yield " ".join(path), cmd

    return list(walk(cli, []))


def test_every_option_has_help_and_defaults_read_as_typed():
    import click

    commands = _all_commands()
    assert len(commands) >= 15
    for name, cmd in commands:
        missing = [p.opts[0] for p in cmd.params if isinstance(p, click.Option) and not p.help]
        assert not missing, f"mlaga-fast {name}: options without help: {missing}"
        with click.Context(cmd, info_name=name) as ctx:
            text = cmd.get_help(ctx)
        for python_repr in ("[default: []]", "[default: ]", "['", "default: True", "default: False",
                            "default: None"):
            assert python_repr not in text, f"mlaga-fast {name} --help shows {python_repr}"


def test_usage_and_input_errors_exit_2_with_one_error_line(tmp_path):
    res = run_cli(["ppr", "--data", tmp_path])  # a missing required option: click's usage error
    assert res.exit_code == 2 and "Error: Missing option '--out'" in res.output
    res = run_cli(["data", "inspect", tmp_path])  # an input that is not a dataset
    assert res.exit_code == 2 and _error_line(res).startswith(f"Error: {tmp_path} is not a dataset directory")
    res = run_cli(["train", "align", "--data", tmp_path, "--features", tmp_path, "--out", tmp_path / "r",
                   "--lr", "-1"])  # a bad config value
    assert res.exit_code == 2 and "lr" in _error_line(res)

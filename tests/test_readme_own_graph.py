"""The README's "Using it on your own graph" section, walked as written.

The commands are read from README.md (as `.ci/run` reads the test command) and run in order in a fresh
folder, each through the `mlaga-fast` command (in-process) with every option as the README gives it.
Only what cannot exist on a test machine is substituted, and each substitution is listed in SUBSTITUTE:
the MAGB folders `path/to/Toys` and `path/to/Grocery` become small MAGB-layout folders (a DGL graph file,
a CSV of texts, labels and category names, one JPEG per node) written from synthetic catalogues; the
encoder weights the README names (CLIP ViT-L/14, not downloadable here) become the `tiny` encoder; and
the 7B LLM becomes a tiny random Llama saved as a local folder. Every command must exit 0.
"""
from __future__ import annotations

import glob
import re
import shlex
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Using it on your own graph"


def readme_commands() -> list[list[str]]:
    """The `mlaga-fast` command lines of the first bash block in the section, comments stripped."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index(SECTION):]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    cmds = [shlex.split(line, comments=True) for line in block.splitlines()]
    cmds = [c for c in cmds if c]
    assert all(c[0] == "mlaga-fast" for c in cmds), [c for c in cmds if c[0] != "mlaga-fast"]
    return cmds


def write_magb_folder(root: Path, name: str, nodes: int, classes: int, seed: int) -> list[str]:
    """A MAGB-layout folder (see docs/data_format.md) holding a synthetic catalogue; returns its texts."""
    import csv

    from mlaga_fast.data.dgl_format import dgl_graph_bytes
    from mlaga_fast.data.synth import make_catalogue

    g = make_catalogue(root / "_synth", nodes=nodes, classes=classes, image_size=32, mean_degree=5.0, seed=seed,
                       link_split=False)
    src, dst = g.edge_pairs()
    (root / f"{name}Graph.pt").write_bytes(dgl_graph_bytes(src, dst, g.num_nodes, ndata={"label": g.labels}))
    with open(root / f"{name}.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "text", "label", "second_category"])
        for i in range(g.num_nodes):
            w.writerow([i, g.texts[i], int(g.labels[i]), g.class_names[g.labels[i]]])
    (root / f"{name}Images").mkdir()
    for i in range(g.num_nodes):
        g.load_image(i).save(root / f"{name}Images" / f"{i}.jpg", quality=90)
    import shutil

    shutil.rmtree(root / "_synth")
    return list(g.texts) + list(g.class_names)


@pytest.fixture(scope="module")
def substitutes(tmp_path_factory):
    from helpers.tiny_llm import build_tiny_llm

    root = tmp_path_factory.mktemp("readme_inputs")
    texts = []
    # Toys: 64 nodes, one Stage-1 batch at the default batch size (64), so the default 10 epochs are 10 steps.
    for name, nodes, classes, seed in (("Toys", 64, 4, 0), ("Grocery", 60, 5, 1)):
        (root / name).mkdir()
        texts += write_magb_folder(root / name, name, nodes, classes, seed)
    llm = build_tiny_llm(root / "llm", texts)
    return {
        "path/to/Toys": str(root / "Toys"),
        "path/to/Grocery": str(root / "Grocery"),
        "open_clip:ViT-L-14/openai": "tiny",  # the paper's CLIP: its weights cannot be fetched here
        "lmsys/vicuna-7b-v1.5-16k": str(llm),  # a 7B LLM: a tiny random Llama in its place
    }


def test_readme_own_graph_section_runs_as_written(substitutes, tmp_path, monkeypatch, one_torch_thread):
    from click.testing import CliRunner

    from mlaga_fast.cli.main import cli

    cmds = readme_commands()
    used = set()
    monkeypatch.chdir(tmp_path)
    for cmd in cmds:
        args = []
        for a in cmd[1:]:
            if a in substitutes:
                used.add(a)
                a = substitutes[a]
            args += sorted(glob.glob(a)) if "*" in a else [a]
        res = CliRunner().invoke(cli, args)
        assert res.exit_code == 0, f"README command failed: {shlex.join(cmd)}\n{res.output[-3000:]}"
    assert used == set(substitutes), f"substitutions no longer in the README: {set(substitutes) - used}"
    # The journey's products, one per step.
    for product in ("data/toys/graph.json", "data/toys/features/manifest.json", "runs/align/manifest.json",
                    "runs/align/embed/manifest.json", "embeddings.png", "ppr_toys.npz", "runs/instruct/manifest.json",
                    "results/toys_nc.json", "results/grocery_nc.json", "results/toys_gcn.json"):
        assert (tmp_path / product).is_file(), product

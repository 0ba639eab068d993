"""MAGB loader: the real Toys/Grocery graphs through `data prepare` + `data inspect`, checked against
numbers computed independently of the loader; and a complete synthetic MAGB layout (CSV, split,
images in a folder or a tar.gz) including its failure modes."""
from __future__ import annotations

import csv
import io
import json
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from mlaga_fast.cli.main import cli
from mlaga_fast.data import load
from mlaga_fast.data.dgl_format import dgl_graph_bytes
from mlaga_fast.data.magb import load_magb

README = {"Toys": (20695, 63443, 18), "Grocery": (17074, 85670, 20)}  # nodes, stored edges, classes


def independent_counts(path: Path, n: int, e: int) -> dict:
    """Edge statistics from the raw bytes with NumPy + Python sets; shares no code with the loader.
    The edge arrays are the two int64 tensor records of length e (found by their magic number); the
    labels are the last int64 record of length n."""
    raw = path.read_bytes()
    magic = struct.pack("<Q", 0xDD5E40F096B4A13F)
    recs, pos = [], 0
    while (pos := raw.find(magic, pos)) >= 0:
        length = struct.unpack_from("<q", raw, pos + 32)[0]
        if length in (n, e) and struct.unpack_from("<q", raw, pos + 40)[0] == 8 * length:
            recs.append(np.frombuffer(raw, "<i8", length, pos + 48))
        pos += 8
    src, dst = [r for r in recs if r.size == e][:2]
    labels = [r for r in recs if r.size == n][-1]
    pairs = {(min(a, b), max(a, b)) for a, b in zip(src.tolist(), dst.tolist()) if a != b}
    loops = int((src == dst).sum())
    touched = {u for p in pairs for u in p}
    same = sum(labels[u] == labels[v] for u, v in pairs)
    return {"num_edges": len(pairs), "self_loops_dropped": loops, "duplicates_merged": e - loops - len(pairs),
            "isolated_nodes": n - len(touched), "edge_homophily": same / len(pairs),
            "num_classes": len(set(labels.tolist()))}


@pytest.mark.parametrize("name", ["Toys", "Grocery"])
def test_real_magb_prepare_and_inspect(name, tmp_path, magb_dir):
    path = magb_dir / f"{name}Graph.pt"
    n, e, k = README[name]
    runner = CliRunner()
    out = tmp_path / name
    r = runner.invoke(cli, ["data", "prepare", "--format", "magb", "--root", str(magb_dir), "--name", name,
                            "--out", str(out), "--no-progress"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["data", "inspect", str(out), "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    ref = independent_counts(path, n, e)
    assert rep["num_nodes"] == n
    assert rep["source_stored_edges"] == e
    assert rep["num_classes"] == k == ref["num_classes"]
    for key in ("num_edges", "self_loops_dropped", "duplicates_merged", "isolated_nodes"):
        assert rep[key] == ref[key], key
    assert rep["edge_homophily"] == pytest.approx(ref["edge_homophily"], abs=1e-12)
    assert rep["num_stored_edges"] == 2 * ref["num_edges"]
    # no split file: seeded 60/20/20 over the (all labelled) nodes
    assert rep["split_sizes"] == {"train": int(0.6 * n), "val": int(0.2 * n), "test": n - int(0.6 * n) - int(0.2 * n)}
    assert rep["has_text"] is False and rep["has_images"] is False and rep["missing_images"] == 0
    for key in ("num_nodes", "num_edges", "num_classes", "self_loops_dropped", "duplicates_merged",
                "isolated_nodes", "edge_homophily", "split_sizes", "has_text", "has_images", "missing_images"):
        assert key in rep


# ------------------------------------------------------------------ synthetic MAGB layout

N = 8
EDGES = ([0, 1, 2, 3, 4, 5, 6, 1, 3], [1, 2, 3, 4, 5, 6, 7, 0, 3])  # (1,0) duplicates (0,1); (3,3) self-loop
LABELS = [0, 1, 0, 1, 2, 2, 0, 1]
CATS = ["Dolls", "Puzzles", "Dolls", "Puzzles", "Games", "Games", "Dolls", "Puzzles"]


def _jpeg(v: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (10, 10), (v, 255 - v, 40)).save(buf, "JPEG")
    return buf.getvalue()


def make_magb(root: Path, name="Mini", labels_in_graph=LABELS, csv_rows=None, split=True, images="folder"):
    d = root / name
    d.mkdir(parents=True)
    (d / f"{name}Graph.pt").write_bytes(dgl_graph_bytes(np.array(EDGES[0]), np.array(EDGES[1]), N,
                                                        {"label": np.array(labels_in_graph)}))
    rows = csv_rows if csv_rows is not None else [
        {"id": i, "text": f"item {i}, \"quoted\"\nsecond line", "label": LABELS[i], "second_category": CATS[i]}
        for i in reversed(range(N))]  # out of order on purpose: the id column decides
    with open(d / f"{name}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    if split:
        (d / f"{name}_split.json").write_text(json.dumps({"train": [0, 1, 2, 3], "val": [4, 5], "test": [6, 7]}))
    files = {f"{i}.jpg": _jpeg(30 * i) for i in range(N) if i != 2}
    files["5.jpg"] = files["5.jpg"][:40]  # corrupt
    if images == "folder":
        (d / f"{name}Images").mkdir()
        for k, v in files.items():
            (d / f"{name}Images" / k).write_bytes(v)
    elif images == "tar.gz":
        with tarfile.open(d / f"{name}Images.tar.gz", "w:gz") as tf:
            for k, v in files.items():
                info = tarfile.TarInfo(f"{name}Images/{k}")
                info.size = len(v)
                tf.addfile(info, io.BytesIO(v))
    return d


@pytest.mark.parametrize("images", ["folder", "tar.gz"])
def test_synthetic_magb_full_layout(tmp_path, images):
    make_magb(tmp_path, images=images)
    runner = CliRunner()
    r = runner.invoke(cli, ["data", "prepare", "--format", "magb", "--root", str(tmp_path), "--name", "Mini",
                            "--out", str(tmp_path / "ds"), "--verify-images", "--no-progress"])
    assert r.exit_code == 0, r.output
    g = load(tmp_path / "ds")
    assert g.texts[3] == 'item 3, "quoted"\nsecond line'
    assert g.class_names == ["Dolls", "Puzzles", "Games"]
    assert g.labels.tolist() == LABELS
    assert (g.train.tolist(), g.val.tolist(), g.test.tolist()) == ([0, 1, 2, 3], [4, 5], [6, 7])
    assert g.num_edges == 7 and g.stats["duplicates_merged"] == 1 and g.stats["self_loops_dropped"] == 1
    rep = json.loads(runner.invoke(cli, ["data", "inspect", str(tmp_path / "ds"), "--json"]).output)
    assert rep["has_text"] and rep["has_images"] and rep["missing_images"] == 2 and rep["corrupt_images"] == 1
    # edges 0-1-2-3-4-5-6-7 (a path) with labels 0 1 0 1 2 2 0 1: only (4, 5) joins equal labels
    assert rep["edge_homophily"] == pytest.approx(1 / 7)
    text = runner.invoke(cli, ["data", "inspect", str(tmp_path / "ds")]).output
    assert "nodes 8" in text and "1 self-loops dropped, 1 duplicates merged" in text and "2 missing or corrupt" in text
    # the bad images come back as placeholders; the good ones decode
    assert g.load_image(2).getpixel((0, 0)) == (128, 128, 128)
    assert g.load_image(5).getpixel((0, 0)) == (128, 128, 128)
    assert g.load_image(4).getpixel((5, 5))[1] > 100
    assert sorted(g.image_failures) == [2, 5]


def test_default_split_is_seeded(tmp_path):
    make_magb(tmp_path, split=False, images=None)
    a = load_magb(tmp_path, "Mini", seed=0, progress=False)
    b = load_magb(tmp_path, "Mini", seed=0, progress=False)
    assert (len(a.train), len(a.val), len(a.test)) == (4, 1, 3)
    np.testing.assert_array_equal(a.train, b.train)
    assert a.images is None and a.meta["node_split"].startswith("random 60/20/20")


def test_csv_label_length_mismatch(tmp_path):
    rows = [{"text": f"t{i}", "label": LABELS[i]} for i in range(N - 1)]  # no id column, one row short
    make_magb(tmp_path, csv_rows=rows, images=None)
    r = CliRunner().invoke(cli, ["data", "prepare", "--format", "magb", "--root", str(tmp_path), "--name", "Mini",
                                 "--out", str(tmp_path / "ds")])
    assert r.exit_code != 0
    assert "Mini.csv has 7 rows but the graph has 8 nodes" in r.output
    assert not (tmp_path / "ds").exists()


def test_csv_label_disagrees_with_graph(tmp_path):
    bad = list(LABELS)
    bad[6] = 2
    make_magb(tmp_path, labels_in_graph=bad, images=None)
    with pytest.raises(ValueError, match="label 0 of node 6 disagrees"):
        load_magb(tmp_path, "Mini", progress=False)


def test_graph_only_and_missing_graph(tmp_path):
    d = tmp_path / "Solo"
    d.mkdir()
    (d / "SoloGraph.pt").write_bytes(dgl_graph_bytes(np.array([0, 1]), np.array([1, 2]), 3))
    g = load_magb(tmp_path, "Solo", progress=False)
    assert g.texts is None and g.images is None and (g.labels == -1).all() and g.num_classes == 0
    with pytest.raises(ValueError, match="MAGB graph file NopeGraph.pt not found"):
        load_magb(tmp_path, "Nope")


def test_truncated_graph_file_via_cli(tmp_path):
    d = make_magb(tmp_path, images=None)
    p = d / "MiniGraph.pt"
    p.write_bytes(p.read_bytes()[:5000])
    r = CliRunner().invoke(cli, ["data", "prepare", "--format", "magb", "--root", str(tmp_path), "--name", "Mini",
                                 "--out", str(tmp_path / "ds")])
    assert r.exit_code != 0 and "truncated" in r.output
    assert "Traceback" not in r.output

"""Your own graph from plain tables (`data prepare --format table`) and from a saved PyG Data (`--format pyg`).

The reference for every round trip is the graph the tables were written from: `data synth --as-table` writes
the catalogue that `data synth --out` saves, and preparing those tables must give it back (texts, labels by
name, edges, node splits, the link split's positives, pixel-equal images), whatever the file format and
however the files are cut into chunks. Bad tables each stop `prepare` with one `Error:` line that names the
file, the row and the value; what can be worked around is a counted warning.
"""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

pd = pytest.importorskip("pandas")
pytest.importorskip("pyarrow")


def run_cli(args):
    from click.testing import CliRunner

    from mlaga_fast.cli.main import cli

    return CliRunner().invoke(cli, [str(a) for a in args])


def ok(res):
    assert res.exit_code == 0, res.output
    return res


def one_error(res) -> str:
    """The single `Error:` line of a refused command (exit 2, no traceback)."""
    assert res.exit_code == 2, res.output
    assert isinstance(res.exception, SystemExit), res.exception
    assert "Traceback" not in res.output, res.output
    errors = [line for line in res.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, res.output
    return errors[0]


def pair_keys(pairs: np.ndarray, n: int) -> np.ndarray:
    pairs = np.asarray(pairs)
    return np.sort(np.minimum(pairs[0], pairs[1]) * n + np.maximum(pairs[0], pairs[1]))


def assert_same_graph(ref, got, images: bool = True) -> None:
    """``got`` holds ``ref``'s graph: class ids may be numbered differently (the table format numbers class
    names in sorted order), so labels are compared by name."""
    n = ref.num_nodes
    assert got.num_nodes == n
    np.testing.assert_array_equal(got.indptr, ref.indptr)
    np.testing.assert_array_equal(got.indices, ref.indices)
    assert list(got.texts) == list(ref.texts)
    assert sorted(got.class_names) == sorted(ref.class_names)
    name = lambda g, y: g.class_names[y] if y >= 0 else None  # noqa: E731
    assert [name(got, y) for y in got.labels.tolist()] == [name(ref, y) for y in ref.labels.tolist()]
    for f in ("train", "val", "test"):
        np.testing.assert_array_equal(np.sort(getattr(got, f)), np.sort(getattr(ref, f)))
    for f in ("train_pos", "val_pos", "test_pos"):
        np.testing.assert_array_equal(pair_keys(getattr(got.link_split, f), n), pair_keys(getattr(ref.link_split, f), n))
    for f in ("val", "test"):  # negatives are sampled anew: as many, and not edges (LinkSplit.validate checks)
        assert getattr(got.link_split, f"{f}_neg").shape == getattr(ref.link_split, f"{f}_neg").shape
    got.link_split.validate(got.indptr, got.indices)
    if images:
        for i in range(n):
            np.testing.assert_array_equal(np.asarray(got.load_image(i)), np.asarray(ref.load_image(i)))
        assert not got.image_failures


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    """A synthetic catalogue saved with `data synth --out` and written as tables with `--as-table`."""
    root = tmp_path_factory.mktemp("table")
    ok(run_cli(["data", "synth", "--nodes", 96, "--classes", 4, "--mean-degree", 4, "--image-size", 16,
                "--seed", 3, "--out", root / "ds", "--as-table", root / "tab"]))
    return root


def test_as_table_writes_the_documented_files(catalogue):
    from mlaga_fast.data import load

    tab, g = catalogue / "tab", load(catalogue / "ds")
    assert sorted(p.name for p in tab.iterdir()) == ["edges.csv", "images", "nodes.csv"]
    with open(tab / "nodes.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["id", "text", "image", "label", "split"] and len(rows) == g.num_nodes
    assert rows[5]["id"] == "sku-05" and rows[5]["text"] == g.texts[5] and rows[5]["image"] == "sku-05.png"
    assert rows[5]["label"] == g.class_names[g.labels[5]]
    assert rows[5]["split"] == next(f for f in ("train", "val", "test") if 5 in getattr(g, f))
    assert len(list((tab / "images").glob("*.png"))) == g.num_nodes
    with open(tab / "edges.csv", newline="", encoding="utf-8") as f:
        edges = list(csv.DictReader(f))
    assert len(edges) == g.num_edges and {e["split"] for e in edges} == {"train", "val", "test"}


def test_synth_as_table_then_prepare_gives_the_synth_graph(catalogue, tmp_path):
    from mlaga_fast.data import load

    tab = catalogue / "tab"
    res = ok(run_cli(["data", "prepare", "--format", "table", "--nodes", tab / "nodes.csv", "--edges",
                      tab / "edges.csv", "--images", tab / "images", "--name", "toys", "--out", tmp_path / "d",
                      "--no-progress"]))
    assert "warning" not in res.output
    ref, got = load(catalogue / "ds"), load(tmp_path / "d")
    assert_same_graph(ref, got)
    assert list(got.node_ids) == [f"sku-{i:02d}" for i in range(ref.num_nodes)]  # the user's ids, kept
    assert got.node_id(7) == "sku-07" and got.meta["source_format"] == "table"
    assert got.meta["node_split"] == "column 'split'" and "negatives sampled with seed 0" in got.meta["link_split"]


@pytest.mark.parametrize("fmt", ["tsv", "parquet", "jsonl", "csv.gz"])
def test_every_format_gives_the_same_dataset(catalogue, tmp_path, fmt):
    """The same tables as TSV / Parquet / JSONL / gzip CSV: the same graph, to the fingerprint."""
    from mlaga_fast.data import load_table

    tab = catalogue / "tab"
    kw = dict(name="toys", images=tab / "images", progress=False, warn=pytest.fail)
    ref = load_table(tab / "nodes.csv", tab / "edges.csv", **kw)
    files = []
    for stem in ("nodes", "edges"):
        df = pd.read_csv(tab / f"{stem}.csv", dtype=str, keep_default_na=False)
        out = tmp_path / f"{stem}.{fmt}"
        {"tsv": lambda: df.to_csv(out, sep="\t", index=False), "parquet": lambda: df.to_parquet(out),
         "jsonl": lambda: df.to_json(out, orient="records", lines=True),
         "csv.gz": lambda: df.to_csv(out, index=False, compression="gzip")}[fmt]()
        files.append(out)
    got = load_table(*files, **kw)
    assert got.fingerprint == ref.fingerprint
    assert_same_graph(ref, got, images=False)


def test_small_chunks_give_the_same_graph_and_row_numbers(catalogue, tmp_path, monkeypatch):
    """Files read in many blocks (CSV) and batches (Parquet): the same graph, and an error in a late block
    names its row in the whole file."""
    from mlaga_fast.data import load_table
    from mlaga_fast.data import table as T

    tab = catalogue / "tab"
    kw = dict(name="toys", images=tab / "images", progress=False)
    ref = load_table(tab / "nodes.csv", tab / "edges.csv", **kw)
    monkeypatch.setattr(T, "CSV_BLOCK_BYTES", 1024)
    monkeypatch.setattr(T, "CHUNK_ROWS", 7)
    monkeypatch.setattr(T, "LOOKUP_ROWS", 50)  # edge ends looked up in several rounds
    assert load_table(tab / "nodes.csv", tab / "edges.csv", **kw).fingerprint == ref.fingerprint
    pd.read_csv(tab / "nodes.csv", dtype=str, keep_default_na=False).to_parquet(tmp_path / "nodes.parquet")
    assert load_table(tmp_path / "nodes.parquet", tab / "edges.csv", **kw).fingerprint == ref.fingerprint
    lines = (tab / "edges.csv").read_text().splitlines()
    lines[150] = "sku-01,sku-nope,train"  # data row 150 (line 1 is the header), in a late block
    (tmp_path / "edges.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"edges\.csv, row 150: dst 'sku-nope' is not an id of nodes\.csv"):
        load_table(tab / "nodes.csv", tmp_path / "edges.csv", **kw)


def test_a_row_longer_than_a_block_is_read(tmp_path, monkeypatch):
    """pyarrow cannot split a row across blocks: the file is reopened with larger blocks past the rows read."""
    from mlaga_fast.data import load_table
    from mlaga_fast.data import table as T

    monkeypatch.setattr(T, "CSV_BLOCK_BYTES", 256)
    texts = [f"item {i}, short" for i in range(60)]
    texts[41] = "a long description, " * 300  # 6,000 bytes, "quoted, with commas"
    write(tmp_path / "n.csv", [["id", "text"]] + [[f"n{i}", t] for i, t in enumerate(texts)])
    write(tmp_path / "e.csv", [["src", "dst"]] + [[f"n{i}", f"n{i + 1}"] for i in range(59)])
    g = load_table(tmp_path / "n.csv", tmp_path / "e.csv", name="x", progress=False)
    assert g.texts == texts and list(g.node_ids) == [f"n{i}" for i in range(60)] and g.num_edges == 59


def test_text_dir_streams_texts_and_ids_to_files(catalogue, tmp_path):
    from mlaga_fast.data import load_table
    from mlaga_fast.data.texts import TextBlob

    tab = catalogue / "tab"
    a = load_table(tab / "nodes.csv", tab / "edges.csv", name="t", images=tab / "images", progress=False)
    b = load_table(tab / "nodes.csv", tab / "edges.csv", name="t", images=tab / "images", progress=False,
                   text_dir=tmp_path / "blobs")
    assert isinstance(a.texts, list) and isinstance(b.texts, TextBlob) and isinstance(b.node_ids, TextBlob)
    assert (tmp_path / "blobs" / "texts.bin").is_file() and a.fingerprint == b.fingerprint


def write(path: Path, rows: list[list]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    return path


def test_columns_ids_labels_and_splits(tmp_path):
    """Integer ids that are not 0..N-1, several text columns, class ids, unlabelled nodes, no split column."""
    from mlaga_fast.data import load, load_table

    nodes = write(tmp_path / "n.csv", [["node", "title", "description", "cat"], [10, "Red car", "fast", 1],
                                       [30, "Doll", "", 0], [20, "", "blue ball", ""], [40, "Kite", "high", 1]])
    edges = write(tmp_path / "e.csv", [["a", "b"], [10, 30], [30, 20], [20, 10], [40, 10], [10, 10], [30, 10]])
    g = load_table(nodes, edges, name="x", id_col="node", text_cols="title,description", label_col="cat",
                   src_col="a", dst_col="b", seed=1, progress=False)
    assert g.texts == ["Red car fast", "Doll", "blue ball", "Kite high"]
    assert g.labels.tolist() == [1, 0, -1, 1] and g.class_names == ["class_0", "class_1"]
    assert g.node_ids.tolist() == [10, 30, 20, 40] and g.node_id(2) == 20
    # edges by row: 10-30, 30-20, 20-10, 40-10; the self-loop is dropped and 30-10 merged into 10-30
    assert sorted(map(tuple, g.edge_pairs().T.tolist())) == [(0, 1), (0, 2), (0, 3), (1, 2)]
    assert g.stats["self_loops_dropped"] == 1 and g.stats["duplicates_merged"] == 1
    split = np.sort(np.concatenate([g.train, g.val, g.test]))
    assert split.tolist() == [0, 1, 3] and g.meta["node_split"] == "random 60/20/20 seed=1"  # labelled only
    assert g.link_split is None and g.images is None
    from mlaga_fast.data import save

    save(g, tmp_path / "d")
    h = load(tmp_path / "d")
    assert h.node_ids.tolist() == [10, 30, 20, 40] and h.fingerprint == g.fingerprint
    # a damaged id file is refused on load, naming it
    np.save(tmp_path / "d" / "node_ids.npy", np.array([10, 30, 20, 10]))
    with pytest.raises(ValueError, match=r"node_ids\.npy: node_ids: node id 10 at index 3 appears more than once"):
        load(tmp_path / "d")
    # ids that are already 0..N-1 in row order need no mapping
    nodes2 = write(tmp_path / "n2.csv", [["id", "text"], [0, "a"], [1, "b"], [2, "c"]])
    edges2 = write(tmp_path / "e2.csv", [["src", "dst"], [0, 1], [1, 2]])
    assert load_table(nodes2, edges2, name="y", progress=False).node_ids is None


def test_cli_format_pyg_round_trips_to_pyg(catalogue, tmp_path):
    """to_pyg(images=True) -> torch.save -> `prepare --format pyg`: the same graph, link split included."""
    pytest.importorskip("torch_geometric")
    import torch

    from mlaga_fast.data import load
    from mlaga_fast.data.pyg import to_pyg

    ref = load(catalogue / "ds")  # synthetic pictures: exported as data.image uint8 [N, H, W, 3]
    data = to_pyg(ref, images=True)
    assert tuple(data.image.shape) == (ref.num_nodes, 16, 16, 3) and bool(data.image_present.all())
    torch.save(data, tmp_path / "g.pt")
    ok(run_cli(["data", "prepare", "--format", "pyg", "--root", tmp_path / "g.pt", "--name", "p",
                "--out", tmp_path / "d", "--no-progress"]))
    got = load(tmp_path / "d")
    assert_same_graph(ref, got)
    assert got.class_names == ref.class_names and got.labels.tolist() == ref.labels.tolist()
    for f, a in ref.link_split.arrays().items():  # the whole split travels, negatives too
        np.testing.assert_array_equal(getattr(got.link_split, f), a)
    # a table-made dataset: folder images travel as paths, the user's ids as data.node_ids
    tab = catalogue / "tab"
    ok(run_cli(["data", "prepare", "--format", "table", "--nodes", tab / "nodes.csv", "--edges", tab / "edges.csv",
                "--images", tab / "images", "--name", "t", "--out", tmp_path / "t", "--no-progress"]))
    t = load(tmp_path / "t")
    data = to_pyg(t, images=True)
    assert data.image_paths[3] == str((tab / "images" / "sku-03.png").resolve())
    torch.save(data, tmp_path / "t.pt")
    ok(run_cli(["data", "prepare", "--format", "pyg", "--root", tmp_path / "t.pt", "--name", "t",
                "--out", tmp_path / "t2", "--no-progress"]))
    t2 = load(tmp_path / "t2")
    assert_same_graph(t, t2)
    assert list(t2.node_ids) == list(t.node_ids)


def test_cli_format_pyg_refuses_what_is_not_a_data(tmp_path):
    pytest.importorskip("torch_geometric")
    import torch

    torch.save({"edge_index": torch.zeros(2, 0, dtype=torch.long)}, tmp_path / "d.pt")
    err = one_error(run_cli(["data", "prepare", "--format", "pyg", "--root", tmp_path / "d.pt", "--name", "p",
                             "--out", tmp_path / "o"]))
    assert err == "Error: d.pt holds a dict, not a torch_geometric Data"
    err = one_error(run_cli(["data", "prepare", "--format", "pyg", "--root", tmp_path, "--name", "p",
                             "--out", tmp_path / "o"]))
    assert "--format pyg reads the file torch.save wrote" in err


# ---- bad tables: (what, nodes rows, edges rows, extra options, the message, word for word)
NODES = [["id", "text", "label", "split"], ["a", "red car", "cars", "train"], ["b", "doll", "dolls", "val"],
         ["c", "kite", "cars", "test"], ["d", "ball", "dolls", "train"]]
EDGES = [["src", "dst"], ["a", "b"], ["b", "c"], ["c", "d"]]


def _with(rows, r, c, v):
    rows = [list(x) for x in rows]
    rows[r][c] = v
    return rows


BAD = [
    ("duplicate id", NODES + [["b", "bus", "cars", "train"]], EDGES, [],
     "nodes.csv, row 5: id 'b' appears again (first at row 2); ids must be unique (1 repeated rows in all)"),
    ("empty id", _with(NODES, 3, 0, ""), EDGES, [],
     "nodes.csv, row 3: the 'id' cell is empty; every node needs an id"),
    ("unknown src", NODES, EDGES + [["zz", "a"]], [],
     "edges.csv, row 4: src 'zz' is not an id of nodes.csv (1 unknown src in rows 1-4)"),
    ("unknown dst", NODES, _with(EDGES, 2, 1, "q"), [],
     "edges.csv, row 2: dst 'q' is not an id of nodes.csv (1 unknown dst in rows 1-3)"),
    ("empty edge end", NODES, _with(EDGES, 1, 1, ""), [], "edges.csv, row 1: the 'dst' cell is empty"),
    ("mixed label kinds", _with(NODES, 4, 2, "3"), EDGES, [],
     "nodes.csv: column 'label' mixes class ids and class names: row 4 holds '3', row 1 holds 'cars'; "
     "use names throughout, or ids 0..K-1 throughout"),
    ("negative class id", _with(_with(_with(_with(NODES, 1, 2, "0"), 2, 2, "1"), 3, 2, "-3"), 4, 2, "0"), EDGES, [],
     "nodes.csv, row 3: label '-3' is not a class id (0..K-1; -1 or an empty cell for unlabelled)"),
    ("unknown node split", _with(NODES, 2, 3, "training"), EDGES, [],
     "nodes.csv, row 2: split 'training' is not train, val or test"),
    ("split without label", _with(NODES, 3, 2, ""), EDGES, [],
     "nodes.csv, row 3: node 'c' is in the test split but has no label (1 such rows); label it or leave its "
     "split cell empty"),
    ("unknown edge split", NODES, [["src", "dst", "split"], ["a", "b", "train"], ["b", "c", "hold-out"]], [],
     "edges.csv, row 2: split 'hold-out' is not train, val or test"),
    ("edge in two parts", NODES, [["src", "dst", "split"], ["a", "b", "train"], ["b", "c", "test"], ["b", "a", "val"]],
     [], "edges.csv: rows 1 and 3 give the edge ('a', 'b') two parts, train and val; an edge is in one"),
    ("missing edge column", NODES, [["from", "to"], ["a", "b"]], [],
     "edges.csv (edges) has no column 'src' for the src (columns: 'from', 'to'); name it with --src-col"),
    ("missing named column", NODES, EDGES, ["--text-cols", "title,text"],
     "nodes.csv (nodes) has no column 'title' for the text (columns: 'id', 'text', 'label', 'split'); "
     "name it with --text-cols"),
    ("ragged csv row", NODES[:3] + [["e", "x"]] + NODES[3:], EDGES, [],
     "nodes.csv, row 3: 2 cells where the header has 4: ['e', 'x']"),
    ("images without an image column", NODES, EDGES, ["--images", "."],
     "--images: nodes.csv has no 'image' column naming each node's file (name it with --image-col)"),
    ("no rows", NODES[:1], EDGES[:1], [], "nodes.csv (nodes) has no rows"),
]


@pytest.mark.parametrize("what,nodes,edges,extra,message", BAD, ids=[b[0] for b in BAD])
def test_bad_tables_are_refused_in_one_line(tmp_path, what, nodes, edges, extra, message):
    write(tmp_path / "nodes.csv", nodes)
    write(tmp_path / "edges.csv", edges)
    extra = [tmp_path if a == "." else a for a in extra]
    res = run_cli(["data", "prepare", "--format", "table", "--nodes", tmp_path / "nodes.csv", "--edges",
                   tmp_path / "edges.csv", "--name", "x", "--out", tmp_path / "out", "--no-progress", *extra])
    assert one_error(res) == "Error: " + message
    assert not (tmp_path / "out").exists()


def test_usage_errors_of_the_table_format(tmp_path):
    write(tmp_path / "nodes.csv", NODES)
    write(tmp_path / "nodes.xlsx", NODES)
    base = ["data", "prepare", "--format", "table", "--name", "x", "--out", tmp_path / "o"]
    assert "--format table needs --edges" in one_error(run_cli(base + ["--nodes", tmp_path / "nodes.csv"]))
    err = one_error(run_cli(base + ["--nodes", tmp_path / "nodes.xlsx", "--edges", tmp_path / "nodes.csv"]))
    assert err == "Error: nodes.xlsx: cannot tell the format from the name; use .csv, .tsv, .parquet or .jsonl"
    err = one_error(run_cli(["data", "prepare", "--format", "magb", "--nodes", tmp_path / "nodes.csv", "--root",
                             tmp_path, "--name", "x", "--out", tmp_path / "o"]))
    assert "--nodes: only for --format table" in err


def test_counted_warnings_name_file_row_and_value(tmp_path):
    """Empty texts, image files not found and empty image cells do not stop prepare: each is counted."""
    from PIL import Image

    from mlaga_fast.data import load

    (tmp_path / "img").mkdir()
    Image.new("RGB", (4, 4), (9, 9, 9)).save(tmp_path / "img" / "a.png")
    write(tmp_path / "nodes.csv", [["id", "text", "image", "label"], ["a", "car", "a.png", "x"],
                                   ["b", " ", "gone.png", "y"], ["c", "", "", "x"], ["d", "doll", "/no/such.png", "y"]])
    write(tmp_path / "edges.csv", EDGES)
    res = ok(run_cli(["data", "prepare", "--format", "table", "--nodes", tmp_path / "nodes.csv", "--edges",
                      tmp_path / "edges.csv", "--images", tmp_path / "img", "--name", "x", "--out", tmp_path / "o",
                      "--no-progress"]))
    warnings = [line for line in res.stderr.splitlines() if line.startswith("warning: ")]
    assert warnings == [
        "warning: nodes.csv: 2 node(s) have an empty text ('text'); first at row 2, id 'b'",
        f"warning: nodes.csv: 2 image file(s) not found (replaced by a grey placeholder); first at row 2: image "
        f"'gone.png' (looked in {tmp_path / 'img'})",
        "warning: nodes.csv: 1 node(s) have an empty 'image' cell and so no image; first at row 3",
    ]
    g = load(tmp_path / "o")
    assert g.stats["missing_images"] == 3 and g.stats["empty_texts"] == 2
    assert np.asarray(g.load_image(0)).tolist() == [[[9, 9, 9]] * 4] * 4


# ---- the README path on the --as-table export, at tiny sizes (about 5 s: not marked slow)


def test_readme_path_on_tables_predicts_by_the_users_ids(tmp_path, monkeypatch, one_torch_thread):
    """data synth --as-table -> data prepare --format table (string ids) -> features -> train align ->
    train instruct (tiny random LLM) -> predict: the rows carry the user's ids."""
    from helpers.tiny_llm import build_tiny_llm

    from mlaga_fast.data import load

    monkeypatch.chdir(tmp_path)
    ok(run_cli(["data", "synth", "--nodes", 64, "--classes", 4, "--mean-degree", 4, "--image-size", 16,
                "--as-table", "toys_tables"]))
    ok(run_cli(["data", "prepare", "--format", "table", "--nodes", "toys_tables/nodes.csv", "--edges",
                "toys_tables/edges.csv", "--images", "toys_tables/images", "--name", "toys", "--out", "data/toys",
                "--no-progress"]))
    g = load("data/toys")
    ok(run_cli(["features", "--data", "data/toys", "--encoder", "tiny", "--out", "data/toys/features",
                "--device", "cpu", "--no-progress"]))
    ok(run_cli(["train", "align", "--data", "data/toys", "--features", "data/toys/features", "--out", "runs/align",
                "--dim", 16, "--num-heads", 2, "--num-layers", 1, "--num-queries", 2, "--batch-size", 32,
                "--max-steps", 2, "--device", "cpu", "--attn-backend", "sdpa", "--no-progress"]))
    llm = build_tiny_llm(tmp_path / "llm", list(g.texts) + list(g.class_names), hidden=32, layers=1)
    ok(run_cli(["train", "instruct", "--data", "data/toys", "--align", "runs/align", "--llm", llm, "--tasks", "nc,lp",
                "--max-steps", 2, "--warmup-examples", 4, "--batch-size", 4, "--device", "cpu", "--no-progress",
                "--out", "runs/instruct"]))
    ok(run_cli(["predict", "--run", "runs/instruct", "--data", "data/toys", "--task", "nc", "--nodes", "test",
                "--device", "cpu", "--out", "preds.csv", "--no-progress"]))
    with open("preds.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    with open("toys_tables/nodes.csv", newline="", encoding="utf-8") as f:
        test_ids = [r["id"] for r in csv.DictReader(f) if r["split"] == "test"]
    assert [r["id"] for r in rows] == test_ids and all(r["id"].startswith("sku-") for r in rows)
    assert [r["id"] for r in rows] == [g.node_ids[int(r["node"])] for r in rows]
    assert {r["prediction"] for r in rows} <= set(g.class_names)
    ok(run_cli(["predict", "--run", "runs/instruct", "--data", "data/toys", "--task", "lp", "--device", "cpu",
                "--out", "pairs.jsonl", "--no-progress"]))
    pairs = [json.loads(x) for x in Path("pairs.jsonl").read_text().splitlines()]
    assert pairs and all(p["a_id"] == g.node_ids[p["a"]] and p["b_id"] == g.node_ids[p["b"]] for p in pairs)

"""The shared result format: metrics from hand-computed cases, atomic JSON, table and plot."""
import json

import numpy as np
import pytest

from mlaga_fast.eval.report import (
    make_result,
    plot_confusion,
    read_result_json,
    results_table_markdown,
    write_result_json,
)


def test_make_result_nc_hand_computed():
    # true: a a a b b c ; pred: a b a b -1 a
    y_true = [0, 0, 0, 1, 1, 2]
    y_pred = [0, 1, 0, 1, -1, 0]
    r = make_result(task="nc", method="m", dataset="d", y_true=y_true, y_pred=y_pred,
                    class_names=["a", "b", "c"], extra={"seed": 3})
    assert r["accuracy"] == pytest.approx(3 / 6)
    assert r["num_examples"] == 6
    assert r["num_invalid"] == 1
    assert r["confusion"] == [[2, 1, 0], [0, 1, 0], [1, 0, 0]]
    assert r["invalid_per_class"] == [0, 1, 0]  # the -1 answer was for a true "b"
    assert r["per_class_accuracy"] == {"a": pytest.approx(2 / 3), "b": 0.5, "c": 0.0}
    assert r["extra"] == {"seed": 3}
    assert r["split"] == "test"


def test_make_result_lp_defaults_and_absent_class():
    r = make_result(task="lp", method="gcn", dataset="d", y_true=np.array([1, 1, 1]),
                    y_pred=np.array([1, 0, 1]))
    assert r["class_names"] == ["No", "Yes"]
    assert r["per_class_accuracy"] == {"No": None, "Yes": pytest.approx(2 / 3)}
    assert r["confusion"] == [[0, 0], [1, 2]]


@pytest.mark.parametrize("kw, msg", [
    (dict(task="xx"), "task"),
    (dict(y_true=[0, 3, 1]), r"y_true.*index 1"),
    (dict(y_pred=[0, 1, -2]), r"y_pred.*index 2"),
    (dict(y_pred=[0, 1]), "y_pred: length"),
    (dict(y_true=[0.0, 1.5, 1.0]), r"y_true.*index 1"),
    (dict(class_names=None), "class_names"),
])
def test_make_result_bad_input(kw, msg):
    args = dict(task="nc", method="m", dataset="d", y_true=[0, 1, 1], y_pred=[0, 1, 0],
                class_names=["a", "b"])
    args.update(kw)
    with pytest.raises(ValueError, match=msg):
        make_result(**args)


def test_json_roundtrip_atomic(tmp_path):
    r = make_result(task="nc", method="m", dataset="d", y_true=[0, 1], y_pred=[0, 0],
                    class_names=["a", "b"], extra={"auc": np.float32(0.5)})
    p = tmp_path / "out" / "r.json"
    write_result_json(p, r)
    assert [q.name for q in p.parent.iterdir()] == ["r.json"]
    back = read_result_json(p)
    assert back["confusion"] == [[1, 0], [1, 0]] and back["extra"]["auc"] == 0.5
    bad = dict(back, accuracy=1.5)
    with pytest.raises(ValueError, match="accuracy"):
        write_result_json(p, bad)
    assert json.loads(p.read_text())["accuracy"] == 0.5  # old file untouched


def _res(task, method, acc_num, dataset="d"):
    # 4 examples, `acc_num` of them right
    yt = [0, 0, 0, 0]
    yp = [0] * acc_num + [1] * (4 - acc_num)
    return make_result(task=task, method=method, dataset=dataset, y_true=yt, y_pred=yp,
                       class_names=["a", "b"])


def test_table_rows_methods_columns_tasks():
    table = results_table_markdown([
        _res("nc", "mlp", 2), _res("nc", "gcn", 3), _res("lp", "gcn", 4),
        _res("nc", "gcn", 4),  # a second seed of gcn/nc
    ])
    lines = table.strip().splitlines()
    assert lines[0] == "| method | NC | LP |"
    assert lines[2] == "| mlp | 50.00 | - |"
    # mean of 75 and 100, sample std = sqrt(2 * 12.5^2 / 1) = 17.68
    assert lines[3] == "| gcn | 87.50 ± 17.68 (n=2) | 100.00 |"


def test_table_multi_dataset_columns():
    table = results_table_markdown([_res("nc", "mlp", 1, "toys"), _res("nc", "mlp", 3, "grocery")])
    assert table.splitlines()[0] == "| method | toys / NC | grocery / NC |"
    assert table.splitlines()[2] == "| mlp | 25.00 | 75.00 |"
    val = dict(_res("nc", "mlp", 4, "toys"), split="val")
    assert results_table_markdown([val]).splitlines()[0] == "| method | NC (val) |"
    with pytest.raises(ValueError):
        results_table_markdown([])


def _on(result, fingerprint=None, transfer=None):
    extra = dict(result["extra"])
    if fingerprint:
        extra["graph_fingerprint"] = fingerprint
    if transfer is not None:
        extra["transfer"] = transfer
    return dict(result, extra=extra)


def test_table_keys_datasets_by_fingerprint_not_name():
    """Two graphs named alike (every `data synth` graph is "synthetic-catalogue") are two datasets: the
    in-domain and the transfer result were once averaged into one cell as if they were seeds."""
    same_name = [_on(_res("nc", "gcn", 4, "syn"), "a" * 64), _on(_res("nc", "gcn", 2, "syn"), "b" * 64)]
    lines = results_table_markdown(same_name).splitlines()
    assert lines[0] == "| method | syn [aaaaaaaa] / NC | syn [bbbbbbbb] / NC |"
    assert lines[2] == "| gcn | 100.00 | 50.00 |"
    # Seeds on one fingerprint still share a cell.
    seeds = [_on(_res("nc", "gcn", 4, "syn"), "a" * 64), _on(_res("nc", "gcn", 2, "syn"), "a" * 64)]
    assert results_table_markdown(seeds).splitlines()[2] == "| gcn | 75.00 ± 35.36 (n=2) |"


def test_table_marks_transfer_rows():
    """The issue's case: a run evaluated on its own graph and on an unseen graph of the same name."""
    rows = [_on(_res("nc", "mlaga-llm", 3, "syn"), transfer=False),
            _on(_res("nc", "mlaga-llm", 1, "syn"), transfer=True),
            _on(_res("nc", "gcn", 4, "syn"), "c" * 64)]
    lines = results_table_markdown(rows).splitlines()
    # The eval results record no fingerprint: they join the one fingerprinted "syn" (the baseline's).
    assert lines[0] == "| method | NC |"
    assert lines[2:] == ["| mlaga-llm | 75.00 |", "| mlaga-llm (transfer) | 25.00 |", "| gcn | 100.00 |"]


def test_table_keeps_unfingerprinted_results_apart_when_the_name_is_ambiguous():
    rows = [_on(_res("nc", "gcn", 4, "syn"), "a" * 64), _on(_res("nc", "gcn", 2, "syn"), "b" * 64),
            _res("nc", "mlp", 1, "syn")]
    head = results_table_markdown(rows).splitlines()[0]
    assert head == "| method | syn [aaaaaaaa] / NC | syn [bbbbbbbb] / NC | syn [no fingerprint] / NC |"


def test_results_table_cli_names_a_bad_file(tmp_path):
    from click.testing import CliRunner

    from mlaga_fast.cli.main import cli

    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    write_result_json(good, _res("nc", "gcn", 4))
    bad.write_text('{"task": "nc"}')
    res = CliRunner().invoke(cli, ["results-table", str(good), str(bad)])
    assert res.exit_code == 2 and res.output.startswith(f"Error: {bad}: not a result file"), res.output
    help_text = CliRunner().invoke(cli, ["results-table", "--help"]).output
    assert "columns are dataset / task" in " ".join(help_text.split())


def test_plot_confusion_png(tmp_path):
    r = make_result(task="nc", method="m", dataset="d", y_true=[0, 1, 2, 2], y_pred=[0, 2, 2, 1],
                    class_names=["a", "b", "c"])
    p = tmp_path / "c.png"
    plot_confusion(r, p)
    data = p.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


def test_all_invalid_generations_show_in_an_invalid_column(tmp_path, monkeypatch):
    """#18 item 12: a generation run whose every answer is invalid is not a blank matrix."""
    from matplotlib.figure import Figure

    shown = {}
    add_subplot = Figure.add_subplot

    def spy(self, *a, **k):  # records the matrix handed to imshow
        ax = add_subplot(self, *a, **k)
        imshow = ax.imshow

        def record(data, **kw):
            shown["data"] = np.asarray(data)
            return imshow(data, **kw)

        ax.imshow = record
        return ax

    monkeypatch.setattr(Figure, "add_subplot", spy)
    r = make_result(task="nc", method="m (generation)", dataset="d", y_true=[0, 0, 1], y_pred=[-1, -1, -1],
                    class_names=["a", "b"])
    assert r["confusion"] == [[0, 0], [0, 0]] and r["invalid_per_class"] == [2, 1]
    plot_confusion(r, tmp_path / "g.png")
    np.testing.assert_allclose(shown["data"], [[0, 0, 1], [0, 0, 1]])  # rows normalised, last column "invalid"


def test_eval_checks_the_dataset_before_loading_any_model(tmp_path):
    """#18 item 3: `eval` on a dataset without features fails on the features, not after loading the LLM
    (here the run folder does not even exist, so loading it would fail differently)."""
    from mlaga_fast.data.synth import make_catalogue
    from mlaga_fast.eval.instruct_eval import EvalOptions, evaluate

    make_catalogue(tmp_path / "ds", nodes=40, classes=2, image_size=8, mean_degree=4.0, seed=0)
    with pytest.raises((ValueError, FileNotFoundError), match="features"):
        evaluate(tmp_path / "no_run", tmp_path / "ds", EvalOptions(task="nc", device="cpu"), progress=False)

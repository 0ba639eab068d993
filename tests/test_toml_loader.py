"""mlaga_fast.utils.toml: tomllib from Python 3.11, tomli before. The wheels are built for CPython 3.10,
where `import tomllib` fails; both branches must parse the packaged templates and a config file the same."""
from __future__ import annotations

import importlib
import sys
from importlib import resources

import pytest

import mlaga_fast.utils.toml as toml_mod

TEXT = 'a = 1\nb = "x"\n[s.t]\nc = [1.5, 2]\nd = true\n'
EXPECTED = {"a": 1, "b": "x", "s": {"t": {"c": [1.5, 2], "d": True}}}


@pytest.mark.parametrize("version", [(3, 10, 13, "final", 0), (3, 11, 0, "final", 0)])
def test_both_branches_parse_the_same(monkeypatch, version):
    if version < (3, 11):
        pytest.importorskip("tomli")  # in the test extra, so CI runs this branch
    monkeypatch.setattr(sys, "version_info", version)
    mod = importlib.reload(toml_mod)
    try:
        assert mod.loads.__module__.split(".")[0] == ("tomli" if version < (3, 11) else "tomllib")
        assert mod.loads(TEXT) == EXPECTED  # hand-written value
        templates = resources.files("mlaga_fast.prompts").joinpath("templates.toml").read_text("utf-8")
        assert mod.loads(templates)["compact"]["nc"]["answer"] == " {label}"
    finally:
        monkeypatch.undo()
        importlib.reload(toml_mod)


def test_templates_and_toml_config_files_parse(tmp_path):
    from mlaga_fast.config import load_config_file
    from mlaga_fast.prompts.builder import load_templates

    assert set(load_templates()) >= {"compact", "paper"}
    p = tmp_path / "c.toml"
    p.write_text(TEXT)
    assert load_config_file(p) == EXPECTED

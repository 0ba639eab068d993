"""`mlaga-fast info` and `--version`: the report matches what the module and torch say."""
import json
import os

import torch
from click.testing import CliRunner

import mlaga_fast
from mlaga_fast import _C
from mlaga_fast.cli.main import cli


def test_version_flag():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert mlaga_fast.__version__ in result.output


def test_info_json_matches_runtime():
    result = CliRunner().invoke(cli, ["info", "--json"])
    assert result.exit_code == 0, result.output
    rep = json.loads(result.output)
    assert rep["mlaga_fast"] == mlaga_fast.__version__
    assert rep["core"]["loaded"] is True
    assert rep["core"]["built_with_cuda"] == bool(_C.built_with_cuda())
    assert rep["core"]["openmp_threads"] >= 1
    assert rep["cuda_device_usable"] == (torch.cuda.is_available() and _C.cuda_device_count() > 0)
    assert rep["packages"]["torch"] == torch.__version__.split("+")[0] or rep["packages"]["torch"] == torch.__version__
    assert set(rep["packages"]) == {"torch", "triton", "open_clip", "transformers", "flash_attn"}


def test_info_text():
    result = CliRunner().invoke(cli, ["info"])
    assert result.exit_code == 0
    assert "_C built with CUDA:" in result.output
    assert "OpenMP threads:" in result.output


def test_kernels_are_inside_the_package(tmp_path):
    import subprocess
    import sys

    import mlaga_fast.kernels

    assert mlaga_fast.kernels.__name__ == "mlaga_fast.kernels"
    # A wheel must never install a top-level `kernels` module. Asked from a neutral directory, so
    # that the repository's own kernels/ folder (on sys.path when run from the root) is not seen.
    code = "import importlib.util; print(importlib.util.find_spec('kernels') is None)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"}).stdout
    assert out.strip() == "True"


def test_import_is_light(tmp_path):
    import subprocess
    import sys

    code = "import sys, mlaga_fast, mlaga_fast.cli.main; print(sorted(m for m in ('torch','triton','transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=tmp_path).stdout  # not the repo root: import the installed package
    assert out.strip() == "[]"

"""`mlaga-fast info` and `--version`: the report matches what the module and torch say."""
import importlib.metadata
import json

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


def test_kernels_are_inside_the_package():
    import mlaga_fast.kernels

    assert mlaga_fast.kernels.__name__ == "mlaga_fast.kernels"
    # Our wheel must never install a top-level `kernels` package. Other distributions may (transformers
    # depends on Hugging Face's `kernels`), so the check reads what *our* distribution installed: its RECORD.
    files = importlib.metadata.distribution("mlaga-fast").files
    assert files, "mlaga-fast is not installed with a RECORD"
    tops = {f.parts[0] for f in files if not f.parts[0].endswith((".dist-info", ".libs")) and f.parts[0] != ".."}
    assert tops == {"mlaga_fast"}, f"top-level names installed beside mlaga_fast: {sorted(tops)}"
    assert "mlaga_fast/kernels/cross_attention.py" in {f.as_posix() for f in files}


def test_import_is_light(tmp_path):
    import subprocess
    import sys

    code = "import sys, mlaga_fast, mlaga_fast.cli.main; print(sorted(m for m in ('torch','triton','transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120,
                         cwd=tmp_path).stdout  # not the repo root: import the installed package
    assert out.strip() == "[]"

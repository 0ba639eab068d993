"""Test environment: offline hubs, Triton's interpreter where no GPU exists, and a `cuda` marker."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# --precision auto computes in fp32 on CPU without timing bf16 (mlaga_fast.runtime.autotune): test runs must not
# depend on this machine's speed or load. tests/test_precision_policy.py turns the measurement back on.
os.environ.setdefault("MLAGA_FAST_AUTOTUNE", "0")
if "MLAGA_FAST_CACHE" not in os.environ:
    # The GGUF LLM's converted copy (mlaga_fast.llm.gguf_cache) goes to a folder of this session's own,
    # shared by its tests and their subprocesses, and removed at exit: the user's cache is never touched.
    import atexit
    import shutil
    import tempfile

    os.environ["MLAGA_FAST_CACHE"] = tempfile.mkdtemp(prefix="mlaga_fast_test_cache_")
    atexit.register(shutil.rmtree, os.environ["MLAGA_FAST_CACHE"], True)


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


HAS_CUDA = _has_cuda()
if not HAS_CUDA:
    # Must be set before triton is first imported anywhere.
    os.environ.setdefault("TRITON_INTERPRET", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def pytest_collection_modifyitems(config, items):
    skip_cuda = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords and not HAS_CUDA:
            item.add_marker(skip_cuda)


@pytest.fixture
def magb_dir() -> Path:
    path = SHARED_DATA / "magb"
    if not (path / "ToysGraph.pt").exists():
        pytest.skip(f"real MAGB graphs not found at {path}")
    return path


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tests of many tiny matmuls: on a shared 2-core machine intra-op threads mostly wait on each
    other (10x slower measured), so run single-threaded and restore the setting afterwards."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

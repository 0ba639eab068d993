"""Test environment: offline hubs, Triton's interpreter where no GPU exists, a `cuda` marker, and a
backstop behind every test's time limit."""
import faulthandler
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


# pytest-timeout (pyproject: timeout, timeout_method = "signal") fails a test that overruns its limit where
# it waits, under its own name. A test stuck where no signal is handled (C code holding the GIL) never
# sees that alarm, so BACKSTOP_S after the limit faulthandler's own thread prints every thread's stack
# (the test function's frame among them) and ends the session: CI fails within minutes, never hangs.
BACKSTOP_S = 60


def _time_limit(item) -> float:
    """The test's limit as pytest-timeout reads it: its marker, else --timeout, else the ini value
    (0: none, or pytest-timeout is not installed)."""
    mark = item.get_closest_marker("timeout")
    if mark is not None:
        value = mark.args[0] if mark.args else mark.kwargs.get("timeout")
    else:
        value = item.config.getoption("timeout", None)
        if value is None:
            try:
                value = item.config.getini("timeout")
            except ValueError:  # an unknown ini name: pytest-timeout is not installed
                value = None
    try:
        return float(value or 0)
    except (TypeError, ValueError):
        return 0.0


def pytest_configure(config):
    # fd 2 as it is now: during a test pytest captures fd 2 into a file that a killed process never prints
    config._backstop_fd = os.dup(2)


def pytest_unconfigure(config):
    os.close(config._backstop_fd)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    limit = _time_limit(item)
    if limit > 0:
        faulthandler.dump_traceback_later(limit + BACKSTOP_S, exit=True, file=item.config._backstop_fd)
    try:
        yield
    finally:
        if limit > 0:
            faulthandler.cancel_dump_traceback_later()


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


@pytest.fixture(scope="session")
def align_inputs(tmp_path_factory) -> tuple[Path, Path]:
    """(data, features): a 96-node catalogue and its tiny-encoder features, built once per session for the
    Stage-1 tests (test_train_align, test_train_align_ddp, test_report_to), on one thread as they run."""
    import torch

    from mlaga_fast.data.synth import make_catalogue
    from mlaga_fast.features import FeatureConfig, extract_features

    root = tmp_path_factory.mktemp("align_inputs")
    data, feat = root / "data", root / "feat"
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        g = make_catalogue(data, nodes=96, classes=3, mean_degree=4, seed=0)
        extract_features(g, feat, FeatureConfig(encoder="tiny", device="cpu", batch_size=32), progress=False)
    finally:
        torch.set_num_threads(n)
    return data, feat


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tests of many tiny matmuls: on a shared 2-core machine intra-op threads mostly wait on each
    other (10x slower measured), so run single-threaded and restore the setting afterwards."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

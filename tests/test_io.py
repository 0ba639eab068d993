"""Atomic writes leave either the old or the new complete content, never a partial one."""
import json

import numpy as np
import pytest

from mlaga_fast.utils.io import atomic_dir, atomic_np_save, atomic_write_json, fingerprint


def test_atomic_json_roundtrip_and_no_temp_left(tmp_path):
    p = tmp_path / "a" / "m.json"
    atomic_write_json(p, {"x": np.int64(3), "y": [1.5]})
    assert json.loads(p.read_text()) == {"x": 3, "y": [1.5]}
    assert [q.name for q in p.parent.iterdir()] == ["m.json"]


def test_atomic_np_save_mmap(tmp_path):
    arr = np.arange(12, dtype=np.float16).reshape(3, 4)
    atomic_np_save(tmp_path / "x.npy", arr)
    back = np.load(tmp_path / "x.npy", mmap_mode="r")
    np.testing.assert_array_equal(back, arr)


def test_atomic_dir_failure_keeps_old(tmp_path):
    final = tmp_path / "ds"
    with atomic_dir(final) as d:
        (d / "v").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as d:
            (d / "v").write_text("2")
            raise RuntimeError("interrupted")
    assert (final / "v").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_atomic_dir_replaces_on_success(tmp_path):
    final = tmp_path / "ds"
    for v in ("1", "2"):
        with atomic_dir(final) as d:
            (d / "v").write_text(v)
    assert (final / "v").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_fingerprint_is_order_independent():
    assert fingerprint({"a": 1, "b": 2}) == fingerprint({"b": 2, "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})


def test_published_files_are_not_owner_only(tmp_path):
    import os
    import stat

    mask = os.umask(0o022)
    os.umask(mask)
    atomic_write_json(tmp_path / "m.json", {})
    with atomic_dir(tmp_path / "d") as d:
        (d / "x").write_text("1")
    assert stat.S_IMODE((tmp_path / "m.json").stat().st_mode) == 0o666 & ~mask
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o777 & ~mask

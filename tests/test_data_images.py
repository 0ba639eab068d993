"""Image sources: folder, tar, tar.gz, arrays, the kind registry, and missing/corrupt handling."""
from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
from PIL import Image

from mlaga_fast.data import (ArrayImageSource, FolderImageSource, ImageSource, ImageUnavailable, MultimodalGraph,
                             TarImageSource, load, register_image_source, registered_kinds, save)
from mlaga_fast.data.images import PLACEHOLDER_RGB, image_source_from_manifest, scan_images

N = 6
COLOURS = [(200, 10, 10), (10, 200, 10), (10, 10, 200), (200, 200, 10), (10, 200, 200), (200, 10, 200)]


def _jpeg(rgb) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 12), rgb).save(buf, "JPEG", quality=95)
    return buf.getvalue()


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(N):
        if i == 3:
            continue  # node 3 has no image
        data = _jpeg(COLOURS[i])
        if i == 4:
            data = data[: len(data) // 2]  # node 4: truncated JPEG
        (d / f"{i}.jpg").write_bytes(data)
    return d


def _graph(images) -> MultimodalGraph:
    return MultimodalGraph.from_edges("img", [0, 1, 2, 3, 4], [1, 2, 3, 4, 5], N, images=images)


def _mean_rgb(img) -> tuple:
    return tuple(np.asarray(img, dtype=np.float64).reshape(-1, 3).mean(0).round())


def _check_behaviour(g: MultimodalGraph):
    for i in (0, 1, 2, 5):
        img = g.load_image(i)
        assert img.mode == "RGB" and img.size == (16, 12)
        assert np.abs(np.array(_mean_rgb(img)) - COLOURS[i]).max() <= 3  # JPEG rounding
    for i in (3, 4):
        img = g.load_image(i)
        assert img.getpixel((0, 0)) == PLACEHOLDER_RGB and img.mode == "RGB"
    assert sorted(g.image_failures) == [3, 4]
    assert g.image_failures[3].startswith("missing") and g.image_failures[4].startswith("corrupt")
    with pytest.raises(ValueError, match="out of range"):
        g.load_image(N)


def test_folder_source(folder):
    src = FolderImageSource(folder, N)
    assert src.availability().tolist() == [True, True, True, False, True, True]
    _check_behaviour(_graph(src))
    quick = scan_images(src, verify=False, progress=False)
    assert quick["missing_images"] == 1 and quick["bad_image_ids"] == [3]
    full = scan_images(src, verify=True, progress=False)
    assert full["missing_images"] == 2 and full["corrupt_images"] == 1 and full["bad_image_ids"] == [3, 4]


@pytest.mark.parametrize("mode", ["w", "w:gz"])
def test_tar_sources_and_save(folder, tmp_path, mode):
    arc = tmp_path / ("imgs.tar" if mode == "w" else "imgs.tar.gz")
    with tarfile.open(arc, mode) as tf:
        tf.add(folder, arcname="Toys", recursive=False)  # a directory entry, skipped by the index
        for p in sorted(folder.iterdir()):
            tf.add(p, arcname=f"Toys/{p.name}")
    src = TarImageSource(arc, N, progress=False)
    assert src.compressed == (mode == "w:gz")
    g = _graph(src)
    _check_behaviour(g)
    g.stats.update(scan_images(src, verify=True, progress=False))
    save(g, tmp_path / "ds")
    if mode == "w:gz":
        assert (tmp_path / "ds" / "images.tar").is_file()  # stored decompressed for direct reads
    g2 = load(tmp_path / "ds")
    assert isinstance(g2.images, TarImageSource) and not g2.images.compressed
    _check_behaviour(g2)
    assert g2.stats["missing_images"] == 2


def test_corrupt_tar_member_and_bad_archive(tmp_path):
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"this is not a tar archive" * 100)
    with pytest.raises(ValueError, match="cannot read tar archive"):
        TarImageSource(bad, 3, progress=False)
    with pytest.raises(ValueError, match="not found"):
        TarImageSource(tmp_path / "nope.tar", 3, progress=False)


def test_array_source_roundtrip(tmp_path):
    arr = np.zeros((N, 8, 8, 3), np.uint8)
    for i, c in enumerate(COLOURS):
        arr[i] = c
    present = np.ones(N, bool)
    present[2] = False
    g = _graph(ArrayImageSource(arr, present))
    assert g.load_image(0).getpixel((0, 0)) == COLOURS[0]
    assert g.load_image(2).getpixel((0, 0)) == PLACEHOLDER_RGB and 2 in g.image_failures
    save(g, tmp_path / "ds")
    g2 = load(tmp_path / "ds")
    assert g2.load_image(5).getpixel((3, 3)) == COLOURS[5]
    assert g2.fingerprint == g.fingerprint
    with pytest.raises(ValueError, match="uint8"):
        ArrayImageSource(np.zeros((2, 4, 4, 3), np.float32))


def test_length_mismatch_rejected(folder):
    with pytest.raises(ValueError, match="images has 5 entries for 6 nodes"):
        _graph(FolderImageSource(folder, 5))


class _Checker(ImageSource):
    """A plug-in kind that draws a grey level from the node id."""

    kind = "test-checker"

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def open(self, i):
        if i == 1:
            raise ImageUnavailable("none")
        return Image.new("L", (4, 4), 10 * i)

    def to_manifest(self, dataset_dir):
        return {"kind": self.kind, "n": self.n}

    @classmethod
    def from_manifest(cls, spec, dataset_dir):
        return cls(spec["n"])


def test_registry_plugin_roundtrip(tmp_path):
    register_image_source(_Checker)
    register_image_source(_Checker)  # idempotent for the same class
    assert "test-checker" in registered_kinds()
    g = _graph(_Checker(N))
    save(g, tmp_path / "ds")
    g2 = load(tmp_path / "ds")
    assert isinstance(g2.images, _Checker)
    assert g2.load_image(3).getpixel((0, 0)) == (30, 30, 30)  # grey converted to RGB
    assert g2.load_image(1).getpixel((0, 0)) == PLACEHOLDER_RGB

    class Other(_Checker):
        kind = "test-checker"

    with pytest.raises(ValueError, match="already registered"):
        register_image_source(Other)
    with pytest.raises(ValueError, match="unknown image source kind 'nope'"):
        image_source_from_manifest({"kind": "nope"}, tmp_path)


@pytest.mark.parametrize("mode", ["w", "w:gz"])
def test_truncated_archive_counts_instead_of_crashing(tmp_path, mode):
    rng = np.random.default_rng(0)
    blobs = {}
    for i in range(N):
        buf = io.BytesIO()  # noisy pictures, so members are large and a cut lands inside one
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG", quality=95)
        blobs[i] = buf.getvalue()
    arc = tmp_path / "imgs.tar"
    with tarfile.open(arc, mode) as tf:
        for i in (0, 1, 2, 4, 5):
            info = tarfile.TarInfo(f"{i}.jpg")
            info.size = len(blobs[i])
            tf.addfile(info, io.BytesIO(blobs[i]))
    full = TarImageSource(arc, N, progress=False)
    if mode == "w":
        off, size = full.index[2]
        cut = int(off + size // 2)  # inside the data of node 2's member
    else:
        cut = int(arc.stat().st_size * 0.6)
    arc.write_bytes(arc.read_bytes()[:cut])
    src = TarImageSource(arc, N, progress=False)
    g = _graph(src)
    rep = scan_images(src, verify=True, progress=False)
    assert 3 in rep["bad_image_ids"] and 5 in rep["bad_image_ids"]
    if mode == "w":
        assert rep["bad_image_ids"] == [2, 3, 4, 5]
        assert np.array_equal(np.asarray(g.load_image(0)), np.asarray(Image.open(io.BytesIO(blobs[0])).convert("RGB")))
    for i in range(N):
        g.load_image(i)  # never raises
    assert set(rep["bad_image_ids"]) <= set(g.image_failures)

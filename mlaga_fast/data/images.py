"""Per-node image sources: files in a folder, members of a tar archive, or arrays in memory.

A source maps node id -> image. It never decides what to do with a missing or corrupt image: it
raises, and ``MultimodalGraph.load_image`` substitutes a neutral grey placeholder and counts it.

Sources are registered by kind name so that a dataset directory can record its source in
``graph.json`` (``to_manifest``) and rebuild it on load (``from_manifest``). Other modules add
kinds with ``@register_image_source`` (e.g. the lazily rendered "synthetic" kind).
"""
from __future__ import annotations

import abc
import io
import os
import tarfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

PLACEHOLDER_RGB = (128, 128, 128)  # neutral grey: carries no class signal into the encoders
PLACEHOLDER_SIZE = (224, 224)


class ImageUnavailable(LookupError):
    """The source has no image for this node (as opposed to an image that fails to decode)."""


def placeholder_image(size: tuple[int, int] = PLACEHOLDER_SIZE):
    from PIL import Image

    return Image.new("RGB", size, PLACEHOLDER_RGB)


_REGISTRY: dict[str, type["ImageSource"]] = {}


def register_image_source(cls: type["ImageSource"]) -> type["ImageSource"]:
    """Class decorator: make ``cls`` loadable from a manifest whose ``kind`` is ``cls.kind``."""
    kind = getattr(cls, "kind", None)
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"{cls.__name__} needs a non-empty class attribute `kind`")
    if kind in _REGISTRY and _REGISTRY[kind] is not cls:
        raise ValueError(f"image source kind {kind!r} is already registered by {_REGISTRY[kind].__name__}")
    _REGISTRY[kind] = cls
    return cls


def registered_kinds() -> list[str]:
    _load_plugins()
    return sorted(_REGISTRY)


def _load_plugins() -> None:
    # Kinds defined outside this module register on import; import the known ones lazily so a
    # manifest naming them loads without the caller importing anything first.
    import importlib

    for mod in ("mlaga_fast.data.synth_images",):
        try:
            importlib.import_module(mod)
        except ImportError:
            pass


def image_source_from_manifest(spec: dict, dataset_dir: str | os.PathLike) -> "ImageSource":
    if not isinstance(spec, dict) or "kind" not in spec:
        raise ValueError(f"images: manifest entry must be an object with a 'kind', got {spec!r}")
    if spec["kind"] not in _REGISTRY:
        _load_plugins()
    cls = _REGISTRY.get(spec["kind"])
    if cls is None:
        raise ValueError(f"images: unknown image source kind {spec['kind']!r} (known: {sorted(_REGISTRY)})")
    return cls.from_manifest(spec, Path(dataset_dir))


class ImageSource(abc.ABC):
    kind: ClassVar[str] = ""

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def open(self, i: int):
        """The image of node ``i`` as a PIL image (any mode). Raises ImageUnavailable when the node
        has none, and whatever the decoder raises (OSError, ...) when the data is corrupt."""

    def available(self, i: int) -> bool:
        """Cheap check (no decoding) that node ``i`` has image data."""
        return True

    def availability(self) -> np.ndarray:
        """bool [N]: ``available`` for every node (sources override this with a vectorised version)."""
        return np.fromiter((self.available(i) for i in range(len(self))), dtype=bool, count=len(self))

    @abc.abstractmethod
    def to_manifest(self, dataset_dir: Path) -> dict:
        """A JSON-able description; may write files into ``dataset_dir`` (the directory being saved)."""

    @classmethod
    @abc.abstractmethod
    def from_manifest(cls, spec: dict, dataset_dir: Path) -> "ImageSource": ...

    def identity(self) -> Any:
        """JSON-able value that changes when the images change; feeds the dataset fingerprint."""
        return {"kind": self.kind, "n": len(self)}


def _resolve(path: str, dataset_dir: Path) -> Path:
    p = Path(path)
    return p if p.is_absolute() else dataset_dir / p


def _check_names(names, n: int | None, field: str) -> list[str | None]:
    names = list(names)
    if n is not None and len(names) != n:
        raise ValueError(f"{field}: {len(names)} names for {n} nodes")
    for i, s in enumerate(names):
        if s is not None and not isinstance(s, str):
            raise ValueError(f"{field}: entry {i} must be a file name or None, got {type(s).__name__}")
    return names


@register_image_source
class FolderImageSource(ImageSource):
    """One file per node under ``root``: ``names[i]`` if given (None = no image), else ``pattern``
    formatted with ``id=i`` (default ``{id}.jpg``, MAGB's naming)."""

    kind = "folder"

    def __init__(self, root: str | os.PathLike, num_nodes: int, pattern: str = "{id}.jpg",
                 names: list[str | None] | None = None):
        self.root = Path(root)
        self.num_nodes = int(num_nodes)
        self.pattern = pattern
        self.names = _check_names(names, self.num_nodes, "images.names") if names is not None else None
        if names is None and "{id" not in pattern:
            raise ValueError(f"images.pattern must contain '{{id}}', got {pattern!r}")

    def __len__(self) -> int:
        return self.num_nodes

    def path(self, i: int) -> Path | None:
        name = self.names[i] if self.names is not None else self.pattern.format(id=i)
        return None if name is None else self.root / name

    def available(self, i: int) -> bool:
        p = self.path(i)
        return p is not None and p.is_file()

    def availability(self) -> np.ndarray:
        try:  # one directory listing instead of N stat calls
            present = set(os.listdir(self.root))
        except OSError:
            return np.zeros(self.num_nodes, dtype=bool)
        out = np.zeros(self.num_nodes, dtype=bool)
        for i in range(self.num_nodes):
            name = self.names[i] if self.names is not None else self.pattern.format(id=i)
            if name is not None:
                out[i] = name in present if "/" not in name else (self.root / name).is_file()
        return out

    def open(self, i: int):
        from PIL import Image

        p = self.path(i)
        if p is None or not p.is_file():
            raise ImageUnavailable(f"no image file for node {i}" + (f" ({p})" if p else ""))
        img = Image.open(p)
        img.load()  # decode now, so a corrupt file fails here rather than later in a worker
        return img

    def to_manifest(self, dataset_dir: Path) -> dict:
        spec = {"kind": self.kind, "root": str(self.root.resolve()), "pattern": self.pattern,
                "num_nodes": self.num_nodes}
        if self.names is not None:
            from mlaga_fast.utils.io import atomic_write_json

            atomic_write_json(dataset_dir / "image_names.json", self.names)
            spec["names_file"] = "image_names.json"
        return spec

    @classmethod
    def from_manifest(cls, spec: dict, dataset_dir: Path) -> "FolderImageSource":
        names = None
        if spec.get("names_file"):
            import json

            names = json.loads(_resolve(spec["names_file"], dataset_dir).read_text())
        return cls(_resolve(spec["root"], dataset_dir), spec["num_nodes"], spec.get("pattern", "{id}.jpg"), names)

    def identity(self) -> Any:
        return {"kind": self.kind, "root": str(self.root.resolve()), "pattern": self.pattern,
                "names": self.names, "n": self.num_nodes}


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


@register_image_source
class TarImageSource(ImageSource):
    """Node images as members of a .tar or .tar.gz, matched by base name (``pattern`` with ``id``).

    An index (offset, size) per node is built once by scanning the archive; reads from an
    uncompressed tar are then one seek each. A gzip archive can be read (slowly: gzip seeks by
    decompressing), and ``to_manifest`` stores it decompressed as ``images.tar`` in the dataset so
    every later read is direct.
    """

    kind = "tar"

    def __init__(self, path: str | os.PathLike, num_nodes: int, pattern: str = "{id}.jpg",
                 index: np.ndarray | None = None, progress: bool = True):
        self.path = Path(path)
        self.num_nodes = int(num_nodes)
        self.pattern = pattern
        if not self.path.is_file():
            raise ValueError(f"images: tar archive not found: {self.path}")
        self.compressed = _is_gzip(self.path)
        self.index = self._scan(progress) if index is None else np.asarray(index, dtype=np.int64)
        if self.index.shape != (self.num_nodes, 2):
            raise ValueError(f"images.index must be [{self.num_nodes}, 2], got {self.index.shape}")

    def _scan(self, progress: bool) -> np.ndarray:
        from tqdm import tqdm

        wanted = {self.pattern.format(id=i): i for i in range(self.num_nodes)}
        index = np.full((self.num_nodes, 2), -1, dtype=np.int64)  # [N, (offset, size)]
        try:
            with tarfile.open(self.path, "r:*") as tf:
                for m in tqdm(tf, desc=f"indexing {self.path.name}", unit=" files", disable=not progress,
                              leave=False):
                    if not m.isfile():
                        continue
                    i = wanted.get(os.path.basename(m.name))
                    if i is not None and index[i, 0] < 0:
                        index[i] = (m.offset_data, m.size)
        except (tarfile.TarError, EOFError, OSError) as e:
            # A truncated archive keeps the members indexed so far; the rest count as missing.
            if not (index[:, 0] >= 0).any():
                raise ValueError(f"images: cannot read tar archive {self.path}: {e}") from e
        return index

    def __len__(self) -> int:
        return self.num_nodes

    def available(self, i: int) -> bool:
        return bool(self.index[i, 0] >= 0)

    def availability(self) -> np.ndarray:
        return self.index[:, 0] >= 0

    def read_bytes(self, i: int) -> bytes:
        off, size = (int(x) for x in self.index[i])
        if off < 0:
            raise ImageUnavailable(f"no member for node {i} in {self.path.name}")
        if self.compressed:
            import gzip

            with gzip.open(self.path, "rb") as f:
                f.seek(off)
                data = f.read(size)
        else:
            with open(self.path, "rb") as f:  # a fresh handle per read: safe across threads/workers
                f.seek(off)
                data = f.read(size)
        if len(data) != size:
            raise OSError(f"tar member for node {i} is truncated ({len(data)} of {size} bytes)")
        return data

    def open(self, i: int):
        from PIL import Image

        img = Image.open(io.BytesIO(self.read_bytes(i)))
        img.load()
        return img

    def verify_stream(self, progress: bool = True) -> list[int]:
        """Node ids whose member fails to decode, in one sequential pass over the archive (random
        access into a gzip stream would decompress from the start for every image)."""
        from PIL import Image
        from tqdm import tqdm

        by_offset = {int(off): i for i, off in enumerate(self.index[:, 0].tolist()) if off >= 0}
        bad: set[int] = set(by_offset.values())  # whatever the pass does not reach counts as corrupt
        try:
            with tarfile.open(self.path, "r:*") as tf:
                for m in tqdm(tf, desc=f"verifying {self.path.name}", unit=" files", disable=not progress, leave=False):
                    i = by_offset.get(m.offset_data)
                    if i is None or not m.isfile():
                        continue
                    try:
                        with Image.open(io.BytesIO(tf.extractfile(m).read())) as img:
                            img.draft("RGB", (64, 64))
                            img.load()
                        bad.discard(i)
                    except Exception:  # noqa: BLE001 - any decoder failure means corrupt
                        pass
        except (tarfile.TarError, EOFError, OSError):
            pass  # a truncated archive: members after the damage stay in `bad`
        return sorted(bad)

    def to_manifest(self, dataset_dir: Path) -> dict:
        from mlaga_fast.utils.io import atomic_np_save

        path = self.path.resolve()
        if self.compressed:
            import gzip

            from tqdm import tqdm

            # Offsets in the index are positions in the decompressed stream, so they stay valid.
            target = dataset_dir / "images.tar"
            total = int(self.index[:, 0].max() + self.index[:, 1].max()) if (self.index[:, 0] >= 0).any() else None
            with gzip.open(self.path, "rb") as src, open(target, "wb") as dst, \
                    tqdm(total=total, unit="B", unit_scale=True, desc="decompressing images", leave=False,
                         disable=total is None or total < (64 << 20)) as bar:
                while block := src.read(1 << 20):
                    dst.write(block)
                    bar.update(len(block))
                dst.flush()
                os.fsync(dst.fileno())
            path = Path("images.tar")
        atomic_np_save(dataset_dir / "image_index.npy", self.index)
        return {"kind": self.kind, "path": str(path), "pattern": self.pattern, "num_nodes": self.num_nodes,
                "index": "image_index.npy"}

    @classmethod
    def from_manifest(cls, spec: dict, dataset_dir: Path) -> "TarImageSource":
        from mlaga_fast.utils.io import read_npy

        index = read_npy(_resolve(spec["index"], dataset_dir), mmap_bytes=None)
        return cls(_resolve(spec["path"], dataset_dir), spec["num_nodes"], spec.get("pattern", "{id}.jpg"), index)

    def identity(self) -> Any:
        import hashlib

        return {"kind": self.kind, "index_sha256": hashlib.sha256(self.index.tobytes()).hexdigest(),
                "n": self.num_nodes}


@register_image_source
class ArrayImageSource(ImageSource):
    """Images held as one uint8 array [N, H, W, 3] (or [N, H, W] grey); ``present`` marks nodes
    that have an image (default: all). Saved as ``images.npy`` and memory-mapped on load."""

    kind = "array"

    def __init__(self, array: np.ndarray, present: np.ndarray | None = None):
        arr = np.asarray(array) if not isinstance(array, np.memmap) else array
        if arr.dtype != np.uint8 or arr.ndim not in (3, 4) or (arr.ndim == 4 and arr.shape[-1] not in (1, 3, 4)):
            raise ValueError(f"images.array must be uint8 [N, H, W, 3] or [N, H, W], got {arr.dtype} {arr.shape}")
        self.array = arr
        if present is None:
            present = np.ones(arr.shape[0], dtype=bool)
        present = np.asarray(present, dtype=bool)
        if present.shape != (arr.shape[0],):
            raise ValueError(f"images.present must be [{arr.shape[0]}], got {present.shape}")
        self.present = present
        self._sha: str | None = None

    def __len__(self) -> int:
        return int(self.array.shape[0])

    def available(self, i: int) -> bool:
        return bool(self.present[i])

    def availability(self) -> np.ndarray:
        return self.present.copy()

    def open(self, i: int):
        from PIL import Image

        if not self.present[i]:
            raise ImageUnavailable(f"no image for node {i}")
        a = np.asarray(self.array[i])
        return Image.fromarray(a[..., 0] if a.ndim == 3 and a.shape[-1] == 1 else a)

    def to_manifest(self, dataset_dir: Path) -> dict:
        from mlaga_fast.utils.io import atomic_np_save

        atomic_np_save(dataset_dir / "images.npy", np.asarray(self.array))
        atomic_np_save(dataset_dir / "images_present.npy", self.present)
        return {"kind": self.kind, "array": "images.npy", "present": "images_present.npy",
                "shape": list(self.array.shape)}

    @classmethod
    def from_manifest(cls, spec: dict, dataset_dir: Path) -> "ArrayImageSource":
        from mlaga_fast.utils.io import read_npy

        arr = read_npy(_resolve(spec["array"], dataset_dir), mmap_bytes=0)
        if list(arr.shape) != list(spec.get("shape", arr.shape)):
            raise ValueError(f"images.npy has shape {arr.shape}, manifest says {spec['shape']}")
        return cls(arr, read_npy(_resolve(spec["present"], dataset_dir), mmap_bytes=None))

    def identity(self) -> Any:
        if self._sha is None:
            import hashlib

            h = hashlib.sha256()
            a = self.array  # chunked, so a memory-mapped array is never loaded whole
            step = max(1, (64 << 20) // max(1, a[0].nbytes if len(a) else 1))
            for s in range(0, len(a), step):
                h.update(np.ascontiguousarray(a[s:s + step]).tobytes())
            h.update(self.present.tobytes())
            self._sha = h.hexdigest()
        return {"kind": self.kind, "shape": list(self.array.shape), "sha256": self._sha}


def verify_image(source: ImageSource, i: int) -> str | None:
    """None if node ``i``'s image decodes, else the reason. JPEGs decode at reduced scale (draft
    mode), which reads every scan of the file yet costs a fraction of a full decode."""
    try:
        if isinstance(source, (TarImageSource, FolderImageSource)):
            from PIL import Image

            if isinstance(source, TarImageSource):
                fp = io.BytesIO(source.read_bytes(i))
            else:
                fp = source.path(i)
                if fp is None or not fp.is_file():
                    raise ImageUnavailable(str(fp))
            with Image.open(fp) as img:
                img.draft("RGB", (64, 64))
                img.load()
        else:
            source.open(i)
        return None
    except ImageUnavailable:
        return "missing"
    except Exception as e:  # noqa: BLE001 - whatever the decoder raises means "corrupt"
        return f"corrupt: {type(e).__name__}"


def scan_images(source: ImageSource | None, verify: bool = False, progress: bool = True,
                max_ids: int = 1000) -> dict:
    """Counts for a dataset's ``stats``: ``missing_images`` (no data, or corrupt when ``verify``)
    and the first ``max_ids`` offending node ids. Without ``verify`` only presence is checked."""
    if source is None:
        return {"missing_images": 0, "corrupt_images": 0, "images_verified": False, "bad_image_ids": []}
    avail = source.availability()
    missing = np.flatnonzero(~avail)
    corrupt: list[int] = []
    if verify and isinstance(source, TarImageSource) and source.compressed:
        corrupt = source.verify_stream(progress)
    elif verify:
        from tqdm import tqdm

        for i in tqdm(np.flatnonzero(avail).tolist(), desc="verifying images", unit=" img", disable=not progress,
                      leave=False):
            r = verify_image(source, i)
            if r is not None:
                corrupt.append(i)
    bad = np.union1d(missing, np.asarray(corrupt, dtype=np.int64))
    return {"missing_images": int(bad.size), "corrupt_images": len(corrupt), "images_verified": bool(verify),
            "bad_image_ids": bad[:max_ids].tolist()}

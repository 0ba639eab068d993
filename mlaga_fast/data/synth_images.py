"""On-demand product pictures for the synthetic catalogue (Pillow + NumPy, nothing cached).

A node's picture is a pure function of (seed, node id, the class whose look it shows): the class
fixes the colour family, the object's shape and its fill texture (see ``vocab.Look``); a per-node
generator seeded from that triple jitters hue, saturation, brightness, size, position, rotation,
aspect, texture period/phase, background tint, an optional distractor blob and pixel noise. So a
million-node catalogue keeps only an int array of "image classes" in memory and renders any node
in well under a millisecond. A node whose image is mismatched simply carries another class here.
"""
from __future__ import annotations

import colorsys
import functools
import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from mlaga_fast.data.images import ImageSource, register_image_source
from mlaga_fast.data.vocab import CATEGORIES, SHAPES, TEXTURES, Look
from mlaga_fast.utils.io import read_npy

# Bump when the drawing changes: it is part of every per-node seed and of the manifest, so stored
# datasets (and the features computed from them) can tell that their pictures would now differ.
STYLE_VERSION = 1
KIND = "synthetic"


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-1, 1], as float32 [S, S] arrays (x varies along columns)."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    return np.meshgrid(c, c)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32) * 255.0  # [3]


def _outline(shape: str, n_pts: int = 24) -> np.ndarray:
    """Unit-size outline of a shape as [P, 2] points (before scale, aspect and rotation)."""
    if shape in ("circle", "ring"):
        a = np.linspace(0.0, 2 * np.pi, n_pts, endpoint=False)
        return np.stack([np.cos(a), np.sin(a)], 1)
    if shape in ("square", "triangle", "hexagon"):
        k = {"square": 4, "triangle": 3, "hexagon": 6}[shape]
        a = np.arange(k) * 2 * np.pi / k + np.pi / k
        return np.stack([np.cos(a), np.sin(a)], 1)
    if shape == "diamond":
        return np.array([[0.0, -1.0], [0.62, 0.0], [0.0, 1.0], [-0.62, 0.0]])
    if shape == "star":
        a = np.arange(10) * np.pi / 5 - np.pi / 2
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        return np.stack([r * np.cos(a), r * np.sin(a)], 1)
    if shape == "cross":
        w = 0.36
        return np.array([[-w, -1], [w, -1], [w, -w], [1, -w], [1, w], [w, w], [w, 1], [-w, 1],
                         [-w, w], [-1, w], [-1, -w], [-w, -w]], dtype=np.float64)
    raise ValueError(f"shape: unknown shape {shape!r} (known: {', '.join(SHAPES)})")


def _shape_mask(shape: str, size: int, cx: float, cy: float, radius: float, angle: float,
                aspect: float) -> np.ndarray:
    """Boolean [S, S] mask of one filled shape centred at (cx, cy) pixels."""
    pts = _outline(shape) * np.array([aspect, 1.0])
    ca, sa = math.cos(angle), math.sin(angle)
    rot = pts @ np.array([[ca, sa], [-sa, ca]]) * radius + np.array([cx, cy])  # [P, 2]
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    draw.polygon([tuple(p) for p in rot.tolist()], fill=255)
    if shape == "ring":
        inner = _outline("circle") * np.array([aspect, 1.0]) @ np.array([[ca, sa], [-sa, ca]])
        inner = inner * (radius * 0.55) + np.array([cx, cy])
        draw.polygon([tuple(p) for p in inner.tolist()], fill=0)
    return np.asarray(canvas) > 127


_TEXTURE_VARIANTS = 16  # pattern periods/tilts per texture; each is cropped at a random offset


@functools.lru_cache(maxsize=512)
def _texture_bank(kind: str, size: int, variant: int) -> np.ndarray:
    """A read-only float32 [2S, 2S] pattern field in [0, 1] (1 = full pattern colour).

    Drawing a pattern per picture cost most of the render time; instead each (texture, size)
    has a few fixed variants, drawn on a canvas twice the picture's side, and a picture crops a
    random S x S window (the crop offset is the pattern's phase).
    """
    if kind not in TEXTURES:
        raise ValueError(f"texture: unknown texture {kind!r} (known: {', '.join(TEXTURES)})")
    rng = np.random.default_rng([STYLE_VERSION, 0x7E47, TEXTURES.index(kind), size, variant])
    x, y = _grid(2 * size)
    x, y = 2.0 * x, 2.0 * y  # same pixel pitch as a picture's [-1, 1] grid
    period = rng.uniform(0.16, 0.28)  # in picture units: about 5-9 px at 64 px
    tilt = rng.uniform(-0.25, 0.25) + (np.pi / 4 if kind == "diagonal" else 0.0)
    ct, st = math.cos(tilt), math.sin(tilt)
    u = x * ct + y * st  # [2S, 2S]
    v = -x * st + y * ct
    if kind == "checker":
        t = (np.floor(u / period) + np.floor(v / period)) % 2
    elif kind == "grid":
        w = period * 0.28
        t = ((u % period) < w) | ((v % period) < w)
    elif kind == "dots":
        du = (u % period) - period / 2
        dv = (v % period) - period / 2
        t = (du * du + dv * dv) < (period * 0.3) ** 2
    elif kind == "speckle":
        t = rng.random(u.shape) < rng.uniform(0.25, 0.4)
    elif kind in ("diagonal", "stripes"):
        t = (u % period) < period / 2
    elif kind == "waves":
        t = np.sin(u * (2 * np.pi / period) + 1.6 * np.sin(v * (np.pi / period))) > 0.2
    else:  # plain
        t = np.clip((v + 2.0) * 0.125, 0.0, 0.5)  # soft shading only
    t = np.ascontiguousarray(t, dtype=np.float32)
    t.flags.writeable = False  # shared by every picture through the cache
    return t


def _texture(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Float32 [S, S] view: a random variant of ``kind`` cropped at a random offset."""
    bank = _texture_bank(kind, size, int(rng.integers(_TEXTURE_VARIANTS)))
    ox, oy = rng.integers(0, size + 1, 2)
    return bank[oy:oy + size, ox:ox + size]


def render_array(seed: int, node: int, cls: int, size: int = 64,
                 looks: tuple[Look, ...] | None = None) -> np.ndarray:
    """The picture of ``node`` showing class ``cls``'s look, as uint8 [S, S, 3]. Deterministic."""
    looks = looks or tuple(c.look for c in CATEGORIES)
    if not 0 <= cls < len(looks):
        raise ValueError(f"cls: class {cls} out of range [0, {len(looks)}) for node {node}")
    look = looks[cls]
    rng = np.random.default_rng([STYLE_VERSION, int(seed) & 0xFFFFFFFF, int(node), int(cls)])
    # Background: near-white with a random tint (not class-specific) and a vertical gradient.
    bg = _hsv(rng.random(), rng.uniform(0.0, 0.15), rng.uniform(0.86, 1.0))  # [3]
    img = _shade(size) * bg  # [S, S, 3]
    # Optional distractor blob in a random colour and shape, drawn behind the product.
    if rng.random() < 0.35:
        d_shape = SHAPES[rng.integers(len(SHAPES))]
        d_mask = _shape_mask(d_shape, size, *rng.uniform(0.1, 0.9, 2) * size,
                             rng.uniform(0.08, 0.16) * size, rng.uniform(0, 2 * np.pi), 1.0)
        img[d_mask] = _hsv(rng.random(), rng.uniform(0.2, 0.7), rng.uniform(0.5, 0.95))
    # The product: class colour, shape and texture, jittered within the class.
    base = _hsv(look.hue + rng.uniform(-0.035, 0.035), rng.uniform(0.55, 0.92), rng.uniform(0.62, 0.95))
    dark = base * rng.uniform(0.45, 0.65)
    tex = _texture(look.texture, size, rng)[..., None]  # [S, S, 1]
    fill = base + (dark - base) * tex  # [S, S, 3]
    radius = rng.uniform(0.26, 0.40) * size
    cx, cy = (0.5 + rng.uniform(-0.12, 0.12, 2)) * size
    mask = _shape_mask(look.shape, size, cx, cy, radius, rng.uniform(0, 2 * np.pi), rng.uniform(0.8, 1.15))
    img = np.where(mask[..., None], fill, img)
    # Sensor-like luminance noise: a random crop of a fixed Gaussian field (drawing fresh noise
    # per picture cost as much as the rest of the picture), at a random strength.
    ox, oy = rng.integers(0, size + 1, 2)
    img += _noise_bank(size)[oy:oy + size, ox:ox + size] * rng.uniform(2.0, 7.0)
    img += 0.5  # round, not truncate, in the cast below
    return np.clip(img, 0, 255, out=img).astype(np.uint8)


@functools.lru_cache(maxsize=8)
def _shade(size: int) -> np.ndarray:
    """float32 [S, S, 1] vertical lighting gradient of the background (1 at the top)."""
    _, y = _grid(size)
    out = (1.0 - 0.06 * (y + 1.0))[..., None].astype(np.float32)
    out.flags.writeable = False
    return out


@functools.lru_cache(maxsize=8)
def _noise_bank(size: int) -> np.ndarray:
    """float32 [2S, 2S, 1] fixed standard-normal field that pictures crop their noise from."""
    out = np.random.default_rng([STYLE_VERSION, 0x0015E, size]).standard_normal((2 * size, 2 * size, 1),
                                                                                 dtype=np.float32)
    out.flags.writeable = False
    return out


@register_image_source
class SyntheticImages(ImageSource):
    """ImageSource of kind "synthetic": renders node i from (seed, i, image_class[i]) on demand.

    ``image_class`` is the class whose look node i shows (its label, or another class for a
    mismatched image). It is the only per-node state and may be a read-only memory map.
    """

    kind = KIND

    def __init__(self, image_class: np.ndarray, seed: int, size: int = 64, num_classes: int | None = None,
                 classes_file: str = "image_class.npy", looks: tuple[Look, ...] | None = None) -> None:
        image_class = np.asarray(image_class)
        if image_class.ndim != 1 or not np.issubdtype(image_class.dtype, np.integer):
            raise ValueError(f"image_class must be a 1-D integer array, got {image_class.dtype} {image_class.shape}")
        # looks: class k shows looks[k] (another shop's or a chosen subset's); default the toy store's in order
        all_looks = tuple(looks) if looks is not None else tuple(c.look for c in CATEGORIES)
        ncls = len(all_looks) if num_classes is None else int(num_classes)
        if not 1 <= ncls <= len(all_looks):
            raise ValueError(f"num_classes must be in [1, {len(all_looks)}], got {ncls}")
        bad = np.flatnonzero((image_class < 0) | (image_class >= ncls))
        if bad.size:
            raise ValueError(f"image_class: value {int(image_class[bad[0]])} at index {int(bad[0])} "
                             f"is outside [0, {ncls})")
        if not 8 <= int(size) <= 1024:
            raise ValueError(f"size must be in [8, 1024] pixels, got {size}")
        self.image_class = image_class
        self.seed = int(seed)
        self.size = int(size)
        self.num_classes = ncls
        self.classes_file = classes_file
        self._looks = all_looks[:ncls]
        self._custom_looks = looks is not None

    def __len__(self) -> int:
        return int(self.image_class.shape[0])

    def _check(self, i: int) -> int:
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(f"node {i} out of range [0, {len(self)})")
        return i

    def get_array(self, i: int) -> np.ndarray:
        """uint8 [S, S, 3] picture of node i."""
        i = self._check(i)
        return render_array(self.seed, i, int(self.image_class[i]), self.size, self._looks)

    def get(self, i: int) -> Image.Image:
        return Image.fromarray(self.get_array(i), mode="RGB")

    def get_batch(self, ids) -> np.ndarray:
        """uint8 [n, S, S, 3] pictures of the given nodes (what a featuriser wants per batch)."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        out = np.empty((ids.shape[0], self.size, self.size, 3), dtype=np.uint8)
        for j, i in enumerate(ids.tolist()):
            out[j] = self.get_array(i)
        return out

    def open(self, i: int) -> Image.Image:
        return self.get(i)

    def availability(self) -> np.ndarray:
        return np.ones(len(self), dtype=bool)  # every node renders

    def to_manifest(self, dataset_dir: str | Path) -> dict[str, Any]:
        """JSON description; writes the class array into the dataset directory as ``classes_file``."""
        from mlaga_fast.utils.io import atomic_np_save

        atomic_np_save(Path(dataset_dir) / self.classes_file,
                       np.ascontiguousarray(self.image_class, dtype=np.int64))
        return {"kind": KIND, "seed": self.seed, "size": self.size, "num_classes": self.num_classes,
                "num_nodes": len(self), "classes_file": self.classes_file, "style_version": STYLE_VERSION,
                **self._looks_record()}

    def _looks_record(self) -> dict[str, Any]:
        """{"looks": [[hue, shape, texture], ...]} when the looks are not the toy store's default."""
        return {"looks": [[lk.hue, lk.shape, lk.texture] for lk in self._looks]} if self._custom_looks else {}

    def identity(self) -> Any:
        import hashlib

        digest = hashlib.sha256(np.ascontiguousarray(self.image_class, dtype=np.int64).tobytes()).hexdigest()
        return {"kind": KIND, "seed": self.seed, "size": self.size, "num_classes": self.num_classes,
                "style_version": STYLE_VERSION, "classes_sha256": digest, **self._looks_record()}

    @classmethod
    def from_manifest(cls, d: dict[str, Any], root: str | Path) -> "SyntheticImages":
        if d.get("kind") != KIND:
            raise ValueError(f"images.kind: expected {KIND!r}, got {d.get('kind')!r}")
        if int(d.get("style_version", -1)) != STYLE_VERSION:
            raise ValueError(f"images.style_version: dataset was rendered with style {d.get('style_version')}, "
                             f"this mlaga_fast draws style {STYLE_VERSION}; regenerate it with `mlaga-fast data synth`")
        path = Path(root) / d["classes_file"]
        if not path.exists():
            raise ValueError(f"images.classes_file: {path} is missing")
        arr = read_npy(path, mmap_bytes=0)
        if arr.ndim != 1 or arr.dtype.kind not in "iu" or arr.shape[0] != int(d["num_nodes"]):
            raise ValueError(f"images.num_nodes: manifest says {d['num_nodes']} class ids, {path.name} holds "
                             f"{arr.dtype.name} {list(arr.shape)}")
        looks = tuple(Look(float(h), str(sh), str(tx)) for h, sh, tx in d["looks"]) if d.get("looks") else None
        return cls(arr, seed=int(d["seed"]), size=int(d["size"]), num_classes=int(d["num_classes"]),
                   classes_file=d["classes_file"], looks=looks)


def contact_sheet(graph, per_class: int = 8) -> bytes:
    """PNG bytes: one row per class, the pictures of its first ``per_class`` nodes (by id)."""
    import io

    labels = np.asarray(graph.labels)
    rows = []
    for k in range(len(graph.class_names)):
        ids = np.flatnonzero(labels == k)[:per_class]
        tiles = [np.asarray(graph.load_image(int(i)).convert("RGB")) for i in ids]
        side = tiles[0].shape[0] if tiles else 64
        tiles += [np.full((side, side, 3), 255, np.uint8)] * (per_class - len(tiles))
        rows.append(np.concatenate(tiles, axis=1))  # [S, per_class*S, 3]
    buf = io.BytesIO()
    Image.fromarray(np.concatenate(rows, axis=0)).save(buf, format="PNG")
    return buf.getvalue()

"""Node texts read on demand from a dataset's ``texts.bin`` (one UTF-8 blob) and ``text_offsets.npy``.

``load`` used to decode every text into a Python list: about 210 MiB for the 1,000,000-node synthetic
catalogue (168 MB of text), held by every stage that opens the dataset, although the feature extractor
reads one batch of texts at a time and the prompt builder only the texts of the nodes it shows.
``TextBlob`` memory-maps both files and decodes text ``i`` when it is asked for, so what stays resident
is what is read. It behaves as a read-only sequence of ``str`` (len, indexing, negative indices, slices,
iteration), equal item by item to the decoded list.
"""
from __future__ import annotations

import codecs
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["TextBlob"]

_CHECK_CHUNK = 1 << 24  # bytes decoded at a time when the blob is checked on open


class TextBlob(Sequence):
    def __init__(self, blob_path: str | Path, offsets: np.ndarray, name: str | None = None) -> None:
        """offsets int64 [N + 1], offsets[0] == 0, non-decreasing, offsets[-1] == the blob's size: the
        caller (``mlaga_fast.data.store``) has checked them. The blob is checked to be UTF-8 here, once."""
        self.path = Path(blob_path)
        self.name = name or self.path.name
        self.offsets = offsets
        size = self.path.stat().st_size
        self._blob = np.memmap(self.path, dtype=np.uint8, mode="r") if size else np.zeros(0, np.uint8)
        dec = codecs.getincrementaldecoder("utf-8")()
        try:
            for lo in range(0, size, _CHECK_CHUNK):
                dec.decode(self._blob[lo:lo + _CHECK_CHUNK].tobytes(), final=lo + _CHECK_CHUNK >= size)
        except UnicodeDecodeError as e:
            raise ValueError(f"{self.name} is not valid UTF-8 ({e.reason} near byte {lo + e.start})") from None

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def _text(self, i: int) -> str:
        lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
        try:
            return self._blob[lo:hi].tobytes().decode("utf-8")
        except UnicodeDecodeError:  # the blob is UTF-8 as a whole, but this cut splits a character
            raise ValueError(f"{self.name}: text of node {i} (bytes {lo}:{hi}) is not valid UTF-8; "
                             "text_offsets.npy does not match the blob") from None

    def __getitem__(self, i):
        n = len(self)
        if isinstance(i, slice):
            return [self._text(j) for j in range(*i.indices(n))]
        i = int(i)
        if not -n <= i < n:
            raise IndexError(f"text index {i} out of range for {n} nodes")
        return self._text(i % n)

    def __iter__(self):
        for i in range(len(self)):
            yield self._text(i)

    def encoded(self, block: int = 4096):
        """Each text's UTF-8 bytes, in order, sliced from the mapped blob ``block`` texts at a time without
        decoding (what hashing needs): over a million texts 1.2 s, against 10.7 s to decode and encode each
        ``self[i]`` again (2-core AMD EPYC, shared)."""
        n = len(self)
        for lo in range(0, n, block):
            hi = min(n, lo + block)
            start = int(self.offsets[lo])
            buf = self._blob[start:int(self.offsets[hi])].tobytes()
            pos = (np.asarray(self.offsets[lo:hi + 1]) - start).tolist()
            for j in range(hi - lo):
                yield buf[pos[j]:pos[j + 1]]

    def __eq__(self, other) -> bool:  # equal to any sequence of the same strings (e.g. the decoded list)
        if not isinstance(other, Sequence) or isinstance(other, (str, bytes)) or len(other) != len(self):
            return False
        return all(a == b for a, b in zip(self, other))

    __hash__ = None  # mutable-sequence semantics, as the list it replaces

    def __reduce__(self):  # workers of a spawned DataLoader reopen the files instead of copying the texts
        return (TextBlob, (self.path, self.offsets, self.name))

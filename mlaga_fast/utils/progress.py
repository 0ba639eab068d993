"""Progress bars: one look for every long job (tqdm), off on non-main ranks."""
from __future__ import annotations

from typing import Iterable

from tqdm.auto import tqdm

__all__ = ["progress"]


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", enabled: bool = True,
             initial: int = 0, unit: str = "it"):
    """A tqdm bar (disabled on non-main ranks). Call ``bar.set_postfix(loss=...)`` to show the loss."""
    return tqdm(iterable, total=total, desc=desc, disable=not enabled, initial=initial, unit=unit, dynamic_ncols=True,
                mininterval=0.5)

"""Figures to files: rendered in memory, then written atomically, so a crash never leaves half a PNG."""
from __future__ import annotations

import io
import os
import sys
from typing import Any

from mlaga_fast.utils.io import atomic_write_bytes

__all__ = ["save_png"]


def save_png(fig: Any, path: str | os.PathLike, dpi: int = 120) -> None:
    """Write the matplotlib figure ``fig`` to ``path`` as PNG; a pyplot figure is closed afterwards."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    pyplot = sys.modules.get("matplotlib.pyplot")  # figures made without pyplot need no closing
    if pyplot is not None:
        pyplot.close(fig)
    atomic_write_bytes(path, buf.getvalue())

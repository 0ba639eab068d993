"""TOML parsing on every supported Python: the standard library's tomllib from 3.11, the same parser as
the tomli package before (a dependency only there)."""
from __future__ import annotations

import sys

if sys.version_info >= (3, 11):
    from tomllib import loads
else:  # Python 3.9 and 3.10
    from tomli import loads

__all__ = ["loads"]

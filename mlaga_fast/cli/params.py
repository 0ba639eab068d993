"""Click parameter types shared by several commands."""
from __future__ import annotations

from pathlib import Path

import click


class FeaturesSource(click.ParamType):
    """--features: a folder written by `mlaga-fast features`, or online:ENCODER (encoders run per batch,
    nothing stored; mlaga_fast.features.source)."""

    name = "DIR|online:ENCODER"

    def convert(self, value, param, ctx):
        from mlaga_fast.features.source import ONLINE_PREFIX, is_online

        value = str(value)
        if is_online(value):
            if not value[len(ONLINE_PREFIX):]:
                self.fail("'online:' needs an encoder spec, e.g. online:tiny or online:offline@128", param, ctx)
            return value
        if not Path(value).is_dir():
            self.fail(f"{value!r} is not a features directory (or online:ENCODER)", param, ctx)
        return value


FEATURES = FeaturesSource()

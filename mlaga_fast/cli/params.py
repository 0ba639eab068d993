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


class CommaList(click.ParamType):
    """A comma-separated list of ``item`` values (each converted and checked by ``item``): ``--data A,B``."""

    def __init__(self, item: click.ParamType):
        self.item = item
        self.name = f"{item.name}[,...]"

    def convert(self, value, param, ctx):
        if isinstance(value, (list, tuple)):
            return list(value)
        parts = [p.strip() for p in str(value).split(",")]
        if not all(parts):
            self.fail(f"{value!r}: an empty entry in the comma-separated list", param, ctx)
        return [self.item.convert(p, param, ctx) for p in parts]


DIRS = CommaList(click.Path(exists=True, file_okay=False))
FEATURES_LIST = CommaList(FEATURES)

"""Typed dataclass configs, spelt the same everywhere: CLI option, YAML/TOML file, Python, resolved JSON.

A config is a plain ``@dataclass`` whose fields have defaults. Field metadata may carry ``help`` (the
CLI help text) and ``choices`` (allowed values). One field ``lr`` is the option ``--lr``; a field
``cross_attention_every`` is ``--cross-attention-every``; a file key may use either spelling.

Precedence when resolving (later wins): dataclass defaults < base (the saved config of a run being
resumed) < named preset (--preset) < config file (--config) < CLI options that the user actually
passed. So a file that sets ``dim`` replaces the preset's ``dim`` (``preset_overrides`` lists such
fields, and the commands say so), and ``--dim`` on the command line replaces both. The resolved
config is saved as JSON in the run directory so the run can be reproduced, and ``load_config`` reads
it back with the same type checks.

A field whose type is itself a config dataclass nests it: its fields are options spelt
``--outer.inner-name`` (``--instruct.lr``), a file gives them as a table (``[instruct]`` / ``instruct:``),
and every layer above updates the nested fields it names, keeping the rest (the field's default
instance, then base, preset, file, CLI). So a composite config (the demo's) holds each stage's own
config under the stage's own field names, with nothing to translate.

Usage::

    @dataclass
    class MyConfig:
        lr: float = field(default=1e-3, metadata={"help": "peak learning rate"})

    @click.command()
    @config_options(MyConfig)
    def cmd(**kw):
        cfg = resolve_config(MyConfig, kw, config_file=kw.pop("config", None))
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import types
import typing
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

from mlaga_fast.utils.io import atomic_write_json

T = TypeVar("T")
NESTED_SEP = "__"  # the click parameter of the option --outer.inner is named outer__inner

__all__ = [
    "config_options",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "load_config_file",
    "resolve_config",
    "save_config",
    "field_option_name",
    "preset_overrides",
]


def field_option_name(name: str) -> str:
    """`cross_attention_every` -> `--cross-attention-every`."""
    return "--" + name.replace("_", "-")


def _resolved_hints(cls: type) -> dict[str, Any]:
    # `from __future__ import annotations` turns annotations into strings; resolve them in the
    # defining module's namespace so `int | None` etc. become real types.
    module = sys.modules.get(cls.__module__)
    return typing.get_type_hints(cls, globalns=vars(module) if module else None)


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a file/CLI value to the field's type, or raise ValueError naming the field."""
    base, optional = _strip_optional(tp)
    if value is None:
        if optional:
            return None
        raise ValueError(f"config field {where!r} may not be null")
    origin = typing.get_origin(base)
    if origin is typing.Literal:
        allowed = typing.get_args(base)
        if value not in allowed:
            raise ValueError(f"config field {where!r}: {value!r} is not one of {list(allowed)}")
        return value
    if origin in (list, tuple):
        if isinstance(value, str):  # CLI spelling: comma-separated
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"config field {where!r}: expected a list, got {type(value).__name__}")
        args = typing.get_args(base)
        elem = args[0] if args else Any
        out = [_coerce(v, elem, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if base is Any:
        return value
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ValueError(f"config field {where!r}: expected a boolean, got {value!r}")
    if base is int:
        if isinstance(value, bool):
            raise ValueError(f"config field {where!r}: expected an integer, got {value!r}")
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        if isinstance(value, int):
            return value
        raise ValueError(f"config field {where!r}: expected an integer, got {value!r}")
    if base is float:
        if isinstance(value, bool):
            raise ValueError(f"config field {where!r}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"config field {where!r}: expected a number, got {value!r}") from None
    if base is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ValueError(f"config field {where!r}: expected a string, got {value!r}")
    if dataclasses.is_dataclass(base):
        if isinstance(value, base):
            return value
        if not isinstance(value, Mapping):
            raise ValueError(f"config field {where!r}: expected a table/mapping, got {type(value).__name__}")
        return config_from_dict(base, value, _prefix=f"{where}.")
    return value


def config_from_dict(cls: type[T], data: Mapping[str, Any], *, _prefix: str = "") -> T:
    """Build ``cls`` from a mapping; unknown keys and wrong types raise ValueError naming the key."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = _resolved_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = str(raw_key).replace("-", "_")
        if key not in fields:
            raise ValueError(
                f"unknown config field {_prefix + str(raw_key)!r} for {cls.__name__}; "
                f"known fields: {sorted(fields)}"
            )
        f = fields[key]
        value = _coerce(value, hints[key], _prefix + key)
        choices = f.metadata.get("choices")
        if choices is not None and value not in choices:
            raise ValueError(f"config field {_prefix + key!r}: {value!r} is not one of {list(choices)}")
        kwargs[key] = value
    missing = [n for n, f in fields.items() if n not in kwargs and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]  # type: ignore[misc]
    if missing:
        raise ValueError(f"config for {cls.__name__} is missing required field {_prefix + missing[0]!r}")
    return cls(**kwargs)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain JSON-able dict (tuples become lists)."""
    if not dataclasses.is_dataclass(cfg):
        raise TypeError(f"{cfg!r} is not a dataclass instance")
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML (.yaml/.yml), TOML (.toml) or JSON (.json) file into a dict."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file not found: {path}")
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8")
    try:
        if suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        elif suffix == ".toml":
            from mlaga_fast.utils.toml import loads

            data = loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise ValueError(f"config file {path}: unknown format {suffix!r} (use .yaml, .yml, .toml or .json)")
    except ValueError:
        raise
    except Exception as e:  # yaml/toml parse errors have their own types
        raise ValueError(f"config file {path}: cannot parse: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {path}: top level must be a mapping, got {type(data).__name__}")
    return data


def _nested_fields(cls: type) -> dict[str, type]:
    """{field name: its dataclass type} for the fields of ``cls`` that nest a config dataclass."""
    hints = _resolved_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        base, _ = _strip_optional(hints[f.name])
        if f.init and dataclasses.is_dataclass(base):
            out[f.name] = base
    return out


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def _merge(merged: dict[str, Any], layer: Mapping[str, Any], nested: Mapping[str, type]) -> None:
    """Update ``merged`` with ``layer``; a nested config's table updates the fields it names only."""
    for k, v in layer.items():
        key = str(k).replace("-", "_")
        if key in nested and isinstance(v, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = {**merged[key], **{str(a).replace("-", "_"): b for a, b in v.items()}}
        else:
            merged[key] = v


def resolve_config(
    cls: type[T],
    cli_values: Mapping[str, Any] | None = None,
    *,
    config_file: str | os.PathLike | None = None,
    preset: str | None = None,
    presets: Mapping[str, Mapping[str, Any]] | None = None,
    base: Mapping[str, Any] | None = None,
) -> T:
    """defaults < base < preset < file < CLI. ``cli_values`` entries that are None were not passed;
    ``base`` is e.g. the saved config of a run being resumed.

    Keys in ``cli_values`` that are not fields of ``cls`` are ignored, so a command can pass its whole
    ``**kwargs`` (including --data/--out style arguments handled elsewhere).
    """
    nested = _nested_fields(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    merged: dict[str, Any] = {name: config_to_dict(_field_default(fields[name])) for name in nested
                              if _field_default(fields[name]) is not dataclasses.MISSING}
    _merge(merged, base or {}, nested)
    if preset is not None:
        presets = presets or {}
        if preset not in presets:
            raise ValueError(f"unknown preset {preset!r}; known presets: {sorted(presets)}")
        _merge(merged, presets[preset], nested)
    if config_file is not None:
        _merge(merged, load_config_file(config_file), nested)
    for k, v in (cli_values or {}).items():
        outer, _, inner = k.partition(NESTED_SEP)
        if v is None:
            continue
        if inner and outer in nested:
            _merge(merged, {outer: {inner: v}}, nested)
        elif k in fields:
            merged[k] = v
    return config_from_dict(cls, merged)


def save_config(cfg: Any, path: str | os.PathLike) -> None:
    atomic_write_json(path, config_to_dict(cfg))


def load_config(cls: type[T], path: str | os.PathLike) -> T:
    return config_from_dict(cls, load_config_file(path))


RUN_CONFIG = "config.json"  # the resolved config every training run saves in its directory


def saved_run_config(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The resolved config a run saved, or None for a new run: the ``base`` layer of ``--resume``."""
    path = Path(run_dir) / RUN_CONFIG
    return load_config_file(path) if path.is_file() else None


def check_resume_config(cfg: Any, run_dir: str | os.PathLike, may_change: tuple[str, ...]) -> None:
    """Refuse to resume ``run_dir`` with a config whose fields differ from the saved one, except the
    runtime fields in ``may_change``; the message names every differing field."""
    saved = saved_run_config(run_dir)
    if saved is None:
        return
    now = config_to_dict(cfg)
    diffs = [f"{k}: run has {saved.get(k)!r}, now {now[k]!r}" for k in now
             if k not in may_change and saved.get(k) != now[k]]
    if diffs:
        raise ValueError(f"--resume of {run_dir} with a different config: " + "; ".join(diffs))


def _click_type(tp: Any, f: dataclasses.Field) -> tuple[Any, bool, str]:
    """(click type, is_flag, metavar suffix for help)."""
    import click

    base, _ = _strip_optional(tp)
    if "choices" in f.metadata:
        return click.Choice([str(c) for c in f.metadata["choices"]]), False, ""
    origin = typing.get_origin(base)
    if origin is typing.Literal:
        return click.Choice([str(a) for a in typing.get_args(base)]), False, ""
    if origin in (list, tuple):
        return str, False, " (comma-separated)"
    if base is bool:
        return bool, True, ""
    if base in (int, float, str):
        return base, False, ""
    return str, False, ""


def _as_typed(value: Any, name: str) -> str:
    """A default as a user would type it on the command line: lists comma-separated, flags by their
    switch, nothing as "none" (not Python's ``[]``, ``['nc', 'lp']``, ``True`` or an empty string)."""
    if isinstance(value, bool):
        return field_option_name(name) if value else "--no-" + name.replace("_", "-")
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) or "none"
    if value is None or value == "":
        return "none"
    return str(value)


def preset_overrides(preset: str | None, presets: Mapping[str, Mapping[str, Any]] | None,
                     config_file: str | os.PathLike | None, cli_values: Mapping[str, Any] | None) -> list[str]:
    """Fields of ``preset`` that the config file or a command-line option replaces (the order is
    preset < file < command line), so a command can say so rather than override the preset silently."""
    if preset is None or not presets or preset not in presets:
        return []
    given = {str(k).replace("-", "_") for k in (load_config_file(config_file) if config_file else {})}
    given |= {k for k, v in (cli_values or {}).items() if v is not None}
    return sorted(k.replace("-", "_") for k in presets[preset] if k.replace("-", "_") in given)


def config_options(cls: type) -> Callable[[Callable], Callable]:
    """Decorator adding one click option per dataclass field (default None = "not given").

    Booleans become ``--name/--no-name`` flags. The help shows the dataclass default, because the
    option's own default must stay None so a config file value is not overridden silently.
    """
    import click

    hints = _resolved_hints(cls)

    nested = _nested_fields(cls)

    def add(fn: Callable, f: dataclasses.Field, tp: Any, default: Any, prefix: str = "") -> Callable:
        ctype, is_flag, suffix = _click_type(tp, f)
        default_repr = "required" if default is dataclasses.MISSING else _as_typed(default, f.name)
        if is_flag and default is not dataclasses.MISSING:
            default_repr = "--" + prefix + default_repr[2:]
        help_text = f"{f.metadata.get('help', '')}{suffix} [default: {default_repr}]".strip()
        opt = "--" + prefix + f.name.replace("_", "-")
        param = prefix.replace(".", NESTED_SEP) + f.name
        if is_flag:
            return click.option(f"{opt}/--{prefix}no-{f.name.replace('_', '-')}", param, default=None,
                                help=help_text)(fn)
        return click.option(opt, param, type=ctype, default=None, help=help_text)(fn)

    def decorator(fn: Callable) -> Callable:
        for f in reversed([f for f in dataclasses.fields(cls) if f.init]):
            if f.name in nested:  # --outer.inner for every field of the nested config, its defaults shown
                inner_default = _field_default(f)
                inner_hints = _resolved_hints(nested[f.name])
                fixed = set(f.metadata.get("fixed", ()))  # set by the composite itself: no option
                for g in reversed([g for g in dataclasses.fields(nested[f.name]) if g.init and g.name not in fixed]):
                    d = (getattr(inner_default, g.name) if inner_default is not dataclasses.MISSING
                         else _field_default(g))
                    fn = add(fn, g, inner_hints[g.name], d, prefix=f"{f.name}.")
                continue
            fn = add(fn, f, hints[f.name], _field_default(f))
        return fn

    return decorator

"""Typed configs: defaults < preset < file < CLI, type checks, YAML/TOML/JSON round trips."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal, Optional

import click
import pytest
from click.testing import CliRunner

from mlaga_fast.config import (
    config_from_dict,
    config_options,
    config_to_dict,
    load_config,
    load_config_file,
    resolve_config,
    save_config,
)


@dataclass
class Cfg:
    lr: float = field(default=1e-3, metadata={"help": "peak LR"})
    num_layers: int = 2
    name: str = "x"
    use_amp: bool = True
    tau_mode: Literal["both", "negatives_only"] = "both"
    max_steps: Optional[int] = None
    dims: list[int] = field(default_factory=lambda: [1, 2])
    device: str = field(default="auto", metadata={"choices": ("auto", "cpu", "cuda")})


PRESETS = {"big": {"num_layers": 6, "lr": 1e-4}}


def test_defaults_and_round_trip(tmp_path):
    cfg = Cfg()
    save_config(cfg, tmp_path / "c.json")
    assert load_config(Cfg, tmp_path / "c.json") == cfg
    assert config_to_dict(cfg)["dims"] == [1, 2]


@pytest.mark.parametrize("suffix", [".yaml", ".toml", ".json"])
def test_file_formats(tmp_path, suffix):
    p = tmp_path / f"c{suffix}"
    if suffix == ".yaml":
        p.write_text("lr: 0.5\nnum-layers: 4\ntau_mode: negatives_only\nmax_steps: 7\ndims: [3, 4]\n")
    elif suffix == ".toml":
        p.write_text('lr = 0.5\nnum-layers = 4\ntau_mode = "negatives_only"\nmax_steps = 7\ndims = [3, 4]\n')
    else:
        p.write_text('{"lr": 0.5, "num-layers": 4, "tau_mode": "negatives_only", "max_steps": 7, "dims": [3, 4]}')
    cfg = load_config(Cfg, p)
    assert cfg == Cfg(lr=0.5, num_layers=4, tau_mode="negatives_only", max_steps=7, dims=[3, 4])


def test_precedence(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("lr: 0.5\nname: file\n")
    cfg = resolve_config(Cfg, {"name": "cli", "lr": None, "data": "/ignored"}, config_file=p, preset="big",
                         presets=PRESETS)
    # preset gives num_layers=6 and lr=1e-4; the file overrides lr; the CLI overrides name.
    assert (cfg.num_layers, cfg.lr, cfg.name) == (6, 0.5, "cli")


def test_preset_file_cli_order_and_what_replaced_the_preset(tmp_path):
    """preset < file < CLI, whatever order the options are given in; preset_overrides names the preset
    fields that the file or the command line replaced (the `--preset paper --config FILE` surprise)."""
    from mlaga_fast.config import preset_overrides

    p = tmp_path / "c.yaml"
    p.write_text("num-layers: 1\nname: file\n")
    cli = {"lr": 0.5, "name": None}
    cfg = resolve_config(Cfg, cli, config_file=p, preset="big", presets=PRESETS)
    assert (cfg.num_layers, cfg.lr, cfg.name) == (1, 0.5, "file")
    assert preset_overrides("big", PRESETS, p, cli) == ["lr", "num_layers"]
    assert preset_overrides("big", PRESETS, None, {"name": "x"}) == []
    assert preset_overrides(None, PRESETS, p, cli) == []


def test_help_shows_defaults_as_typed():
    @dataclass
    class H:
        tasks: list[str] = field(default_factory=lambda: ["nc", "lp"])
        data: list[str] = field(default_factory=list)
        align: str = ""
        lora: bool = False
        demo: bool = True
        lr: float = 1e-3

    @click.command()
    @config_options(H)
    def cmd(**kw):
        pass

    out = " ".join(CliRunner().invoke(cmd, ["--help"]).output.split())
    for shown in ("[default: nc,lp]", "[default: none]", "[default: --no-lora]", "[default: --demo]",
                  "[default: 0.001]"):
        assert shown in out, shown
    for python_repr in ("[]", "['nc', 'lp']", "[default: ]", "False", "True"):
        assert python_repr not in out, python_repr


def test_bad_values_name_the_field(tmp_path):
    with pytest.raises(ValueError, match="num_layers"):
        config_from_dict(Cfg, {"num_layers": "two"})
    with pytest.raises(ValueError, match="num_layers"):
        config_from_dict(Cfg, {"num_layers": 2.5})
    with pytest.raises(ValueError, match="unknown config field 'nope'"):
        config_from_dict(Cfg, {"nope": 1})
    with pytest.raises(ValueError, match="tau_mode"):
        config_from_dict(Cfg, {"tau_mode": "sometimes"})
    with pytest.raises(ValueError, match="device"):
        config_from_dict(Cfg, {"device": "tpu"})
    with pytest.raises(ValueError, match=r"dims\[1\]"):
        config_from_dict(Cfg, {"dims": [1, "b"]})
    with pytest.raises(ValueError, match="unknown preset"):
        resolve_config(Cfg, {}, preset="nope", presets=PRESETS)
    bad = tmp_path / "c.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="top level must be a mapping"):
        load_config_file(bad)
    ini = tmp_path / "c.ini"
    ini.write_text("")
    with pytest.raises(ValueError, match="unknown format"):
        load_config_file(ini)
    with pytest.raises(ValueError, match="not found"):
        load_config_file(tmp_path / "missing.yaml")


def test_click_options(tmp_path):
    seen = {}

    @click.command()
    @click.option("--config", type=click.Path())
    @config_options(Cfg)
    def cmd(config, **kw):
        seen["cfg"] = resolve_config(Cfg, kw, config_file=config)

    p = tmp_path / "c.toml"
    p.write_text("num_layers = 9\nuse_amp = true\n")
    r = CliRunner().invoke(cmd, ["--config", str(p), "--lr", "0.25", "--no-use-amp", "--dims", "5,6",
                                 "--tau-mode", "negatives_only", "--max-steps", "3"])
    assert r.exit_code == 0, r.output
    assert seen["cfg"] == Cfg(lr=0.25, num_layers=9, use_amp=False, dims=[5, 6], tau_mode="negatives_only",
                              max_steps=3)
    r = CliRunner().invoke(cmd, ["--help"])
    assert "--cross" not in r.output and "--num-layers" in r.output and "peak LR" in r.output
    r = CliRunner().invoke(cmd, ["--device", "tpu"])
    assert r.exit_code != 0


@dataclass
class Outer:
    seed: int = 0
    stage: Cfg = field(default_factory=lambda: Cfg(lr=0.5, num_layers=4))  # the composite's own defaults


def test_nested_configs_keep_their_own_field_names_at_every_layer(tmp_path):
    """A nested config is one more table: each layer (its default instance, preset, file, CLI) updates only the
    fields it names, and the CLI spells them --outer.inner."""
    seen = {}

    @click.command()
    @click.option("--config", type=click.Path())
    @config_options(Outer)
    def cmd(config, **kw):
        seen["cfg"] = resolve_config(Outer, kw, config_file=config, preset="p",
                                     presets={"p": {"stage": {"name": "preset", "dims": [7]}}})

    p = tmp_path / "c.toml"
    p.write_text("seed = 3\n[stage]\nnum-layers = 9\nuse_amp = false\n")
    r = CliRunner().invoke(cmd, ["--config", str(p), "--stage.lr", "0.25", "--stage.use-amp"])
    assert r.exit_code == 0, r.output
    assert seen["cfg"] == Outer(seed=3, stage=Cfg(lr=0.25, num_layers=9, name="preset", use_amp=True, dims=[7]))
    assert resolve_config(Outer, {}) == Outer()  # the nested default instance, not Cfg()'s defaults
    assert config_from_dict(Outer, config_to_dict(Outer())) == Outer()
    help_text = CliRunner().invoke(cmd, ["--help"]).output
    assert "--stage.lr" in help_text and "[default: 0.5]" in help_text and "--stage.no-use-amp" in help_text
    with pytest.raises(ValueError, match="unknown config field 'stage.banana'"):
        resolve_config(Outer, {}, base={"stage": {"banana": 1}})


def test_the_demo_holds_each_stage_config_and_refuses_what_it_sets_itself(tmp_path):
    """DemoConfig nests the stages' own configs (their field names, the demo's defaults); the fields the demo sets
    for every run have no option and are refused from a file."""
    from mlaga_fast.cli.main import cli
    from mlaga_fast.demo.config import PRESETS, DemoConfig, check_demo_config
    from mlaga_fast.demo.pipeline import run_demo
    from mlaga_fast.train.align_config import AlignConfig

    fast = resolve_config(DemoConfig, {"instruct__lr": 0.5}, preset="fast", presets=PRESETS)
    assert isinstance(fast.align, AlignConfig) and fast.align.epochs == 2 and fast.align.dim == 128
    assert fast.instruct.lr == 0.5 and fast.instruct.warmup_examples == 32 and fast.instruct.lora
    help_text = CliRunner().invoke(cli, ["demo", "--help"]).output
    assert "--instruct.nc-per-dataset" in help_text and "--align.dim" in help_text
    options = set(re.findall(r"--[\w.-]+", help_text))
    assert not {"--instruct.seed", "--instruct.data", "--instruct.tasks", "--align.seed"} & options
    p = tmp_path / "demo.toml"
    p.write_text("[instruct]\nseed = 5\n")
    cfg = resolve_config(DemoConfig, {}, config_file=p)
    with pytest.raises(ValueError, match="instruct.seed: the demo sets it"):
        check_demo_config(cfg)
    with pytest.raises(ValueError, match="instruct.seed"):
        run_demo(cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists()

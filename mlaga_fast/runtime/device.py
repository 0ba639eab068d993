"""Which torch device a command runs on: one spelling for every command and the Python API."""
from __future__ import annotations

import torch

__all__ = ["pick_device"]


def pick_device(device: str | int = "auto", local_rank: int = 0) -> torch.device:
    """"auto" = the local rank's GPU when CUDA is available, else CPU. Otherwise what torch.device
    accepts for a CPU or CUDA device: "cpu", "cpu:0", "cuda", "cuda:1", or a bare GPU index (1 or "1");
    a CUDA device fails clearly when there is none, and other device types are refused."""
    if device == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    spec = int(device) if isinstance(device, str) and device.strip().isdigit() else device  # "1" = cuda:1
    try:
        dev = torch.device(spec)
    except (RuntimeError, TypeError):
        raise ValueError(f"device: {device!r} is not a device; use auto, cpu, cuda, cuda:N or N") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device: {dev.type!r} devices are not supported; use auto, cpu, cuda, cuda:N or N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available")
        if dev.index is None:
            dev = torch.device(f"cuda:{local_rank}")
        elif dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev

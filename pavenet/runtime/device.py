"""The device a command runs on, and its mixed-precision context."""
from __future__ import annotations

import contextlib

import torch

from pavenet.errors import PavenetError


class DeviceError(PavenetError, ValueError):
    """A device that is not a device name or is not present on this machine."""


def pick_device(name: str | None = None) -> torch.device:
    """``None``/"auto": CUDA when available, else CPU."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"--device {name}: not a device (cpu, cuda, cuda:N, mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"--device {name}: MPS is not available on this machine (use --device cpu)")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"--device {name}: pavenet runs on cpu, cuda or mps")
    return device


def autocast_context(device: torch.device, amp: bool):
    """bf16 autocast on CUDA when ``amp``; float32 elsewhere."""
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()

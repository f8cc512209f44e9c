"""Timing and FLOP helpers for the benchmarks.

:func:`time_callable` runs warm-up calls, then times repeats with a wall clock (injectable, so
tests use a fake clock), synchronising CUDA before each clock read; :class:`Timing` gives the
median and p90 in milliseconds. :func:`count_flops` counts FLOPs with
``torch.utils.flop_counter.FlopCounterMode``: matrix products, convolutions and attention (the
ops it knows); element-wise ops, ``grid_sample`` (deformable attention sampling) and
``roi_align`` are not counted, so the counts are lower bounds of the arithmetic done.

Device peaks (:data:`PEAK_FLOPS`) are NVIDIA's datasheet figures: H100 SXM and H200, bf16
dense tensor core 989 TFLOP/s, fp32 (non-tensor) 67 TFLOP/s. For float32 the fraction is taken
against the non-tensor fp32 peak; note that cuDNN convolutions may use TF32 tensor cores
(``torch.backends.cudnn.allow_tf32``, on by default), so that fraction can look high. Other
devices, the CPU included, get FLOP/s only and no fraction.
"""
from __future__ import annotations

import contextlib
import math
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
from torch.utils.flop_counter import FlopCounterMode

#: (device-name substring, {dtype name: peak FLOP/s}); NVIDIA datasheet figures, dense.
PEAK_FLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    ("H200", {"bfloat16": 989e12, "float32": 67e12}),
    ("H100", {"bfloat16": 989e12, "float32": 67e12}),
)
#: Name parts of H100 variants whose peaks differ from the SXM figures above.
OTHER_VARIANTS = ("PCIe", "NVL")


@dataclass
class Timing:
    """Wall times of the timed repeats, in milliseconds."""

    times_ms: list[float]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms)

    @property
    def p90_ms(self) -> float:
        """Nearest-rank 90th percentile (the slowest time for fewer than 10 repeats)."""
        ordered = sorted(self.times_ms)
        return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


def device_sync(device: torch.device | str) -> Callable[[], None]:
    """A function that waits for the device's queued work (a no-op off CUDA)."""
    device = torch.device(device)
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def time_callable(fn: Callable[[], object], warmup: int = 1, repeats: int = 5,
                  sync: Callable[[], None] = lambda: None,
                  timer: Callable[[], float] = time.perf_counter) -> Timing:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times timed (``sync`` before each
    clock read, so queued device work is included)."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = timer()
        fn()
        sync()
        times.append((timer() - start) * 1e3)
    return Timing(times)


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of ``fn`` (a multiply-add counts 2), see the module doc."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or device.type


def peak_flops(name: str, dtype: str) -> Optional[float]:
    """Datasheet peak FLOP/s of a device name for ``dtype`` ('float32' / 'bfloat16'), or None."""
    if any(part in name for part in OTHER_VARIANTS):
        return None
    for key, peaks in PEAK_FLOPS:
        if key in name:
            return peaks.get(dtype)
    return None


def achieved(flops: int, seconds: float, peak: Optional[float]) -> tuple[float, Optional[float]]:
    """(achieved FLOP/s, fraction of ``peak`` or None when the peak is unknown)."""
    rate = flops / seconds if seconds > 0 else 0.0
    return rate, (rate / peak if peak else None)

"""How many intra-op threads to run, from the cores this process may actually use.

PyTorch starts one OpenMP thread per core it sees. On a small machine that other programs keep
busy, those threads spin-wait for each other while the cores are taken, and a training step
gets several times slower than on one thread (measured in ``pavenet bench threads``).
So pavenet's commands pick the thread count from

* the cores the process may run on (CPU affinity) and its cgroup CPU quota (containers), shared
  among the processes torchrun starts on the machine, less
* the cores that other programs keep busy when the command starts (two ``/proc/stat`` samples,
  Linux; elsewhere the 1-minute load average),

and make OpenMP waiting passive (``OMP_WAIT_POLICY=PASSIVE``: a waiting thread sleeps instead
of spinning) when other programs use the cores. ``--threads N`` (and ``threads=`` in the Python
API) overrides the choice. The wait policy is read once, when PyTorch loads OpenMP, so it is set
by the command line before anything imports torch; a Python program sets it in its environment.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Optional

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def allowed_cpus() -> set[int]:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def cgroup_quota(path: Path = CGROUP_CPU_MAX) -> Optional[float]:
    """CPUs granted by the cgroup v2 quota (``quota period``), None when unlimited or unknown."""
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return int(quota) / int(period)


def usable_cores() -> int:
    """Cores this process may use: its CPU affinity, bounded by the cgroup quota, shared with
    the other processes torchrun starts on this machine (``LOCAL_WORLD_SIZE``)."""
    cores = len(allowed_cpus())
    quota = cgroup_quota()
    cores = min(cores, math.floor(quota)) if quota else cores
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, cores // max(1, local))


def _cpu_times(cpus: set[int], stat: Path) -> tuple[float, float]:
    """(busy, total) jiffies summed over ``cpus`` from a /proc/stat text."""
    busy = total = 0.0
    for line in stat.read_text().splitlines():
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
            continue
        values = [float(v) for v in fields[:8]]
        idle = values[3] + values[4]  # idle + iowait
        total += sum(values)
        busy += sum(values) - idle
    return busy, total


def busy_cores(seconds: float = 0.25, stat: Path = Path("/proc/stat")) -> float:
    """Cores kept busy by other programs right now (this process sleeps while it samples)."""
    cpus = allowed_cpus()
    try:
        busy0, total0 = _cpu_times(cpus, stat)
        time.sleep(seconds)
        busy1, total1 = _cpu_times(cpus, stat)
    except (OSError, ValueError):
        return min(float(len(cpus)), os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0.0
    if total1 <= total0:
        return 0.0
    return len(cpus) * (busy1 - busy0) / (total1 - total0)


def choose_threads(requested: Optional[int] = None, busy: Optional[float] = None) -> int:
    """The intra-op thread count: ``requested`` if given, else the usable cores that other
    programs leave free (at least one). ``busy`` (cores in use) is measured when not given."""
    if requested is not None:
        if requested < 1:
            raise ValueError(f"the number of threads must be >= 1, got {requested}")
        return requested
    usable = usable_cores()
    taken = busy_cores() if busy is None else busy
    return max(1, min(usable, round(usable - taken)))


def prefer_passive_waiting(busy: float) -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` when other programs keep a core busy (unless the user
    chose a policy); returns whether it is set. Effective only before torch is imported."""
    if "OMP_WAIT_POLICY" in os.environ:
        return os.environ["OMP_WAIT_POLICY"].upper() == "PASSIVE"
    if busy >= 0.5:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        return True
    return False

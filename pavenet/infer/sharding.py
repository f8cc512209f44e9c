"""Spreading inference inputs over the processes ``torchrun`` starts, and gathering the results.

``torchrun --nproc_per_node N -m pavenet predict ...`` (or ``pavenet test``): every process
reads the same input list; item ``i`` is processed by rank ``i % world_size`` only
(:func:`shard`), so each input is predicted once, by the same code as in a single process, and
its outputs are the same. :func:`gather` collects every rank's picklable results on all ranks
(``torch.distributed.all_gather_object``; gloo on CPUs, NCCL on GPUs); in a single process it
returns ``[obj]``.
"""
from __future__ import annotations

from typing import Any, Sequence, TypeVar

import torch.distributed as dist

from pavenet.runtime.distributed import is_dist

Item = TypeVar("Item")


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside a process group."""
    if is_dist():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard(items: Sequence[Item], rank: int, world_size: int) -> list[Item]:
    """The items of ``rank``: those at positions ``i`` with ``i % world_size == rank``."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside a world of {world_size} processes")
    return [item for i, item in enumerate(items) if i % world_size == rank]


def gather(obj: Any) -> list[Any]:
    """``obj`` of every rank, in rank order (on every rank)."""
    if not is_dist():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def unshard(parts: Sequence[Sequence[Item]]) -> list[Item]:
    """Put the shards of :func:`shard` (``parts[rank]``) back into the original order."""
    world = len(parts)
    total = sum(len(p) for p in parts)
    return [parts[i % world][i // world] for i in range(total)]

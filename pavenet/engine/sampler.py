"""A resumable, distributed-aware sampler and per-sample seeding.

Resuming mid-epoch must reproduce exactly the batches an uninterrupted run would have seen:
the order is a permutation drawn from ``(seed, epoch)``, each rank takes a strided slice of
it, and the sampler can start at any position. Augmentation randomness is drawn from
generators seeded by ``(seed, epoch, index)`` (:class:`SeededDataset`), so it does not depend
on which worker process loads a sample.
"""
from __future__ import annotations

import random
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, get_worker_info


class ResumableSampler(Sampler[int]):
    """Shuffled (or sequential) indices for one rank; ``set_epoch`` and ``set_start`` control it."""

    def __init__(self, length: int, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1):
        self.length = length
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def set_start(self, start: int) -> None:
        """Skip the first ``start`` indices of this rank's share (resume mid-epoch)."""
        self.start = start

    def _order(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.length, generator=g).tolist()
        else:
            order = list(range(self.length))
        per_rank = -(-self.length // self.world_size)
        order = order + order[: per_rank * self.world_size - self.length]
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self._order()[self.start :])

    def __len__(self) -> int:
        return -(-self.length // self.world_size) - self.start


class SeededDataset(Dataset):
    """Wraps a dataset so each item's randomness is seeded by (seed, epoch, index)."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset = dataset
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        s = (self.seed * 1_000_003 + self.epoch) * 10_000_019 + index
        in_main = get_worker_info() is None
        saved = (random.getstate(), np.random.get_state()) if in_main else None
        with torch.random.fork_rng(devices=[], enabled=in_main):
            random.seed(s)
            np.random.seed(s % (2**32))
            torch.manual_seed(s)
            item = self.dataset[index]
        if saved is not None:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
        return item

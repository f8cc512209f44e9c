"""Which frames make up the window (clip) of each key frame, in batch and streaming form.

Every frame of a video is the key frame of exactly one window of ``size`` (odd) frames centred
on it. Near the ends of the video the missing neighbours are replaced by the edge frame, so
window ``k`` of an ``n``-frame video holds frames ``clip(k + o, 0, n - 1)`` for
``o = -size//2 .. size//2``.

:class:`SlidingWindows` produces the same windows from a stream of per-frame items (decoded
frames or cached encoder memories) while holding at most ``size`` items, so memory does not grow
with the length of the video.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Generic, Sequence, TypeVar

Item = TypeVar("Item")


def _check_size(size: int) -> int:
    if size < 1 or size % 2 == 0:
        raise ValueError(f"window size must be a positive odd number, got {size}")
    return size // 2


def window_frames(key: int, num_frames: int, size: int) -> list[int]:
    """Frame index of every slot of the window centred on ``key`` (edge frames repeated)."""
    half = _check_size(size)
    if not 0 <= key < num_frames:
        raise ValueError(f"key frame {key} outside a video of {num_frames} frames")
    return [min(max(key + o, 0), num_frames - 1) for o in range(-half, half + 1)]


def shared_slots(frames_a: Sequence[int], frames_b: Sequence[int]) -> list[tuple[int, int]]:
    """Pairs ``(slot_a, slot_b)`` showing the same frame in two windows, one per shared frame.

    A frame repeated at a video end occupies several slots; the slot nearest the window's centre
    is used. Pairs are ordered by frame index.
    """

    def best_slots(frames: Sequence[int]) -> dict[int, int]:
        centre = (len(frames) - 1) / 2
        best: dict[int, int] = {}
        for slot, frame in enumerate(frames):
            if frame not in best or abs(slot - centre) < abs(best[frame] - centre):
                best[frame] = slot
        return best

    a, b = best_slots(frames_a), best_slots(frames_b)
    return [(a[f], b[f]) for f in sorted(a.keys() & b.keys())]


@dataclass(frozen=True)
class Window(Generic[Item]):
    """One window: its key frame, the frame index of each slot and the item of each slot."""

    key: int
    frames: tuple[int, ...]
    items: tuple[Item, ...]


class SlidingWindows(Generic[Item]):
    """Build windows from a stream of per-frame items while holding at most ``size`` of them.

    ``push(item)`` adds the next frame's item and returns the windows that became complete
    (at most one); ``finish()`` ends the stream and returns the remaining windows, whose
    missing future neighbours are replaced by the last frame. Concatenated, the windows are
    exactly ``window_frames(k, n, size)`` for ``k = 0 .. n-1``.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.half = _check_size(size)
        self._buffer: deque[tuple[int, Item]] = deque(maxlen=size)
        self._count = 0
        self._next_key = 0
        self._finished = False

    def __len__(self) -> int:
        """Number of items currently held."""
        return len(self._buffer)

    def push(self, item: Item) -> list[Window[Item]]:
        """Add the item of the next frame; return the window that became complete, if any."""
        if self._finished:
            raise RuntimeError("push() after finish()")
        self._buffer.append((self._count, item))
        self._count += 1
        if self._count - 1 - self.half < self._next_key:
            return []
        return [self._emit(self._count - 1)]

    def finish(self) -> list[Window[Item]]:
        """End the stream; return the windows of the last key frames (edge frame repeated)."""
        self._finished = True
        out = []
        while self._next_key < self._count:
            out.append(self._emit(self._count - 1))
        return out

    def _emit(self, last: int) -> Window[Item]:
        key = self._next_key
        held = dict(self._buffer)
        frames = tuple(min(max(key + o, 0), last) for o in range(-self.half, self.half + 1))
        self._next_key += 1
        return Window(key=key, frames=frames, items=tuple(held[f] for f in frames))

"""Which frames make up the window (clip) of each key frame, in batch and streaming form.

Every frame of a video is the key frame of exactly one window of ``size`` (odd) frames centred
on it: slot ``i`` of the window of key frame ``k`` shows frame ``k + (i - size//2) * stride``.
A slot that falls outside the video shows the key frame itself, the rule the training clips
follow (:func:`pavenet.data.clips.clip_indices`), so the model sees at the ends of a video what
it saw in training.

:class:`SlidingWindows` produces the same windows from a stream of per-frame items (decoded
frames or cached encoder memories) while holding at most ``(size - 1) * stride + 1`` items, so
memory does not grow with the length of the video.

Causal windows (live input): the window of frame ``k`` is built as soon as frame ``k`` is in,
as if the video ended at ``k``: the future slots show ``k`` itself (the rule above for the last
frame of a video). A frame's result then waits for no later frame (latency 0 frames instead of
``size // 2 * stride``).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Generic, Sequence, TypeVar

Item = TypeVar("Item")


def _check(size: int, stride: int) -> int:
    if size < 1 or size % 2 == 0:
        raise ValueError(f"window size must be a positive odd number, got {size}")
    if stride < 1:
        raise ValueError(f"window stride must be >= 1, got {stride}")
    return size // 2


def _slots(key: int, last: int, half: int, stride: int) -> tuple[int, ...]:
    """Frames of the window of ``key`` in a video whose last frame is ``last``."""
    frames = (key + o * stride for o in range(-half, half + 1))
    return tuple(f if 0 <= f <= last else key for f in frames)


def window_frames(key: int, num_frames: int, size: int, stride: int = 1) -> list[int]:
    """Frame index of every slot of the window centred on ``key`` (the key frame stands in for
    frames outside the video)."""
    half = _check(size, stride)
    if not 0 <= key < num_frames:
        raise ValueError(f"key frame {key} outside a video of {num_frames} frames")
    return list(_slots(key, num_frames - 1, half, stride))


def causal_window_frames(key: int, size: int, stride: int = 1) -> list[int]:
    """Frame index of every slot of the causal window of ``key``: past slots as in
    :func:`window_frames`, future slots show ``key``."""
    return window_frames(key, key + 1, size, stride)


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
    """Build windows from a stream of per-frame items, holding at most ``(size-1)*stride + 1``.

    ``push(item)`` adds the next frame's item and returns the windows that became complete
    (at most one); ``finish()`` ends the stream and returns the remaining windows. Concatenated,
    the windows are exactly ``window_frames(k, n, size, stride)`` for ``k = 0 .. n-1``; with
    ``causal=True``, ``push`` returns the window of the frame just pushed,
    ``causal_window_frames(k, size, stride)``, and ``finish`` returns none.
    """

    def __init__(self, size: int, stride: int = 1, causal: bool = False) -> None:
        self.half = _check(size, stride)
        self.size, self.stride, self.causal = size, stride, causal
        self._reach = self.half * stride
        self._buffer: deque[tuple[int, Item]] = deque(maxlen=(1 if causal else 2) * self._reach + 1)
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
        if not self.causal and self._count - 1 - self._reach < self._next_key:
            return []
        return [self._emit(self._count - 1)]

    def finish(self) -> list[Window[Item]]:
        """End the stream; return the windows of the last key frames."""
        self._finished = True
        out = []
        while self._next_key < self._count:
            out.append(self._emit(self._count - 1))
        return out

    def _emit(self, last: int) -> Window[Item]:
        key = self._next_key
        held = dict(self._buffer)
        frames = _slots(key, last, self.half, self.stride)
        self._next_key += 1
        return Window(key=key, frames=frames, items=tuple(held[f] for f in frames))

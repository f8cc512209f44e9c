"""Optional temporal smoothing of tracked keypoints with the One-Euro filter.

The One-Euro filter (Casiez, Roussel and Vogel, CHI 2012) is a first-order low-pass filter whose
cut-off frequency grows with the signal's speed: ``fc = min_cutoff + beta * |dx/dt|``, so slow
movements are smoothed strongly (less jitter) and fast ones weakly (less lag). Each coordinate
of each joint of each track is filtered on its own; the speed estimate is itself low-passed with
``derivative_cutoff``. Per-joint scores pass through unchanged. Off by default.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class SmoothingConfig:
    """One-Euro parameters; cut-offs in Hz, ``beta`` in 1 / pixel (keypoints are in pixels)."""

    enabled: bool = False
    min_cutoff: float = 1.0
    beta: float = 0.05
    derivative_cutoff: float = 1.0
    forget_after: int = 30


def smoothing_factor(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    """Exponential smoothing factor of a first-order low-pass with ``cutoff`` Hz at step ``dt`` s."""
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff))
    return 1.0 / (1.0 + tau / dt)


@dataclass
class _State:
    value: np.ndarray
    speed: np.ndarray
    frame: int


class KeypointSmoother:
    """Smooth (J, 3) keypoints per track id over frames of a video shown at ``fps``.

    ``smooth(frame, track_ids, keypoints)`` returns filtered copies. A track not seen for more
    than ``forget_after`` frames restarts from its raw keypoints; untracked people (id < 0) are
    returned unchanged.
    """

    def __init__(self, cfg: SmoothingConfig, fps: float) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.cfg = cfg
        self.fps = float(fps)
        self._states: dict[int, _State] = {}

    def _filter(self, state: _State, x: np.ndarray, frame: int) -> np.ndarray:
        dt = (frame - state.frame) / self.fps
        alpha_d = smoothing_factor(self.cfg.derivative_cutoff, dt)
        speed = alpha_d * (x - state.value) / dt + (1.0 - alpha_d) * state.speed
        cutoff = self.cfg.min_cutoff + self.cfg.beta * np.abs(speed)
        alpha = smoothing_factor(cutoff, dt)
        value = alpha * x + (1.0 - alpha) * state.value
        state.value, state.speed, state.frame = value, speed, frame
        return value

    def smooth(self, frame: int, track_ids: list[int], keypoints: np.ndarray) -> np.ndarray:
        """Filter the (N, J, 3) keypoints of the people of ``frame`` (frames must increase)."""
        keypoints = np.asarray(keypoints, dtype=np.float64)
        out = keypoints.copy()
        self._states = {i: s for i, s in self._states.items() if frame - s.frame <= self.cfg.forget_after}
        for n, track_id in enumerate(track_ids):
            if track_id < 0:
                continue
            xy = keypoints[n, :, :2]
            state = self._states.get(track_id)
            if state is None:
                self._states[track_id] = _State(xy.copy(), np.zeros_like(xy), frame)
                continue
            if frame <= state.frame:
                raise ValueError(f"track {track_id}: frame {frame} is not after frame {state.frame}")
            out[n, :, :2] = self._filter(state, xy, frame)
        return out

"""The temporal split: single frames degraded while their neighbours stay clean.

A frame of a ``temporal`` video is degraded with probability :data:`DEGRADE_PROBABILITY`, never
the first or the last frame and never two frames in a row, so both neighbours of a degraded
frame are clean. Its people stay annotated at their true positions (the annotation is that of
the clean frame): only a model that reads the neighbouring frames can recover them. The kinds:

* ``motion``: a strong box blur (15-25 px) along one image axis;
* ``defocus``: a Gaussian blur of radius 5-9 px over the whole frame;
* ``noise``: Gaussian pixel noise with a standard deviation of 50-80 grey levels;
* ``occluder``: opaque grey blocks over about half of every person's annotated joints;
* ``dropped``: the frame is lost: black, or the previous frame repeated (a stalled stream).

The degradations draw from their own random stream, so the clean frames and every annotation
of a ``temporal`` video are those of the ``easy`` video of the same seed. The image entry of a
degraded frame carries ``"degradation": KIND`` (other readers ignore the field).
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from pavenet.data.synthetic_scene import motion_blur

DEGRADE_PROBABILITY = 0.3
KINDS = ("motion", "defocus", "noise", "occluder", "dropped")


def degraded_frames(num_frames: int, rng: np.random.Generator) -> dict[int, str]:
    """Frame index -> degradation kind: interior frames, no two in a row."""
    chosen: dict[int, str] = {}
    for t in range(1, num_frames - 1):
        if t - 1 not in chosen and rng.uniform() < DEGRADE_PROBABILITY:
            chosen[t] = KINDS[int(rng.integers(len(KINDS)))]
    return chosen


def _occlude(frame: np.ndarray, joints: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Grey blocks (a tenth of the frame's short side) centred on half of each person's joints."""
    out = frame.copy()
    h, w = frame.shape[:2]
    half = max(2, min(h, w) // 20)
    for xy in joints:
        for x, y in xy[rng.uniform(size=len(xy)) < 0.5]:
            x0, y0 = int(round(x)) - half, int(round(y)) - half
            out[max(y0, 0):max(y0 + 2 * half, 0), max(x0, 0):max(x0 + 2 * half, 0)] = 128
    return out


def degrade(frame: np.ndarray, previous: np.ndarray, kind: str, joints: list[np.ndarray],
            rng: np.random.Generator) -> np.ndarray:
    """``frame`` (H, W, 3) uint8 degraded by ``kind``; ``joints``: each person's annotated
    joints (N, 2) in pixels, ``previous`` the clean frame before it."""
    if kind == "motion":
        return motion_blur(frame, int(rng.integers(15, 26)), int(rng.integers(0, 2)))
    if kind == "defocus":
        blurred = Image.fromarray(frame).filter(ImageFilter.GaussianBlur(rng.uniform(5.0, 9.0)))
        return np.asarray(blurred)
    if kind == "noise":
        noisy = frame + rng.normal(0.0, rng.uniform(50.0, 80.0), frame.shape)
        return np.clip(np.round(noisy), 0, 255).astype(np.uint8)
    if kind == "occluder":
        return _occlude(frame, joints, rng)
    if kind == "dropped":
        return np.zeros_like(frame) if rng.uniform() < 0.5 else previous.copy()
    raise ValueError(f"unknown degradation {kind!r}, expected one of {', '.join(KINDS)}")


def degrade_video(frames: list[np.ndarray], joints: list[list[np.ndarray]], images: list[dict],
                  seed: int) -> list[np.ndarray]:
    """The frames of a clean video with single frames degraded (see the module doc); marks the
    degraded frames' ``images`` entries. ``joints[t]``: the annotated joints of frame t's people."""
    rng = np.random.default_rng([seed, 7])
    out = list(frames)
    for t, kind in degraded_frames(len(frames), rng).items():
        out[t] = degrade(frames[t], frames[t - 1], kind, joints[t], rng)
        images[t]["degradation"] = kind
    return out

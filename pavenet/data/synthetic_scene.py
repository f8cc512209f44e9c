"""Random scene pieces for the synthetic generator: backgrounds, figures, occluders, blur.

Every function takes a ``numpy.random.Generator`` and is deterministic given its state.
"""
from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from scipy.ndimage import uniform_filter1d

from pavenet.data.synthetic_figures import Figure

#: Bone lengths as fractions of the figure height: torso, head, hip and shoulder half-widths,
#: upper arm, forearm, thigh, shin.
BONES = np.array([0.30, 0.14, 0.075, 0.115, 0.17, 0.15, 0.235, 0.235])
#: Standing height (head top to ankles) as a fraction of ``Figure.height``.
STANDING = BONES[0] + BONES[1] + BONES[6] + BONES[7]
SKINS = ((241, 194, 160), (224, 172, 105), (198, 134, 66), (141, 85, 36), (255, 219, 172))
HAIRS = ((40, 30, 20), (90, 60, 30), (20, 20, 20), (170, 130, 70), (120, 120, 120))
PAN = 24  # background margin (pixels) the camera pans within


def _colour(rng: np.random.Generator, sat: tuple[float, float], val: tuple[float, float]) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(*sat), rng.uniform(*val))
    return int(r * 255), int(g * 255), int(b * 255)


def background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """(H + 2 PAN, W + 2 PAN, 3) uint8 textured background: smooth colour field, a pattern, grain."""
    h, w = height + 2 * PAN, width + 2 * PAN
    low = rng.uniform(40, 200, size=(4, 4, 3)).astype(np.uint8)
    base = np.asarray(Image.fromarray(low).resize((w, h), Image.BICUBIC), np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    kind = int(rng.integers(0, 3))
    if kind == 0:
        ang, period = rng.uniform(0, math.pi), rng.uniform(8, 40)
        pat = np.sin((xx * math.cos(ang) + yy * math.sin(ang)) * 2 * math.pi / period)[..., None]
    elif kind == 1:
        cell = rng.uniform(10, 40)
        pat = ((np.floor(xx / cell) + np.floor(yy / cell)) % 2 * 2 - 1)[..., None]
    else:
        img = Image.new("L", (w, h), 128)
        d = ImageDraw.Draw(img)
        for _ in range(30):
            cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(5, 0.15 * w)
            d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=int(rng.integers(0, 256)))
        pat = (np.asarray(img, np.float32)[..., None] - 128) / 128
    tint = rng.uniform(-1, 1, size=3).astype(np.float32)
    base = 0.5 * base + 0.5 * base.mean(axis=2, keepdims=True)
    out = base + 30 * pat * tint + rng.normal(0, 6, size=(h, w, 3)).astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


def _texture(rng: np.random.Generator, width: int, height: int, colour: tuple[int, int, int]) -> Image.Image:
    """Frame-sized clothing texture: stripes or checks of ``colour`` and a second colour."""
    other = np.array(_colour(rng, (0.2, 0.9), (0.3, 1.0)), np.float32)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    period = rng.uniform(4, 12)
    if rng.uniform() < 0.5:
        ang = rng.uniform(0, math.pi)
        sel = (np.floor((xx * math.cos(ang) + yy * math.sin(ang)) / period) % 2)[..., None]
    else:
        sel = ((np.floor(xx / period) + np.floor(yy / period)) % 2)[..., None]
    mix = 0.25 * sel * (other - np.array(colour, np.float32))
    return Image.fromarray(np.clip(np.array(colour, np.float32) + mix, 0, 255).astype(np.uint8))


def sample_figure(rng: np.random.Generator, width: int, height: int, hard: bool) -> Figure:
    """A random person: size, body proportions, trajectory, motion and clothing."""
    fig_h = height * rng.uniform(0.35, 0.70) / STANDING
    above, below = (BONES[0] + BONES[1]) * fig_h, (BONES[6] + BONES[7]) * fig_h
    y0, y1 = above + 0.01 * height, height - below - 0.01 * height
    if y0 > y1:
        y0 = y1 = 0.5 * (y0 + y1)
    bounds = (0.12 * width, 0.88 * width, y0, y1)
    sign = 1.0 if rng.uniform() < 0.5 else -1.0
    shirt = _colour(rng, (0.4, 1.0), (0.35, 1.0))
    yaw_mean = rng.uniform(-1.0, 1.0) if hard else rng.uniform(-0.4, 0.4)
    return Figure(
        height=fig_h,
        bones=BONES * rng.uniform(0.9, 1.1, size=BONES.shape),
        start=(rng.uniform(bounds[0], bounds[1]), rng.uniform(y0, y1)),
        velocity=(sign * rng.uniform(0.003, 0.016) * width, rng.uniform(-0.002, 0.002) * height),
        bounds=bounds,
        yaw=(yaw_mean, rng.uniform(0, 0.9 if hard else 0.5), rng.uniform(0.02, 0.08), rng.uniform(0, 2 * math.pi)),
        walk=(rng.uniform(0.15, 0.5), rng.uniform(0.15, 0.35), rng.uniform(0, 2 * math.pi)),
        arm_mode=str(rng.choice(["swing", "swing", "wave_left", "wave_right", "jacks"])),
        arm=(rng.uniform(0.15, 0.35), rng.uniform(0, 2 * math.pi)),
        shirt=shirt,
        trousers=_colour(rng, (0.3, 0.9), (0.2, 0.8)),
        skin=SKINS[int(rng.integers(len(SKINS)))],
        hair=HAIRS[int(rng.integers(len(HAIRS)))],
        texture=_texture(rng, width, height, shirt),
    )


@dataclass
class Occluder:
    """An object passing in front of the people (``hard`` only)."""

    box: tuple[float, float]  # width, height in pixels
    start: tuple[float, float]
    velocity: tuple[float, float]
    colour: tuple[int, int, int]
    round: bool

    def draw(self, image: Image.Image, label: Image.Image, t: int, value: int) -> None:
        """Draw the occluder at frame ``t`` onto the image and (with ``value``) the label map."""
        cx, cy = self.start[0] + self.velocity[0] * t, self.start[1] + self.velocity[1] * t
        xy = [cx - self.box[0] / 2, cy - self.box[1] / 2, cx + self.box[0] / 2, cy + self.box[1] / 2]
        for d, fill in ((ImageDraw.Draw(image), self.colour), (ImageDraw.Draw(label), value)):
            (d.ellipse if self.round else d.rectangle)(xy, fill=fill)


def sample_occluder(rng: np.random.Generator, width: int, height: int, num_frames: int) -> Occluder:
    """A pole, box or ball crossing the frame during the video."""
    kind = int(rng.integers(0, 3))
    box = [(0.06 * width, 1.2 * height), (0.25 * width, 0.3 * height), (0.18 * width, 0.18 * width)][kind]
    sign = 1.0 if rng.uniform() < 0.5 else -1.0
    x0 = -box[0] if sign > 0 else width + box[0]
    speed = (width + 2 * box[0]) / max(num_frames * rng.uniform(0.4, 1.0), 1)
    start_t = rng.uniform(0, max(num_frames * 0.5, 1))
    return Occluder(box=box, start=(x0 - sign * speed * start_t, rng.uniform(0.3, 0.8) * height),
                    velocity=(sign * speed, 0.0), colour=_colour(rng, (0.0, 0.6), (0.2, 0.9)), round=kind == 2)


def motion_blur(frame: np.ndarray, length: int, axis: int) -> np.ndarray:
    """Box blur of ``length`` pixels along image ``axis`` (0 vertical, 1 horizontal)."""
    return uniform_filter1d(frame, size=length, axis=axis, mode="nearest")


def blur_region(image: Image.Image, mask: Image.Image, radius: float) -> Image.Image:
    """``image`` with a Gaussian blur of ``radius`` pasted through a (dilated) ``mask``."""
    blurred = image.filter(ImageFilter.GaussianBlur(radius))
    grown = mask.filter(ImageFilter.MaxFilter(5))
    out = image.copy()
    out.paste(blurred, (0, 0), grown)
    return out

"""Clip augmentation: parameters drawn once per clip and applied identically to every frame.

Geometry is one affine map per clip (horizontal flip with left/right joint swap, rotation about
the image centre, random crop) followed by a resize to the drawn short side (capped by the max
size). Coordinates are continuous pixels: pixel ``(i, j)`` covers ``[j, j+1) x [i, i+1)``, the
convention PIL's affine warp and resize both use, so joints move exactly with the image.
Joints pushed out of the image become not visible (unannotated).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance

from pavenet.data.joints import MODEL

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ClipParams:
    """Augmentation of one clip."""

    flip: bool = False
    angle: float = 0.0  # degrees, counter-clockwise in the image
    crop: Optional[tuple[float, float, float, float]] = None  # x0, y0, w, h after flip/rotation
    short_side: int = 800
    max_size: int = 1333
    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0


def resized_size(width: float, height: float, short_side: int, max_size: int) -> tuple[int, int]:
    """(w, h) with the short side at ``short_side`` and the long side at most ``max_size``.

    The released pipeline's rule (mmcv ``rescale_size``): one scale factor
    ``min(short_side / short, max_size / long)``, each side rounded half up.
    """
    scale = min(short_side / min(width, height), max_size / max(width, height))
    return max(1, int(width * scale + 0.5)), max(1, int(height * scale + 0.5))


RESIZE_MODES = ("antialias", "official")


def resize_frames(frames: list[np.ndarray], size: tuple[int, int], mode: str = "antialias") -> torch.Tensor:
    """RGB uint8 frames (H, W, 3) of one size -> (N, 3, h, w) normalised input of ``size`` (w, h).

    ``antialias``: PIL bilinear on the 8-bit frames (antialiased when downscaling).
    ``official``: bilinear without antialiasing on float frames (half-pixel centres, borders
    clamped), as the released test pipeline resizes (cv2 ``INTER_LINEAR`` on float32 images).
    """
    if mode == "antialias":
        return to_tensor([Image.fromarray(f).resize(size, Image.BILINEAR) for f in frames])
    if mode != "official":
        raise ValueError(f"unknown resize mode {mode!r}, expected one of {RESIZE_MODES}")
    x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float()
    if (x.shape[-1], x.shape[-2]) != tuple(size):
        x = F.interpolate(x, size=(size[1], size[0]), mode="bilinear", align_corners=False,
                          antialias=False)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255.0
    return (x - mean) / std


def _geometry(p: ClipParams, width: int, height: int) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
    """(3x3 map original -> output pixels, size before resize, output size)."""
    m = np.eye(3)
    if p.flip:
        m = np.array([[-1.0, 0, width], [0, 1, 0], [0, 0, 1]]) @ m
    if p.angle:
        a = math.radians(p.angle)
        c, s = math.cos(a), math.sin(a)
        cx, cy = width / 2, height / 2
        rot = np.array([[c, s, cx - c * cx - s * cy], [-s, c, cy + s * cx - c * cy], [0, 0, 1]])
        m = rot @ m
    cw, ch = float(width), float(height)
    if p.crop is not None:
        x0, y0, cw, ch = p.crop
        m = np.array([[1.0, 0, -x0], [0, 1, -y0], [0, 0, 1]]) @ m
    warp_size = (max(1, int(round(cw))), max(1, int(round(ch))))
    out = resized_size(warp_size[0], warp_size[1], p.short_side, p.max_size)
    scale = np.diag([out[0] / warp_size[0], out[1] / warp_size[1], 1.0])
    return scale @ m, warp_size, out


def _photometric(img: Image.Image, p: ClipParams) -> Image.Image:
    if p.brightness != 1.0:
        img = ImageEnhance.Brightness(img).enhance(p.brightness)
    if p.contrast != 1.0:
        img = ImageEnhance.Contrast(img).enhance(p.contrast)
    if p.saturation != 1.0:
        img = ImageEnhance.Color(img).enhance(p.saturation)
    return img


def to_tensor(images: list[Image.Image]) -> torch.Tensor:
    """RGB PIL frames -> (T, 3, H, W) float32 normalised with ImageNet mean/std."""
    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) for im in images]) / 255.0
    mean, std = np.array(IMAGENET_MEAN, np.float32), np.array(IMAGENET_STD, np.float32)
    return torch.from_numpy(((arr - mean) / std).transpose(0, 3, 1, 2).copy())


def apply_clip(images: list[Image.Image], keypoints: np.ndarray, visible: np.ndarray,
               p: ClipParams) -> tuple[list[Image.Image], np.ndarray, np.ndarray]:
    """Transform T frames and their joints ((G, T, J, 2) pixels, (G, T, J) visible) by ``p``.

    Returns the new frames, joints in output pixels (flip swaps left/right joint slots) and
    visibility with joints outside the output image switched off.
    """
    width, height = images[0].size
    m, warp_size, out = _geometry(p, width, height)
    identity_warp = not p.flip and not p.angle and p.crop is None
    pre = np.diag([warp_size[0] / out[0], warp_size[1] / out[1], 1.0]) @ m  # the map before resizing
    inv = np.linalg.inv(pre)
    res = []
    for img in images:
        if not identity_warp:
            img = img.transform(warp_size, Image.AFFINE, tuple(inv[:2].reshape(-1)), Image.BILINEAR)
        if img.size != out:
            img = img.resize(out, Image.BILINEAR)
        res.append(_photometric(img, p))
    kp = keypoints @ m[:2, :2].T + m[:2, 2]
    vis = visible.copy()
    if p.flip:
        perm = MODEL.flip_permutation
        kp, vis = kp[..., perm, :], vis[..., perm]
    inside = (kp[..., 0] >= 0) & (kp[..., 0] < out[0]) & (kp[..., 1] >= 0) & (kp[..., 1] < out[1])
    return res, kp, vis & inside


def sample_params(rng: np.random.Generator, width: int, height: int, short_sides: tuple[int, int],
                  max_size: int, flip: bool, rotation: float, crop: bool, photometric: bool) -> ClipParams:
    """Draw one clip's augmentation (crop with probability 0.5, to 50-100 % of each side)."""
    p = ClipParams(short_side=int(rng.integers(short_sides[0], short_sides[1] + 1)), max_size=max_size)
    p.flip = bool(flip and rng.uniform() < 0.5)
    p.angle = float(rng.uniform(-rotation, rotation)) if rotation > 0 else 0.0
    if crop and rng.uniform() < 0.5:
        cw, ch = width * rng.uniform(0.5, 1.0), height * rng.uniform(0.5, 1.0)
        p.crop = (float(rng.uniform(0, width - cw)), float(rng.uniform(0, height - ch)), float(cw), float(ch))
    if photometric:
        p.brightness, p.contrast, p.saturation = (float(v) for v in rng.uniform(0.7, 1.3, size=3))
    return p

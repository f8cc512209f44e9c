"""Opening image files as 8-bit RGB, whatever their bit depth.

Pillow's ``convert("RGB")`` clips the 16- and 32-bit integer modes (a 16-bit PNG) at 255, which
turns most of such an image white; :func:`to_rgb8` scales them to 8 bits instead. An image above
Pillow's decompression-bomb limit raises ``Image.DecompressionBombError``, which
:data:`IMAGE_ERRORS` lists with the other errors of an unreadable file.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

#: what opening and decoding a bad image file can raise (UnidentifiedImageError is an OSError)
IMAGE_ERRORS = (OSError, ValueError, Image.DecompressionBombError)
#: integer modes whose values span 16 bits ("I" is how Pillow opens some 16-bit files)
_WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def to_rgb8(image: Image.Image) -> Image.Image:
    """``image`` as 8-bit RGB; 16-bit grey values v become round(v / 257) (65535 -> 255)."""
    if image.mode in _WIDE_MODES:
        wide = np.asarray(image, dtype=np.float64)
        scaled = np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(scaled, mode="L").convert("RGB")
    return image.convert("RGB")


def open_rgb8(path: str | Path) -> Image.Image:
    """The image file ``path`` decoded as 8-bit RGB (raises one of :data:`IMAGE_ERRORS`)."""
    with Image.open(path) as image:
        return to_rgb8(image)

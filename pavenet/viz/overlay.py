"""Draw tracked skeletons on frames and render overlay videos (overlay images for images).

Each track id gets a fixed, well separated colour (golden-ratio hue steps); limbs are the
:data:`pavenet.data.joints.SKELETON` edges whose two joints reach the score threshold, joints are
hollow rings (so that they cannot be mistaken for coloured markers in the video itself, e.g. the
synthetic figures' filled joint dots), and the id is written above the person. Untracked people
(id < 0) are grey. Ground truth, when drawn, is white crosses; a banner can say that a frame has
nobody above the score threshold.
"""
from __future__ import annotations

import colorsys
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pavenet.data.joints import SKELETON
from pavenet.infer.video_io import FrameStream, VideoInputError, VideoSource
from pavenet.infer.video_writer import VideoWriter
from pavenet.runtime.files import atomic_path

UNTRACKED_COLOR = (160, 160, 160)


def track_color(track_id: int) -> tuple[int, int, int]:
    """RGB colour of a track id (deterministic; grey for untracked ids < 0)."""
    if track_id < 0:
        return UNTRACKED_COLOR
    hue = (track_id * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return round(r * 255), round(g * 255), round(b * 255)


def _thickness(image: Image.Image) -> int:
    return max(1, round(min(image.size) / 150))


def _font(image: Image.Image) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(10, round(min(image.size) / 25)))


def draw_people(frame: np.ndarray, keypoints: np.ndarray, track_ids: Iterable[int],
                joint_threshold: float = 0.3, thickness: int | None = None,
                labels: bool = True) -> np.ndarray:
    """Return a copy of ``frame`` (H, W, 3) uint8 with the people drawn on it.

    Args:
        keypoints: (N, J, 3) x, y in pixels and per-joint score (J = the model's 15 joints).
        track_ids: N ids; each person is drawn in ``track_color(id)``.
        joint_threshold: joints scoring below it, and limbs touching them, are not drawn.
        thickness: line width in pixels (default: scales with the frame size).
        labels: write the id above each tracked person.
    """
    keypoints = np.asarray(keypoints, dtype=np.float64)
    ids = list(track_ids)
    if len(ids) != len(keypoints):
        raise ValueError(f"{len(ids)} track ids for {len(keypoints)} people")
    if not ids:
        return frame.copy()
    if keypoints.ndim != 3 or keypoints.shape[2] != 3:
        raise ValueError(f"keypoints must be (N, J, 3), got {keypoints.shape}")
    image = Image.fromarray(np.ascontiguousarray(frame))
    draw = ImageDraw.Draw(image)
    width = thickness or _thickness(image)
    font = _font(image)
    for person, track_id in zip(keypoints, ids):
        visible = person[:, 2] >= joint_threshold
        if not visible.any():
            continue
        color = track_color(track_id)
        for a, b in SKELETON:
            if visible[a] and visible[b]:
                draw.line([tuple(person[a, :2]), tuple(person[b, :2])], fill=color, width=width)
        radius = width + 1
        for x, y in person[visible, :2]:
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], outline=color,
                         width=max(1, width // 2))
        if labels and track_id >= 0:
            x0, y0 = person[visible, 0].min(), person[visible, 1].min()
            y = max(y0 - 2, getattr(font, "size", 11))  # keep the label inside the frame
            draw.text((x0, y), str(track_id), fill=color, font=font, anchor="ld")
    return np.asarray(image)


GROUND_TRUTH_COLOR = (255, 255, 255)


def draw_ground_truth(frame: np.ndarray, keypoints: np.ndarray, thickness: int | None = None) -> np.ndarray:
    """A copy of ``frame`` with annotated joints as white crosses: ``keypoints`` (N, J, 3) =
    x, y in pixels and an annotated flag (joints with flag 0 are not drawn)."""
    image = Image.fromarray(np.ascontiguousarray(frame))
    draw = ImageDraw.Draw(image)
    width = thickness or max(1, _thickness(image) // 2)
    size = 2 * width + 1
    for x, y, flag in np.asarray(keypoints, dtype=np.float64).reshape(-1, 3):
        if flag > 0:
            draw.line([(x - size, y - size), (x + size, y + size)], fill=GROUND_TRUTH_COLOR, width=width)
            draw.line([(x - size, y + size), (x + size, y - size)], fill=GROUND_TRUTH_COLOR, width=width)
    return np.asarray(image)


def draw_banner(frame: np.ndarray, text: str) -> np.ndarray:
    """A copy of ``frame`` with ``text`` in white on a black strip along the top."""
    image = Image.fromarray(np.ascontiguousarray(frame))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=max(9, round(min(image.size) / 28)))
    height = getattr(font, "size", 11) + 4
    draw.rectangle([0, 0, image.size[0], height], fill=(0, 0, 0))
    draw.text((2, 2), text, fill=(255, 255, 255), font=font)
    return np.asarray(image)


def compose(frame: np.ndarray, keypoints: np.ndarray, track_ids: Iterable[int], joint_threshold: float = 0.3,
            ground_truth: Optional[np.ndarray] = None, banner: str = "") -> np.ndarray:
    """The overlay of one frame: ground truth (white crosses, if given) under the predicted
    people, and a banner on top (if ``banner``)."""
    if ground_truth is not None:
        frame = draw_ground_truth(frame, ground_truth)
    frame = draw_people(frame, keypoints, track_ids, joint_threshold)
    return draw_banner(frame, banner) if banner else frame


def render_video(source: VideoSource, people: Iterable[tuple[np.ndarray, list[int]]],
                 out_path: str | Path, joint_threshold: float = 0.3, queue_size: int = 8,
                 ground_truth: Optional[Sequence[np.ndarray]] = None,
                 banners: Optional[Sequence[str]] = None) -> Path:
    """Write an overlay video of ``source``: one (keypoints (N, J, 3), track ids) per frame,
    optionally with each frame's ground truth and banner (see :func:`compose`).

    The output has the input's frame count and frame rate; it is written to a temporary name and
    renamed when complete. Raises :class:`VideoInputError` if the numbers of frames and of
    prediction entries differ.
    """
    stream = FrameStream(source, queue_size=queue_size)
    predictions = iter(people)
    with stream, VideoWriter(out_path, stream.rate) as writer:
        for index, frame in enumerate(stream):
            entry = next(predictions, None)
            if entry is None:
                raise VideoInputError(f"{source.path}: predictions end at frame {index}, the video goes on")
            truth = ground_truth[index] if ground_truth is not None and index < len(ground_truth) else None
            banner = banners[index] if banners is not None and index < len(banners) else ""
            writer.write(compose(frame, entry[0], entry[1], joint_threshold, truth, banner))
        if next(predictions, None) is not None:
            raise VideoInputError(f"{source.path}: more predictions than the {writer.frames_written} frames")
    return writer.path


def write_overlay_png(frame: np.ndarray, keypoints: np.ndarray, track_ids: Iterable[int],
                      out_path: str | Path, joint_threshold: float = 0.3,
                      ground_truth: Optional[np.ndarray] = None, banner: str = "") -> Path:
    """Write the overlay of ``frame`` (:func:`compose`) as PNG (temporary name, renamed when complete)."""
    image = compose(frame, keypoints, track_ids, joint_threshold, ground_truth, banner)
    with atomic_path(out_path, ".png") as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
    return Path(out_path)


def render_image(source: VideoSource, keypoints: np.ndarray, track_ids: Iterable[int],
                 out_path: str | Path, joint_threshold: float = 0.3) -> Path:
    """Write the overlay of a one-image source as PNG (see :func:`write_overlay_png`)."""
    with FrameStream(source, queue_size=1) as stream:
        frame = next(iter(stream))
    return write_overlay_png(frame, keypoints, track_ids, out_path, joint_threshold)

"""Clips of T frames around labelled key frames, and their targets (docs/interfaces.md).

Clip frame ``i`` of a key frame ``k`` is sequence frame ``k + (i - T // 2) * stride``; a frame
that falls outside the sequence is replaced by the key frame itself. Every frame of the clip
carries targets, so a clip-level criterion can supervise all its labelled frames.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import torch
from PIL import Image

from pavenet.data.images import IMAGE_ERRORS, open_rgb8
from pavenet.data.joints import MODEL, POSETRACK18_TO_MODEL
from pavenet.data.posetrack import AnnotationError, Frame, Sequence
from pavenet.data.regions import inside_any
from pavenet.data.transforms import ClipParams, apply_clip, to_tensor
from pavenet.errors import PavenetError


class DataError(PavenetError, ValueError):
    """An image or annotation cannot be used; the message names the file and the frame."""


@dataclass
class RawClip:
    """A clip before augmentation: frames and joints in original pixels."""

    images: list[Image.Image]
    keypoints: np.ndarray  # (G, T, J, 2)
    visible: np.ndarray  # (G, T, J) annotated and outside every ignore region
    present: np.ndarray  # (G, T)
    labeled: np.ndarray  # (T,)
    track_ids: np.ndarray  # (G,)
    video_id: int
    key_frame: int
    image_ids: np.ndarray  # (T,)
    frame_indices: np.ndarray  # (T,)
    meta: dict = field(default_factory=dict)
    ignored: Optional[np.ndarray] = None  # (G, T, J) annotated but inside an ignore region


def clip_indices(key: int, length: int, num_frames: int, stride: int) -> list[int]:
    """Sequence frame of each clip position; positions outside ``[0, length)`` take the key frame."""
    out = []
    for i in range(num_frames):
        idx = key + (i - num_frames // 2) * stride
        out.append(idx if 0 <= idx < length else key)
    return out


def load_image(frame: Frame) -> Image.Image:
    """Open a frame's image as RGB; raises :class:`DataError` naming the file on failure."""
    try:
        img = open_rgb8(frame.image_path)
    except FileNotFoundError:
        raise DataError(f"{frame.image_path}: image not found (frame {frame.index})") from None
    except IMAGE_ERRORS as exc:
        raise DataError(f"{frame.image_path}: unreadable image (frame {frame.index}): {exc}") from exc
    if frame.width and frame.height and img.size != (frame.width, frame.height):
        raise DataError(f"{frame.image_path}: image is {img.size[0]}x{img.size[1]}, "
                        f"annotation says {frame.width}x{frame.height}")
    return img


def _frame_joints(frame: Frame, where: str) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """track id -> ((J, 2) joints, (J,) visible, (J,) ignored) of one frame.

    ``visible``: annotated and outside every ignore region; ``ignored``: annotated but inside one.
    """
    out: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for person in frame.persons:
        if person.track_id in out:
            raise AnnotationError(f"{where}: track_id {person.track_id} appears twice in frame {frame.index}")
        kp = person.keypoints[POSETRACK18_TO_MODEL]
        annotated = kp[:, 2] > 0
        inside = np.zeros_like(annotated)
        if frame.ignore_regions and annotated.any():
            polygons = [(poly[:, 0], poly[:, 1]) for poly in frame.ignore_regions]
            inside = annotated & inside_any(kp[:, 0], kp[:, 1], polygons)
        vis = annotated & ~inside
        if vis.any():
            out[person.track_id] = (kp[:, :2].copy(), vis, inside)
    return out


def build_raw_clip(seq: Sequence, video_id: int, key: int, num_frames: int, stride: int) -> RawClip:
    """Load the images and gather the joints of the clip around ``key``."""
    idx = clip_indices(key, len(seq.frames), num_frames, stride)
    frames = [seq.frames[i] for i in idx]
    per_frame = [_frame_joints(f, str(seq.source)) for f in frames]
    tracks = sorted({tid for d in per_frame for tid in d})
    g, j = len(tracks), len(MODEL)
    kp, vis = np.zeros((g, num_frames, j, 2)), np.zeros((g, num_frames, j), bool)
    ignored = np.zeros((g, num_frames, j), bool)
    present = np.zeros((g, num_frames), bool)
    for t, d in enumerate(per_frame):
        for gi, tid in enumerate(tracks):
            if tid in d:
                kp[gi, t], vis[gi, t], ignored[gi, t] = d[tid]
                present[gi, t] = True
    return RawClip(
        images=[load_image(f) for f in frames], keypoints=kp, visible=vis, ignored=ignored, present=present,
        labeled=np.array([f.is_labeled for f in frames]), track_ids=np.array(tracks, np.int64),
        video_id=video_id, key_frame=num_frames // 2,
        image_ids=np.array([f.image_id for f in frames], np.int64), frame_indices=np.array(idx, np.int64),
    )


def make_item(raw: RawClip, params: ClipParams) -> dict[str, Any]:
    """Augment a raw clip and build ``{"frames": (T, 3, H, W), "target": Targets dict}``."""
    orig_w, orig_h = raw.images[0].size
    images, kp, vis = apply_clip(raw.images, raw.keypoints, raw.visible, params)
    ignored = raw.ignored if raw.ignored is not None else np.zeros_like(raw.visible)
    ignored = ignored[..., MODEL.flip_permutation] if params.flip else ignored
    w, h = images[0].size
    present = raw.present & vis.any(-1)
    keep = present.any(1)
    kp, vis, present = kp[keep], vis[keep] & present[keep][..., None], present[keep]
    ignored = ignored[keep] & present[..., None]
    norm = np.where(vis[..., None], kp / np.array([w, h]), 0.0)
    lo = np.where(vis[..., None], norm, np.inf).min(2)
    hi = np.where(vis[..., None], norm, -np.inf).max(2)
    areas = np.where(present, np.prod(np.clip(hi - lo, 0, None), axis=-1), 0.0)
    target = {
        "keypoints": torch.from_numpy(norm.astype(np.float32)),
        "visible": torch.from_numpy(vis),
        "ignored": torch.from_numpy(ignored.copy()),
        "present": torch.from_numpy(present),
        "labeled": torch.from_numpy(raw.labeled.copy()),
        "areas": torch.from_numpy(areas.astype(np.float32)),
        "track_ids": torch.from_numpy(raw.track_ids[keep].copy()),
        "video_id": int(raw.video_id),
        "key_frame": int(raw.key_frame),
        "size": torch.tensor([h, w], dtype=torch.int64),
        "orig_size": torch.tensor([orig_h, orig_w], dtype=torch.int64),
        "image_ids": torch.from_numpy(raw.image_ids.copy()),
        "frame_indices": torch.from_numpy(raw.frame_indices.copy()),
    }
    return {"frames": to_tensor(images), "target": target}


ParamFn = Callable[[np.random.Generator, int, int], ClipParams]


class ClipDataset(torch.utils.data.Dataset):
    """Clips around every labelled frame of a list of sequences.

    ``params_fn(rng, width, height)`` draws each clip's augmentation. With ``pair_gap`` an item
    is a list of two clips of the same video whose key frames are about ``pair_gap`` frames
    apart (the nearest labelled frame to ``key +- pair_gap``). With ``skip_bad`` clips whose
    images are missing are dropped at construction and an unreadable image makes the item
    fall back to the next one, with a warning; otherwise both raise :class:`DataError`.
    """

    def __init__(self, sequences: list[Sequence], num_frames: int, params_fn: ParamFn, stride: int = 1,
                 pair_gap: int = 0, skip_bad: bool = False) -> None:
        self.sequences, self.num_frames, self.stride = sequences, num_frames, stride
        self.params_fn, self.pair_gap, self.skip_bad = params_fn, pair_gap, skip_bad
        self.index = [(s, k) for s, seq in enumerate(sequences) for k in seq.labeled_indices
                      if self._usable(seq, k)]
        if not self.index:
            raise DataError("no usable labelled frame in the given sequences")

    def _usable(self, seq: Sequence, key: int) -> bool:
        for i in clip_indices(key, len(seq.frames), self.num_frames, self.stride):
            path = seq.frames[i].image_path
            if not path.is_file():
                if not self.skip_bad:
                    raise DataError(f"{path}: image not found (frame {i} of {seq.source})")
                warnings.warn(f"skipping key frame {key} of {seq.source}: {path} not found", stacklevel=3)
                return False
        return True

    def __len__(self) -> int:
        return len(self.index)

    def _partner(self, s: int, key: int, rng: np.random.Generator) -> int:
        seq = self.sequences[s]
        labeled = np.array(seq.labeled_indices)
        options = [k for k in (key + self.pair_gap, key - self.pair_gap) if 0 <= k < len(seq.frames)]
        target = options[int(rng.integers(len(options)))] if options else key + self.pair_gap
        return int(labeled[np.argmin(np.abs(labeled - target))])

    def _item(self, s: int, key: int, rng: np.random.Generator) -> dict[str, Any]:
        raw = build_raw_clip(self.sequences[s], s, key, self.num_frames, self.stride)
        return make_item(raw, self.params_fn(rng, *raw.images[0].size))

    def __getitem__(self, i: int) -> Any:
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
        for attempt in range(len(self.index)):
            s, key = self.index[(i + attempt) % len(self.index)]
            try:
                if self.pair_gap > 0:
                    return [self._item(s, key, rng), self._item(s, self._partner(s, key, rng), rng)]
                return self._item(s, key, rng)
            except DataError as exc:
                if not self.skip_bad:
                    raise
                warnings.warn(f"skipping clip: {exc}", stacklevel=2)
        raise DataError("every clip of the dataset failed to load")

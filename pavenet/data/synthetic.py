"""Synthetic multi-person videos in the exact PoseTrack18 layout (the project's built-in dataset).

``generate_video`` renders one video in memory; ``write_dataset`` writes train/val splits as
``images/<split>/<video>/<frame:06d>.jpg`` and ``annotations/<split>/<video>.json`` with the
fields of the real PoseTrack18 files. Same arguments (seed included) give the same bytes.

Annotation conventions (decided here, documented for the evaluation code):

* A joint is annotated (``v = 1``) when it lies inside the image and is not covered by a nearer
  person or a passing occluder; otherwise its slot is ``(0, 0, 0)``, the way PoseTrack leaves
  joints it does not annotate. Self-occlusion (a person's own limb in front) keeps the joint.
  So "invisible" means "unannotated", which matches what ``visible`` means in the targets.
* A person with no annotated joint in a frame gets no annotation in that frame.
* ``bbox`` is the box of the annotated joints enlarged 1.3x about its centre (as in the real
  files); ``bbox_head`` is the drawn head ellipse's box.
* Image ids follow PoseTrack: ``9 * 10**10 + video_number * 10**4 + frame`` (9 marks synthetic
  data), annotation ids ``image_id * 100 + person index``.
"""
from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from PIL import Image

from pavenet.data.joints import POSETRACK18, model_to_posetrack18
from pavenet.data.synthetic_figures import Figure, draw_figure, figure_pose, head_box
from pavenet.data.synthetic_scene import (PAN, Occluder, background, blur_region, motion_blur, sample_figure,
                                          sample_occluder)
from pavenet.data.synthetic_temporal import degrade_video
from pavenet.runtime.files import atomic_write_bytes

OCCLUDER_LABEL = 255
DIFFICULTIES = ("easy", "hard", "temporal")
CATEGORIES = [{
    "supercategory": "person", "id": 1, "name": "person", "keypoints": list(POSETRACK18.names),
    "skeleton": [[16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7], [6, 8],
                 [7, 9], [8, 10], [9, 11], [2, 3], [1, 2], [1, 3], [2, 4], [3, 5], [4, 6], [5, 7]],
}]


def video_name(number: int) -> str:
    """Folder / file stem of synthetic video ``number``."""
    return f"{number:06d}_synth"


def _visible(xy: np.ndarray, label: np.ndarray, value: int) -> np.ndarray:
    h, w = label.shape
    inside = (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
    vis = np.zeros(len(xy), bool)
    ix, iy = np.floor(xy[inside, 0]).astype(int), np.floor(xy[inside, 1]).astype(int)
    vis[inside] = label[iy, ix] == value
    return vis


def _annotation(xy: np.ndarray, vis: np.ndarray, fig: Figure, track: int, image_id: int) -> dict:
    kp = np.concatenate([np.round(xy, 2), vis[:, None].astype(np.float64)], axis=1)
    kp[~vis] = 0.0
    kp17 = model_to_posetrack18(kp)
    pts = xy[vis]
    lo, hi = pts.min(0), pts.max(0)
    centre, half = (lo + hi) / 2, (hi - lo) * 1.3 / 2
    x0, y0, x1, y1 = head_box(xy, fig)
    return {
        "bbox_head": [int(round(x0)), int(round(y0)), int(round(x1 - x0)), int(round(y1 - y0))],
        "keypoints": [float(v) if v % 1 else int(v) for v in kp17.reshape(-1)],
        "track_id": track, "image_id": image_id,
        "bbox": [round(float(v), 2) for v in (*(centre - half), *(2 * half))],
        "scores": [], "category_id": 1, "id": image_id * 100 + track,
        "iscrowd": False, "num_keypoints": int(vis.sum()),
    }


def _hard_effects(img: Image.Image, label: np.ndarray, persons: int, rng: np.random.Generator) -> Image.Image:
    for p in range(persons):
        if rng.uniform() < 0.12:
            mask = Image.fromarray(((label == p + 1) * 255).astype(np.uint8))
            img = blur_region(img, mask, radius=rng.uniform(4.0, 8.0))
    if rng.uniform() < 0.3:
        arr = motion_blur(np.asarray(img), int(rng.integers(3, 10)), int(rng.integers(0, 2)))
        img = Image.fromarray(arr)
    if rng.uniform() < 0.2:
        img = blur_region(img, Image.new("L", img.size, 255), radius=rng.uniform(1.0, 2.5))
    return img


def _scene(rng: np.random.Generator, num_frames: int, size: tuple[int, int], max_persons: int,
           hard: bool) -> tuple[np.ndarray, list[Figure], list[Occluder], np.ndarray]:
    w, h = size
    bg = background(rng, w, h)
    count = int(rng.integers(1, max_persons + 1))
    figures = sorted((sample_figure(rng, w, h, hard) for _ in range(count)), key=lambda f: f.height)
    occluders = [sample_occluder(rng, w, h, num_frames) for _ in range(int(rng.integers(0, 3)) if hard else 0)]
    amp, freq, phase = rng.uniform(0, PAN, 2), rng.uniform(0.01, 0.05, 2), rng.uniform(0, 2 * math.pi, 2)
    t = np.arange(num_frames)[:, None]
    pan = np.clip(np.round(PAN + amp * np.sin(freq * t + phase)), 0, 2 * PAN).astype(int)
    return bg, figures, occluders, pan


def generate_video(seed: int, num_frames: int, size: tuple[int, int] = (256, 256), max_persons: int = 3,
                   difficulty: str = "easy", *, split: str = "train", number: int = 0,
                   labeled_every: int = 1) -> tuple[list[np.ndarray], dict]:
    """Render one video -> (frames as HxWx3 uint8 arrays, PoseTrack18-style annotation dict).

    ``size`` is (width, height); figures are ordered far to near (the taller, the nearer);
    ``labeled_every`` > 1 marks only every k-th frame as labelled (the others keep no
    annotations, like PoseTrack's unlabelled frames). ``number`` names the video and its ids.
    ``difficulty``: "easy", "hard" (blur, defocus, occluders, blurred people) or "temporal" (the
    easy video with single frames degraded, annotated as if clean:
    :mod:`pavenet.data.synthetic_temporal`).
    """
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {', '.join(DIFFICULTIES)}, got {difficulty!r}")
    if not 1 <= num_frames <= 9999 or max_persons < 1 or labeled_every < 1:
        raise ValueError("need 1 <= num_frames <= 9999, max_persons >= 1 and labeled_every >= 1")
    rng = np.random.default_rng(seed)
    hard = difficulty == "hard"
    w, h = size
    bg, figures, occluders, pan = _scene(rng, num_frames, size, max_persons, hard)
    name = video_name(number)
    frames, images, anns, joints = [], [], [], []
    for t in range(num_frames):
        img = Image.fromarray(bg[pan[t, 1]:pan[t, 1] + h, pan[t, 0]:pan[t, 0] + w])
        label = Image.new("L", (w, h), 0)
        poses = [figure_pose(fig, t) for fig in figures]
        for p, (fig, (xy, z)) in enumerate(zip(figures, poses)):
            draw_figure(img, label, p + 1, fig, xy, z)
        for occ in occluders:
            occ.draw(img, label, t, OCCLUDER_LABEL)
        lab = np.asarray(label)
        if hard:
            img = _hard_effects(img, lab, len(figures), rng)
        image_id = 9 * 10**10 + number * 10**4 + t
        labeled = t % labeled_every == 0
        images.append({
            "has_no_densepose": True, "is_labeled": labeled,
            "file_name": f"images/{split}/{name}/{t:06d}.jpg", "nframes": num_frames,
            "frame_id": image_id, "vid_id": f"{number:06d}", "ignore_regions_y": [], "ignore_regions_x": [],
            "id": image_id, "width": w, "height": h,
        })
        visible = [_visible(xy, lab, p + 1) for p, (xy, _) in enumerate(poses)]
        for p, (fig, (xy, _)) in enumerate(zip(figures, poses)):
            if labeled and visible[p].any():
                anns.append(_annotation(xy, visible[p], fig, p, image_id))
        joints.append([xy[vis] for (xy, _), vis in zip(poses, visible)])
        frames.append(np.asarray(img.convert("RGB")))
    if difficulty == "temporal":
        frames = degrade_video(frames, joints, images, seed)
    return frames, {"categories": CATEGORIES, "images": images, "annotations": anns}


def write_video(root: Path, frames: list[np.ndarray], ann: dict, split: str, quality: int = 90) -> None:
    """Write one generated video (JPEG frames and its JSON) below dataset ``root``."""
    for frame, image in zip(frames, ann["images"]):
        path = root / image["file_name"]
        path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
        atomic_write_bytes(path, buf.getvalue())
    vid = Path(ann["images"][0]["file_name"]).parent.name
    out = root / "annotations" / split / f"{vid}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, json.dumps(ann).encode("utf-8"))


def video_seed(seed: int, number: int) -> int:
    """Seed of video ``number`` of a dataset generated with ``seed``."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


def write_dataset(out_dir: str | Path, videos: int, frames: int, size: tuple[int, int] = (256, 256),
                  max_persons: int = 3, seed: int = 0, difficulty: str = "easy", val_videos: int = 0,
                  labeled_every: int = 1, progress: Optional[Callable[[int], None]] = None) -> dict[str, int]:
    """Write ``videos`` train and ``val_videos`` val videos -> {split: number of videos}.

    Video ``i`` of the whole dataset (train first, then val) uses seed ``(seed, i)``, so val
    videos are unseen during training and the output depends only on the arguments.
    ``progress`` is called with the number of frames written after each video.
    """
    root = Path(out_dir)
    plan = [("train", i) for i in range(videos)] + [("val", videos + i) for i in range(val_videos)]
    for split, number in plan:
        vid_seed = video_seed(seed, number)
        imgs, ann = generate_video(vid_seed, frames, size, max_persons, difficulty, split=split,
                                   number=number, labeled_every=labeled_every)
        write_video(root, imgs, ann, split)
        if progress is not None:
            progress(frames)
    return {"train": videos, "val": val_videos}

"""COCO keypoints for image pre-training, as the published "pseudo-video".

A still image becomes a clip of T frames: the key frame is the image itself and each other
frame is the same image rotated about its centre by a random angle of up to
``max_angle`` degrees (either direction), joints rotated with it. Track ids are the
annotation ids, so a person is one track through the pseudo-clip.

Joint mapping (see ``joints.py``): the model's joints 1 and 2 (head_bottom / head_top on
PoseTrack) are trained on COCO's left_eye / right_eye; ears are dropped; everything else is the
same joint. Fine-tuning on PoseTrack re-purposes the two head slots. COCO's ``v = 1``
(occluded) and ``v = 2`` (visible) both count as annotated. Crowd annotations and persons
without keypoints are skipped.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from pavenet.data import fields
from pavenet.data.clips import DataError, ParamFn, RawClip, make_item
from pavenet.data.images import IMAGE_ERRORS, open_rgb8
from pavenet.data.joints import COCO, coco_to_model
from pavenet.data.posetrack import AnnotationError, read_json


def _persons(anns: object, path: Path) -> dict[int, list[dict]]:
    """image id -> its annotated people (checked copies: int ids, 51 finite keypoint values)."""
    out: dict[int, list[dict]] = {}
    for i, ann in enumerate(fields.array(anns, f"{path}: 'annotations'")):
        where = f"{path}: annotations[{i}]"
        ann = fields.mapping(ann, where)
        if ann.get("iscrowd") or not ann.get("num_keypoints", 1):
            continue
        kps = ann.get("keypoints")
        if not isinstance(kps, list) or len(kps) != len(COCO) * 3:
            raise AnnotationError(f"{where} (id {ann.get('id')}): 'keypoints' must hold "
                                  f"{len(COCO) * 3} values, got {len(kps) if isinstance(kps, list) else kps!r}")
        person = {**ann, "keypoints": fields.numbers(kps, f"{where}: 'keypoints'").tolist(),
                  "id": fields.identifier(ann.get("id", i), f"{where}: 'id'")}
        out.setdefault(fields.identifier(ann.get("image_id"), f"{where}: 'image_id'"), []).append(person)
    return out


def _images(images: object, persons: dict[int, list[dict]], path: Path) -> list[dict]:
    """The image records (int ``id``, string ``file_name``) that have annotated people."""
    out = []
    for i, image in enumerate(fields.array(images, f"{path}: 'images'")):
        where = f"{path}: images[{i}]"
        image = fields.mapping(image, where)
        image_id = fields.identifier(image.get("id"), f"{where}: 'id'")
        if image_id in persons:
            out.append({**image, "id": image_id, "file_name": fields.text(image.get("file_name"),
                                                                          f"{where}: 'file_name'")})
    return out


class CocoPseudoVideo(torch.utils.data.Dataset):
    """COCO keypoint images with at least one annotated person, served as pseudo-video clips."""

    def __init__(self, annotation_file: str | Path, image_dir: str | Path, num_frames: int,
                 params_fn: ParamFn, max_angle: float = 5.0, skip_bad: bool = False) -> None:
        path = Path(annotation_file)
        data = read_json(path)
        if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
            raise AnnotationError(f"{path}: expected a COCO dict with 'images' and 'annotations'")
        persons = _persons(data["annotations"], path)
        self.images = _images(data["images"], persons, path)
        self.persons, self.image_dir = persons, Path(image_dir)
        self.num_frames, self.params_fn = num_frames, params_fn
        self.max_angle, self.skip_bad = max_angle, skip_bad
        if not self.images:
            raise DataError(f"{path}: no image with an annotated person")

    def __len__(self) -> int:
        return len(self.images)

    def _load(self, image: dict) -> Image.Image:
        path = self.image_dir / image["file_name"]
        try:
            return open_rgb8(path)
        except FileNotFoundError:
            raise DataError(f"{path}: image not found (image id {image['id']})") from None
        except IMAGE_ERRORS as exc:
            raise DataError(f"{path}: unreadable image (image id {image['id']}): {exc}") from exc

    def raw_clip(self, i: int, rng: np.random.Generator) -> RawClip:
        """The pseudo-video clip of image ``i`` (neighbour frames rotated by random angles)."""
        image = self.images[i]
        img = self._load(image)
        anns = self.persons[image["id"]]
        kp = coco_to_model(np.array([a["keypoints"] for a in anns], np.float64).reshape(len(anns), len(COCO), 3))
        t, key = self.num_frames, self.num_frames // 2
        frames, kps = [], []
        w, h = img.size
        for f in range(t):
            angle = 0.0 if f == key else float(rng.uniform(-self.max_angle, self.max_angle))
            frames.append(img.rotate(angle, resample=Image.BILINEAR) if angle else img)
            a = math.radians(angle)
            c, s = math.cos(a), math.sin(a)
            x, y = kp[..., 0] - w / 2, kp[..., 1] - h / 2
            kps.append(np.stack([w / 2 + c * x + s * y, h / 2 - s * x + c * y], axis=-1))
        vis = np.repeat((kp[:, None, :, 2] > 0), t, axis=1)
        return RawClip(
            images=frames, keypoints=np.stack(kps, axis=1), visible=vis, present=vis.any(-1),
            labeled=np.ones(t, bool), track_ids=np.array([a["id"] for a in anns], np.int64),
            video_id=int(image["id"]), key_frame=key, image_ids=np.full(t, int(image["id"]), np.int64),
            frame_indices=np.zeros(t, np.int64),
        )

    def __getitem__(self, i: int) -> dict[str, Any]:
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
        for attempt in range(len(self)):
            try:
                raw = self.raw_clip((i + attempt) % len(self), rng)
                return make_item(raw, self.params_fn(rng, *raw.images[0].size))
            except DataError as exc:
                if not self.skip_bad:
                    raise
                warnings.warn(f"skipping image: {exc}", stacklevel=2)
        raise DataError("every image of the dataset failed to load")

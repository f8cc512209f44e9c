"""Small builders of PoseTrack18 ground-truth / prediction folders for the evaluation tests.

Every ground-truth person gets ``bbox_head = [x, y, 30, 40]``: head diagonal 50, head size 30,
so a predicted joint matches within 15 pixels.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pavenet.data.joints import MODEL, model_to_posetrack18
from pavenet.eval.writers import POSETRACK18_CATEGORY

HEAD_SIZE = 30.0


def base_pose(cx: float, cy: float) -> np.ndarray:
    """(15, 2) distinct joint positions around (cx, cy)."""
    k = np.arange(len(MODEL), dtype=np.float64)
    return np.stack([cx + 7.0 * (k % 5), cy + 11.0 * (k // 5)], axis=1)


def image(seq: int, frame: int, **extra: object) -> dict:
    """A PoseTrack18 image entry of sequence number ``seq``."""
    iid = 10_000_000_000 + seq * 10_000 + frame
    return {"id": iid, "file_name": f"images/val/{seq:06d}_mpii_test/{frame:06d}.jpg", "is_labeled": True, **extra}


def gt_person(image_id: int, track: int, xy: np.ndarray) -> dict:
    """A ground-truth annotation; rows of ``xy`` that are nan are unannotated joints."""
    xy = np.asarray(xy, dtype=np.float64)
    kp = np.zeros((len(MODEL), 3))
    ok = ~np.isnan(xy).any(axis=1)
    kp[ok, :2] = xy[ok]
    kp[ok, 2] = 1
    slots = model_to_posetrack18(kp)
    return {"image_id": image_id, "track_id": track, "keypoints": slots.ravel().tolist(), "scores": [],
            "bbox_head": [float(np.nanmin(xy[:, 0])), float(np.nanmin(xy[:, 1])), 30.0, 40.0],
            "category_id": 1}


def pred_person(image_id: int, track: int, xy: np.ndarray, score: float | np.ndarray = 0.9) -> dict:
    """A predicted annotation with per-joint scores (scalar = the same for every joint)."""
    kp = np.zeros((len(MODEL), 3))
    kp[:, :2] = xy
    kp[:, 2] = np.broadcast_to(np.asarray(score, dtype=np.float64), (len(MODEL),))
    slots = model_to_posetrack18(kp)
    return {"image_id": image_id, "track_id": track, "keypoints": slots.ravel().tolist(),
            "scores": slots[:, 2].tolist(), "category_id": 1}


def write_sequence(root: Path, name: str, images: list[dict], gt: list[dict], pred: list[dict]) -> tuple[Path, Path]:
    """Write ``root/gt/name.json`` and ``root/pred/name.json``; returns the two folders."""
    gt_dir, pred_dir = root / "gt", root / "pred"
    gt_dir.mkdir(parents=True, exist_ok=True)
    pred_dir.mkdir(parents=True, exist_ok=True)
    for folder, anns in ((gt_dir, gt), (pred_dir, pred)):
        with open(folder / f"{name}.json", "w") as f:
            json.dump({"images": images, "annotations": anns, "categories": [POSETRACK18_CATEGORY]}, f)
    return gt_dir, pred_dir

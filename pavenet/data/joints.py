"""Joint sets: names, skeleton edges, flip pairs, OKS sigmas and conversions.

Three layouts meet in pavenet:

* ``POSETRACK18`` - the 17 slots of PoseTrack18/21 files. Slots 3 and 4 (the ears) are
  always empty in the annotations.
* ``MODEL`` - the 15 joints the network predicts: PoseTrack18 without the ears.
* ``COCO`` - COCO's 17 keypoints. They share PoseTrack18's slot order except that slots 1
  and 2 hold left_eye / right_eye where PoseTrack has head_bottom / head_top.

COCO -> model (image pre-training): slots [0, 1, 2, 5..16] are taken, so the model's joints
1 and 2 learn the eyes during COCO pre-training and are re-purposed to head_bottom /
head_top when fine-tuning on PoseTrack (the published recipe does the same; the two heads
are close in the image and the fine-tuning stage retrains them).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_LIMBS = [
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
]


@dataclass(frozen=True)
class JointSet:
    """A named keypoint layout."""

    name: str
    names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.names)

    def index(self, joint: str) -> int:
        return self.names.index(joint)

    @property
    def flip_pairs(self) -> list[tuple[int, int]]:
        pairs = []
        for i, n in enumerate(self.names):
            if n.startswith("left_"):
                other = "right_" + n[len("left_"):]
                if other in self.names:
                    pairs.append((i, self.names.index(other)))
        return pairs

    @property
    def flip_permutation(self) -> list[int]:
        """``perm[i]`` is the joint that joint ``i`` becomes after a horizontal flip."""
        perm = list(range(len(self)))
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm


POSETRACK18 = JointSet(
    "posetrack18", ("nose", "head_bottom", "head_top", "left_ear", "right_ear", *_LIMBS)
)
MODEL = JointSet("model", ("nose", "head_bottom", "head_top", *_LIMBS))
COCO = JointSet("coco", ("nose", "left_eye", "right_eye", "left_ear", "right_ear", *_LIMBS))

#: PoseTrack18 slot of each model joint (ears dropped).
POSETRACK18_TO_MODEL: list[int] = [0, 1, 2] + list(range(5, 17))
#: COCO slot of each model joint (eyes stand in for head_bottom/head_top, ears dropped).
COCO_TO_MODEL: list[int] = [0, 1, 2] + list(range(5, 17))

#: OKS sigmas of the 15 model joints (PoseTrack order without ears).
OKS_SIGMAS = np.array(
    [0.026, 0.025, 0.025, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062,
     0.107, 0.107, 0.087, 0.087, 0.089, 0.089],
    dtype=np.float64,
)

#: OKS sigmas of the released PAVE-Net's code (its matcher, OKS loss and test-time OKS-NMS; its
#: list divided by 10): equal to :data:`OKS_SIGMAS` except head_bottom and head_top (0.079
#: instead of 0.025).
RELEASED_OKS_SIGMAS = np.array(
    [0.026, 0.079, 0.079, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062,
     0.107, 0.107, 0.087, 0.087, 0.089, 0.089],
    dtype=np.float64,
)

#: Skeleton of the model joints, as index pairs.
SKELETON: list[tuple[int, int]] = [
    (MODEL.index(a), MODEL.index(b))
    for a, b in [
        ("head_top", "nose"), ("nose", "head_bottom"),
        ("head_bottom", "left_shoulder"), ("head_bottom", "right_shoulder"),
        ("left_shoulder", "right_shoulder"),
        ("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"),
        ("right_shoulder", "right_elbow"), ("right_elbow", "right_wrist"),
        ("left_shoulder", "left_hip"), ("right_shoulder", "right_hip"), ("left_hip", "right_hip"),
        ("left_hip", "left_knee"), ("left_knee", "left_ankle"),
        ("right_hip", "right_knee"), ("right_knee", "right_ankle"),
    ]
]

#: Columns of the PoseTrack evaluation table and the model joints they average.
EVAL_GROUPS: dict[str, list[int]] = {
    "Head": [0, 1, 2],
    "Shoulder": [3, 4],
    "Elbow": [5, 6],
    "Wrist": [7, 8],
    "Hip": [9, 10],
    "Knee": [11, 12],
    "Ankle": [13, 14],
}


def posetrack18_to_model(keypoints: np.ndarray) -> np.ndarray:
    """(..., 17, C) PoseTrack18 slots -> (..., 15, C) model joints."""
    if keypoints.shape[-2] != len(POSETRACK18):
        raise ValueError(f"expected {len(POSETRACK18)} PoseTrack18 slots, got {keypoints.shape[-2]}")
    return keypoints[..., POSETRACK18_TO_MODEL, :]


def model_to_posetrack18(keypoints: np.ndarray) -> np.ndarray:
    """(..., 15, C) model joints -> (..., 17, C) PoseTrack18 slots with zero ears."""
    if keypoints.shape[-2] != len(MODEL):
        raise ValueError(f"expected {len(MODEL)} model joints, got {keypoints.shape[-2]}")
    out = np.zeros(keypoints.shape[:-2] + (len(POSETRACK18), keypoints.shape[-1]), keypoints.dtype)
    out[..., POSETRACK18_TO_MODEL, :] = keypoints
    return out


def coco_to_model(keypoints: np.ndarray) -> np.ndarray:
    """(..., 17, C) COCO keypoints -> (..., 15, C) model joints."""
    if keypoints.shape[-2] != len(COCO):
        raise ValueError(f"expected {len(COCO)} COCO keypoints, got {keypoints.shape[-2]}")
    return keypoints[..., COCO_TO_MODEL, :]

"""Prediction writers: PoseTrack18 and PoseTrack17 (``annolist``) per-sequence JSON, COCO results JSON.

All take :class:`PredictedPerson` records (15 model joints, pixels, per-joint scores) and write
atomically (temporary file in the target folder, then rename).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pavenet.data.joints import MODEL, POSETRACK18, model_to_posetrack18
from pavenet.data.posetrack17 import POSETRACK17
from pavenet.runtime.files import atomic_write_json

#: Track ids must stay below this for the official evaluator (it offsets ids per sequence).
MAX_TRACK_ID = 10000
#: Image fields copied from the ground-truth image entries into a prediction file.
IMAGE_FIELDS = ("id", "file_name", "frame_id", "vid_id", "nframes", "is_labeled", "width", "height")
#: Frame fields copied from the ground-truth ``annolist`` entries into a PoseTrack17 prediction file.
ANNOLIST_FIELDS = ("image", "imgnum")
#: Model joint of each PoseTrack17 joint id.
_MODEL_OF_ID = [MODEL.index(name) for name in POSETRACK17.names]

POSETRACK18_CATEGORY = {
    "supercategory": "person",
    "id": 1,
    "name": "person",
    "keypoints": list(POSETRACK18.names),
    "skeleton": [[16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7], [6, 8],
                 [7, 9], [8, 10], [9, 11], [2, 3], [1, 2], [1, 3], [2, 4], [3, 5], [4, 6], [5, 7]],
}


@dataclass
class PredictedPerson:
    """One predicted person in one frame."""

    image_id: int
    track_id: int
    keypoints: np.ndarray  #: (15, 3) model-joint order: x, y in original-image pixels, joint score
    score: float  #: person score

    def __post_init__(self) -> None:
        self.keypoints = np.asarray(self.keypoints, dtype=np.float64)
        if self.keypoints.shape != (len(MODEL), 3):
            raise ValueError(f"keypoints must have shape ({len(MODEL)}, 3), got {self.keypoints.shape}")
        if not np.isfinite(self.keypoints).all():
            raise ValueError(f"image {self.image_id}, track {self.track_id}: keypoints must be finite")


def _image_entries(images: Sequence[Mapping]) -> list[dict]:
    out = []
    for image in images:
        if "id" not in image or "file_name" not in image:
            raise ValueError("every image entry needs 'id' and 'file_name' (copy them from the ground truth)")
        out.append({k: image[k] for k in IMAGE_FIELDS if k in image})
    return out


def _check_tracks(people: Sequence[PredictedPerson], image_ids: set) -> None:
    seen: set[tuple[int, int]] = set()
    for p in people:
        if p.image_id not in image_ids:
            raise ValueError(f"person with track {p.track_id} refers to unknown image id {p.image_id}")
        if not 0 <= int(p.track_id) < MAX_TRACK_ID:
            raise ValueError(f"track id {p.track_id} outside [0, {MAX_TRACK_ID}) (the official evaluator rejects it)")
        key = (p.image_id, int(p.track_id))
        if key in seen:
            raise ValueError(f"track id {p.track_id} used twice in image {p.image_id}")
        seen.add(key)


def posetrack_annotation(person: PredictedPerson, ann_id: int) -> dict:
    """The PoseTrack18 annotation dict of one predicted person (ears zero, scores per slot)."""
    slots = model_to_posetrack18(person.keypoints)
    return {
        "id": ann_id,
        "image_id": int(person.image_id),
        "category_id": 1,
        "track_id": int(person.track_id),
        "keypoints": slots.reshape(-1).tolist(),
        "scores": slots[:, 2].tolist(),
        "score": float(person.score),
    }


def write_posetrack_predictions(path: str | Path, images: Sequence[Mapping], people: Iterable[PredictedPerson]) -> None:
    """Write one sequence's predictions as a PoseTrack18 JSON file the official evaluator accepts.

    ``images``: the sequence's image entries in ground-truth order (at least ``id`` and
    ``file_name``; the official evaluator aligns frames by position). ``people``: the predictions.
    Keypoints are written as 17 PoseTrack18 slots ``x, y, score`` with zero ears; ``scores`` holds
    the 17 per-slot scores.
    """
    entries = _image_entries(images)
    people = list(people)
    _check_tracks(people, {e["id"] for e in entries})
    annotations = [posetrack_annotation(p, k) for k, p in enumerate(people)]
    atomic_write_json(path, {"images": entries, "annotations": annotations, "categories": [POSETRACK18_CATEGORY]})


def annolist_rect(person: PredictedPerson) -> dict:
    """The PoseTrack17 ``annorect`` entry of one predicted person.

    One point per joint (ids 0..14) with one-element lists ``id``, ``x``, ``y``, ``score``; a joint
    that is exactly ``(0, 0, 0)`` is left out, as the official converter leaves out such a
    PoseTrack18 slot, so both writers give the evaluator the same joints.
    """
    points = []
    for jid, m in enumerate(_MODEL_OF_ID):
        x, y, s = (float(v) for v in person.keypoints[m])
        if x == 0 and y == 0 and s == 0:
            continue
        points.append({"id": [jid], "x": [x], "y": [y], "score": [s]})
    return {"track_id": [int(person.track_id)], "score": [float(person.score)], "annopoints": [{"point": points}]}


def write_annolist_predictions(path: str | Path, frames: Sequence[Mapping], people: Iterable[PredictedPerson]) -> None:
    """Write one sequence's predictions as a PoseTrack17 ``annolist`` file the official evaluator accepts.

    ``frames``: the ground truth's ``annolist`` entries in file order (their ``image`` and
    ``imgnum`` are copied; the official evaluator aligns frames by position). ``people``: the
    predictions, each with ``image_id`` = the position of its frame in ``frames`` (the ids
    ``pavenet.data.posetrack17.load_posetrack17`` gives). Every entry gets an ``annorect`` list.
    """
    entries = []
    for k, frame in enumerate(frames):
        if not isinstance(frame, Mapping):
            raise ValueError(f"annolist entry {k} is not a dict (copy the entries from the ground truth)")
        entries.append({**{key: frame[key] for key in ANNOLIST_FIELDS if key in frame}, "annorect": []})
    people = list(people)
    _check_tracks(people, set(range(len(entries))))
    for p in people:
        entries[int(p.image_id)]["annorect"].append(annolist_rect(p))
    atomic_write_json(path, {"annolist": entries})


def coco_result(person: PredictedPerson, category_id: int = 1) -> dict:
    """A COCO keypoint result (17 slots) of one person.

    The two slots the model does not predict (ears in PoseTrack, ears in COCO) get the nose
    position with score 0, so the box pycocotools derives from the keypoints is not stretched
    to the image origin.
    """
    slots = model_to_posetrack18(person.keypoints)
    empty = [POSETRACK18.index("left_ear"), POSETRACK18.index("right_ear")]
    slots[empty, :2] = person.keypoints[MODEL.index("nose"), :2]
    slots[empty, 2] = 0.0
    return {"image_id": int(person.image_id), "category_id": category_id,
            "keypoints": slots.reshape(-1).tolist(), "score": float(person.score)}


def write_coco_results(path: str | Path, people: Iterable[PredictedPerson], category_id: int = 1) -> None:
    """Write COCO keypoint results (a JSON list) for ``people``."""
    atomic_write_json(path, [coco_result(p, category_id) for p in people])

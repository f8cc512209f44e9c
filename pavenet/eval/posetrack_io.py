"""Load PoseTrack18 ground-truth and prediction folders into arrays, as the official code sees them.

The official evaluator (``poseval``) converts every PoseTrack18 file to the PoseTrack17 layout and
then cleans it up. This module reproduces the outcome of that pipeline:

* a file's frames are its ``images`` in file order; a prediction file is paired with the
  ground-truth file of the same name and its frames are aligned **by position**;
* a keypoint slot counts as present unless it is exactly ``(0, 0, 0)``; the slots are mapped to
  joints by the names in the file's ``categories`` block (ears are dropped);
* per-joint prediction scores come from the ``scores`` list (``-9999`` when it is empty/missing);
* frames without any ground-truth person are dropped together with their predictions;
* in frames with ignore regions, ground-truth and predicted joints strictly inside a region are
  removed, then people left without any joint are removed (only in those frames);
* the head size of a ground-truth person is 0.6 x the diagonal of its ``bbox_head``.
"""
from __future__ import annotations

import glob
import json
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pavenet.data.joints import MODEL
from pavenet.eval.regions import inside_any, polygons_from_image
from pavenet.errors import PavenetError

#: Score the official code gives a predicted joint without a score.
MIN_SCORE = -9999.0
NUM_JOINTS = len(MODEL)


class PoseTrackFormatError(PavenetError, ValueError):
    """A PoseTrack file that cannot be evaluated; the message names the file."""


@dataclass
class People:
    """The people of one frame (ground truth or prediction), in file order; J = 15 model joints."""

    xy: np.ndarray  #: (N, J, 2) float64 pixel positions
    has: np.ndarray  #: (N, J) bool, joint present (annotated / predicted, not ignored)
    score: np.ndarray  #: (N, J) float64 per-joint scores (predictions)
    track: np.ndarray  #: (N,) int64 track ids (-1 when absent)
    head: np.ndarray  #: (N,) float64 PCKh head size (ground truth; nan for predictions)

    def __len__(self) -> int:
        return int(self.track.shape[0])

    def subset(self, keep: np.ndarray) -> "People":
        """The people selected by the boolean or index array ``keep``."""
        return People(self.xy[keep], self.has[keep], self.score[keep], self.track[keep], self.head[keep])


@dataclass
class Frame:
    """One evaluated frame: a ground-truth frame with at least one annotated person."""

    image_id: int
    gt: People
    pred: People


@dataclass
class Sequence:
    """One sequence (one JSON file per folder)."""

    name: str
    frames: list[Frame]


def _fail(path: Path, problem: str) -> PoseTrackFormatError:
    return PoseTrackFormatError(f"{path}: {problem}")


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise _fail(path, f"not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise _fail(path, "expected a JSON object with 'images', 'annotations' and 'categories'")
    if "annolist" in data:
        raise _fail(path, "PoseTrack17 'annolist' files are not supported; use the PoseTrack18 layout")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise _fail(path, f"missing or malformed '{key}' list")
    return data


def _joint_slots(path: Path, categories: list) -> tuple[np.ndarray, int]:
    """Slot index of each model joint in this file's keypoint layout, and the number of slots."""
    if len(categories) != 1 or not isinstance(categories[0], dict):
        raise _fail(path, "expected exactly one category (person)")
    names = categories[0].get("keypoints")
    if not isinstance(names, list) or len(names) not in (15, 17):
        raise _fail(path, "the category must list 15 or 17 keypoint names")
    missing = [n for n in MODEL.names if n not in names]
    if missing:
        raise _fail(path, f"keypoint names {missing} not found in categories")
    return np.array([names.index(n) for n in MODEL.names], dtype=np.int64), len(names)


def _head_size(path: Path, ann: dict, annotated: bool) -> float:
    box = ann.get("bbox_head")
    if box is None:
        if annotated:
            raise _fail(path, f"annotation {ann.get('id')} has keypoints but no 'bbox_head'")
        return float("nan")
    try:
        x1, y1 = float(box[0]), float(box[1])
        x2, y2 = x1 + float(box[2]), y1 + float(box[3])
    except (TypeError, ValueError, IndexError) as e:
        raise _fail(path, f"annotation {ann.get('id')} has a malformed 'bbox_head'") from e
    return 0.6 * float(np.linalg.norm(np.subtract([x2, y2], [x1, y1])))


def _keypoints(path: Path, anns: list[dict], slots: np.ndarray, n_slots: int) -> np.ndarray:
    """(N, J, 3) keypoints of the model joints."""
    try:
        kp = np.array([ann["keypoints"] for ann in anns], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as e:
        raise _fail(path, f"every annotation needs 'keypoints' with {n_slots} x 3 numbers") from e
    if kp.shape != (len(anns), n_slots * 3):
        raise _fail(path, f"every annotation's 'keypoints' must hold {n_slots} x 3 numbers")
    return kp.reshape(len(anns), n_slots, 3)[:, slots]


def _scores(path: Path, ann: dict, slots: np.ndarray, n_slots: int) -> np.ndarray | float:
    scores = ann.get("scores")
    if not scores:
        return MIN_SCORE
    if not isinstance(scores, list) or len(scores) < n_slots:
        raise _fail(path, f"annotation {ann.get('id')}: 'scores' must hold {n_slots} numbers")
    try:
        return np.asarray(scores, dtype=np.float64)[slots]
    except (TypeError, ValueError) as e:
        raise _fail(path, f"annotation {ann.get('id')}: 'scores' must be numbers") from e


def _track_id(path: Path, ann: dict) -> int:
    tid = ann.get("track_id")
    if isinstance(tid, list):
        tid = tid[0] if tid else None
    if tid is None:
        return -1
    if not isinstance(tid, (int, np.integer)) or isinstance(tid, bool):
        raise _fail(path, f"annotation {ann.get('id')}: 'track_id' must be an integer")
    return int(tid)


def _people(path: Path, anns: list[dict], slots: np.ndarray, n_slots: int, is_gt: bool) -> People:
    n = len(anns)
    if n == 0:
        return People(np.zeros((0, NUM_JOINTS, 2)), np.zeros((0, NUM_JOINTS), bool),
                      np.zeros((0, NUM_JOINTS)), np.zeros(0, np.int64), np.zeros(0))
    kp = _keypoints(path, anns, slots, n_slots)
    has = ~((kp[..., 0] == 0) & (kp[..., 1] == 0) & (kp[..., 2] == 0))
    score = np.empty((n, NUM_JOINTS))
    for k, ann in enumerate(anns):
        score[k] = _scores(path, ann, slots, n_slots)
    track = np.array([_track_id(path, ann) for ann in anns], dtype=np.int64)
    head = np.full(n, np.nan)
    if is_gt:
        head = np.array([_head_size(path, ann, bool(h.any())) for ann, h in zip(anns, has)])
    return People(kp[..., :2].copy(), has, score, track, head)


def _check_tracks(path: Path, image_id: int, people: People, missing_ok: bool, unique: bool) -> None:
    if not missing_ok and (people.track < 0).any() and len(people):
        raise _fail(path, f"frame {image_id}: a person has no 'track_id' (needed for tracking)")
    if unique:
        ids = people.track[people.track >= 0]
        if np.unique(ids).size != ids.size:
            raise _fail(path, f"frame {image_id}: track ids are not unique within the frame")


def _remove_ignored(people: People, polygons: list) -> People:
    if not polygons or not len(people):
        return people
    flat = people.xy.reshape(-1, 2)
    inside = inside_any(flat[:, 0], flat[:, 1], polygons).reshape(people.has.shape)
    has = people.has & ~inside
    out = People(people.xy, has, people.score, people.track, people.head)
    return out.subset(has.any(axis=1))


def _group(annotations: list) -> dict[int, list[dict]]:
    by_image: dict[int, list[dict]] = defaultdict(list)
    for ann in annotations:
        if isinstance(ann, dict) and "image_id" in ann:
            by_image[ann["image_id"]].append(ann)
    return by_image


def load_sequence(gt_path: Path, pred_path: Path, need_tracks: bool = True) -> Sequence:
    """Load one ground-truth file and its prediction file into a :class:`Sequence`."""
    gt_path, pred_path = Path(gt_path), Path(pred_path)
    if not pred_path.is_file():
        raise FileNotFoundError(f"prediction file {pred_path} does not exist (ground truth: {gt_path})")
    gt, pr = _read_json(gt_path), _read_json(pred_path)
    if len(gt["images"]) != len(pr["images"]):
        raise _fail(pred_path, f"{len(pr['images'])} prediction frames but {len(gt['images'])} "
                               f"ground-truth frames in {gt_path}")
    gt_slots, gt_n = _joint_slots(gt_path, gt["categories"])
    pr_slots, pr_n = _joint_slots(pred_path, pr["categories"])
    gt_by, pr_by = _group(gt["annotations"]), _group(pr["annotations"])
    frames = []
    for gt_img, pr_img in zip(gt["images"], pr["images"]):
        if not isinstance(gt_img, dict) or "id" not in gt_img:
            raise _fail(gt_path, "an image entry has no 'id'")
        if not isinstance(pr_img, dict) or "id" not in pr_img:
            raise _fail(pred_path, "an image entry has no 'id'")
        pred = _people(pred_path, pr_by.get(pr_img["id"], []), pr_slots, pr_n, is_gt=False)
        _check_tracks(pred_path, pr_img["id"], pred, missing_ok=not need_tracks, unique=need_tracks)
        gt_anns = gt_by.get(gt_img["id"], [])
        if not gt_anns:
            continue
        truth = _people(gt_path, gt_anns, gt_slots, gt_n, is_gt=True)
        _check_tracks(gt_path, gt_img["id"], truth, missing_ok=not need_tracks, unique=False)
        polygons = polygons_from_image(gt_img)
        frames.append(Frame(int(gt_img["id"]), _remove_ignored(truth, polygons), _remove_ignored(pred, polygons)))
    return Sequence(gt_path.name.split(".")[0], frames)


def load_folders(gt_dir: Path, pred_dir: Path, need_tracks: bool = True, sort: bool = False) -> list[Sequence]:
    """Load every ``*.json`` of ``gt_dir`` with its namesake in ``pred_dir``.

    The files come in the folder's listing order, as ``glob`` gives them to the official code
    (that order breaks score ties between sequences); ``sort=True`` sorts them by name.
    """
    gt_dir, pred_dir = Path(gt_dir), Path(pred_dir)
    for folder, what in ((gt_dir, "ground-truth"), (pred_dir, "prediction")):
        if not folder.is_dir():
            raise FileNotFoundError(f"{what} folder {folder} does not exist")
    files = [Path(f) for f in glob.glob(os.path.join(gt_dir, "*.json"))]
    if sort:
        files.sort()
    if not files:
        raise FileNotFoundError(f"no *.json ground-truth files in {gt_dir}")
    return [load_sequence(f, pred_dir / f.name, need_tracks) for f in files]

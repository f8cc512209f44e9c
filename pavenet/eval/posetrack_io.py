"""Load PoseTrack ground-truth and prediction folders into arrays, as the official code sees them.

Each file may be in the PoseTrack18 layout (``images``, ``annotations``, ``categories``) or the
PoseTrack17 ``annolist`` layout, in any mix; a file holding ``annolist`` is read as PoseTrack17,
as the official evaluator (``poseval``) decides. That evaluator converts every PoseTrack18 file to
the PoseTrack17 layout and then cleans it up. This module reproduces the outcome of that pipeline:

* a file's frames are its ``images`` (``annolist`` entries) in file order; a prediction file is
  paired with the ground-truth file of the same name and its frames are aligned **by position**;
  annotations of image ids that are not in ``images`` are left out (with a counted warning);
* PoseTrack18: a keypoint slot counts as present unless it is exactly ``(0, 0, 0)``; the slots
  are mapped to joints by the names in the file's ``categories`` block (ears are dropped);
  per-joint prediction scores come from the ``scores`` list (``-9999`` when it is empty/missing);
* PoseTrack17: a joint is present when its id (0..14, ``POSETRACK17``) is in the person's
  ``annopoints[0].point`` list (``is_visible`` is not read); its score is the point's ``score``
  (``-9999`` when missing); a person (``annorect`` entry) without an ``annopoints[0].point`` list
  is dropped; fields are one-element lists (``"x": [12.5]``), as the official code reads ``[0]``;
* ground-truth frames without any person (no annotation / an empty ``annorect``) are dropped
  together with their predictions, whatever ``is_labeled`` says;
* in frames with ignore regions, ground-truth and predicted joints strictly inside a region are
  removed, then people left without any joint are removed (only in those frames);
* the head size of a ground-truth person is 0.6 x the diagonal of its head box (``bbox_head``,
  or ``x1 y1 x2 y2``).
"""
from __future__ import annotations

import glob
import json
import os
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pavenet.data.fields import AnnotationError, array, identifier, numbers
from pavenet.data.joints import MODEL
from pavenet.data.posetrack17 import POSETRACK17, head_box, ignore_polygons, integer, rect_points
from pavenet.data.regions import inside_any, polygons_from_image
from pavenet.errors import PavenetError

#: Score the official code gives a predicted joint without a score.
MIN_SCORE = -9999.0
NUM_JOINTS = len(MODEL)
#: Model joint of each PoseTrack17 joint id.
_MODEL_OF_ID = [MODEL.index(name) for name in POSETRACK17.names]


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


@dataclass
class FileFrame:
    """One frame of one file (ground truth or prediction), before the two files are paired."""

    image_id: int  #: PoseTrack18: the image id; PoseTrack17: the position in ``annolist``
    label: str  #: how messages name the frame
    evaluated: bool  #: ground truth: the frame has a person entry (the official cleanupData keeps it)
    people: People
    polygons: list  #: ignore regions (ground truth)


_LAYOUTS = ("a PoseTrack18 file ('images', 'annotations' and 'categories' lists) "
            "or a PoseTrack17 file (an 'annolist' list)")


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, RecursionError) as e:
        raise _fail(path, f"not valid JSON ({e})") from e
    except UnicodeDecodeError as e:
        raise _fail(path, f"not UTF-8 text ({e})") from e
    except OSError as e:
        raise _fail(path, f"unreadable ({e.strerror or e})") from e
    if not isinstance(data, dict):
        raise _fail(path, f"expected a JSON object: {_LAYOUTS}")
    if "annolist" in data:
        if not isinstance(data["annolist"], list):
            raise _fail(path, "'annolist' must be a list of frames")
        return data
    missing = [key for key in ("images", "annotations", "categories") if not isinstance(data.get(key), list)]
    if len(missing) == 3:
        raise _fail(path, f"no 'annolist' and no 'images' list: expected {_LAYOUTS}")
    if missing:
        raise _fail(path, f"missing or malformed '{missing[0]}' list")
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


def head_size(x1: float, y1: float, x2: float, y2: float) -> float:
    """PCKh normaliser of a head box given by its corners: 0.6 x its diagonal."""
    return 0.6 * float(np.linalg.norm(np.subtract([x2, y2], [x1, y1])))


def _where(path: Path, k: int, ann: dict) -> str:
    """How messages name annotation ``k`` of a file."""
    return f"{path}: annotations[{k}] (id {ann.get('id')})"


def _head_size(where: str, ann: dict, annotated: bool) -> float:
    box = ann.get("bbox_head")
    if box is None:
        if annotated:
            raise AnnotationError(f"{where} has keypoints but no 'bbox_head'")
        return float("nan")
    x1, y1, w, h = numbers(box, f"{where}: 'bbox_head'", 4)
    return head_size(x1, y1, x1 + w, y1 + h)


def _scores(where: str, ann: dict, slots: np.ndarray, n_slots: int) -> np.ndarray | float:
    scores = ann.get("scores")
    if not scores:
        return MIN_SCORE
    if not isinstance(scores, list) or len(scores) < n_slots:
        raise AnnotationError(f"{where}: 'scores' must hold {n_slots} numbers")
    return numbers(scores, f"{where}: 'scores'")[slots]


def _track_id(where: str, ann: dict) -> int:
    tid = ann.get("track_id")
    if isinstance(tid, list):
        tid = tid[0] if tid else None
    if tid is None:
        return -1
    if not isinstance(tid, int) or isinstance(tid, bool):
        raise AnnotationError(f"{where}: 'track_id' must be an integer")
    return identifier(tid, f"{where}: 'track_id'")


def _no_people() -> People:
    return People(np.zeros((0, NUM_JOINTS, 2)), np.zeros((0, NUM_JOINTS), bool),
                  np.zeros((0, NUM_JOINTS)), np.zeros(0, np.int64), np.zeros(0))


def _people(path: Path, anns: list[tuple[int, dict]], slots: np.ndarray, n_slots: int, is_gt: bool) -> People:
    """The people of one frame from its (index in the file, annotation) pairs."""
    if not anns:
        return _no_people()
    n = len(anns)
    kp, score = np.empty((n, NUM_JOINTS, 3)), np.empty((n, NUM_JOINTS))
    track, head = np.empty(n, np.int64), np.full(n, np.nan)
    for row, (k, ann) in enumerate(anns):
        where = _where(path, k, ann)
        kp[row] = numbers(ann.get("keypoints"), f"{where}: 'keypoints'", n_slots * 3).reshape(n_slots, 3)[slots]
        score[row] = _scores(where, ann, slots, n_slots)
        track[row] = _track_id(where, ann)
        if is_gt:
            annotated = not ((kp[row, :, 0] == 0) & (kp[row, :, 1] == 0) & (kp[row, :, 2] == 0)).all()
            head[row] = _head_size(where, ann, annotated)
    has = ~((kp[..., 0] == 0) & (kp[..., 1] == 0) & (kp[..., 2] == 0))
    return People(kp[..., :2].copy(), has, score, track, head)


def _annolist_people(path: Path, where: str, rects: list, is_gt: bool) -> People:
    """The people of one ``annolist`` entry's ``annorect`` (those with a ``point`` list)."""
    xy, has, score, track, head = [], [], [], [], []
    for r, rect in enumerate(rects):
        at = f"{path}: {where}.annorect[{r}]"
        if not isinstance(rect, dict):
            raise AnnotationError(f"{at}: an annorect entry must be a dict")
        points = rect_points(rect, at, strict=True)
        if points is None:
            continue
        p_xy, p_has, p_score = np.zeros((NUM_JOINTS, 2)), np.zeros(NUM_JOINTS, bool), np.zeros(NUM_JOINTS)
        for pt in points:
            j = _MODEL_OF_ID[pt.joint]
            if p_has[j]:
                raise AnnotationError(f"{at}: joint id {pt.joint} appears twice")
            p_xy[j], p_has[j] = (pt.x, pt.y), True
            p_score[j] = MIN_SCORE if pt.score is None else pt.score
        size = float("nan")
        if is_gt:
            box = head_box(rect, at, strict=True)
            if box is not None:
                size = head_size(*box)
            elif p_has.any():
                raise AnnotationError(f"{at}: a person with points needs the head box 'x1', 'y1', 'x2', 'y2'")
        xy.append(p_xy)
        has.append(p_has)
        score.append(p_score)
        track.append(integer(rect["track_id"], "track_id", at, strict=True) if "track_id" in rect else -1)
        head.append(size)
    if not xy:
        return _no_people()
    return People(np.array(xy), np.array(has), np.array(score), np.array(track, dtype=np.int64), np.array(head))


def _posetrack17_frames(path: Path, data: dict, is_gt: bool) -> list[FileFrame]:
    frames = []
    for k, entry in enumerate(data["annolist"]):
        where = f"annolist[{k}]"
        if not isinstance(entry, dict):
            raise _fail(path, f"{where} must be a dict")
        rects = entry.get("annorect")
        if not isinstance(rects, list):
            raise _fail(path, f"{where}: missing or malformed 'annorect' list")
        people = _annolist_people(path, where, rects, is_gt)
        polygons = []
        if is_gt:
            polygons = [(p[:, 0], p[:, 1]) for p in ignore_polygons(entry, f"{path}: {where}", strict=True)]
        frames.append(FileFrame(k, where, bool(rects), people, polygons))
    return frames


def _image_ids(path: Path, images: list) -> list[int]:
    ids = []
    for k, img in enumerate(images):
        if not isinstance(img, dict) or "id" not in img:
            raise _fail(path, f"images[{k}] has no 'id'")
        ids.append(identifier(img["id"], f"{path}: images[{k}]: 'id'"))
    return ids


def _group(path: Path, annotations: list, image_ids: set[int]) -> dict[int, list[tuple[int, dict]]]:
    """image id -> (index in the file, annotation) of its annotations. An annotation of an image
    the file does not list is left out, as the official converter does, with a counted warning."""
    by_image: dict[int, list[tuple[int, dict]]] = defaultdict(list)
    unknown = []
    for k, ann in enumerate(annotations):
        if not isinstance(ann, dict):
            raise _fail(path, f"annotations[{k}] must be a JSON object")
        if "image_id" not in ann:
            raise AnnotationError(f"{_where(path, k, ann)} has no 'image_id'")
        image_id = identifier(ann["image_id"], f"{_where(path, k, ann)}: 'image_id'")
        if image_id in image_ids:
            by_image[image_id].append((k, ann))
        else:
            unknown.append((k, image_id))
    if unknown:
        k, image_id = unknown[0]
        warnings.warn(f"{path}: {len(unknown)} annotation(s) refer to image ids not in 'images' and are not "
                      f"evaluated (first: annotations[{k}], image_id {image_id})", stacklevel=2)
    return by_image


def _posetrack18_frames(path: Path, data: dict, is_gt: bool) -> list[FileFrame]:
    slots, n_slots = _joint_slots(path, data["categories"])
    ids = _image_ids(path, data["images"])
    by_image = _group(path, data["annotations"], set(ids))
    frames = []
    for img, image_id in zip(data["images"], ids):
        anns = by_image.get(image_id, [])
        people = _people(path, anns, slots, n_slots, is_gt)
        polygons = _ignore_regions(path, img, image_id) if is_gt and anns else []
        frames.append(FileFrame(image_id, f"frame {image_id}", bool(anns), people, polygons))
    return frames


def _ignore_regions(path: Path, img: dict, image_id: int) -> list:
    """The ignore polygons of an image entry, checked (see :func:`polygons_from_image`)."""
    where = f"{path}: image {image_id}"
    for key in ("ignore_regions_x", "ignore_regions_y"):
        for k, polygon in enumerate(array(img.get(key) or [], f"{where}: '{key}'")):
            numbers(polygon, f"{where}: '{key}'[{k}]")
    return polygons_from_image(img)


def read_frames(path: Path, is_gt: bool) -> list[FileFrame]:
    """The frames of one ground-truth (``is_gt``) or prediction file, in either layout."""
    data = _read_json(path)
    try:
        if "annolist" in data:
            return _posetrack17_frames(path, data, is_gt)
        return _posetrack18_frames(path, data, is_gt)
    except AnnotationError as e:
        raise PoseTrackFormatError(str(e)) from None


def _check_tracks(path: Path, frame: str, people: People, missing_ok: bool, unique: bool) -> None:
    if not missing_ok and (people.track < 0).any() and len(people):
        raise _fail(path, f"{frame}: a person has no 'track_id' (needed for tracking)")
    if unique:
        ids = people.track[people.track >= 0]
        if np.unique(ids).size != ids.size:
            raise _fail(path, f"{frame}: track ids are not unique within the frame")


def _remove_ignored(people: People, polygons: list) -> People:
    if not polygons or not len(people):
        return people
    flat = people.xy.reshape(-1, 2)
    inside = inside_any(flat[:, 0], flat[:, 1], polygons).reshape(people.has.shape)
    has = people.has & ~inside
    out = People(people.xy, has, people.score, people.track, people.head)
    return out.subset(has.any(axis=1))


def load_sequence(gt_path: Path, pred_path: Path, need_tracks: bool = True) -> Sequence:
    """Load one ground-truth file and its prediction file (either layout each) into a :class:`Sequence`."""
    gt_path, pred_path = Path(gt_path), Path(pred_path)
    if not pred_path.is_file():
        raise FileNotFoundError(f"prediction file {pred_path} does not exist (ground truth: {gt_path})")
    gt, pr = read_frames(gt_path, is_gt=True), read_frames(pred_path, is_gt=False)
    if len(gt) != len(pr):
        raise _fail(pred_path, f"{len(pr)} prediction frames but {len(gt)} ground-truth frames in {gt_path}")
    frames = []
    for g, p in zip(gt, pr):
        _check_tracks(pred_path, p.label, p.people, missing_ok=not need_tracks, unique=need_tracks)
        if not g.evaluated:
            continue
        _check_tracks(gt_path, g.label, g.people, missing_ok=not need_tracks, unique=False)
        frames.append(Frame(int(g.image_id), _remove_ignored(g.people, g.polygons),
                            _remove_ignored(p.people, g.polygons)))
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

"""PoseTrack17 ``annolist`` layout: the one parser of its entries, and the training reader.

One file per sequence: ``annolist`` is a list of frames, each with ``image[0].name``,
``is_labeled``, ``annorect`` (persons: head box ``x1 y1 x2 y2``, ``track_id``,
``annopoints[0].point`` with per-joint ``id``/``x``/``y`` and, in predictions, ``score``) and
``ignore_regions`` (``point`` lists). Values converted from MATLAB sit in one-element lists.
Joint ids are PoseTrack17's (:data:`POSETRACK17`).

The helpers below read one field, point, person box or ignore region; the training reader
(:func:`load_posetrack17`) and the evaluation reader (``pavenet.eval.posetrack_io``) both use
them. ``strict=False`` (training) also accepts bare scalars (``"x": 3`` for ``"x": [3]``);
``strict=True`` (evaluation) accepts only what the official evaluator reads, which indexes every
such field with ``[0]``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from pavenet.data.joints import POSETRACK18, JointSet
from pavenet.data.posetrack import AnnotationError, Frame, Person, Sequence, read_json

#: ``POSETRACK17.names[i]`` is the joint with id ``i`` in a PoseTrack17 file; it is also the order
#: of the official evaluator's tables. ``head_bottom`` is the official code's "neck".
POSETRACK17 = JointSet("posetrack17", (
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
    "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist",
    "head_bottom", "nose", "head_top",
))
#: PoseTrack17 joint id -> PoseTrack18 slot.
POSETRACK17_TO_POSETRACK18: list[int] = [POSETRACK18.index(n) for n in POSETRACK17.names]
#: The head box fields of an ``annorect`` entry.
HEAD_BOX_KEYS = ("x1", "y1", "x2", "y2")


def scalar(value: Any, key: str, where: str, strict: bool = False) -> Any:
    """The value of a field the layout wraps in a one-element list (``[v]``).

    ``strict``: only ``[v]`` is accepted; otherwise a bare ``v`` (or nested one-element lists) too.
    """
    if strict:
        if not isinstance(value, list):
            raise AnnotationError(f"{where}: '{key}' must be a one-element list such as [{value!r}] "
                                  f"(the official evaluator reads {key}[0]), got {value!r}")
        if len(value) != 1 or isinstance(value[0], list):
            raise AnnotationError(f"{where}: '{key}' must be a one-element list, got {value!r}")
        return value[0]
    while isinstance(value, list):
        if len(value) != 1:
            raise AnnotationError(f"{where}: '{key}' must be a single value, got {value!r}")
        value = value[0]
    return value


def number(value: Any, key: str, where: str, strict: bool = False) -> float:
    """A finite number field (see :func:`scalar`); ``strict`` also refuses numbers written as strings."""
    v = scalar(value, key, where, strict)
    if isinstance(v, bool) or (strict and isinstance(v, str)):
        raise AnnotationError(f"{where}: '{key}' must be a number, got {v!r}")
    try:
        out = float(v)
    except (TypeError, ValueError, OverflowError):
        raise AnnotationError(f"{where}: '{key}' must be a finite number, got {v!r}") from None
    if not math.isfinite(out):
        raise AnnotationError(f"{where}: '{key}' is not finite ({v!r})")
    return out


def integer(value: Any, key: str, where: str, strict: bool = False) -> int:
    """An integer field (a float with an integral value is accepted; see :func:`scalar`)."""
    v = number(value, key, where, strict)
    if v != int(v) or not -2**63 <= int(v) < 2**63:
        raise AnnotationError(f"{where}: '{key}' must be an integer, got {scalar(value, key, where, strict)!r}")
    return int(v)


@dataclass
class Point:
    """One point of an ``annopoints`` list."""

    joint: int  #: PoseTrack17 joint id 0..14
    x: float
    y: float
    score: Optional[float]  #: the prediction's joint score, None when the point has none


def _point_list(container: Any, key: str, where: str, strict: bool) -> Optional[list]:
    """The ``point`` list of an ``annopoints`` / ``ignore_regions`` entry; None when it has none.

    ``strict`` (as the official code indexes them): ``annopoints`` must be a list, with no points
    when it is empty or its first dict is empty or has no ``point`` (``rectHasPoints``); an ignore
    region must be a dict with a ``point`` list.
    """
    if strict:
        if key == "annopoints":
            if not isinstance(container, list):
                raise AnnotationError(f"{where}: 'annopoints' must be a list such as [{{'point': [...]}}]")
            if not container:
                return None
            container = container[0]
            if not isinstance(container, dict):
                raise AnnotationError(f"{where}: 'annopoints'[0] must be a dict with a 'point' list")
            if "point" not in container:
                return None
        elif not isinstance(container, dict) or "point" not in container:
            raise AnnotationError(f"{where}: an ignore region must be a dict with a 'point' list")
        if not isinstance(container["point"], list):
            raise AnnotationError(f"{where}: 'point' must be a list")
        return container["point"]
    if isinstance(container, list):
        container = container[0] if container else {}
    if not isinstance(container, dict) or "point" not in container:
        return None
    pts = container["point"]
    return pts if isinstance(pts, list) else [pts]


def rect_points(rect: dict, where: str, strict: bool = False) -> Optional[list[Point]]:
    """The points of an ``annorect`` entry; None when it has no ``annopoints[0].point`` list.

    Joint ids outside 0..14 are an error.
    """
    pts = _point_list(rect.get("annopoints", []), "annopoints", where, strict)
    if pts is None:
        return None
    out = []
    for k, pt in enumerate(pts):
        at = f"{where}.annopoints[0].point[{k}]"
        if not isinstance(pt, dict):
            raise AnnotationError(f"{at}: a point must be a dict with 'id', 'x' and 'y'")
        for key in ("id", "x", "y"):
            if key not in pt:
                raise AnnotationError(f"{at}: missing '{key}'")
        jid = integer(pt["id"], "id", at, strict)
        if not 0 <= jid < len(POSETRACK17):
            raise AnnotationError(f"{at}: joint id {jid} outside 0..{len(POSETRACK17) - 1}")
        score = number(pt["score"], "score", at, strict) if "score" in pt else None
        out.append(Point(jid, number(pt["x"], "x", at, strict), number(pt["y"], "y", at, strict), score))
    return out


def head_box(rect: dict, where: str, strict: bool = False) -> Optional[tuple[float, float, float, float]]:
    """The head box ``(x1, y1, x2, y2)`` of an ``annorect`` entry; None when a field is missing."""
    if not all(k in rect for k in HEAD_BOX_KEYS):
        return None
    x1, y1, x2, y2 = (number(rect[k], k, where, strict) for k in HEAD_BOX_KEYS)
    return x1, y1, x2, y2


def ignore_polygons(entry: dict, where: str, strict: bool = False) -> list[np.ndarray]:
    """The ignore regions of an ``annolist`` entry, each an (N, 2) array (N may be below 3)."""
    regions = entry.get("ignore_regions") or []
    if not isinstance(regions, list):
        if strict:
            raise AnnotationError(f"{where}: 'ignore_regions' must be a list")
        regions = [regions]
    polys = []
    for r, region in enumerate(regions):
        at = f"{where}.ignore_regions[{r}]"
        pts = _point_list(region, "ignore_regions", at, strict) or []
        xy = []
        for k, p in enumerate(pts):
            pat = f"{at}.point[{k}]"
            if not isinstance(p, dict) or "x" not in p or "y" not in p:
                raise AnnotationError(f"{pat}: a point must be a dict with 'x' and 'y'")
            xy.append((number(p["x"], "x", pat, strict), number(p["y"], "y", pat, strict)))
        polys.append(np.array(xy, dtype=np.float64).reshape(-1, 2))
    return polys


def _person(rect: Any, where: str) -> Person:
    if not isinstance(rect, dict):
        raise AnnotationError(f"{where}: an annorect entry must be a dict")
    kp = np.zeros((len(POSETRACK18), 3))
    for pt in rect_points(rect, where) or []:
        kp[POSETRACK17_TO_POSETRACK18[pt.joint]] = (pt.x, pt.y, 1.0)
    if "track_id" not in rect:
        raise AnnotationError(f"{where}: missing 'track_id'")
    box = head_box(rect, where)
    head = None if box is None else np.array([box[0], box[1], box[2] - box[0], box[3] - box[1]])
    return Person(track_id=integer(rect["track_id"], "track_id", where), keypoints=kp, bbox_head=head)


def load_posetrack17(path: str | Path, image_root: str | Path | None = None) -> Sequence:
    """Read one PoseTrack17 ``annolist`` file -> :class:`Sequence` (17 PoseTrack18 slots).

    A frame's ``image_id`` and ``index`` are its position in the ``annolist`` (the image ids
    ``pavenet.eval.writers.write_annolist_predictions`` expects).
    """
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("annolist"), list):
        raise AnnotationError(f"{path}: expected a dict with an 'annolist' list")
    root = Path(image_root) if image_root is not None else path.parent.parent.parent
    frames = []
    for idx, entry in enumerate(data["annolist"]):
        where = f"{path}: annolist[{idx}]"
        try:
            name = str(scalar(entry["image"], "image", where)["name"])
        except (KeyError, TypeError):
            raise AnnotationError(f"{where}: missing image name") from None
        labeled = bool(scalar(entry.get("is_labeled", 1), "is_labeled", where))
        rects = entry.get("annorect") or []
        if not isinstance(rects, list):
            raise AnnotationError(f"{where}: 'annorect' must be a list")
        persons = [_person(r, f"{where}.annorect[{k}]") for k, r in enumerate(rects)]
        polys = [p for p in ignore_polygons(entry, where) if len(p) >= 3]
        frames.append(Frame(image_id=idx, index=idx, image_path=root / name, is_labeled=labeled,
                            persons=persons if labeled else [], ignore_regions=polys))
    seq = Sequence(name=path.stem, frames=frames, source=path, nframes=len(frames))
    if not seq.labeled_indices:
        raise AnnotationError(f"{path}: sequence has no labelled frame")
    return seq

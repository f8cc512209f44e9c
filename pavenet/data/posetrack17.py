"""PoseTrack17 reader (``annolist`` JSON layout) -> the same :class:`Sequence` as PoseTrack18.

One file per sequence: ``annolist`` is a list of frames, each with ``image[0].name``,
``is_labeled``, ``annorect`` (persons: head box ``x1 y1 x2 y2``, ``track_id``,
``annopoints[0].point`` with per-joint ``id``/``x``/``y``) and ``ignore_regions``
(``point`` lists). Values converted from MATLAB often sit in one-element lists; both forms are
accepted. Joint ids follow the PoseTrack17 (MPII) numbering, mapped onto PoseTrack18 slots by
:data:`POSETRACK17_TO_POSETRACK18`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pavenet.data.joints import POSETRACK18
from pavenet.data.posetrack import AnnotationError, Frame, Person, Sequence, _read_json

#: PoseTrack17 joint id -> PoseTrack18 slot name.
POSETRACK17_NAMES: tuple[str, ...] = (
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
    "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist",
    "head_bottom", "nose", "head_top",
)
POSETRACK17_TO_POSETRACK18: list[int] = [POSETRACK18.index(n) for n in POSETRACK17_NAMES]


def _scalar(value: Any, key: str, where: str) -> Any:
    while isinstance(value, list):
        if len(value) != 1:
            raise AnnotationError(f"{where}: '{key}' must be a single value, got {value!r}")
        value = value[0]
    return value


def _points(container: Any, where: str) -> list[dict]:
    """``annopoints`` / ``ignore_regions`` entry -> its list of point dicts."""
    if isinstance(container, list):
        container = container[0] if container else {}
    pts = container.get("point", []) if isinstance(container, dict) else []
    return pts if isinstance(pts, list) else [pts]


def _person(rect: dict, where: str) -> Person:
    kp = np.zeros((len(POSETRACK18), 3))
    for pt in _points(rect.get("annopoints", []), where):
        jid = int(_scalar(pt.get("id"), "id", where))
        if not 0 <= jid < len(POSETRACK17_NAMES):
            raise AnnotationError(f"{where}: joint id {jid} outside 0..{len(POSETRACK17_NAMES) - 1}")
        slot = POSETRACK17_TO_POSETRACK18[jid]
        kp[slot] = (float(_scalar(pt["x"], "x", where)), float(_scalar(pt["y"], "y", where)), 1.0)
    if "track_id" not in rect:
        raise AnnotationError(f"{where}: missing 'track_id'")
    head = None
    if all(k in rect for k in ("x1", "y1", "x2", "y2")):
        x1, y1, x2, y2 = (float(_scalar(rect[k], k, where)) for k in ("x1", "y1", "x2", "y2"))
        head = np.array([x1, y1, x2 - x1, y2 - y1])
    return Person(track_id=int(_scalar(rect["track_id"], "track_id", where)), keypoints=kp, bbox_head=head)


def _ignore(entry: dict, where: str) -> list[np.ndarray]:
    regions = entry.get("ignore_regions") or []
    polys = []
    for region in regions if isinstance(regions, list) else [regions]:
        pts = _points(region, where)
        if len(pts) >= 3:
            polys.append(np.array([[float(_scalar(p["x"], "x", where)), float(_scalar(p["y"], "y", where))]
                                   for p in pts]))
    return polys


def load_posetrack17(path: str | Path, image_root: str | Path | None = None) -> Sequence:
    """Read one PoseTrack17 ``annolist`` file -> :class:`Sequence` (17 PoseTrack18 slots)."""
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("annolist"), list):
        raise AnnotationError(f"{path}: expected a dict with an 'annolist' list")
    root = Path(image_root) if image_root is not None else path.parent.parent.parent
    frames = []
    for idx, entry in enumerate(data["annolist"]):
        where = f"{path}: annolist[{idx}]"
        try:
            name = str(_scalar(entry["image"], "image", where)["name"])
        except (KeyError, TypeError):
            raise AnnotationError(f"{where}: missing image name") from None
        labeled = bool(_scalar(entry.get("is_labeled", 1), "is_labeled", where))
        persons = [_person(r, f"{where}.annorect[{k}]") for k, r in enumerate(entry.get("annorect") or [])]
        frames.append(Frame(image_id=idx, index=idx, image_path=root / name, is_labeled=labeled,
                            persons=persons if labeled else [], ignore_regions=_ignore(entry, where)))
    seq = Sequence(name=path.stem, frames=frames, source=path, nframes=len(frames))
    if not seq.labeled_indices:
        raise AnnotationError(f"{path}: sequence has no labelled frame")
    return seq

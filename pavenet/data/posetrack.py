"""PoseTrack18 / PoseTrack21 annotation reader (COCO-style JSON, one file per sequence or merged).

The reader turns a file into typed :class:`Sequence` objects. Keypoints stay in PoseTrack18's
17 slots and in original-image pixels; a joint is *annotated* when its visibility flag is
non-zero (PoseTrack writes ``v = 1`` for every annotated joint and ``(0, 0, 0)`` otherwise).

Frame order is the order of the images' ``frame_id`` (falling back to ``id``); a frame's
``index`` is its position in that order. Image paths are ``image_root / file_name`` where
``image_root`` defaults to the dataset root (the folder above ``annotations/<split>/``).
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from pavenet.data.fields import AnnotationError, array, identifier, numbers, text
from pavenet.data.joints import POSETRACK18


@dataclass
class Person:
    """One annotated person in one frame."""

    track_id: int
    keypoints: np.ndarray  # (17, 3) float64: x, y in pixels, annotated flag (0 / 1)
    bbox: Optional[np.ndarray] = None  # (4,) x, y, w, h
    bbox_head: Optional[np.ndarray] = None  # (4,) x, y, w, h
    annotation_id: int = -1

    @property
    def annotated(self) -> np.ndarray:
        """(17,) bool: joints carrying an annotation."""
        return self.keypoints[:, 2] > 0


@dataclass
class Frame:
    """One frame of a sequence."""

    image_id: int
    index: int
    image_path: Path
    is_labeled: bool
    width: Optional[int] = None
    height: Optional[int] = None
    persons: list[Person] = field(default_factory=list)
    ignore_regions: list[np.ndarray] = field(default_factory=list)  # each (N, 2) polygon


@dataclass
class Sequence:
    """A video: frames in temporal order."""

    name: str
    frames: list[Frame]
    source: Path
    nframes: Optional[int] = None

    @property
    def labeled_indices(self) -> list[int]:
        return [f.index for f in self.frames if f.is_labeled]

    @property
    def image_size(self) -> Optional[tuple[int, int]]:
        """(width, height) from the annotation file, if it records it."""
        f = self.frames[0]
        return (f.width, f.height) if f.width and f.height else None


def read_json(path: Path) -> Any:
    """The JSON content of ``path``; :class:`AnnotationError` naming the file when it is unreadable."""
    try:
        with open(path, "r", encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise AnnotationError(f"{path}: annotation file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise AnnotationError(f"{path}: malformed JSON: {exc}") from exc
    except OSError as exc:
        raise AnnotationError(f"{path}: unreadable annotation file ({exc.strerror or exc})") from exc


def _polygons(image: dict, where: str) -> list[np.ndarray]:
    xs = array(image.get("ignore_regions_x") or [], f"{where}: 'ignore_regions_x'")
    ys = array(image.get("ignore_regions_y") or [], f"{where}: 'ignore_regions_y'")
    if len(xs) != len(ys):
        raise AnnotationError(f"{where}: ignore_regions_x has {len(xs)} polygons, ignore_regions_y {len(ys)}")
    polys = []
    for i, (x, y) in enumerate(zip(xs, ys)):
        x = numbers(x, f"{where}: 'ignore_regions_x'[{i}]")
        y = numbers(y, f"{where}: 'ignore_regions_y'[{i}]", len(x))
        if len(x) >= 3:
            polys.append(np.stack([x, y], axis=1))
    return polys


def _box(value: Any, key: str, where: str) -> Optional[np.ndarray]:
    if value is None or (isinstance(value, list) and not value):
        return None
    return numbers(value, f"{where}: '{key}'", 4)


def parse_person(ann: dict, where: str) -> Person:
    """One COCO-style PoseTrack annotation -> :class:`Person` (17 slots)."""
    kps = ann.get("keypoints")
    if kps is None:
        raise AnnotationError(f"{where}: missing 'keypoints'")
    n = len(POSETRACK18) * 3
    if len(array(kps, f"{where}: 'keypoints'")) != n:
        raise AnnotationError(f"{where}: 'keypoints' has {len(kps)} values, expected {n} (17 x 3)")
    arr = numbers(kps, f"{where}: 'keypoints'").reshape(len(POSETRACK18), 3)
    arr[:, 2] = (arr[:, 2] > 0).astype(np.float64)
    arr[arr[:, 2] == 0, :2] = 0.0
    track = ann.get("track_id", ann.get("person_id"))
    if track is None:
        raise AnnotationError(f"{where}: missing 'track_id'")
    return Person(
        track_id=identifier(track, f"{where}: 'track_id'"),
        keypoints=arr,
        bbox=_box(ann.get("bbox"), "bbox", where),
        bbox_head=_box(ann.get("bbox_head"), "bbox_head", where),
        annotation_id=identifier(ann.get("id", -1), f"{where}: 'id'"),
    )


def _size(image: dict, key: str, where: str) -> Optional[int]:
    value = image.get(key)
    return identifier(value, f"{where}: '{key}'") if value else None


def _build_sequence(name: str, images: list[dict], anns: list[dict], path: Path, image_root: Path) -> Sequence:
    images = sorted(images, key=lambda im: im["_frame_key"])
    frames, by_id = [], {}
    for idx, im in enumerate(images):
        where = f"{path}: image {im.get('file_name', im['id'])}"
        frame = Frame(
            image_id=im["id"], index=idx, image_path=image_root / text(im.get("file_name"), f"{where}: 'file_name'"),
            is_labeled=bool(im.get("is_labeled", True)), width=_size(im, "width", where),
            height=_size(im, "height", where), ignore_regions=_polygons(im, where),
        )
        frames.append(frame)
        by_id[frame.image_id] = frame
    for i, ann in enumerate(anns):
        frame = by_id[ann["image_id"]]
        where = f"{path}: annotation {i} (id {ann.get('id')}, image {frame.image_path.name})"
        frame.persons.append(parse_person(ann, where))
    nframes = _size(images[0], "nframes", f"{path}: image {images[0]['id']}") if images else None
    return Sequence(name=name, frames=frames, source=path, nframes=nframes)


def _group_images(images: list, path: Path) -> dict[str, list[dict]]:
    """vid_id (or the file's folder) -> copies of its image records with an int ``id`` and ``_frame_key``."""
    groups: dict[str, list[dict]] = {}
    for i, im in enumerate(array(images, f"{path}: 'images'")):
        where = f"{path}: images[{i}]"
        if not isinstance(im, dict) or "id" not in im:
            raise AnnotationError(f"{where} is not an image record with an 'id'")
        image_id = identifier(im["id"], f"{where}: 'id'")
        key = identifier(im.get("frame_id", image_id), f"{where}: 'frame_id'")
        vid = im.get("vid_id")
        if vid is None:
            vid = Path(str(im.get("file_name", ""))).parent.name
        groups.setdefault(str(vid), []).append({**im, "id": image_id, "_frame_key": key})
    return groups


def load_sequences_from_file(path: str | Path, image_root: str | Path | None = None,
                             require_labeled: bool = True) -> list[Sequence]:
    """Read one PoseTrack18/21 JSON file (per-sequence or merged) -> its sequences.

    Raises :class:`AnnotationError` naming the file (and key or frame) on malformed content,
    and, when ``require_labeled``, on a sequence without a labelled frame.
    """
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise AnnotationError(f"{path}: expected a COCO-style dict with 'images' and 'annotations'")
    root = Path(image_root) if image_root is not None else path.parent.parent.parent
    groups = _group_images(data["images"], path)
    image_vid = {im["id"]: vid for vid, ims in groups.items() for im in ims}
    anns: dict[str, list[dict]] = {vid: [] for vid in groups}
    for i, ann in enumerate(array(data["annotations"], f"{path}: 'annotations'")):
        if not isinstance(ann, dict) or "image_id" not in ann:
            raise AnnotationError(f"{path}: annotations[{i}] has no 'image_id'")
        image_id = identifier(ann["image_id"], f"{path}: annotations[{i}]: 'image_id'")
        vid = image_vid.get(image_id)
        if vid is None:
            raise AnnotationError(f"{path}: annotations[{i}] refers to unknown image_id {ann['image_id']}")
        anns[vid].append({**ann, "image_id": image_id})
    name_single = path.stem if len(groups) == 1 else None
    seqs = [_build_sequence(name_single or vid, ims, anns[vid], path, root) for vid, ims in groups.items()]
    for seq in seqs:
        if require_labeled and not seq.labeled_indices:
            raise AnnotationError(f"{path}: sequence {seq.name} has no labelled frame")
    return seqs


def load_sequence(path: str | Path, image_root: str | Path | None = None) -> Sequence:
    """Read a per-sequence PoseTrack18/21 JSON file -> :class:`Sequence`."""
    seqs = load_sequences_from_file(path, image_root)
    if len(seqs) != 1:
        raise AnnotationError(f"{path}: holds {len(seqs)} sequences; use load_sequences_from_file")
    return seqs[0]


def load_directory(directory: str | Path, image_root: str | Path | None = None,
                   skip_bad: bool = False) -> list[Sequence]:
    """Read every ``*.json`` of an annotation folder (sorted by name) -> sequences.

    With ``skip_bad`` a malformed file is reported with a warning and skipped.
    """
    directory = Path(directory)
    files = sorted(directory.glob("*.json"))
    if not files:
        raise AnnotationError(f"{directory}: no *.json annotation files")
    out: list[Sequence] = []
    for path in files:
        try:
            out.extend(load_sequences_from_file(path, image_root))
        except AnnotationError as exc:
            if not skip_bad:
                raise
            warnings.warn(f"skipping {exc}", stacklevel=2)
    return out

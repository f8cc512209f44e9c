"""Ground-truth image entries for predicted frames, so that predict's outputs evaluate as they are.

Without ground truth, ``pavenet predict`` numbers the frames of its inputs itself
(:func:`pavenet.infer.outputs.image_id`). When the frames are images of a dataset, the outputs take
the ground truth's image ids (and its image entries in the PoseTrack JSON), and
``pavenet eval --coco GT.json OUT.coco.json`` evaluates them directly:

- a PoseTrack-layout sequence, ``ROOT/images/<split>/<seq>/`` (or an image in it) with
  ``ROOT/annotations/<split>/<seq>.json`` beside it, is matched with that file automatically;
- any folder of images (or images) is matched with a COCO-style file given as ``--coco-gt``.

A frame matches the image entry whose ``file_name`` ends with the frame's folder and file name
(``<seq>/000001.jpg``), else the one entry with the frame's file name. The ground truth's ids are
used for a source only when every one of its frames matches its own entry; otherwise (and for a
video file, whose frames have no names) the run's own ids are kept and a note says why.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Optional

from pavenet.data.fields import AnnotationError, array, identifier, mapping, text
from pavenet.infer.video_io import IMAGE_SUFFIXES, VideoSource, folder_files


@dataclass(frozen=True)
class GroundTruthImages:
    """The image entries of a COCO-style ground-truth file, found by file name."""

    path: Path
    entries: tuple[dict, ...]
    by_tail: dict[tuple[str, str], int] = field(repr=False)  #: (folder, file name) -> entry index
    by_name: dict[str, Optional[int]] = field(repr=False)  #: file name -> entry index (None: several)

    @classmethod
    def from_entries(cls, path: Path, entries: list[dict]) -> "GroundTruthImages":
        by_tail: dict[tuple[str, str], int] = {}
        by_name: dict[str, Optional[int]] = {}
        for k, entry in enumerate(entries):
            parts = Path(entry["file_name"]).parts
            if len(parts) >= 2:
                by_tail.setdefault((parts[-2], parts[-1]), k)
            by_name[parts[-1]] = None if parts[-1] in by_name else k
        return cls(path, tuple(entries), by_tail, by_name)

    def find(self, frame: Path) -> Optional[dict]:
        """The image entry of a frame file, or None."""
        k = self.by_tail.get((frame.parent.name, frame.name))
        if k is None:
            k = self.by_name.get(frame.name)
        return None if k is None else self.entries[k]


def read_ground_truth_images(path: str | Path) -> GroundTruthImages:
    """The ``images`` of a COCO-style (or PoseTrack18/21) JSON file; a file that has none, or an
    entry without an integer ``id`` and a string ``file_name``, raises :class:`AnnotationError`
    naming the file and the entry."""
    path = Path(path)
    stat = path.stat()  # FileNotFoundError for a missing file
    return _read_cached(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=8)
def _read_cached(path: str, mtime_ns: int, size: int) -> GroundTruthImages:
    """Read once per file version (a large ``--coco-gt`` serves every input of a run)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (ValueError, RecursionError) as exc:
        raise AnnotationError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or "images" not in data:
        raise AnnotationError(f"{path}: expected a COCO-style ground-truth file with 'images'")
    entries = []
    for k, image in enumerate(array(data["images"], f"{path}: 'images'")):
        where = f"{path}: images[{k}]"
        image = mapping(image, where)
        entries.append({**image, "id": identifier(image.get("id"), f"{where}: 'id'"),
                        "file_name": text(image.get("file_name"), f"{where}: 'file_name'")})
    return GroundTruthImages.from_entries(Path(path), entries)


def posetrack_annotation_file(source: VideoSource) -> Optional[Path]:
    """``ROOT/annotations/<split>/<seq>.json`` of a frames folder ``ROOT/images/<split>/<seq>/``
    (or of an image in it), when that file exists."""
    if source.kind not in ("frames", "image"):
        return None
    folder = Path(os.path.abspath(source.path if source.kind == "frames" else source.path.parent))
    split = folder.parent
    if split.parent.name != "images":
        return None
    candidate = split.parent.parent / "annotations" / split.name / f"{folder.name}.json"
    return candidate if candidate.is_file() else None


def frame_files(source: VideoSource) -> Optional[list[Path]]:
    """The file of each frame of a source in frame order; None for a video or a live source."""
    if source.kind == "image":
        return [source.path]
    if source.kind == "frames":
        return folder_files(source.path, IMAGE_SUFFIXES)
    return None


def ground_truth_entries(source: VideoSource, num_frames: int,
                         coco_gt: Optional[str | Path] = None) -> tuple[Optional[list[dict]], str]:
    """(The ground-truth image entry of each of the ``num_frames`` frames of ``source``, a note).

    The ground truth is ``coco_gt`` when given, else the PoseTrack annotation file of a
    PoseTrack-layout sequence. The entries are None (the run's own ids are kept) when there is no
    ground truth, with a note when some frames do not match it. A malformed ``coco_gt`` raises
    :class:`AnnotationError`; a PoseTrack annotation file without COCO-style ``images`` (a
    PoseTrack17 ``annolist``) only gives a note.
    """
    gt_path = Path(coco_gt) if coco_gt is not None else posetrack_annotation_file(source)
    if gt_path is None:
        return None, ""
    files = frame_files(source)
    if files is None:
        what = "a live source" if source.kind == "live" else "a video file"
        return None, f"{what} has no frame file names to find in {gt_path}: image ids are this run's own"
    try:
        gt = read_ground_truth_images(gt_path)
    except AnnotationError as exc:
        if coco_gt is not None:
            raise
        return None, f"{exc}: image ids are this run's own"  # e.g. a PoseTrack17 'annolist' file
    entries = [gt.find(f) for f in files[:num_frames]]
    missing = [f.name for f, e in zip(files, entries) if e is None]
    ids = [e["id"] for e in entries if e is not None]
    if missing or len(set(ids)) != len(ids) or len(entries) != num_frames:
        why = (f"{len(missing)} of {num_frames} frames ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}) "
               f"are not images of {gt_path}" if missing else f"frames share image entries of {gt_path}")
        return None, f"{why}: image ids are this run's own"
    return entries, f"image ids from {gt_path}"

"""Writing one video's tracked predictions: PoseTrack18 JSON, COCO results JSON, CSV.

Image ids are the run's own (:func:`image_id`), or, given the ground truth's image entry of each
frame (:func:`pavenet.infer.image_ids.ground_truth_entries`), the ground truth's: the PoseTrack
JSON then lists those entries and the COCO results refer to them, so both evaluate against that
ground truth as written. All writers are atomic (temporary file in the target folder, then rename).
"""
from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from pavenet.data.joints import MODEL
from pavenet.eval.writers import PredictedPerson, write_coco_results, write_posetrack_predictions
from pavenet.infer.estimator import FramePrediction
from pavenet.runtime.files import atomic_open

FORMATS = ("posetrack", "coco", "csv")


def image_id(video_index: int, frame: int) -> int:
    """Image id of a frame: unique over the videos of one run (PoseTrack-style numbering)."""
    return (video_index + 1) * 100_000 + frame


def image_entries(name: str, video_index: int, num_frames: int) -> list[dict]:
    """PoseTrack18 image entries for a video without ground truth (every frame labelled)."""
    return [
        {"id": image_id(video_index, k), "file_name": f"{name}/{k:06d}.jpg", "frame_id": image_id(video_index, k),
         "vid_id": video_index, "nframes": num_frames, "is_labeled": True}
        for k in range(num_frames)
    ]


def to_people(frames: list[FramePrediction], video_index: int,
              images: Optional[Sequence[dict]] = None) -> list[PredictedPerson]:
    """The people of every frame, with the run's image ids or those of ``images`` (one entry per
    frame index)."""
    def frame_id(index: int) -> int:
        return image_id(video_index, index) if images is None else int(images[index]["id"])

    return [PredictedPerson(frame_id(f.index), p.track_id, p.keypoints, p.score) for f in frames for p in f.people]


def write_csv(path: Path, frames: list[FramePrediction]) -> None:
    """One row per joint: frame, track_id, joint, x, y, score (written atomically)."""
    with atomic_open(path, newline="") as f:
        w = csv.writer(f)
        w.writerow(["frame", "track_id", "joint", "x", "y", "score"])
        for fr in frames:
            for p in fr.people:
                for j, name in enumerate(MODEL.names):
                    x, y, s = (float(v) for v in p.keypoints[j])
                    w.writerow([fr.index, p.track_id, name, f"{x:.2f}", f"{y:.2f}", f"{s:.4f}"])


#: file name ending of each format
ENDINGS = {"posetrack": ".json", "coco": ".coco.json", "csv": ".csv"}


def output_files(out_dir: Path, name: str, formats: tuple[str, ...]) -> dict[str, Path]:
    """format -> the file :func:`write_outputs` writes it to, for the requested formats."""
    return {f: out_dir / f"{name}{ENDINGS[f]}" for f in FORMATS if f in formats}


def write_outputs(out_dir: Path, name: str, video_index: int, frames: list[FramePrediction],
                  formats: tuple[str, ...], images: Optional[Sequence[dict]] = None) -> list[Path]:
    """Write the requested formats for one video; returns the written paths. ``images``: the
    ground truth's image entry of each frame (None: the run's own ids and entries)."""
    if images is not None and len(images) < len(frames):
        raise ValueError(f"{name}: {len(images)} ground-truth image entries for {len(frames)} frames")
    people = to_people(frames, video_index, images)
    files = output_files(out_dir, name, formats)
    if "posetrack" in files:
        entries = image_entries(name, video_index, len(frames)) if images is None else list(images[:len(frames)])
        write_posetrack_predictions(files["posetrack"], entries, people)
    if "coco" in files:
        write_coco_results(files["coco"], people)
    if "csv" in files:
        write_csv(files["csv"], frames)
    return list(files.values())

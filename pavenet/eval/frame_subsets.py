"""Per-joint AP on named subsets of the ground-truth frames (e.g. degraded vs clean key frames).

The frames are matched and scored exactly as :func:`pavenet.eval.posetrack.evaluate_posetrack`
does; AP is then accumulated over the frames of each subset only. Ground-truth frames of the
temporal synthetic split carry ``"degradation": KIND`` (:mod:`pavenet.data.synthetic_temporal`);
:func:`degradation_subsets` turns that into the subsets "degraded" and "clean", and one per kind.
"""
from __future__ import annotations

import json
from pathlib import Path

from pavenet.eval.posetrack import by_joint_name, format_ap_rows
from pavenet.eval.posetrack_ap import Detections, average_precision, match_frame
from pavenet.eval.posetrack_io import PoseTrackFormatError, load_folders


def degradation_subsets(gt_dir: str | Path) -> dict[str, set[int]]:
    """{"degraded": image ids of frames marked with a degradation, "clean": the others,
    "degraded: KIND": those marked KIND, for each kind present, in name order}."""
    subsets: dict[str, set[int]] = {"degraded": set(), "clean": set()}
    kinds: dict[str, set[int]] = {}
    for path in sorted(Path(gt_dir).glob("*.json")):
        for image in json.loads(path.read_text()).get("images", []):
            kind = image.get("degradation")
            subsets["degraded" if kind else "clean"].add(int(image["id"]))
            if kind:
                kinds.setdefault(f"degraded: {kind}", set()).add(int(image["id"]))
    return {**subsets, **dict(sorted(kinds.items()))}


def evaluate_frame_subsets(gt_dir: str | Path, pred_dir: str | Path, subsets: dict[str, set[int]],
                           strict: bool = False) -> dict[str, dict]:
    """{subset name: {"ap": per-joint and total AP (percent), "frames": evaluated frames}}."""
    sequences = load_folders(Path(gt_dir), Path(pred_dir), need_tracks=False, sort=strict)
    frames = [f for s in sequences for f in s.frames]
    matches = [match_frame(f) for f in frames]
    out = {}
    for name, ids in subsets.items():
        chosen = [i for i, f in enumerate(frames) if f.image_id in ids]
        ap, total = average_precision(Detections.collect([frames[i] for i in chosen],
                                                         [matches[i] for i in chosen]), strict)
        out[name] = {"ap": by_joint_name(ap, total), "frames": len(chosen)}
    return out


def temporal_subsets(gt_dir: str | Path) -> dict[str, set[int]]:
    """:func:`degradation_subsets` of a temporal split; :class:`PoseTrackFormatError` naming
    ``gt_dir`` when none of its frames is marked degraded."""
    subsets = degradation_subsets(gt_dir)
    if not subsets["degraded"]:
        raise PoseTrackFormatError(f"{gt_dir}: no frame is marked with a degradation; a temporal split "
                                   "comes from `pavenet synth --difficulty temporal`")
    return subsets


def ap_by_degradation(gt_dir: str | Path, pred_dir: str | Path,
                      subsets: dict[str, set[int]] | None = None) -> dict[str, dict]:
    """Per-joint AP on the degraded, the clean and all frames of a temporal split, then on the
    frames of each degradation kind (``subsets``: its :func:`temporal_subsets` when already read)."""
    subsets = temporal_subsets(gt_dir) if subsets is None else subsets
    ordered = {"degraded": subsets["degraded"], "clean": subsets["clean"],
               "all": subsets["degraded"] | subsets["clean"], **subsets}
    return evaluate_frame_subsets(gt_dir, pred_dir, ordered)


def format_subsets(result: dict[str, dict]) -> str:
    """The AP table of :func:`evaluate_frame_subsets`' result, one line per subset."""
    return format_ap_rows({f"{name} ({r['frames']} frames)": r["ap"] for name, r in result.items()})

"""Per-joint AP on named subsets of the ground-truth frames (e.g. degraded vs clean key frames).

The frames are matched and scored exactly as :func:`pavenet.eval.posetrack.evaluate_posetrack`
does; AP is then accumulated over the frames of each subset only. Ground-truth frames of the
temporal synthetic split carry ``"degradation": KIND`` (:mod:`pavenet.data.synthetic_temporal`);
:func:`degradation_subsets` turns that into the subsets "degraded" and "clean".
"""
from __future__ import annotations

import json
from pathlib import Path

from pavenet.eval.posetrack import by_joint_name
from pavenet.eval.posetrack_ap import Detections, average_precision, match_frame
from pavenet.eval.posetrack_io import load_folders


def degradation_subsets(gt_dir: str | Path) -> dict[str, set[int]]:
    """{"degraded": image ids of frames marked with a degradation, "clean": the others}."""
    subsets: dict[str, set[int]] = {"degraded": set(), "clean": set()}
    for path in sorted(Path(gt_dir).glob("*.json")):
        for image in json.loads(path.read_text()).get("images", []):
            subsets["degraded" if image.get("degradation") else "clean"].add(int(image["id"]))
    return subsets


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

"""Pose-tracking metrics (MOTA, MOTP, precision, recall) as the official PoseTrack code computes them.

Official behaviour (``poseval`` ``evaluateTracking.computeMetrics`` and ``assignGTmulti``):

* one CLEAR-MOT accumulator per joint and sequence; in a frame the objects are the ground-truth
  people with that joint annotated, the hypotheses the predictions with that joint, and a pair
  may match only within PCKh 0.5 (its distance is the normalised one);
* the last frame of every sequence is left out (``imgidxs[:-1]``);
* a frame where the ground truth or the prediction has no person (after ignore regions) counts
  as one object and one hypothesis that cannot match: one miss and one false positive per joint;
* MOTP = 100 (1 - D / detections) with D = ``events['D'].sum()``, which also sums the distance
  of every candidate pair (RAW events) and of motmetrics' bookkeeping events;
* counts are summed over sequences per joint; Total = mean over the joints that are defined.

``strict=True`` computes the textbook metrics instead: every frame is used, empty frames give
plain misses / false positives, MOTP averages the distances of matched pairs only.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pavenet.eval.clear_mot import ClearMotAccumulator
from pavenet.eval.posetrack_ap import FrameMatch
from pavenet.eval.posetrack_io import NUM_JOINTS, Frame


@dataclass
class MotCounts:
    """Per-joint CLEAR-MOT counts summed over sequences."""

    misses: np.ndarray = field(default_factory=lambda: np.zeros(NUM_JOINTS))
    switches: np.ndarray = field(default_factory=lambda: np.zeros(NUM_JOINTS))
    false_positives: np.ndarray = field(default_factory=lambda: np.zeros(NUM_JOINTS))
    objects: np.ndarray = field(default_factory=lambda: np.zeros(NUM_JOINTS))
    detections: np.ndarray = field(default_factory=lambda: np.zeros(NUM_JOINTS))
    sum_d: np.ndarray = field(default_factory=lambda: np.zeros(NUM_JOINTS))
    frames: int = 0

    def add(self, other: "MotCounts") -> None:
        """Accumulate ``other`` into these counts."""
        for name in ("misses", "switches", "false_positives", "objects", "detections", "sum_d"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.frames += other.frames


def tracking_frames(n_frames: int, strict: bool) -> range:
    """Indices of a sequence's evaluated frames used for tracking (official: all but the last)."""
    return range(n_frames) if strict else range(max(n_frames - 1, 0))


def _update_frame(accs: list[ClearMotAccumulator], frame: Frame, match: FrameMatch) -> None:
    """Feed one frame to the per-joint accumulators (objects: GT people with the joint, etc.)."""
    pairs = np.where(match.within, match.dist, np.nan).transpose(2, 1, 0).tolist()  # (J, G, P)
    gt_has, pr_has = frame.gt.has.T.tolist(), frame.pred.has.T.tolist()
    gt_tracks, pr_tracks = frame.gt.track.tolist(), frame.pred.track.tolist()
    for j, acc in enumerate(accs):
        g = [k for k, h in enumerate(gt_has[j]) if h]
        p = [k for k, h in enumerate(pr_has[j]) if h]
        rows = [[pairs[j][a][b] for b in p] for a in g]
        acc.update([gt_tracks[k] for k in g], [pr_tracks[k] for k in p], rows)


def sequence_counts(frames: list[Frame], matches: list[FrameMatch], strict: bool = False) -> MotCounts:
    """CLEAR-MOT counts of one sequence (its evaluated frames, in order)."""
    accs = [ClearMotAccumulator() for _ in range(NUM_JOINTS)]
    used = tracking_frames(len(frames), strict)
    phantom = np.full((1, 1), np.nan)
    for t in used:
        if not strict and (len(frames[t].gt) == 0 or len(frames[t].pred) == 0):
            for acc in accs:
                acc.update([0], [0], phantom)
        else:
            _update_frame(accs, frames[t], matches[t])
    counts = MotCounts(frames=len(used))
    counts.misses = np.array([a.misses for a in accs], dtype=np.float64)
    counts.switches = np.array([a.switches for a in accs], dtype=np.float64)
    counts.false_positives = np.array([a.false_positives for a in accs], dtype=np.float64)
    counts.objects = np.array([a.objects for a in accs], dtype=np.float64)
    counts.detections = np.array([a.detections for a in accs], dtype=np.float64)
    counts.sum_d = np.array([a.sum_matched if strict else a.sum_events for a in accs])
    return counts


def _mean_defined(values: np.ndarray) -> float:
    defined = ~np.isnan(values)
    return float(values[defined].mean()) if defined.any() else float("nan")


def mot_metrics(c: MotCounts) -> dict[str, np.ndarray | float]:
    """MOTA, MOTP, precision, recall per joint (percent, nan = undefined) and their totals."""
    with np.errstate(divide="ignore", invalid="ignore"):
        n_obj = np.where(c.objects > 0, c.objects, np.nan)
        mota = 100.0 * (1.0 - (c.misses + c.switches + c.false_positives) / n_obj)
        motp = np.where(c.detections == 0, 0.0, 100.0 * (1.0 - c.sum_d / c.detections))
        total_det = np.where(c.false_positives + c.detections > 0, c.false_positives + c.detections, np.nan)
        precision = 100.0 * c.detections / total_det
        recall = 100.0 * c.detections / n_obj
    out: dict[str, np.ndarray | float] = {"mota": mota, "motp": motp, "precision": precision, "recall": recall}
    for name in ("mota", "motp", "precision", "recall"):
        out[f"{name}_total"] = _mean_defined(out[name])
    return out

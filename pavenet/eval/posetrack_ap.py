"""Per-frame PCKh matching and per-joint average precision, as the official PoseTrack code does.

Per frame (``poseval`` ``eval_helpers.assignGTmulti``):

1. distance of every predicted joint to every ground-truth joint, divided by the ground-truth
   head size; a pair matches when the distance is at most 0.5 (PCKh@0.5); pairs where either
   joint is missing never match;
2. PCKh of a (prediction, person) pair = matched joints / annotated joints of the person;
3. each prediction keeps only its best person (first on ties), then each person keeps its best
   prediction among those (first on ties, none if its PCKh is 0);
4. every predicted joint becomes one detection: a true positive iff its prediction was kept by a
   person and it matches that person's joint (so a predicted joint whose person has that joint
   unannotated is a false positive).

Per joint the detections of all frames are ranked by score and scored with VOC all-point AP
(``computeRPC`` / ``VOCap``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pavenet.eval.posetrack_io import NUM_JOINTS, Frame

#: PCKh threshold (fraction of the head size).
DIST_THRESH = 0.5


@dataclass
class FrameMatch:
    """PCKh matching of one frame; P predictions, G ground-truth people, J joints."""

    dist: np.ndarray  #: (P, G, J) normalised distances, inf where a joint is missing
    within: np.ndarray  #: (P, G, J) bool, distance <= threshold
    assigned: np.ndarray  #: (P,) int64 index of the person kept for each prediction, -1 if none
    labels: np.ndarray  #: (P, J) bool, true positive per predicted joint


def match_frame(frame: Frame, thresh: float = DIST_THRESH) -> FrameMatch:
    """Match the predictions of ``frame`` to its ground-truth people (greedy, official order)."""
    gt, pr = frame.gt, frame.pred
    n_pr, n_gt = len(pr), len(gt)
    diff = pr.xy[:, None] - gt.xy[None]
    with np.errstate(divide="ignore", invalid="ignore"):
        dist = np.sqrt(diff[..., 0] * diff[..., 0] + diff[..., 1] * diff[..., 1]) / gt.head[None, :, None]
    dist[~(pr.has[:, None] & gt.has[None])] = np.inf
    with np.errstate(invalid="ignore"):
        within = dist <= thresh
    assigned = np.full(n_pr, -1, dtype=np.int64)
    if n_pr and n_gt:
        n_annotated = gt.has.sum(axis=1)
        pck = within.sum(axis=2).astype(np.float64)
        pck = np.where(n_annotated[None] > 0, pck / np.maximum(n_annotated, 1)[None], pck)
        best_gt = np.argmax(pck, axis=1)
        kept = np.zeros_like(pck)
        rows = np.arange(n_pr)
        kept[rows, best_gt] = pck[rows, best_gt]
        best_pr = np.argmax(kept, axis=0)
        has_pr = kept.max(axis=0) > 0
        assigned[best_pr[has_pr]] = np.flatnonzero(has_pr)
    labels = np.zeros((n_pr, NUM_JOINTS), dtype=bool)
    hit = assigned >= 0
    if hit.any():
        labels[hit] = within[np.flatnonzero(hit), assigned[hit]]
    return FrameMatch(dist, within, assigned, labels & pr.has)


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC all-point average precision (monotone precision envelope, area under the steps)."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    with np.errstate(invalid="ignore"):
        i = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
        return float(np.sum((mrec[i] - mrec[i - 1]) * mpre[i]))


def joint_ap(scores: np.ndarray, labels: np.ndarray, n_gt: float, strict: bool = False) -> float:
    """AP in percent of one joint's detections; nan where undefined.

    Default (official): detections ranked with ``argsort()[::-1]`` (ties in whatever order that
    gives), AP 0 when there is no detection at all, nan when there are detections but no
    ground truth. ``strict``: tied scores form one operating point and a joint without ground
    truth is nan.
    """
    if strict and n_gt == 0:
        return float("nan")
    if scores.size == 0:
        return 0.0
    if strict:
        order = np.argsort(-scores, kind="stable")
    else:
        order = np.asarray(scores).argsort()[::-1]
    tp = np.cumsum(labels[order].astype(np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = tp / np.float64(n_gt)
        precision = tp / np.arange(1, tp.size + 1, dtype=np.float64)
    if strict:
        ranked = scores[order]
        last_of_tie = np.append(ranked[1:] != ranked[:-1], True)
        recall, precision = recall[last_of_tie], precision[last_of_tie]
    return voc_ap(recall, precision) * 100.0


@dataclass
class Detections:
    """All per-joint detections of a set of frames, in official order (frame, then prediction)."""

    scores: np.ndarray  #: (D,) float64
    labels: np.ndarray  #: (D,) bool
    joints: np.ndarray  #: (D,) int64 joint of each detection
    n_gt: np.ndarray  #: (J,) float64 annotated ground-truth joints

    @staticmethod
    def collect(frames: list[Frame], matches: list[FrameMatch]) -> "Detections":
        """Gather the detections of ``frames`` (with their matches)."""
        has = [f.pred.has for f in frames]
        if frames:
            has_all = np.concatenate(has)
            scores = np.concatenate([f.pred.score for f in frames])[has_all]
            labels = np.concatenate([m.labels for m in matches])[has_all]
            joints = np.nonzero(has_all)[1]
            n_gt = np.sum([f.gt.has.sum(axis=0) for f in frames], axis=0).astype(np.float64)
        else:
            scores, labels, joints = np.zeros(0), np.zeros(0, bool), np.zeros(0, np.int64)
            n_gt = np.zeros(NUM_JOINTS)
        return Detections(scores, labels, joints, n_gt)


def average_precision(det: Detections, strict: bool = False) -> tuple[np.ndarray, float]:
    """Per-joint AP (J,) in percent (nan = undefined) and the total (mean of defined joints)."""
    ap = np.empty(NUM_JOINTS)
    for j in range(NUM_JOINTS):
        sel = det.joints == j
        ap[j] = joint_ap(det.scores[sel], det.labels[sel], det.n_gt[j], strict)
    defined = ~np.isnan(ap)
    total = float(ap[defined].mean()) if defined.any() else float("nan")
    return ap, total

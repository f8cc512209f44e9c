"""COCO-style OKS keypoint AP / AR through pycocotools (not re-implemented).

For PoseTrack ground truth (a COCO-like file whose keypoint names include ``head_bottom``) the
PoseTrack OKS sigmas are used and, as PoseTrack annotations carry no ``area``, a person's area
is its ``bbox`` width x height; only images marked ``is_labeled`` are evaluated.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np

from pavenet.data.joints import MODEL, OKS_SIGMAS, POSETRACK18

#: The names of ``COCOeval.stats`` for keypoints, in order.
STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
#: Sigma of the ear slots (COCO's value; the ears are never annotated in PoseTrack).
EAR_SIGMA = 0.035


def posetrack_sigmas() -> np.ndarray:
    """The 17 OKS sigmas of the PoseTrack18 slots (model sigmas, COCO's ear sigma)."""
    sigmas = np.full(len(POSETRACK18), EAR_SIGMA)
    for j, name in enumerate(MODEL.names):
        sigmas[POSETRACK18.index(name)] = OKS_SIGMAS[j]
    return sigmas


def _load(path: Path) -> object:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e


def _prepare_gt(gt: dict, path: Path) -> tuple[dict, bool]:
    if not isinstance(gt, dict) or not all(isinstance(gt.get(k), list) for k in ("images", "annotations", "categories")):
        raise ValueError(f"{path}: expected a COCO file with 'images', 'annotations' and 'categories'")
    names = gt["categories"][0].get("keypoints", []) if gt["categories"] else []
    is_posetrack = "head_bottom" in names
    gt = copy.deepcopy(gt)
    for ann in gt["annotations"]:
        kp = np.asarray(ann.get("keypoints", []), dtype=np.float64).reshape(-1, 3)
        ann.setdefault("iscrowd", 0)
        ann["iscrowd"] = int(bool(ann["iscrowd"]))
        ann.setdefault("num_keypoints", int((kp[:, 2] > 0).sum()))
        if "area" not in ann:
            if "bbox" not in ann:
                raise ValueError(f"{path}: annotation {ann.get('id')} has neither 'area' nor 'bbox'")
            ann["area"] = float(ann["bbox"][2]) * float(ann["bbox"][3])
    return gt, is_posetrack


def evaluate_coco(gt_path: str | Path, results_path: str | Path) -> dict[str, float | None]:
    """OKS keypoint AP/AR (fractions in [0, 1]; None where pycocotools reports -1, e.g. no
    medium-sized person) of a COCO results file against a COCO-style ground-truth file."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt_path, results_path = Path(gt_path), Path(results_path)
    gt, is_posetrack = _prepare_gt(_load(gt_path), gt_path)
    results = _load(results_path)
    if not isinstance(results, list) or not results:
        raise ValueError(f"{results_path}: expected a non-empty JSON list of keypoint results")
    image_ids = {img["id"] for img in gt["images"]}
    unknown = {r.get("image_id") for r in results} - image_ids
    if unknown:
        raise ValueError(f"{results_path}: results for image ids not in {gt_path}: {sorted(unknown)[:5]}")
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, coco_dt, iouType="keypoints")
        if is_posetrack:
            ev.params.kpt_oks_sigmas = posetrack_sigmas()
            labelled = [img["id"] for img in gt["images"] if img.get("is_labeled", True)]
            ev.params.imgIds = sorted(labelled)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {name: (float(v) if v >= 0 else None) for name, v in zip(STAT_NAMES, ev.stats)}


def format_coco(stats: dict[str, float | None]) -> str:
    """A one-line-per-metric text summary (percentages)."""
    return "\n".join(f"{name:<5} {'-' if v is None else f'{100 * v:6.2f}':>6}" for name, v in stats.items())

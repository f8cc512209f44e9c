"""COCO-style OKS keypoint AP / AR through pycocotools (not re-implemented).

For PoseTrack ground truth (a COCO-like file whose keypoint names include ``head_bottom``) the
PoseTrack OKS sigmas are used and, as PoseTrack annotations carry no ``area``, a person's area
is its ``bbox`` width x height; only images marked ``is_labeled`` are evaluated. Every field
pycocotools reads is checked first: a malformed file raises :class:`CocoFormatError` naming the
file and the entry.
"""
from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from pavenet.data import fields
from pavenet.data.fields import AnnotationError
from pavenet.data.joints import MODEL, OKS_SIGMAS, POSETRACK18
from pavenet.errors import PavenetError

#: The names of ``COCOeval.stats`` for keypoints, in order.
STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
#: Sigma of the ear slots (COCO's value; the ears are never annotated in PoseTrack).
EAR_SIGMA = 0.035
#: keypoint slots of a COCO / PoseTrack18 person (the OKS sigmas have as many)
SLOTS = len(POSETRACK18)


def posetrack_sigmas() -> np.ndarray:
    """The 17 OKS sigmas of the PoseTrack18 slots (model sigmas, COCO's ear sigma)."""
    sigmas = np.full(len(POSETRACK18), EAR_SIGMA)
    for j, name in enumerate(MODEL.names):
        sigmas[POSETRACK18.index(name)] = OKS_SIGMAS[j]
    return sigmas


class CocoFormatError(PavenetError, ValueError):
    """A COCO ground-truth or results file that cannot be evaluated; the message names the file."""


def _load(path: Path) -> object:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise CocoFormatError(f"{path}: not valid JSON ({e})") from e
    except OSError as e:
        raise CocoFormatError(f"{path}: unreadable ({e.strerror or e})") from e


def _with_id(entry: object, where: str) -> dict:
    entry = fields.mapping(entry, where)
    return {**entry, "id": fields.identifier(entry.get("id"), f"{where}: 'id'")}


def _checked_annotation(ann: object, where: str) -> dict:
    """A copy of a ground-truth annotation with every field pycocotools reads checked and typed."""
    ann = dict(fields.mapping(ann, where))
    for key in ("id", "image_id", "category_id"):
        ann[key] = fields.identifier(ann.get(key), f"{where}: '{key}'")
    kp = fields.numbers(ann.get("keypoints"), f"{where}: 'keypoints'", 3 * SLOTS)
    ann["keypoints"] = kp.tolist()
    ann["bbox"] = fields.numbers(ann.get("bbox"), f"{where}: 'bbox'", 4).tolist()
    ann["iscrowd"] = int(bool(ann.get("iscrowd", 0)))
    count = ann.get("num_keypoints")
    ann["num_keypoints"] = (int((kp[2::3] > 0).sum()) if count is None
                            else fields.identifier(count, f"{where}: 'num_keypoints'"))
    area = ann.get("area")
    ann["area"] = ann["bbox"][2] * ann["bbox"][3] if area is None else fields.number(area, f"{where}: 'area'")
    return ann


def _prepare_gt(gt: object, path: Path) -> tuple[dict, bool]:
    if not isinstance(gt, dict) or not all(isinstance(gt.get(k), list) for k in ("images", "annotations", "categories")):
        raise CocoFormatError(f"{path}: expected a COCO file with 'images', 'annotations' and 'categories'")
    try:
        images = [_with_id(im, f"{path}: images[{k}]") for k, im in enumerate(gt["images"])]
        categories = [_with_id(c, f"{path}: categories[{k}]") for k, c in enumerate(gt["categories"])]
        annotations = [_checked_annotation(a, f"{path}: annotations[{k}]") for k, a in enumerate(gt["annotations"])]
    except AnnotationError as e:
        raise CocoFormatError(str(e)) from None
    names = categories[0].get("keypoints") if categories else None
    is_posetrack = isinstance(names, list) and "head_bottom" in names
    return {**gt, "images": images, "categories": categories, "annotations": annotations}, is_posetrack


def _checked_results(results: object, path: Path, gt_path: Path, image_ids: set[int],
                     category_ids: set[int]) -> list[dict]:
    if not isinstance(results, list) or not results:
        raise CocoFormatError(f"{path}: expected a non-empty JSON list of keypoint results")
    checked, other_category = [], 0
    try:
        for k, r in enumerate(results):
            where = f"{path}: result {k}"
            r = fields.mapping(r, where)
            image_id = fields.identifier(r.get("image_id"), f"{where}: 'image_id'")
            if image_id not in image_ids:
                raise CocoFormatError(f"{where}: image_id {image_id} is not an image of the ground truth {gt_path}")
            item = {**r, "image_id": image_id,
                    "category_id": fields.identifier(r.get("category_id"), f"{where}: 'category_id'"),
                    "keypoints": fields.numbers(r.get("keypoints"), f"{where}: 'keypoints'", 3 * SLOTS).tolist(),
                    "score": fields.number(r.get("score"), f"{where}: 'score'")}
            other_category += item["category_id"] not in category_ids
            checked.append(item)
    except AnnotationError as e:
        raise CocoFormatError(str(e)) from None
    if other_category:
        warnings.warn(f"{path}: {other_category} result(s) have a category_id not in the ground truth and are "
                      "not evaluated", stacklevel=3)
    return checked


def evaluate_coco(gt_path: str | Path, results_path: str | Path) -> dict[str, float | None]:
    """OKS keypoint AP/AR (fractions in [0, 1]; None where pycocotools reports -1, e.g. no
    medium-sized person) of a COCO results file against a COCO-style ground-truth file."""
    gt_path, results_path = Path(gt_path), Path(results_path)
    gt, is_posetrack = _prepare_gt(_load(gt_path), gt_path)
    image_ids = {img["id"] for img in gt["images"]}
    results = _checked_results(_load(results_path), results_path, gt_path, image_ids,
                               {c["id"] for c in gt["categories"]})
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

"""How far does each stage of PAVE-Net move the joints? (``pavenet test --layer-report``)

For every labelled key frame of a split the clip around it is decoded once. Every annotated
person of the key frame is followed through the network by one query: the query whose final
key-frame pose (the post-processor's input) lies nearest to the person, by the mean distance
over the person's annotated joints in pixels of the original image. For that query the report
gives, per stage (the proposal the query starts from, every pose-decoder layer, every
joint-decoder layer), the distance of each annotated joint in units of the official
evaluation's PCKh radius (half the head size, :func:`pavenet.eval.posetrack_io.head_size`):
the share of joints within the radius (those PCKh@0.5 counts as found) and the median.

A stage whose numbers equal the stage before it does not move the joints yet: on an
undertrained model the decoders' refinements are still near their zero initialisation. The
joint-decoder stages differ from the last pose-decoder layer only for the queries the joint
decoder refines (``kept_index``); the report gives the share of followed queries that are
among them. Persons without a head box are left out (no radius).
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
from torch import Tensor, nn

from pavenet.config import Config
from pavenet.data.build import labelled_key_clips
from pavenet.data.joints import posetrack18_to_model
from pavenet.data.posetrack import Frame
from pavenet.eval.posetrack_ap import DIST_THRESH
from pavenet.eval.posetrack_io import head_size
from pavenet.infer.estimator import PoseEstimator
from pavenet.runtime.progress import progress_bar


def stage_keypoints(model: nn.Module, images: Tensor, mask: Tensor) -> tuple[dict[str, Tensor], Tensor]:
    """Decode one batch of clips; returns {stage: keypoints (B, Q, T, J, 2)} in stage order
    ("proposal", "pose decoder i", "joint decoder i", the last joint-decoder layer being the
    network's output) and ``kept_index`` (B, K)."""
    if not hasattr(model, "joint_decoder"):
        raise ValueError("the layer report follows PAVE-Net's stages (model.arch: pavenet)")
    captured: list[Tensor] = []

    def take_reference(_module, args, kwargs):
        captured.append((args[2] if len(args) > 2 else kwargs["reference"]).detach())

    handle = model.pose_decoder.register_forward_pre_hook(take_reference, with_kwargs=True)
    try:
        with torch.no_grad():
            outputs = model(images, mask)
    finally:
        handle.remove()
    stages = {"proposal": captured[0]}
    pose = [a for a in outputs["aux_outputs"] if "logits" in a]
    joint = [a for a in outputs["aux_outputs"] if "logits" not in a]
    stages.update({f"pose decoder {i}": a["keypoints"] for i, a in enumerate(pose)})
    stages.update({f"joint decoder {i}": a["keypoints"] for i, a in enumerate(joint)})
    stages[f"joint decoder {len(joint)}"] = outputs["keypoints"]
    return stages, outputs["kept_index"]


def follow_person(final: np.ndarray, truth: np.ndarray, annotated: np.ndarray) -> int:
    """The query (row of ``final`` (Q, J, 2)) nearest to a person: the least mean distance to
    ``truth`` (J, 2) over the ``annotated`` (J,) joints; the first on ties."""
    dist = np.linalg.norm(final[:, annotated] - truth[annotated], axis=-1).mean(-1)
    return int(np.argmin(dist))


def person_ratios(stages: dict[str, np.ndarray], query: int, truth: np.ndarray,
                  annotated: np.ndarray, radius: float) -> dict[str, np.ndarray]:
    """{stage: (A,) distance of each annotated joint over ``radius``} for one followed query;
    ``stages`` hold (Q, J, 2) pixel keypoints of the key frame."""
    return {name: np.linalg.norm(kp[query, annotated] - truth[annotated], axis=-1) / radius
            for name, kp in stages.items()}


def _frame_people(frame: Frame) -> Iterable[tuple[np.ndarray, np.ndarray, float]]:
    """(model-joint pixels (J, 2), annotated (J,), PCKh radius) of each usable person."""
    for person in frame.persons:
        if person.bbox_head is None:
            continue
        x, y, w, h = (float(v) for v in person.bbox_head)
        radius = DIST_THRESH * head_size(x, y, x + w, y + h)
        kp = posetrack18_to_model(person.keypoints)
        annotated = kp[:, 2] > 0
        if radius > 0 and annotated.any():
            yield kp[:, :2], annotated, radius


def layer_report(est: PoseEstimator, cfg: Config, split: str = "val", max_clips: int = 0,
                 progress: bool = False) -> dict:
    """Per stage, over the annotated joints of the followed people of ``split``'s labelled key
    frames: ``within_radius`` (share) and ``median_ratio``; plus ``people``, ``joints`` and
    ``kept_share`` (the followed queries the joint decoder refines)."""
    key = cfg.model.num_frames // 2
    ratios: dict[str, list[np.ndarray]] = {}
    kept_hits = []
    clips = progress_bar(labelled_key_clips(cfg.data, split, cfg.model.num_frames, max_clips),
                         desc="layers", unit="clip", disable=not progress, leave=False)
    for frame, frames in clips:
        images = est.preprocess(frames)[None]
        mask = torch.zeros(1, *images.shape[-2:], dtype=torch.bool, device=images.device)
        stages, kept = stage_keypoints(est.model, images, mask)
        h, w = frames[0].shape[:2]
        pixels = {name: kp[0, :, key].double().cpu().numpy() * (w, h) for name, kp in stages.items()}
        final = pixels[next(reversed(pixels))]
        kept_set = set(kept[0].tolist())
        for truth, annotated, radius in _frame_people(frame):
            query = follow_person(final, truth, annotated)
            kept_hits.append(query in kept_set)
            for name, value in person_ratios(pixels, query, truth, annotated, radius).items():
                ratios.setdefault(name, []).append(value)
    if not kept_hits:
        raise ValueError(f"layer report: split '{split}' has no labelled person with a head box")
    report = {"people": len(kept_hits), "kept_share": float(np.mean(kept_hits)), "stages": {}}
    for name, parts in ratios.items():
        r = np.concatenate(parts)
        report["stages"][name] = {"within_radius": float((r <= 1.0).mean()), "median_ratio": float(np.median(r))}
    report["joints"] = int(sum(len(p) for p in next(iter(ratios.values()))))
    return report


def format_layers(report: dict) -> str:
    """One line per stage: the share of joints within the PCKh radius and the median ratio."""
    names = list(report["stages"])
    width = max(len(n) for n in names + ["stage"])
    lines = [f"{report['people']} people, {report['joints']} joints; the joint decoder refines "
             f"{100 * report['kept_share']:.0f}% of the followed queries",
             f"{'stage':<{width}}  within PCKh radius  median distance / radius"]
    for name in names:
        s = report["stages"][name]
        lines.append(f"{name:<{width}}  {100 * s['within_radius']:>17.1f}%  {s['median_ratio']:>24.2f}")
    return "\n".join(lines)

"""Predict a PoseTrack-layout split with tracking and score it with the PoseTrack evaluator.

Validation during training, ``pavenet test`` and the demo all go through
:func:`predict_split`: the same streaming, cached, tracked inference as ``pavenet predict``,
on every frame of every sequence, written as prediction files in the ground truth's layout
(PoseTrack18, or PoseTrack17 ``annolist`` for a PoseTrack17 split).
"""
from __future__ import annotations

import json
import math
import shutil
import warnings
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch

from pavenet.config import Config
from pavenet.data.build import load_split
from pavenet.data.clips import load_image
from pavenet.data.posetrack import Sequence
from pavenet.eval.posetrack import evaluate_posetrack
from pavenet.eval.writers import PredictedPerson, write_annolist_predictions, write_posetrack_predictions
from pavenet.infer.estimator import PoseEstimator
from pavenet.runtime.progress import progress_bar


def read_frames(seq: Sequence) -> Iterator[np.ndarray]:
    """RGB frames of a sequence in temporal order (errors name the file and the frame)."""
    for frame in seq.frames:
        yield np.asarray(load_image(frame))


def predict_sequence(est: PoseEstimator, seq: Sequence, out_path: Path, batch_size: int = 1,
                     score_threshold: Optional[float] = None) -> int:
    """Write the tracked predictions of one sequence in the layout of its ground-truth file
    (``seq.source``); returns the number of people written."""
    people: list[PredictedPerson] = []
    for pred in est.predict_frames(read_frames(seq), batch_size, score_threshold):
        image_id = seq.frames[pred.index].image_id
        people += [PredictedPerson(image_id, p.track_id, p.keypoints, p.score) for p in pred.people]
    with open(seq.source, encoding="utf-8") as f:
        gt = json.load(f)
    if "annolist" in gt:  # PoseTrack17 ground truth: predictions in its layout (image ids = positions)
        write_annolist_predictions(out_path, gt["annolist"], people)
    else:
        write_posetrack_predictions(out_path, gt["images"], people)
    return len(people)


def predict_split(est: PoseEstimator, sequences: list[Sequence], out_dir: Path, batch_size: int = 1,
                  score_threshold: Optional[float] = None, progress: bool = True) -> Path:
    """Predict every sequence into ``out_dir`` (one JSON per sequence, named like its GT file)."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    for seq in progress_bar(sequences, desc="predict", unit="seq", disable=not progress, leave=False):
        predict_sequence(est, seq, out_dir / seq.source.name, batch_size, score_threshold)
    return out_dir


def summary(result: dict) -> dict[str, float]:
    """The headline numbers of an ``evaluate_posetrack`` result (nan where undefined)."""
    def num(v):
        return float("nan") if v is None else float(v)
    mota = result.get("mota") or {}
    return {"map": num(result["ap"]["total"]), "mota": num(mota.get("total")),
            "motp": num(result.get("motp_total")), "precision": num(result.get("precision_total")),
            "recall": num(result.get("recall_total"))}


def evaluate_split(est: PoseEstimator, cfg: Config, split: str, out_dir: Path,
                   max_sequences: int = 0, batch_size: int = 1, progress: bool = True) -> dict:
    """Predict ``split`` of ``cfg.data`` into ``out_dir`` and return the full evaluation result."""
    gt_dir = Path(cfg.data.root) / "annotations" / split
    if not gt_dir.is_dir():
        raise FileNotFoundError(f"{gt_dir}: PoseTrack evaluation needs one ground-truth JSON per sequence here")
    sequences = load_split(cfg.data, split)
    subset = 0 < max_sequences < len(sequences)
    if subset:
        sequences = sequences[:max_sequences]
    predict_split(est, sequences, out_dir, batch_size, progress=progress)
    if not subset:
        return evaluate_posetrack(gt_dir, out_dir)
    gt_used = out_dir.parent / f".{out_dir.name}_gt"  # the evaluator reads whole folders
    if gt_used.exists():
        shutil.rmtree(gt_used)
    gt_used.mkdir(parents=True)
    for seq in sequences:
        shutil.copy(seq.source, gt_used / seq.source.name)
    try:
        return evaluate_posetrack(gt_used, out_dir)
    finally:
        shutil.rmtree(gt_used, ignore_errors=True)


def make_validator(cfg: Config, run_dir: Path, device: torch.device):
    """The trainer's periodic validation, or None when the dataset has no PoseTrack-layout split."""
    if cfg.data.dataset == "coco":
        warnings.warn("periodic validation needs a PoseTrack-layout dataset; skipped for COCO")
        return None

    def validate(model: torch.nn.Module, step: int) -> dict:
        est = PoseEstimator.from_config(model, cfg, device=device)
        result = evaluate_split(est, cfg, cfg.data.val_split, Path(run_dir) / "val_predictions",
                                cfg.train.eval_max_sequences, progress=False)
        out = summary(result)
        return {k: v for k, v in out.items() if not math.isnan(v)}

    return validate

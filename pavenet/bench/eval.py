"""Time evaluate_posetrack on a synthetic set: S sequences x F frames x P people.

    pavenet bench eval --sequences 50 --frames 30 --people 10

Each sequence has P tracks of 15 joints jittered around fixed centres; the predictions are the
ground truth with 6 px noise, random scores and 5% of the tracks given a wrong id. The set is
evaluated non-strict, then strict; the wall and CPU seconds of each are printed with the mAP and
MOTA.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np

from pavenet.data.joints import model_to_posetrack18
from pavenet.eval.posetrack import evaluate_posetrack
from pavenet.eval.writers import POSETRACK18_CATEGORY, PredictedPerson, write_posetrack_predictions
from pavenet.runtime.arguments import Parser, example_epilog, non_negative_int, positive_int


def _sequence(rng: np.random.Generator, s: int, n_frames: int, n_people: int) -> tuple[str, list, list, list]:
    """(name, images, ground-truth annotations, predicted people) of sequence number ``s``."""
    name = f"{s:06d}_mpii_test"
    images = [{"id": 10_000_000_000 + s * 10_000 + f, "file_name": f"images/val/{name}/{f:06d}.jpg",
               "is_labeled": True} for f in range(n_frames)]
    centers = rng.uniform(100, 1800, size=(n_people, 2))
    gt, pred = [], []
    for im in images:
        for t in range(n_people):
            xy = centers[t] + rng.normal(0, 40, size=(15, 2))
            kp = np.concatenate([xy, np.ones((15, 1))], axis=1)
            kp[rng.random(15) < 0.1] = 0
            gt.append({"image_id": im["id"], "track_id": t, "category_id": 1, "scores": [],
                       "keypoints": model_to_posetrack18(kp).ravel().tolist(),
                       "bbox_head": [float(centers[t, 0]), float(centers[t, 1]), 30.0, 40.0]})
            noisy = np.concatenate([xy + rng.normal(0, 6, size=(15, 2)), rng.random((15, 1))], axis=1)
            tid = t if rng.random() > 0.05 else (t + 1) % n_people + n_people
            pred.append(PredictedPerson(im["id"], tid, noisy, float(rng.random())))
    return name, images, gt, pred


def write_set(root: Path, n_seq: int, n_frames: int, n_people: int, seed: int) -> None:
    """``root/gt/*.json`` (PoseTrack18 annotations) and ``root/pred/*.json`` (predictions)."""
    rng = np.random.default_rng(seed)
    for s in range(n_seq):
        name, images, gt, pred = _sequence(rng, s, n_frames, n_people)
        (root / "gt").mkdir(parents=True, exist_ok=True)
        with open(root / "gt" / f"{name}.json", "w") as f:
            json.dump({"images": images, "annotations": gt, "categories": [POSETRACK18_CATEGORY]}, f)
        uniq = {(p.image_id, p.track_id): p for p in pred}
        write_posetrack_predictions(root / "pred" / f"{name}.json", images, uniq.values())


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    parser = Parser(prog=prog, description=__doc__.splitlines()[0],
                    epilog=example_epilog("pavenet bench eval --sequences 50 --frames 30 --people 10"))
    parser.add_argument("--sequences", type=positive_int, default=50, help="ground-truth sequences (S)")
    parser.add_argument("--frames", type=positive_int, default=30, help="frames per sequence (F)")
    parser.add_argument("--people", type=positive_int, default=10, help="people per frame (P)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the synthetic set")
    return parser


def main(argv: Optional[list[str]] = None, prog: Optional[str] = None) -> int:
    args = build_parser(prog).parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_set(root, args.sequences, args.frames, args.people, args.seed)
        for strict in (False, True):
            start, cpu = time.perf_counter(), time.process_time()
            result = evaluate_posetrack(root / "gt", root / "pred", strict=strict)
            took, took_cpu = time.perf_counter() - start, time.process_time() - cpu
            print(f"strict={strict}: {took:.2f} s wall, {took_cpu:.2f} s CPU  "
                  f"mAP {result['ap']['total']:.2f}  MOTA {result['mota']['total']:.2f}")
    return 0

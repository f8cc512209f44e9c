"""``pavenet eval GT_DIR PRED_DIR`` (PoseTrack mAP / MOTA) and ``pavenet eval --coco GT RESULTS``."""
from __future__ import annotations

import argparse
import sys
import warnings

from pavenet.cli.arguments import example_epilog


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "eval",
        help="PoseTrack mAP/MOTA with the official numbers, or COCO OKS AP (--coco)",
        description="Evaluate PoseTrack prediction files (one JSON per sequence, each in the PoseTrack18 "
                    "or the PoseTrack17 'annolist' layout) against ground truth exactly as "
                    "the official poseval code does, or COCO keypoint results with --coco.",
        epilog=example_epilog("pavenet eval data/synthetic/annotations/val runs/test_val/predictions",
                              "pavenet eval --coco data/synthetic/annotations/val/000048_synth.json "
                              "runs/predict/000048_synth.coco.json"),
    )
    p.add_argument("gt", help="ground-truth folder (or, with --coco, the ground-truth JSON)")
    p.add_argument("pred", help="prediction folder (or, with --coco, the results JSON)")
    p.add_argument("--json", metavar="OUT", help="also write the metrics to this JSON file (default: none)")
    p.add_argument("--no-tracking", action="store_true", help="skip MOTA (predictions need no track ids)")
    p.add_argument("--per-sequence", action="store_true", help="add per-sequence metrics to the JSON")
    p.add_argument("--strict", action="store_true",
                   help="corrected metrics instead of the official numbers (see docs/evaluation.md)")
    p.add_argument("--coco", action="store_true", help="COCO-style OKS AP/AR through pycocotools")
    p.add_argument("--by-degradation", action="store_true",
                   help="also AP on the degraded, the clean and each degradation kind's frames of a temporal "
                        "synthetic split (`pavenet synth --difficulty temporal`); in the JSON under 'by_degradation'")
    return p


def _run_coco(args: argparse.Namespace) -> dict:
    from pavenet.eval.coco import evaluate_coco, format_coco

    stats = evaluate_coco(args.gt, args.pred)
    print(format_coco(stats))
    return stats


def _run_posetrack(args: argparse.Namespace) -> dict:
    from pavenet.eval.posetrack import evaluate_posetrack, format_table

    result = evaluate_posetrack(args.gt, args.pred, tracking=not args.no_tracking,
                                strict=args.strict, per_sequence=args.per_sequence)
    print(format_table(result))
    if args.by_degradation:
        from pavenet.eval.frame_subsets import ap_by_degradation, format_subsets

        result["by_degradation"] = ap_by_degradation(args.gt, args.pred)
        print("AP by key-frame degradation:\n" + format_subsets(result["by_degradation"]))
    return result


def run(args: argparse.Namespace) -> int:
    from pavenet.cli import fail
    from pavenet.runtime.files import atomic_write_json

    if args.coco and (args.no_tracking or args.per_sequence or args.strict or args.by_degradation):
        return fail("eval", "--coco cannot be combined with --no-tracking, --per-sequence, --strict "
                            "or --by-degradation")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = _run_coco(args) if args.coco else _run_posetrack(args)
    for w in caught:
        print(f"pavenet eval: warning: {w.message}", file=sys.stderr)
    if args.json:
        atomic_write_json(args.json, result)
        print(f"metrics written to {args.json}")
    return 0

"""``pavenet test CONFIG --weights CKPT``: predict a split with tracking and evaluate it."""
from __future__ import annotations

import argparse
from pathlib import Path

from pavenet.cli.arguments import add_threads_argument, positive_int


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("test", help="predict a PoseTrack-layout split and report mAP / MOTA")
    p.add_argument("config", help="the config the model was trained with: a shipped config name or a YAML path")
    p.add_argument("--weights", required=True, help="checkpoint (model.safetensors, its folder or a run folder)")
    p.add_argument("--set", nargs="*", action="extend", default=[], metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--split", default=None, help="split to evaluate (default: data.val_split)")
    p.add_argument("--out", default=None, help="output folder (default: runs/test_<split>)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: CUDA when available)")
    add_threads_argument(p)
    p.add_argument("--batch-size", type=positive_int, default=1, help="windows per forward pass")
    return p


def run(args: argparse.Namespace) -> int:
    from pavenet.cli import apply_threads
    from pavenet.config import load_config
    from pavenet.engine.evaluate import evaluate_split
    from pavenet.eval.posetrack import format_table
    from pavenet.infer.estimator import PoseEstimator
    from pavenet.model import build
    from pavenet.runtime.files import atomic_write_json
    from pavenet.runtime.weights import load_model_weights

    apply_threads(args)

    cfg = load_config(args.config, args.set)
    split = args.split or cfg.data.val_split
    out = Path(args.out or Path("runs") / f"test_{split}")
    model, _, _ = build(cfg)
    load_model_weights(model, args.weights)
    est = PoseEstimator.from_config(model, cfg, device=args.device)
    result = evaluate_split(est, cfg, split, out / "predictions", batch_size=args.batch_size)
    print(format_table(result))
    atomic_write_json(out / "metrics.json", result)
    print(f"predictions in {out / 'predictions'}, metrics in {out / 'metrics.json'}")
    return 0

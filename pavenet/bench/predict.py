"""CPU video inference speed: cached per-frame encoder outputs vs recomputing every window.

Usage: pavenet bench predict [--config synthetic_tiny] [--frames 40]
       [--size 256 256] [--threads 2] [--weights CKPT]

Runs ``PoseEstimator.predict_frames`` (decoding from memory, tracking included) on a synthetic
video, the two modes alternating, best of ``--repeats`` passes; prints a markdown table of
frames per second and the cached/recomputed ratio measured in this run.
"""
from __future__ import annotations

import argparse
import time
from typing import Optional

import torch
from torch import nn

from pavenet.config import Config, load_config
from pavenet.data.synthetic import generate_video
from pavenet.infer.estimator import PoseEstimator
from pavenet.model import build


def fps(est: PoseEstimator, frames: list, batch_size: int) -> float:
    start = time.perf_counter()
    n = sum(1 for _ in est.predict_frames(iter(frames), batch_size=batch_size))
    return n / (time.perf_counter() - start)


def best_fps(model: nn.Module, cfg: Config, frames: list, batch: int, repeats: int) -> dict[bool, float]:
    """Best frames per second of the cached (True) and recomputing (False) modes, alternating."""
    best = {True: 0.0, False: 0.0}
    for _ in range(repeats):
        for cache in (True, False):
            est = PoseEstimator.from_config(model, cfg, device="cpu", cache=cache)
            best[cache] = max(best[cache], fps(est, frames, batch))
    return best


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="synthetic_tiny")
    ap.add_argument("--weights", default=None, help="checkpoint (default: random weights)")
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--size", type=int, nargs=2, default=(256, 256), metavar=("W", "H"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    return ap


def main(argv: Optional[list[str]] = None, prog: Optional[str] = None) -> int:
    args = build_parser(prog).parse_args(argv)
    cfg = load_config(args.config)
    torch.set_num_threads(args.threads)
    if args.weights:
        model = PoseEstimator.from_checkpoint(args.weights, device="cpu").model
    else:
        model = build(cfg)[0]
    frames, _ = generate_video(7, args.frames, tuple(args.size), 3, "easy")
    print(f"| mode | batch | frames/s ({args.threads} threads, {args.size[0]}x{args.size[1]}, "
          f"T={cfg.model.num_frames}) |")
    print("|---|---|---|")
    for batch in (1, 4):
        best = best_fps(model, cfg, frames, batch, args.repeats)
        print(f"| cached | {batch} | {best[True]:.1f} |")
        print(f"| recomputed | {batch} | {best[False]:.1f} |")
        print(f"| ratio cached/recomputed | {batch} | {best[True] / best[False]:.2f} |")
    return 0

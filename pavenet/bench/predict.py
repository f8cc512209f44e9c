"""CPU video inference speed: cached per-frame encoder outputs vs recomputing every window.

Usage: pavenet bench predict [--config synthetic_tiny] [--frames 40]
       [--size 256 256] [--threads 2] [--batch-size 1 4] [--weights CKPT]

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
from pavenet.runtime.arguments import Parser, add_size_argument, example_epilog, positive_int


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
    ap = Parser(prog=prog, description=__doc__.splitlines()[0],
                epilog=example_epilog("pavenet bench predict --frames 40 --size 256 256 --threads 2"))
    ap.add_argument("--config", default="synthetic_tiny", help="a shipped config name or a YAML path")
    ap.add_argument("--weights", default=None, help="checkpoint (default: random weights)")
    ap.add_argument("--frames", type=positive_int, default=40, help="frames of the synthetic video")
    add_size_argument(ap, "--size", default=[256, 256], minimum=32, help="video size, height and width")
    ap.add_argument("--threads", type=positive_int, default=2, help="CPU threads")
    ap.add_argument("--repeats", type=positive_int, default=2, help="passes per mode (the best is kept)")
    ap.add_argument("--batch-size", type=positive_int, nargs="+", default=[1, 4], help="windows per forward pass")
    return ap


def main(argv: Optional[list[str]] = None, prog: Optional[str] = None) -> int:
    args = build_parser(prog).parse_args(argv)
    cfg = load_config(args.config)
    torch.set_num_threads(args.threads)
    if args.weights:
        model = PoseEstimator.from_checkpoint(args.weights, device="cpu").model
    else:
        model = build(cfg)[0]
    height, width = args.size
    frames, _ = generate_video(7, args.frames, (width, height), 3, "easy")
    print(f"| mode | batch | frames/s ({args.threads} threads, {height}x{width} (H x W), "
          f"T={cfg.model.num_frames}) |")
    print("|---|---|---|")
    for batch in args.batch_size:
        best = best_fps(model, cfg, frames, batch, args.repeats)
        print(f"| cached | {batch} | {best[True]:.1f} |")
        print(f"| recomputed | {batch} | {best[False]:.1f} |")
        print(f"| ratio cached/recomputed | {batch} | {best[True] / best[False]:.2f} |")
    return 0

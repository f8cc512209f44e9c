"""CPU forward timings and parameter counts of the PAVE-Net configs (prints a markdown table).

Usage: python benchmarks/forward_cpu.py [--runs 3] [--threads 2] [--skip-r50]

Forward: eval mode, no_grad, median of ``--runs`` after one warm-up run. Train step: the
tiny config in train mode, forward + backward of a loss touching every output.
Timings on a shared machine are noisy; compare medians taken on the same machine only.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

from pavenet.config import load_config
from pavenet.model.network import PAVENet, build_model

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def median_seconds(fn: Callable[[], None], runs: int) -> float:
    """Median wall time of ``runs`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def output_sum(tree) -> torch.Tensor:
    """Sum of every floating-point tensor in a model output (a loss touching all of them)."""
    if isinstance(tree, torch.Tensor):
        return tree.float().sum() if tree.is_floating_point() else tree.new_zeros((), dtype=torch.float32)
    values = tree.values() if isinstance(tree, dict) else tree
    return sum((output_sum(v) for v in values), torch.zeros(()))


def clip(batch: int, frames: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.randn(batch, frames, 3, height, width),
            torch.zeros(batch, height, width, dtype=torch.bool))


def forward_time(model: PAVENet, batch: int, height: int, width: int, runs: int) -> float:
    frames, mask = clip(batch, model.num_frames, height, width)
    model.eval()

    def run() -> None:
        with torch.no_grad():
            model(frames, mask)
    return median_seconds(run, runs)


def train_step_time(model: PAVENet, batch: int, height: int, width: int, runs: int) -> float:
    frames, mask = clip(batch, model.num_frames, height, width)
    model.train()

    def run() -> None:
        model.zero_grad(set_to_none=True)
        output_sum(model(frames, mask)).backward()
    return median_seconds(run, runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-r50", action="store_true", help="only the tiny config")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = [("tiny", "pavenet_tiny.yaml", 2, 256, 256)]
    if not args.skip_r50:
        rows.append(("r50", "pavenet_r50.yaml", 1, 800, 1333))
    print(f"| config | params (M) | trainable (M) | input (B, T, H, W) | forward s "
          f"({args.threads} threads) | train step s |")
    print("|---|---|---|---|---|---|")
    for name, file, batch, height, width in rows:
        model = build_model(load_config(CONFIGS / file).model)
        total = sum(p.numel() for p in model.parameters()) / 1e6
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6
        fwd = forward_time(model, batch, height, width, args.runs)
        step = (f"{train_step_time(model, batch, height, width, args.runs):.2f}"
                if name == "tiny" else "-")
        print(f"| {name} | {total:.2f} | {trainable:.2f} | ({batch}, {model.num_frames}, "
              f"{height}, {width}) | {fwd:.2f} | {step} |")


if __name__ == "__main__":
    main()

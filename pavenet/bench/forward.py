"""CPU forward timings and parameter counts of the PAVE-Net configs (markdown table).

Usage: pavenet bench forward [--runs 3] [--threads 2] [--skip-r50]

Forward: eval mode, no_grad, median of ``--runs`` after one warm-up run. Train step: the
tiny config in train mode, forward + backward of a loss touching every output.
Timings on a shared machine are noisy; compare medians taken on the same machine only.
"""
from __future__ import annotations

import argparse
from typing import Callable, Optional

import torch
from torch import nn

from pavenet.bench.timing import time_callable
from pavenet.config import load_config
from pavenet.model import build_model
from pavenet.runtime.arguments import Parser, example_epilog, positive_int

#: (name, config file, batch, height, width); the tiny row also times a train step.
TINY = ("tiny", "pavenet_tiny", 2, 256, 256)
R50 = ("r50", "pavenet_r50", 1, 800, 1333)


def median_seconds(fn: Callable[[], None], runs: int) -> float:
    """Median wall time of ``runs`` calls after one warm-up call."""
    return time_callable(fn, 1, runs).median_ms / 1e3


def output_sum(tree) -> torch.Tensor:
    """Sum of every floating-point tensor in a model output (a loss touching all of them)."""
    if isinstance(tree, torch.Tensor):
        return tree.float().sum() if tree.is_floating_point() else tree.new_zeros((), dtype=torch.float32)
    values = tree.values() if isinstance(tree, dict) else tree
    return sum((output_sum(v) for v in values), torch.zeros(()))


def clip(batch: int, frames: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.randn(batch, frames, 3, height, width),
            torch.zeros(batch, height, width, dtype=torch.bool))


def forward_time(model: nn.Module, batch: int, height: int, width: int, runs: int) -> float:
    frames, mask = clip(batch, model.num_frames, height, width)
    model.eval()

    def run() -> None:
        with torch.no_grad():
            model(frames, mask)
    return median_seconds(run, runs)


def train_step_time(model: nn.Module, batch: int, height: int, width: int, runs: int) -> float:
    frames, mask = clip(batch, model.num_frames, height, width)
    model.train()

    def run() -> None:
        model.zero_grad(set_to_none=True)
        output_sum(model(frames, mask)).backward()
    return median_seconds(run, runs)


def table_row(name: str, file: str, batch: int, height: int, width: int, runs: int) -> str:
    """The markdown row of one config: parameter counts, forward and (tiny only) train step."""
    model = build_model(load_config(file).model)
    total = sum(p.numel() for p in model.parameters()) / 1e6
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6
    fwd = forward_time(model, batch, height, width, runs)
    step = f"{train_step_time(model, batch, height, width, runs):.2f}" if name == "tiny" else "-"
    return (f"| {name} | {total:.2f} | {trainable:.2f} | ({batch}, {model.num_frames}, "
            f"{height}, {width}) | {fwd:.2f} | {step} |")


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    parser = Parser(prog=prog, description=__doc__.splitlines()[0],
                    epilog=example_epilog("pavenet bench forward --runs 3 --threads 2 --skip-r50"))
    parser.add_argument("--runs", type=positive_int, default=3, help="timed forward passes per config (the median)")
    parser.add_argument("--threads", type=positive_int, default=2, help="CPU threads")
    parser.add_argument("--skip-r50", action="store_true", help="only the tiny config")
    return parser


def main(argv: Optional[list[str]] = None, prog: Optional[str] = None) -> int:
    args = build_parser(prog).parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = [TINY] if args.skip_r50 else [TINY, R50]
    print(f"| config | params (M) | trainable (M) | input (B, T, H, W) | forward s "
          f"({args.threads} threads) | train step s |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(table_row(*row, args.runs), flush=True)
    return 0

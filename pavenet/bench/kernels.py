"""GPU timings of multi-scale deformable attention: PyTorch reference vs the Triton kernel.

Usage: pavenet bench kernels [--repeats 20] [--warmup 5] [--batch-size 1]

Sizes are those of the r50 model at 800x1333 (d=256, 8 heads of 32 channels, 4 levels of
100x167, 50x84, 25x42, 13x21 -> S = 22223 tokens) for one clip of T=3 frames (N = batch x 3):
the encoder's self-attention (Q = S, P = 4), the pose decoder's cross-attention (300 queries,
P = 15 joints per frame) and the joint decoder's (20 kept poses x 15 joints, P = 4). Values and
weights are in the listed dtype, locations in float32 (as the network produces them).

Each entry is the median wall time of ``--repeats`` calls after ``--warmup`` calls, with
``torch.cuda.synchronize`` around each call; the speed-up is reference / Triton within the same
run. "fwd+bwd" is the forward plus the backward of all three inputs.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import torch

from pavenet.bench.timing import device_sync, time_callable
from pavenet.model.deformable_attention import ms_deform_attn
from pavenet.runtime.arguments import Parser, example_epilog, non_negative_int, positive_int

DEVICE = "cuda"
SHAPES = [(100, 167), (50, 84), (25, 42), (13, 21)]
HEADS, HEAD_DIM = 8, 32


@dataclass
class Case:
    name: str
    queries: int
    points: int


def cases(shapes: list[tuple[int, int]]) -> list[Case]:
    tokens = sum(h * w for h, w in shapes)
    return [Case(f"encoder (Q=S={tokens}, P=4)", tokens, 4),
            Case("pose decoder (Q=300, P=15)", 300, 15),
            Case("joint decoder (Q=20x15, P=4)", 300, 4)]


def make_inputs(case: Case, shapes: list[tuple[int, int]], frames: int,
                dtype: torch.dtype) -> list[torch.Tensor]:
    """value, locations (float32, some outside [0, 1]), softmaxed weights, upstream gradient."""
    g = torch.Generator(device=DEVICE).manual_seed(0)
    s, num_levels = sum(h * w for h, w in shapes), len(shapes)
    value = torch.randn(frames, s, HEADS, HEAD_DIM, device=DEVICE, generator=g)
    locations = torch.rand(frames, case.queries, HEADS, num_levels, case.points, 2,
                           device=DEVICE, generator=g) * 1.1 - 0.05
    weights = torch.rand(frames, case.queries, HEADS, num_levels * case.points, device=DEVICE,
                         generator=g).softmax(-1).view(locations.shape[:-1])
    grad_out = torch.randn(frames, case.queries, HEADS * HEAD_DIM, device=DEVICE, generator=g)
    return [value.to(dtype), locations, weights.to(dtype), grad_out.to(dtype)]


def median_ms(fn: Callable[[], None], warmup: int, repeats: int) -> float:
    """Median milliseconds of ``repeats`` synchronised calls after ``warmup`` calls."""
    return time_callable(fn, warmup, repeats, device_sync(DEVICE)).median_ms


def step(backend: str, shapes: list[tuple[int, int]], inputs: list[torch.Tensor],
         backward: bool) -> Callable[[], None]:
    """One forward (no_grad) or forward + backward call of ``ms_deform_attn``."""
    value, locations, weights, grad_out = inputs
    leaves = [t.detach().requires_grad_(backward) for t in (value, locations, weights)]

    def run() -> None:
        if backward:
            for t in leaves:
                t.grad = None
            out = ms_deform_attn(leaves[0], shapes, leaves[1], leaves[2], backend=backend)
            out.backward(grad_out)
        else:
            with torch.no_grad():
                ms_deform_attn(leaves[0], shapes, leaves[1], leaves[2], backend=backend)
    return run


def forward_difference(shapes: list[tuple[int, int]], inputs: list[torch.Tensor]) -> float:
    """max |Triton - reference| / max |reference| of the forward output."""
    value, locations, weights, _ = inputs
    with torch.no_grad():
        ref = ms_deform_attn(value, shapes, locations, weights, backend="reference").float()
        got = ms_deform_attn(value, shapes, locations, weights, backend="triton").float()
    return ((got - ref).abs().max() / ref.abs().max().clamp_min(1e-12)).item()


def benchmark_rows(args: argparse.Namespace, shapes: list[tuple[int, int]]) -> list[str]:
    rows = []
    for case in cases(shapes):
        for dtype in (torch.float32, torch.bfloat16):
            inputs = make_inputs(case, shapes, 3 * args.batch, dtype)
            diff = forward_difference(shapes, inputs)
            for backward in (False, True):
                ref, tri = (median_ms(step(b, shapes, inputs, backward), args.warmup,
                                      args.repeats) for b in ("reference", "triton"))
                rows.append(f"| {case.name} | {str(dtype).removeprefix('torch.')} | "
                            f"{'fwd+bwd' if backward else 'fwd'} | {ref:.3f} | {tri:.3f} | "
                            f"{ref / tri:.2f}x | {diff:.1e} |")
            del inputs
            torch.cuda.empty_cache()
    return rows


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    parser = Parser(prog=prog, description=__doc__.splitlines()[0],
                    epilog=example_epilog("pavenet bench kernels --repeats 20 --warmup 5 --batch-size 1"))
    parser.add_argument("--repeats", type=positive_int, default=20, help="timed calls per entry (the median)")
    parser.add_argument("--warmup", type=non_negative_int, default=5, help="untimed calls before them")
    parser.add_argument("--batch-size", "--batch", dest="batch", type=positive_int, default=1,
                        help="clips of 3 frames")
    return parser


def main(argv: Optional[list[str]] = None, prog: Optional[str] = None) -> int:
    args = build_parser(prog).parse_args(argv)
    if not torch.cuda.is_available():
        print("pavenet bench kernels: error: no CUDA device is available; this benchmark times GPU "
              "kernels only (the CPU path is the reference, see pavenet bench forward)", file=sys.stderr)
        return 2
    print(f"Device: {torch.cuda.get_device_name()} (torch {torch.__version__}), "
          f"N = {3 * args.batch} frames, median of {args.repeats} after {args.warmup} warm-up\n")
    print("| attention | dtype | pass | reference ms | Triton ms | speed-up | fwd rel. diff |")
    print("|---|---|---|---:|---:|---:|---:|")
    for row in benchmark_rows(args, SHAPES):
        print(row, flush=True)
    return 0

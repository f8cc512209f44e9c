"""Timings of multi-scale deformable attention: the PyTorch reference vs the fast kernel.

Usage: pavenet bench kernels [--device cuda|cpu] [--repeats N] [--warmup N] [--batch-size 1]

On CUDA the fast kernel is Triton's, at the sizes of the r50 model at 800x1333 (d=256, 8 heads
of 32 channels, 4 levels of 100x167, 50x84, 25x42, 13x21 -> S = 22223 tokens): the encoder's
self-attention (Q = S, P = 4), the pose decoder's cross-attention (300 queries, P = 15 joints
per frame) and the joint decoder's (20 kept poses x 15 joints, P = 4), in float32 and bfloat16.
On the CPU it is the "bags" formulation (:mod:`pavenet.model.deform_attn_bag`), at the sizes of
the tiny model at 192x192 (d=128, 4 heads of 32 channels, levels 24x24, 12x12, 6x6, 3x3: the
encoder with Q = S = 765, P = 4; the pose decoder with 30 queries, P = 15; the joint decoder
with 8 poses x 15 joints, P = 2), in float32. Both for one clip of T=3 frames (N = batch x 3).
Locations are float32 (as the network produces them), some outside the maps.

Each entry is the median wall time of ``--repeats`` calls after ``--warmup`` calls (synchronised
on CUDA); the speed-up is reference / fast kernel within the same run. "fwd+bwd" is the forward
plus the backward of all three inputs.
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


@dataclass
class Case:
    name: str
    queries: int
    points: int


@dataclass
class Setting:
    """What one device measures: the fast backend, its model's sizes and the dtypes."""
    device: str
    fast: str
    label: str
    shapes: list[tuple[int, int]]
    heads: int
    head_dim: int
    cases: list[Case]
    dtypes: tuple[torch.dtype, ...]
    repeats: int
    warmup: int


def _encoder(shapes: list[tuple[int, int]]) -> Case:
    tokens = sum(h * w for h, w in shapes)
    return Case(f"encoder (Q=S={tokens}, P=4)", tokens, 4)


def setting(device: str) -> Setting:
    if device == "cuda":
        shapes = [(100, 167), (50, 84), (25, 42), (13, 21)]
        cases = [_encoder(shapes), Case("pose decoder (Q=300, P=15)", 300, 15),
                 Case("joint decoder (Q=20x15, P=4)", 300, 4)]
        return Setting("cuda", "triton", "Triton", shapes, 8, 32, cases, (torch.float32, torch.bfloat16), 20, 5)
    shapes = [(24, 24), (12, 12), (6, 6), (3, 3)]
    cases = [_encoder(shapes), Case("pose decoder (Q=30, P=15)", 30, 15),
             Case("joint decoder (Q=8x15, P=2)", 120, 2)]
    return Setting("cpu", "bags", "bags", shapes, 4, 32, cases, (torch.float32,), 10, 2)


def make_inputs(case: Case, plan: Setting, frames: int, dtype: torch.dtype) -> list[torch.Tensor]:
    """value, locations (float32, some outside [0, 1]), softmaxed weights, upstream gradient."""
    g = torch.Generator(device=plan.device).manual_seed(0)
    s, num_levels = sum(h * w for h, w in plan.shapes), len(plan.shapes)
    kw = {"device": plan.device, "generator": g}
    value = torch.randn(frames, s, plan.heads, plan.head_dim, **kw)
    locations = torch.rand(frames, case.queries, plan.heads, num_levels, case.points, 2, **kw) * 1.1 - 0.05
    weights = torch.rand(frames, case.queries, plan.heads, num_levels * case.points,
                         **kw).softmax(-1).view(locations.shape[:-1])
    grad_out = torch.randn(frames, case.queries, plan.heads * plan.head_dim, **kw)
    return [value.to(dtype), locations, weights.to(dtype), grad_out.to(dtype)]


def median_ms(fn: Callable[[], None], device: str, warmup: int, repeats: int) -> float:
    """Median milliseconds of ``repeats`` synchronised calls after ``warmup`` calls."""
    return time_callable(fn, warmup, repeats, device_sync(device)).median_ms


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


def forward_difference(plan: Setting, inputs: list[torch.Tensor]) -> float:
    """max |fast - reference| / max |reference| of the forward output."""
    value, locations, weights, _ = inputs
    with torch.no_grad():
        ref = ms_deform_attn(value, plan.shapes, locations, weights, backend="reference").float()
        got = ms_deform_attn(value, plan.shapes, locations, weights, backend=plan.fast).float()
    return ((got - ref).abs().max() / ref.abs().max().clamp_min(1e-12)).item()


def benchmark_rows(args: argparse.Namespace, plan: Setting) -> list[str]:
    rows = []
    for case in plan.cases:
        for dtype in plan.dtypes:
            inputs = make_inputs(case, plan, 3 * args.batch, dtype)
            diff = forward_difference(plan, inputs)
            for backward in (False, True):
                ref, fast = (median_ms(step(b, plan.shapes, inputs, backward), plan.device, args.warmup, args.repeats)
                             for b in ("reference", plan.fast))
                rows.append(f"| {case.name} | {str(dtype).removeprefix('torch.')} | "
                            f"{'fwd+bwd' if backward else 'fwd'} | {ref:.3f} | {fast:.3f} | "
                            f"{ref / fast:.2f}x | {diff:.1e} |")
            del inputs
            if plan.device == "cuda":
                torch.cuda.empty_cache()
    return rows


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    parser = Parser(prog=prog, description=__doc__.splitlines()[0],
                    epilog=example_epilog("pavenet bench kernels --repeats 20 --warmup 5 --batch-size 1",
                                          "pavenet bench kernels --device cpu"))
    parser.add_argument("--device", choices=["cuda", "cpu"], default=None,
                        help="cuda: reference vs Triton; cpu: reference vs bags (default: cuda when available)")
    parser.add_argument("--repeats", type=positive_int, default=None,
                        help="timed calls per entry, the median (default: 20 on CUDA, 10 on the CPU)")
    parser.add_argument("--warmup", type=non_negative_int, default=None,
                        help="untimed calls before them (default: 5 on CUDA, 2 on the CPU)")
    parser.add_argument("--batch-size", "--batch", dest="batch", type=positive_int, default=1,
                        help="clips of 3 frames")
    return parser


def main(argv: Optional[list[str]] = None, prog: Optional[str] = None) -> int:
    args = build_parser(prog).parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        print("pavenet bench kernels: error: --device cuda but no CUDA device is available "
              "(--device cpu times the CPU kernels)", file=sys.stderr)
        return 2
    plan = setting(device)
    args.repeats = args.repeats or plan.repeats
    args.warmup = plan.warmup if args.warmup is None else args.warmup
    name = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"Device: {name} (torch {torch.__version__}), N = {3 * args.batch} frames, median of "
          f"{args.repeats} after {args.warmup} warm-up\n")
    print(f"| attention | dtype | pass | reference ms | {plan.label} ms | speed-up | fwd rel. diff |")
    print("|---|---|---|---:|---:|---:|---:|")
    for row in benchmark_rows(args, plan):
        print(row, flush=True)
    return 0

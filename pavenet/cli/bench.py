"""``pavenet bench``: per-frame latency of pavenet vs a two-stage (detector + top-down) pipeline.

Writes ``bench.json`` and ``bench.md`` into ``--out`` (see :mod:`pavenet.bench.runner` for the
grid and :mod:`pavenet.bench.report` for the row keys).
"""
from __future__ import annotations

import argparse
import sys

from pavenet.bench import MODELS
from pavenet.cli.arguments import non_negative_int, positive_int
from pavenet.infer import COMPILE_MODES


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("bench", help="speed benchmark: pavenet vs a two-stage detector + top-down pipeline")
    p.add_argument("--config", default=None,
                   help="pavenet config (default: configs/pavenet_r50.yaml on CUDA, "
                        "configs/synthetic_tiny.yaml on CPU)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: CUDA when available)")
    p.add_argument("--size", type=positive_int, nargs=2, metavar=("H", "W"), default=None,
                   help="network input size (default: 800 1333 on CUDA, 256 256 on CPU)")
    p.add_argument("--people", type=positive_int, nargs="+", default=None,
                   help="people counts (default: 1 3 5 10 20 50)")
    p.add_argument("--repeats", type=positive_int, default=None, help="timed calls per row (default: 20 CUDA, 5 CPU)")
    p.add_argument("--warmup", type=non_negative_int, default=None,
                   help="untimed calls per row (default: 5 CUDA, 1 CPU)")
    p.add_argument("--batch", type=positive_int, default=None,
                   help="batched size measured besides batch 1 (default: 8 on CUDA, none on CPU)")
    p.add_argument("--compile", action="store_true", help="also measure torch.compile versions")
    p.add_argument("--only-batch", action="store_true",
                   help="measure the --batch size alone (not batch 1 as well)")
    p.add_argument("--models", nargs="+", choices=MODELS,
                   default=None, help="models to measure (default: all three)")
    p.add_argument("--compile-only", action="store_true",
                   help="measure the torch.compile versions only (no eager rows)")
    p.add_argument("--compile-mode", default="default",
                   choices=COMPILE_MODES,
                   help="torch.compile mode of the compiled rows (reduce-overhead: CUDA graphs)")
    p.add_argument("--dtypes", nargs="+", choices=["float32", "bfloat16"], default=["float32", "bfloat16"],
                   help="dtypes (bfloat16 = autocast, CUDA only; skipped with a note on CPU)")
    p.add_argument("--crop", type=positive_int, nargs=2, metavar=("H", "W"), default=None,
                   help="two-stage top-down crop size (default: 256 192)")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--out", default="runs/bench", help="output folder (default: runs/bench)")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes for tests/CI: 64x64 input, 64x48 crops, 1 and 3 people, one timed call")
    return p


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pavenet.bench.runner import BenchPlan, resolve, run_benchmark

    plan = BenchPlan(out=Path(args.out), config=Path(args.config) if args.config else None,
                     device=args.device, size=tuple(args.size) if args.size else None,
                     people=tuple(args.people) if args.people else None, repeats=args.repeats,
                     warmup=args.warmup, batch=args.batch, compile=args.compile, only_batch=args.only_batch,
                     models=tuple(args.models) if args.models else MODELS,
                     compile_only=args.compile_only, compile_mode=args.compile_mode,
                     dtypes=tuple(args.dtypes), crop=tuple(args.crop) if args.crop else None,
                     threads=args.threads, quick=args.quick)
    try:
        resolve(plan)
        if plan.config is not None and not plan.config.is_file():
            raise ValueError(f"{plan.config}: config not found")
    except (RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = run_benchmark(plan)
    for ratio in report["ratios"]:
        print(f"two-stage / pavenet at {ratio['people']} people ({ratio['dtype']}, batch {ratio['batch']}"
              f"{', compiled' if ratio['compile'] else ''}): {ratio['ratio_streaming']:.2f}x (streaming)")
    for skipped in report["skipped"]:
        print(f"skipped: {skipped}")
    for failed in report["failed"]:
        print(f"FAILED: {failed}", file=sys.stderr)
    print(f"wrote {Path(args.out) / 'bench.md'} and {Path(args.out) / 'bench.json'}")
    return 1 if report["failed"] else 0

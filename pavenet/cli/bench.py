"""``pavenet bench``: the speed benchmarks.

``pavenet bench [options]`` runs the latency benchmark, pavenet vs a two-stage (detector +
top-down) pipeline; it writes ``bench.json`` and ``bench.md`` into ``--out`` (see
:mod:`pavenet.bench.runner` for the grid and :mod:`pavenet.bench.report` for the row keys).
``pavenet bench NAME [options]`` runs the named benchmark ``pavenet.bench.NAME`` (one of
:data:`pavenet.bench.BENCHMARKS`) with its own options, which follow NAME.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from pavenet.bench import BENCHMARKS, MODELS
from pavenet.cli.arguments import (DefaultFolder, add_size_argument, example_epilog, non_negative_int,
                                   output_folder, positive_int)
from pavenet.infer import COMPILE_MODES


def _epilog() -> str:
    width = max(len(name) for name in BENCHMARKS)
    lines = [f"  {name:<{width}}  {line}" for name, line in BENCHMARKS.items()]
    return ("named benchmarks (pavenet bench NAME --help shows the options of NAME):\n"
            + "\n".join(lines) + "\n\n"
            + example_epilog("pavenet bench --device cpu --people 1 3 5 --dtypes float32",
                             "pavenet bench eval --sequences 10"))


def _latency_options(p: argparse.ArgumentParser) -> list[argparse.Action]:
    """The latency benchmark's options (the ones of ``pavenet bench`` without NAME)."""
    add = p.add_argument
    return [
        add("--config", default=None, help="pavenet config, a shipped name or a YAML path (default: pavenet_r50 on CUDA, "
                                            "synthetic_tiny on CPU)"),
        add("--device", default=None, help="cpu or cuda (default: CUDA when available)"),
        add_size_argument(p, "--size", default=None,
                          help="network input size (default: 800 1333 on CUDA, 256 256 on CPU)"),
        add("--people", type=positive_int, nargs="+", default=None, help="people counts (default: 1 3 5 10 20 50)"),
        add("--repeats", type=positive_int, default=None, help="timed calls per row (default: 20 CUDA, 5 CPU)"),
        add("--warmup", type=non_negative_int, default=None, help="untimed calls per row (default: 5 CUDA, 1 CPU)"),
        add("--batch-size", "--batch", dest="batch", type=positive_int, default=None,
            help="batched size measured besides batch 1 (default: 8 on CUDA, none on CPU)"),
        add("--compile", action="store_true", help="also measure torch.compile versions"),
        add("--only-batch", action="store_true", help="measure the --batch-size alone (not batch 1 as well)"),
        add("--models", nargs="+", choices=MODELS, default=None, help="models to measure (default: all three)"),
        add("--compile-only", action="store_true", help="measure the torch.compile versions only (no eager rows)"),
        add("--compile-mode", default="default", choices=COMPILE_MODES,
            help="torch.compile mode of the compiled rows (reduce-overhead: CUDA graphs)"),
        add("--dtypes", nargs="+", choices=["float32", "bfloat16"], default=["float32", "bfloat16"],
            help="dtypes (bfloat16 = autocast, CUDA only; skipped with a note on CPU)"),
        add_size_argument(p, "--crop", default=None, help="two-stage top-down crop size (default: 256 192)"),
        add("--threads", type=positive_int, default=None, help="CPU threads (default: torch's)"),
        add("--out", default=DefaultFolder("runs/bench"),
            help="output folder (default: runs/bench; when it exists, a new numbered folder runs/bench2, "
                 "runs/bench3, ... unless --exist-ok; a folder given here is used as it is)"),
        add("--exist-ok", action="store_true",
            help="write into runs/bench even when it exists (bench.json and bench.md are replaced)"),
        add("--quick", action="store_true",
            help="tiny sizes for tests/CI: 64x64 input, 64x48 crops, 1 and 3 people, one timed call"),
    ]


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "bench", help="speed benchmarks: pavenet vs a two-stage pipeline, or a named one (bench --help)",
        description="Without NAME: per-frame latency of pavenet vs a two-stage detector + top-down\n"
                    "pipeline (writes bench.json and bench.md into --out).\n"
                    "With NAME: that benchmark, with the options that follow NAME.",
        usage="%(prog)s [latency options]\n       %(prog)s NAME [options of NAME]",
        epilog=_epilog())
    p.add_argument("benchmark", nargs="?", choices=tuple(BENCHMARKS), metavar="NAME",
                   help="a named benchmark (listed below); without it, the latency benchmark")
    p.add_argument("options", nargs=argparse.REMAINDER, metavar="...",
                   help="the options of NAME (pavenet bench NAME --help)")
    p.set_defaults(_latency=_latency_options(p))
    return p


def run(args: argparse.Namespace) -> int:
    if args.benchmark is not None:
        return run_named(args)
    return run_latency(args)


def run_named(args: argparse.Namespace) -> int:
    """Run ``pavenet.bench.NAME`` on the options after NAME; latency options before NAME are an error."""
    from pavenet.cli import fail

    given = [a.option_strings[0] for a in args._latency if getattr(args, a.dest) != a.default]
    if given:
        return fail("bench", f"{', '.join(given)} before {args.benchmark}: the options of a named benchmark "
                             f"follow its name (pavenet bench {args.benchmark} --help)")
    module = importlib.import_module(f"pavenet.bench.{args.benchmark}")
    return int(module.main(args.options, prog=f"pavenet bench {args.benchmark}") or 0)


def run_latency(args: argparse.Namespace) -> int:
    from pavenet.bench.runner import BenchPlan, resolve, run_benchmark
    from pavenet.cli import fail

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
        return fail("bench", str(exc))
    plan.out = output_folder(args.out, args.exist_ok)  # after the checks: no empty folder for a refused run
    report = run_benchmark(plan)
    for ratio in report["ratios"]:
        print(f"two-stage / pavenet at {ratio['people']} people ({ratio['dtype']}, batch {ratio['batch']}"
              f"{', compiled' if ratio['compile'] else ''}): {ratio['ratio_streaming']:.2f}x (streaming)")
    for skipped in report["skipped"]:
        print(f"skipped: {skipped}")
    for failed in report["failed"]:
        print(f"FAILED: {failed}", file=sys.stderr)
    print(f"wrote {plan.out / 'bench.md'} and {plan.out / 'bench.json'}")
    return 1 if report["failed"] else 0

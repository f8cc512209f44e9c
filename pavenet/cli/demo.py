"""``pavenet demo``: synthesise data, train, evaluate, render and report, within a time budget."""
from __future__ import annotations

import argparse

from pavenet.cli.arguments import (add_output_arguments, add_processes_argument, add_threads_argument,
                                   example_epilog, non_negative_int, output_folder, positive_float, positive_int)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "demo", help="the whole system on built-in synthetic data (train, eval, render, report)",
        description="Synthesise train / val / hard-val videos, train the tiny model within the time budget, "
                    "evaluate it (mAP, MOTA), render an overlay video and write report.md, all into one folder.",
        epilog=example_epilog("pavenet demo --minutes 5 --device cpu",
                              "pavenet demo --ablation --out runs/demo_ablation"))
    p.add_argument("--minutes", type=positive_float, default=12.0,
                   help="time budget of the whole demo in minutes (default: 12; --ablation doubles training)")
    add_output_arguments(p, "runs/demo", "output folder (data, runs, report)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: CUDA when available)")
    add_threads_argument(p)
    add_processes_argument(p, "they share the batch and the threads; default: 1, the demo's own process")
    p.add_argument("--ablation", action="store_true", help="also train T=1 on the same budget and compare")
    p.add_argument("--config", default=None, help="model/training config: a shipped config name or a YAML path (default: synthetic_tiny)")
    p.add_argument("--videos", type=positive_int, default=48, help="synthetic training videos (default: 48)")
    p.add_argument("--val-videos", type=non_negative_int, default=8, help="val and hard-val videos each (default: 8)")
    p.add_argument("--frames", type=positive_int, default=40, help="frames per video (default: 40)")
    p.add_argument("--set", nargs="*", action="extend", default=[], metavar="KEY=VALUE",
                   help="config overrides (default: none)")
    return p


def run(args: argparse.Namespace) -> int:
    from pavenet.cli import apply_threads
    from pavenet.demo import DemoPlan, run_demo

    apply_threads(args)

    out = output_folder(args.out, args.exist_ok)
    print(f"output folder: {out}", flush=True)
    plan = DemoPlan(out=out, minutes=args.minutes, device=args.device, ablation=args.ablation,
                    config=args.config, train_videos=args.videos,
                    val_videos=args.val_videos, hard_videos=args.val_videos, frames=args.frames,
                    overrides=tuple(args.set), processes=args.processes)
    run_demo(plan)
    return 0

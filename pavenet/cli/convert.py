"""``pavenet convert SRC --out DIR``: a published PAVE-Net or PETR checkpoint -> pavenet weights.

The released checkpoint is read without executing pickled code; ``DIR/model.safetensors`` and
``DIR/config.yaml`` form a checkpoint folder that ``--weights DIR`` accepts everywhere. A table
says what happened to every tensor.
"""
from __future__ import annotations

import argparse
from collections import Counter

from pavenet.cli.arguments import example_epilog


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("convert", help="convert a published PAVE-Net or PETR checkpoint to pavenet weights",
                       description="Convert a released PAVE-Net (exact network and test-time rule) or PETR "
                                   "(COCO initialisation of a T-frame pavenet) checkpoint, reading it without "
                                   "executing pickled code.",
                       epilog=example_epilog("pavenet convert petr_r50_16x2_100e_coco.pth --out weights/petr_r50"))
    p.add_argument("src", help="the released checkpoint (.pth: an mmcv checkpoint or a bare state dict)")
    p.add_argument("--out", required=True, help="output folder (model.safetensors + config.yaml)")
    p.add_argument("--from", dest="layout", choices=["auto", "pavenet", "petr"], default="auto",
                   help="layout of SRC (default: auto, detected from its tensor names)")
    p.add_argument("--config", default=None,
                   help="pavenet config of the converted network: a shipped config name or a YAML path (default: pavenet_r50)")
    return p


def _summary(reasons: dict[str, str]) -> list[tuple[str, int]]:
    return sorted(Counter(reasons.values()).items(), key=lambda kv: -kv[1])


def run(args: argparse.Namespace) -> int:
    from pavenet.convert import convert_checkpoint

    report = convert_checkpoint(args.src, args.out, args.layout, args.config)
    taken = report.total_model - len(report.initialised)
    print(f"converted {args.src} ({report.layout} layout) -> {args.out}")
    print(f"  released tensors: {report.total_source} = {report.used} used + {len(report.dropped)} dropped")
    for why, n in _summary(report.dropped):
        print(f"    dropped {n:5d}  {why}")
    print(f"  pavenet tensors:  {report.total_model} = {taken} from the release + "
          f"{len(report.initialised)} initialised otherwise")
    for why, n in _summary(report.initialised):
        print(f"    init    {n:5d}  {why}")
    print(f"  post-processing: {report.config.postprocess.mode}; use it with --weights {args.out}")
    return 0

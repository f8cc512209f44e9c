"""``pavenet synth OUT_DIR``: write the synthetic dataset in the PoseTrack18 layout."""
from __future__ import annotations

import argparse
import time

from pavenet.cli.arguments import add_size_argument, example_epilog, non_negative_int, positive_int


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "synth", help="generate synthetic multi-person videos (PoseTrack18 layout)",
        description="Write a synthetic dataset of multi-person videos in the PoseTrack18 layout "
                    "(images/<split>/<seq>/*.jpg, annotations/<split>/<seq>.json): train and val "
                    "splits, deterministic for a seed.",
        epilog=example_epilog("pavenet synth data/synthetic --videos 8 --frames 20 --size 192 256"))
    p.add_argument("out_dir", help="dataset root to write (images/<split>/..., annotations/<split>/...)")
    p.add_argument("--videos", type=non_negative_int, default=20, help="number of training videos")
    p.add_argument("--val-videos", type=non_negative_int, default=None,
                   help="number of val videos (default: videos // 4, >= 1)")
    p.add_argument("--frames", type=positive_int, default=40, help="frames per video")
    add_size_argument(p, "--size", default=[256, 256], minimum=32,
                      help="frame size, height and width (each >= 32; the older spelling WxH is accepted)")
    p.add_argument("--max-persons", type=positive_int, default=3, help="at most this many people per video")
    p.add_argument("--seed", type=non_negative_int, default=0, help="same seed and options give the same bytes")
    p.add_argument("--difficulty", choices=["easy", "hard", "temporal"], default="easy",
                   help="hard adds motion blur, defocus, passing occluders, blurred people; temporal "
                        "degrades single frames (blur, noise, occluders over joints, dropped frames) "
                        "that stay annotated while their neighbours are clean")
    p.add_argument("--labeled-every", type=positive_int, default=1, help="label every k-th frame (default: all)")
    return p


def run(args: argparse.Namespace) -> int:
    from pavenet.data.synthetic import write_dataset
    from pavenet.runtime.progress import progress_bar

    val = max(1, args.videos // 4) if args.val_videos is None else args.val_videos
    total = (args.videos + val) * args.frames
    height, width = args.size
    start = time.perf_counter()
    with progress_bar(total=total, unit="frame", desc="synth") as bar:
        write_dataset(args.out_dir, args.videos, args.frames, (width, height), args.max_persons, args.seed,
                      args.difficulty, val_videos=val, labeled_every=args.labeled_every, progress=bar.update)
    elapsed = time.perf_counter() - start
    print(f"wrote {args.videos} train + {val} val videos ({total} frames, {total / elapsed:.0f} frames/s) "
          f"to {args.out_dir}")
    return 0

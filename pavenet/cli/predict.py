"""``pavenet predict INPUT... --weights CKPT``: tracked poses for videos, folders of frames and images."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pavenet.infer import COMPILE_MODES


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("predict", help="tracked poses (JSON/CSV) and overlays for videos, frame folders or images")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="video files, folders of frames, folders of videos, images (each a one-frame video) or globs")
    p.add_argument("--weights", required=True,
                   help="checkpoint (model.safetensors, its folder or a run folder); with --backend "
                        "onnxruntime also a `pavenet export` output (model.onnx or its folder)")
    p.add_argument("--backend", default="pytorch", choices=["pytorch", "onnxruntime"],
                   help="run the network with PyTorch (default) or ONNX Runtime on the CPU")
    p.add_argument("--out", default="runs/predict", help="output folder (default: runs/predict)")
    p.add_argument("--format", nargs="+", default=["posetrack"], choices=["posetrack", "coco", "csv"],
                   help="output formats (default: posetrack)")
    p.add_argument("--render", action="store_true", help="also write an overlay video per input (a PNG for an image)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: CUDA when available)")
    p.add_argument("--batch-size", type=int, default=4, help="windows per forward pass (default: 4)")
    p.add_argument("--score-threshold", type=float, default=None,
                   help="minimum person score (default: the checkpoint's postprocess.score_threshold)")
    p.add_argument("--joint-threshold", type=float, default=0.05,
                   help="overlay: joints scoring below it are not drawn (default: 0.05)")
    p.add_argument("--smooth", action="store_true", help="One-Euro smoothing of the keypoints")
    p.add_argument("--no-cache", action="store_true", help="recompute the encoder for every window")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast (CUDA only; float32 elsewhere)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the network (pytorch backend; the first windows of each input "
                        "size pay the compilation)")
    p.add_argument("--compile-mode", default="reduce-overhead",
                   choices=COMPILE_MODES,
                   help="torch.compile mode with --compile (default: reduce-overhead = CUDA graphs)")
    return p


def _predict_one(est, source, index: int, args: argparse.Namespace) -> list[Path]:
    from tqdm import tqdm

    from pavenet.infer.outputs import write_outputs
    from pavenet.infer.video_io import probe
    from pavenet.viz.overlay import render_image, render_video

    total = probe(source).num_frames
    frames = []
    with tqdm(total=total, desc=source.name, unit="frame", leave=False) as bar:
        for pred in est.predict_video(source, args.batch_size, args.score_threshold):
            frames.append(pred)
            bar.update(1)
    out = Path(args.out)
    written = write_outputs(out, source.name, index, frames, tuple(args.format))
    if args.render and source.kind == "image":
        written.append(render_image(source, *frames[0].arrays(), out / f"{source.name}.png", args.joint_threshold))
    elif args.render:
        people = (f.arrays() for f in frames)
        written.append(render_video(source, people, out / f"{source.name}.mp4", args.joint_threshold))
    return written


def _failure(path, exc: Exception) -> str:
    """``path: problem``, without naming the input twice when the message already starts with it."""
    message = str(exc)
    return message if message.startswith(f"{path}:") else f"{path}: {message}"


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pavenet.infer.estimator import PoseEstimator
    from pavenet.infer.smoothing import SmoothingConfig
    from pavenet.infer.video_io import VideoInputError, resolve_inputs

    sources, failures = resolve_inputs(args.inputs)
    failures = [str(e) for e in failures]
    options = {"cache": not args.no_cache,
               "smoothing": SmoothingConfig(enabled=True) if args.smooth else None}
    if args.backend == "onnxruntime":
        if args.amp or args.compile:
            print("error: --amp and --compile apply to the pytorch backend only", file=sys.stderr)
            return 2
        est = PoseEstimator.from_onnx(args.weights, device=args.device, **options)
    else:
        est = PoseEstimator.from_checkpoint(args.weights, device=args.device, amp=args.amp,
                                            compile=args.compile_mode if args.compile else None, **options)
    for index, source in enumerate(tqdm(sources, desc="inputs", unit="input")):
        try:
            for path in _predict_one(est, source, index, args):
                tqdm.write(f"wrote {path}")
        except (VideoInputError, ValueError, OSError) as exc:
            failures.append(_failure(source.path, exc))
            tqdm.write(f"error: {failures[-1]}", file=sys.stderr)
    if failures:
        print(f"{len(failures)} input(s) failed:", file=sys.stderr)
        for f in failures:
            print(f"  {f}", file=sys.stderr)
        return 1
    return 0

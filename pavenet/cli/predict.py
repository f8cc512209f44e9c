"""``pavenet predict INPUT... --weights CKPT``: tracked poses for videos, folders of frames and images."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pavenet.cli.arguments import add_threads_argument, positive_int, unit_float
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
    p.add_argument("--out", default="runs/predict",
                   help="output folder (default: runs/predict); each input's files are named after it (inputs "
                        "of the same name: after their relative paths); files of the same name from an earlier "
                        "run are replaced, other files are left alone")
    p.add_argument("--format", nargs="+", default=["posetrack"], choices=["posetrack", "coco", "csv"],
                   help="output formats (default: posetrack)")
    p.add_argument("--render", action="store_true", help="also write an overlay video per input (a PNG for an image)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: CUDA when available)")
    add_threads_argument(p)
    p.add_argument("--batch-size", type=positive_int, default=4, help="windows per forward pass (default: 4)")
    p.add_argument("--score-threshold", type=unit_float, default=None,
                   help="minimum person score, 0..1 (default: the checkpoint's postprocess.score_threshold)")
    p.add_argument("--joint-threshold", type=unit_float, default=0.05,
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


def _planned_files(source, name: str, args: argparse.Namespace) -> list[Path]:
    """Every file the run writes for ``source`` under the output name ``name``."""
    from pavenet.infer.outputs import output_files

    out = Path(args.out)
    files = list(output_files(out, name, tuple(args.format)).values())
    if args.render:
        files.append(out / f"{name}{'.png' if source.kind == 'image' else '.mp4'}")
    return files


def _predict_one(est, source, name: str, index: int, args: argparse.Namespace) -> list[Path]:
    from tqdm import tqdm

    from pavenet.infer.outputs import write_outputs
    from pavenet.infer.video_io import probe
    from pavenet.viz.overlay import render_image, render_video

    total = probe(source).num_frames
    frames = []
    with tqdm(total=total, desc=name, unit="frame", leave=False) as bar:
        for pred in est.predict_video(source, args.batch_size, args.score_threshold):
            frames.append(pred)
            bar.update(1)
    empty = nobody_note(frames, est.linker_cfg.score_threshold if args.score_threshold is None
                        else args.score_threshold)
    if empty:
        tqdm.write(f"{source.path}: {empty}")
    written = write_outputs(Path(args.out), name, index, frames, tuple(args.format))
    if args.render:
        overlay = _planned_files(source, name, args)[-1]
        if source.kind == "image":
            written.append(render_image(source, *frames[0].arrays(), overlay, args.joint_threshold))
        else:
            written.append(render_video(source, (f.arrays() for f in frames), overlay, args.joint_threshold))
    return written


def nobody_note(frames, threshold: float) -> str:
    """A note when no frame has a tracked person: the threshold and the best score seen."""
    if any(f.people for f in frames):
        return ""
    best = max((f.best_score for f in frames), default=0.0)
    return (f"no person above the score threshold {threshold:g} in any frame (best person score "
            f"seen: {best:.3f}); an undertrained model, or lower --score-threshold")


def _failure(path, exc: Exception) -> str:
    """``path: problem``, without naming the input twice when the message already starts with it."""
    message = str(exc)
    return message if message.startswith(f"{path}:") else f"{path}: {message}"


def _prepare_out(args: argparse.Namespace) -> None:
    """Check that --out takes files before any inference; remove what killed runs left there."""
    from pavenet.runtime.files import ensure_writable, remove_stale

    out = ensure_writable(args.out)
    remove_stale(out)
    if any(out.iterdir()):
        print(f"note: {out} is not empty: files of the same name are replaced, other files are kept",
              file=sys.stderr)


def _plan(sources, args: argparse.Namespace) -> tuple[list[tuple], list[str]]:
    """(index, source, output name) of each source whose files replace neither an input nor a file
    an earlier source writes, and a failure line for each other one."""
    from pavenet.infer.output_names import output_names

    planned, failures = [], []
    owner = {os.path.abspath(s.path): f"the input {s.path}" for s in sources}
    for index, (source, name) in enumerate(zip(sources, output_names(sources))):
        files = [os.path.abspath(f) for f in _planned_files(source, name, args)]
        clash = next((f for f in files if f in owner), None)
        if clash is not None:
            failures.append(f"{source.path}: its output {clash} would replace {owner[clash]}")
            continue
        owner.update({f: f"the output of {source.path}" for f in files})
        planned.append((index, source, name))
    return planned, failures


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pavenet.cli import apply_threads
    from pavenet.infer.estimator import PoseEstimator
    from pavenet.infer.smoothing import SmoothingConfig
    from pavenet.infer.video_io import VideoInputError, resolve_inputs

    apply_threads(args)

    if args.backend == "onnxruntime" and (args.amp or args.compile):
        print("pavenet predict: error: --amp and --compile apply to the pytorch backend only", file=sys.stderr)
        return 2
    _prepare_out(args)
    sources, failures = resolve_inputs(args.inputs)
    planned, clashes = _plan(sources, args)
    failures = [str(e) for e in failures] + clashes
    options = {"cache": not args.no_cache,
               "smoothing": SmoothingConfig(enabled=True) if args.smooth else None}
    if args.backend == "onnxruntime":
        est = PoseEstimator.from_onnx(args.weights, device=args.device, **options)
    else:
        est = PoseEstimator.from_checkpoint(args.weights, device=args.device, amp=args.amp,
                                            compile=args.compile_mode if args.compile else None, **options)
    for index, source, name in tqdm(planned, desc="inputs", unit="input"):
        try:
            for path in _predict_one(est, source, name, index, args):
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

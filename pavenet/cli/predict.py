"""``pavenet predict INPUT... --weights CKPT``: tracked poses for videos, folders of frames and images."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pavenet.cli.arguments import (add_batch_size_argument, add_output_arguments, add_threads_argument,
                                   example_epilog, unit_float)
from pavenet.infer import COMPILE_MODES


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "predict", help="tracked poses (JSON/CSV) and overlays for videos, frame folders or images",
        description="Predict tracked poses for videos, folders of frames, folders of videos, images or globs: "
                    "PoseTrack18 JSON, COCO results and CSV per input, and an overlay video with --render. "
                    "A PoseTrack-layout sequence (images/<split>/<seq>/ beside annotations/<split>/<seq>.json) "
                    "or images listed in --coco-gt get the ground truth's image ids, so pavenet eval works on "
                    "the output.",
        epilog=example_epilog("pavenet predict clip.mp4 --weights runs/demo/run_t3/last --render",
                              "pavenet predict 'videos/*.mp4' --weights CKPT --format posetrack coco csv "
                              "--batch-size 8"))
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="video files, folders of frames, folders of videos, images (each a one-frame video) or globs")
    p.add_argument("--weights", required=True,
                   help="checkpoint (model.safetensors, its folder or a run folder); with --backend "
                        "onnxruntime also a `pavenet export` output (model.onnx or its folder)")
    p.add_argument("--backend", default="pytorch", choices=["pytorch", "onnxruntime"],
                   help="run the network with PyTorch (default) or ONNX Runtime on the CPU")
    add_output_arguments(p, "runs/predict",
                         "output folder; each input's files are named after it (inputs of the same name: after "
                         "their relative paths); files of the same name from an earlier run are replaced, "
                         "other files are left alone")
    p.add_argument("--format", nargs="+", default=["posetrack"], choices=["posetrack", "coco", "csv"],
                   help="output formats (default: posetrack)")
    p.add_argument("--render", action="store_true", help="also write an overlay video per input (a PNG for an image)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: CUDA when available)")
    add_threads_argument(p)
    add_batch_size_argument(p, 4, "windows per forward pass")
    p.add_argument("--score-threshold", type=unit_float, default=None,
                   help="minimum person score, 0..1 (default: the checkpoint's postprocess.score_threshold)")
    p.add_argument("--joint-threshold", type=unit_float, default=None,
                   help="overlay: joints scoring below it are not drawn (default: 0.05, or 0 for a checkpoint "
                        "post-processed with the released rule, postprocess.mode official)")
    p.add_argument("--smooth", action="store_true", help="One-Euro smoothing of the keypoints")
    p.add_argument("--no-cache", action="store_true", help="recompute the encoder for every window")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast (CUDA only; float32 elsewhere)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the network (pytorch backend; the first windows of each input "
                        "size pay the compilation)")
    p.add_argument("--compile-mode", default="reduce-overhead",
                   choices=COMPILE_MODES,
                   help="torch.compile mode with --compile (default: reduce-overhead = CUDA graphs)")
    p.add_argument("--coco-gt", default=None, metavar="JSON",
                   help="COCO-style ground truth (default: none): frames whose file names it lists get its image "
                        "ids and file names in the outputs, so pavenet eval --coco JSON OUT.coco.json works")
    p.add_argument("--tracker", default=None, metavar="YAML",
                   help="tracker settings: LinkerConfig keys and a smoothing: section (docs/inference.md)")
    p.add_argument("--show", action="store_true",
                   help="show the overlay in a window while predicting (needs a display)")
    p.add_argument("--drop-frames", action="store_true",
                   help="live sources: drop the oldest waiting frames when the model falls behind (lag <= 8 frames)")
    return p


def _planned_files(source, name: str, args: argparse.Namespace) -> list[Path]:
    """Every file the run writes for ``source`` under the output name ``name``."""
    from pavenet.infer.outputs import output_files

    out = Path(args.out)
    files = list(output_files(out, name, tuple(args.format)).values())
    if args.render:
        files.append(out / f"{name}{'.png' if source.kind == 'image' else '.mp4'}")
    return files


class _OverlaySink:
    """Per predicted frame: its overlay shown in the --show window and, for a live source with
    --render, written to the overlay video (a file input's overlay is rendered afterwards).
    Returns False when a live input should stop (its window was closed)."""

    def __init__(self, viewer, writer, joint_threshold: float, live: bool) -> None:
        self.viewer, self.writer, self.joint_threshold, self.live = viewer, writer, joint_threshold, live

    @property
    def needs_images(self) -> bool:
        return self.viewer is not None or self.writer is not None

    def __call__(self, pred) -> bool:
        image = pred.plot(joint_threshold=self.joint_threshold)
        if self.writer is not None:
            self.writer.write(image)
        if self.viewer is not None and not self.viewer.show(image):
            self.viewer = None  # closed: a file input goes on without the window
            return not self.live
        return True


def _predict_frames(est, stream, args: argparse.Namespace, name: str, sink: _OverlaySink, quiet: bool) -> list:
    """Every frame's prediction (images dropped); a live source stops at Ctrl-C or when its
    window is closed, keeping what it predicted."""
    from contextlib import closing

    from tqdm import tqdm

    from pavenet.runtime.progress import progress_bar

    frames = []
    predictions = est.predict_video(stream, args.batch_size, args.score_threshold, keep_images=sink.needs_images)
    try:
        total = None if stream.source.live else stream.info.num_frames
        with closing(predictions), progress_bar(total=total, desc=name, unit="frame", leave=False,
                                                disable=quiet) as bar:
            for pred in predictions:
                going = sink(pred) if sink.needs_images else True
                pred.image = None
                frames.append(pred)
                bar.update(1)
                if not going:
                    break
    except KeyboardInterrupt:
        if not stream.source.live:
            raise
    if stream.source.live:
        tqdm.write(f"{stream.source.label}: {len(frames)} frames predicted, {stream.dropped} dropped")
    if not frames:
        raise ValueError("no frame was predicted")
    return frames


def _write(frames, source, name: str, index: int, args: argparse.Namespace) -> list[Path]:
    """The output files of one input (with the ground truth's image ids when its frames are
    dataset images, :mod:`pavenet.infer.image_ids`) and, for a file input, its overlay."""
    from tqdm import tqdm

    from pavenet.infer.image_ids import ground_truth_entries
    from pavenet.infer.outputs import write_outputs
    from pavenet.viz.overlay import render_image, render_video

    images, note = ground_truth_entries(source, len(frames), args.coco_gt)
    if note:
        tqdm.write(f"{source.label}: {note}")
    written = write_outputs(Path(args.out), name, index, frames, tuple(args.format), images)
    if args.render and not source.live:
        overlay = _planned_files(source, name, args)[-1]
        if source.kind == "image":
            written.append(render_image(source, *frames[0].arrays(), overlay, args.joint_threshold))
        else:
            written.append(render_video(source, (f.arrays() for f in frames), overlay, args.joint_threshold))
    return written


def _predict_one(est, source, name: str, index: int, args: argparse.Namespace, viewer, quiet: bool):
    """Predict one input and write its files; returns (written paths, its track stats)."""
    import time

    from tqdm import tqdm

    from pavenet.infer.track_summary import TrackStats
    from pavenet.infer.video_io import FrameStream
    from pavenet.infer.video_writer import VideoWriter

    stream = FrameStream(source, drop_frames=args.drop_frames and source.live)
    live_overlay = _planned_files(source, name, args)[-1] if args.render and source.live else None
    writer = VideoWriter(live_overlay, stream.rate) if live_overlay else None
    start = time.perf_counter()
    try:
        with stream:
            frames = _predict_frames(est, stream, args, name, _OverlaySink(viewer, writer, args.joint_threshold,
                                                                            source.live), quiet)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    stats = TrackStats.of(name, frames, time.perf_counter() - start)
    empty = nobody_note(frames, est.linker_cfg.score_threshold if args.score_threshold is None
                        else args.score_threshold)
    if empty:
        tqdm.write(f"{source.label}: {empty}")
    written = _write(frames, source, name, index, args)
    if writer is not None:
        written.append(writer.close())
    return written, stats


def nobody_note(frames, threshold: float) -> str:
    """A note when no frame has a tracked person: the threshold and the best score seen."""
    if any(f.people for f in frames):
        return ""
    best = max((f.best_score for f in frames), default=0.0)
    return (f"no person above the score threshold {threshold:g} in any frame (best person score "
            f"seen: {best:.3f}); an undertrained model, or lower --score-threshold")


def _failure(label: str, exc: Exception) -> str:
    """``label: problem``, without naming the input twice when the message already starts with it."""
    message = str(exc)
    return message if message.startswith(f"{label}:") else f"{label}: {message}"


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
    owner = {s.key: f"the input {s.label}" for s in sources if not s.live}
    for index, (source, name) in enumerate(zip(sources, output_names(sources))):
        files = [os.path.abspath(f) for f in _planned_files(source, name, args)]
        clash = next((f for f in files if f in owner), None)
        if clash is not None:
            failures.append(f"{source.label}: its output {clash} would replace {owner[clash]}")
            continue
        owner.update({f: f"the output of {source.label}" for f in files})
        planned.append((index, source, name))
    return planned, failures


def _estimator(args: argparse.Namespace, tracker, device):
    """The estimator of the command line's weights, backend and tracker settings."""
    import dataclasses

    from pavenet.infer.estimator import PoseEstimator

    smoothing = dataclasses.replace(tracker.smoothing, enabled=True) if args.smooth else tracker.smoothing
    options = {"cache": not args.no_cache, "tracker": tracker,
               "smoothing": smoothing if smoothing.enabled else None}
    if args.backend == "onnxruntime":
        return PoseEstimator.from_onnx(args.weights, device=device, **options)
    return PoseEstimator.from_checkpoint(args.weights, device=device, amp=args.amp,
                                         compile=args.compile_mode if args.compile else None, **options)


def _run_inputs(est, mine: list[tuple], args: argparse.Namespace, viewer, quiet: bool) -> list[tuple]:
    """(track stats or None, failure line or None) of each of this process's inputs."""
    from tqdm import tqdm

    from pavenet.infer.video_io import VideoInputError
    from pavenet.runtime.progress import progress_bar

    results = []
    for index, source, name in progress_bar(mine, desc="inputs", unit="input", disable=quiet):
        try:
            written, stats = _predict_one(est, source, name, index, args, viewer, quiet)
            for path in written:
                tqdm.write(f"wrote {path}")
            results.append((stats, None))
        except (VideoInputError, ValueError, OSError) as exc:
            results.append((None, _failure(source.label, exc)))
            tqdm.write(f"error: {results[-1][1]}", file=sys.stderr)
    return results


def _report(results: list[tuple], failures: list[str], wall_seconds: float) -> None:
    """Print the track summary and the failures (all processes' results, in input order)."""
    from pavenet.infer.track_summary import summary_lines

    for line in summary_lines([stats for stats, _ in results if stats is not None], wall_seconds):
        print(line)
    failures = failures + [failure for _, failure in results if failure is not None]
    if failures:
        print(f"{len(failures)} input(s) failed:", file=sys.stderr)
        for f in failures:
            print(f"  {f}", file=sys.stderr)


def _shared_out(args: argparse.Namespace, main: bool) -> None:
    """Rank 0 picks (and prepares) the output folder, the others use the same one."""
    from pavenet.cli.arguments import output_folder
    from pavenet.infer.sharding import gather

    if main:
        args.out = str(output_folder(args.out, args.exist_ok))
        _prepare_out(args)
    args.out = gather(args.out if main else None)[0]


def _open_viewer():
    """The --show window (Matplotlib, or OpenCV, loads only then)."""
    from pavenet.infer import display

    return display.open_viewer("pavenet predict")


def run(args: argparse.Namespace) -> int:
    """Predict every input (under torchrun: this process's share, :mod:`pavenet.infer.sharding`)."""
    import time

    from pavenet.cli import apply_threads, fail
    from pavenet.infer.image_ids import read_ground_truth_images
    from pavenet.infer.results import overlay_joint_threshold
    from pavenet.infer.sharding import gather, shard, unshard
    from pavenet.infer.tracker_config import TrackerConfig, load_tracker_config
    from pavenet.infer.video_io import resolve_inputs
    from pavenet.runtime.distributed import cleanup, init_distributed

    apply_threads(args)
    if args.backend == "onnxruntime" and (args.amp or args.compile):
        return fail("predict", "--amp and --compile apply to the pytorch backend only")
    tracker = load_tracker_config(args.tracker) if args.tracker else TrackerConfig()
    if args.coco_gt:
        read_ground_truth_images(args.coco_gt)  # a missing or malformed file stops the run before any work
    viewer = _open_viewer() if args.show else None
    info = init_distributed(args.device if args.backend == "pytorch" else "cpu")
    try:
        _shared_out(args, info.is_main)
        sources, errors = resolve_inputs(args.inputs)
        planned, clashes = _plan(sources, args)
        est = _estimator(args, tracker, str(info.device) if info.distributed else args.device)
        if args.joint_threshold is None:
            args.joint_threshold = overlay_joint_threshold(est.postprocessor.mode)
        start = time.time()
        mine = _run_inputs(est, shard(planned, info.rank, info.world_size), args, viewer, not info.is_main)
        parts = gather((mine, start, time.time()))
        results = unshard([p[0] for p in parts])
        if info.is_main:
            _report(results, [str(e) for e in errors] + clashes, max(p[2] for p in parts) - min(p[1] for p in parts))
        return 1 if errors or clashes or any(failure for _, failure in results) else 0
    finally:
        if viewer is not None:
            viewer.close()
        cleanup()

"""CPU frames per second of video inference, PyTorch vs ONNX Runtime, in one run.

Both backends run the same ``PoseEstimator`` streaming pipeline (encoder once per frame, cached
memories, batched window decoding, post-processing and tracking) on the same synthetic video
frames held in memory, with the same number of threads; the ONNX export happens before timing.
With ``--int8`` the dynamically quantised pair (:mod:`pavenet.export.onnx_quantize`) is timed too,
and its people are compared with the float32 ONNX pair's: per frame, people are matched by the
mean distance of their joints (Hungarian), and the mean / largest joint distance in pixels of
matched people and the people found by one backend only are reported. ``--weights`` times a
trained checkpoint (its stored config) instead of random weights.
Needs the ``onnx`` extra (onnx, onnxruntime, onnxscript), imported by the export and the runtime.

    pavenet bench onnx --frames 24 --size 256 256 --threads 2
"""
from __future__ import annotations

import argparse
import importlib.metadata
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from pavenet.config import Config, config_to_dict, load_config
from pavenet.data.synthetic import generate_video
from pavenet.data.transforms import resized_size
from pavenet.export.onnx_export import ExportOptions, export_streaming
from pavenet.export.onnx_quantize import int8_path, quantize_streaming
from pavenet.infer.estimator import PoseEstimator
from pavenet.infer.results import FramePrediction
from pavenet.model import build_model
from pavenet.model.loading import load_checkpoint_model, stored_config
from pavenet.runtime.arguments import Parser, add_size_argument, example_epilog, positive_int
from pavenet.runtime.checkpoint import save_checkpoint
from pavenet.runtime.files import atomic_write_json


def _fps(backends: dict[str, PoseEstimator], frames: list[np.ndarray], batch_size: int,
         repeats: int) -> dict[str, float]:
    """Frames per second of each backend: best of ``repeats`` full passes after one warm-up pass,
    the backends taking turns so that both see the same machine load."""
    best = {name: float("inf") for name in backends}
    for name, est in backends.items():
        list(est.predict_frames(frames, batch_size))
    for _ in range(repeats):
        for name, est in backends.items():
            start = time.perf_counter()
            for _ in est.predict_frames(frames, batch_size):
                pass
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: len(frames) / took for name, took in best.items()}


def backends(cfg: Config, folder: Path, height: int, width: int, threads: int, weights: Optional[str] = None,
             int8: bool = False) -> dict[str, PoseEstimator]:
    """The checkpoint ``weights`` (default: a random-weight network saved as one) exported to ONNX
    for a ``height`` x ``width`` network input, loaded back by each backend (and the int8 copy)."""
    if weights is None:
        torch.manual_seed(0)
        model, weights = build_model(cfg.model).eval(), str(folder / "ckpt")
        save_checkpoint(Path(weights), 0, model.state_dict(), {"config": config_to_dict(cfg), "step": 0})
    else:
        model, cfg = load_checkpoint_model(weights)
    export_streaming(model, cfg, folder / "model.onnx", ExportOptions(height, width))
    out = {"pytorch": PoseEstimator.from_checkpoint(weights, device="cpu"),
           "onnxruntime": PoseEstimator.from_onnx(folder / "model.onnx", threads=threads)}
    if int8:
        quantize_streaming(folder / "model.onnx")
        out["onnxruntime-int8"] = PoseEstimator.from_onnx(int8_path(folder / "model.onnx"), threads=threads)
    return out


def keypoint_difference(reference: list[FramePrediction], other: list[FramePrediction]) -> dict[str, float]:
    """Per frame, people matched by the mean distance of their joints (Hungarian); the mean and
    the largest joint distance (pixels) over matched people, and the people left unmatched."""
    distances, unmatched, matched = [], 0, 0
    for a, b in zip(reference, other):
        ka, kb = a.arrays()[0][..., :2], b.arrays()[0][..., :2]
        if len(ka) and len(kb):
            cost = np.linalg.norm(ka[:, None] - kb[None], axis=-1)  # (Na, Nb, J)
            rows, cols = linear_sum_assignment(cost.mean(-1))
            distances.append(cost[rows, cols].ravel())
            matched += len(rows)
        unmatched += len(ka) + len(kb) - 2 * min(len(ka), len(kb))
    joined = np.concatenate(distances) if distances else np.zeros(0)
    return {"matched_people": matched, "unmatched_people": unmatched,
            "mean_px": float(joined.mean()) if joined.size else float("nan"),
            "max_px": float(joined.max()) if joined.size else float("nan")}


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    parser = Parser(prog=prog, description=__doc__.splitlines()[0],
                    epilog=example_epilog("pavenet bench onnx --frames 24 --size 256 256 --threads 2"))
    parser.add_argument("--config", default="synthetic_tiny", help="a shipped config name or a YAML path")
    parser.add_argument("--frames", type=positive_int, default=24, help="frames of the synthetic video")
    add_size_argument(parser, "--size", default=[256, 256], minimum=32,
                      help="video size, height and width (default: 256 256, the synthetic videos)")
    parser.add_argument("--batch-size", type=positive_int, default=4, help="windows per decoder pass")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="CPU threads of both backends (default: torch's)")
    parser.add_argument("--repeats", type=positive_int, default=3, help="passes per backend (the best is kept)")
    parser.add_argument("--weights", default=None,
                        help="a trained checkpoint to time, with its stored config (default: random weights)")
    parser.add_argument("--out", default=None, metavar="FILE.json", help="also write the results as JSON (default: none)")
    parser.add_argument("--int8", action="store_true",
                        help="also the int8 ONNX pair: its speed and its people against the float32 pair's")
    return parser


def _int8_difference(models: dict[str, PoseEstimator], frames: list[np.ndarray], batch_size: int) -> dict:
    """:func:`keypoint_difference` of the int8 pair's people against the float32 pair's, printed."""
    people = {k: list(models[k].predict_frames(frames, batch_size)) for k in ("onnxruntime", "onnxruntime-int8")}
    diff = keypoint_difference(people["onnxruntime"], people["onnxruntime-int8"])
    print("int8 vs float32 ONNX: {matched_people} people matched, {unmatched_people} unmatched, "
          "joint distance mean {mean_px:.3f} px, largest {max_px:.3f} px".format(**diff))
    return diff


def main(argv: Optional[list[str]] = None, prog: Optional[str] = None) -> int:
    args = build_parser(prog).parse_args(argv)
    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    cfg = load_config(args.config) if args.weights is None else stored_config(args.weights)
    height, width = args.size
    frames, _ = generate_video(0, args.frames, size=(width, height))
    w, h = resized_size(width, height, cfg.data.test_short_side, cfg.data.test_max_size)
    record = {"model": args.weights or args.config, "frames": args.frames, "size": [height, width],
              "network_input": [h, w], "num_frames": cfg.model.num_frames, "batch_size": args.batch_size,
              "threads": threads, "repeats": args.repeats, "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        models = backends(cfg, Path(tmp), h, w, threads, args.weights, args.int8)
        record["onnxruntime"] = importlib.metadata.version("onnxruntime")  # installed: backends loaded it
        print(f"{record['model']}: {args.frames} frames {height}x{width} -> network input "
              f"{h}x{w} (H x W), T={cfg.model.num_frames}, batch {args.batch_size}, {threads} threads")
        record["frames_per_second"] = _fps(models, frames, args.batch_size, args.repeats)
        for name, fps in record["frames_per_second"].items():
            print(f"{name:16s} {fps:7.2f} frames/s")
        if args.int8:
            record["int8_vs_float32"] = _int8_difference(models, frames, args.batch_size)
    if args.out:
        atomic_write_json(args.out, record)
        print(f"raw results in {args.out}")
    return 0

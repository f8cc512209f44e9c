"""CPU frames per second of video inference, PyTorch vs ONNX Runtime, in one run.

Both backends run the same ``PoseEstimator`` streaming pipeline (encoder once per frame, cached
memories, batched window decoding, post-processing and tracking) on the same synthetic video
frames held in memory, with the same number of threads; the ONNX export happens before timing.
Needs the ``onnx`` extra (onnx, onnxruntime, onnxscript), imported by the export and the runtime.

    pavenet bench onnx --frames 24 --size 256 256 --threads 2
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from pavenet.config import Config, config_to_dict, load_config
from pavenet.data.synthetic import generate_video
from pavenet.data.transforms import resized_size
from pavenet.export.onnx_export import ExportOptions, export_streaming
from pavenet.infer.estimator import PoseEstimator
from pavenet.model import build_model
from pavenet.runtime.checkpoint import save_checkpoint


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


def backends(cfg: Config, folder: Path, height: int, width: int, threads: int) -> dict[str, PoseEstimator]:
    """A random-weight network saved as a checkpoint and exported to ONNX for a ``height`` x
    ``width`` network input, loaded back by each backend."""
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    ckpt = folder / "ckpt"
    save_checkpoint(ckpt, 0, model.state_dict(), {"config": config_to_dict(cfg), "step": 0})
    export_streaming(model, cfg, folder / "model.onnx", ExportOptions(height, width))
    return {"pytorch": PoseEstimator.from_checkpoint(ckpt, device="cpu"),
            "onnxruntime": PoseEstimator.from_onnx(folder / "model.onnx", threads=threads)}


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="synthetic_tiny")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--size", type=int, nargs=2, default=(256, 256), metavar=("W", "H"),
                        help="video size (default: 256 256, the synthetic videos)")
    parser.add_argument("--batch-size", type=int, default=4, help="windows per decoder pass")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3)
    return parser


def main(argv: Optional[list[str]] = None, prog: Optional[str] = None) -> int:
    args = build_parser(prog).parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    frames, _ = generate_video(0, args.frames, size=tuple(args.size))
    w, h = resized_size(*args.size, cfg.data.test_short_side, cfg.data.test_max_size)
    with tempfile.TemporaryDirectory() as tmp:
        models = backends(cfg, Path(tmp), h, w, args.threads)
        print(f"{args.config}: {args.frames} frames {args.size[0]}x{args.size[1]} -> network input "
              f"{w}x{h}, T={cfg.model.num_frames}, batch {args.batch_size}, {args.threads} threads")
        for name, fps in _fps(models, frames, args.batch_size, args.repeats).items():
            print(f"{name:12s} {fps:7.2f} frames/s")
    return 0

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
from pavenet.runtime.arguments import Parser, add_size_argument, example_epilog, positive_int
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
    return parser


def main(argv: Optional[list[str]] = None, prog: Optional[str] = None) -> int:
    args = build_parser(prog).parse_args(argv)
    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    cfg = load_config(args.config)
    height, width = args.size
    frames, _ = generate_video(0, args.frames, size=(width, height))
    w, h = resized_size(width, height, cfg.data.test_short_side, cfg.data.test_max_size)
    with tempfile.TemporaryDirectory() as tmp:
        models = backends(cfg, Path(tmp), h, w, threads)
        print(f"{args.config}: {args.frames} frames {height}x{width} -> network input "
              f"{h}x{w} (H x W), T={cfg.model.num_frames}, batch {args.batch_size}, {threads} threads")
        for name, fps in _fps(models, frames, args.batch_size, args.repeats).items():
            print(f"{name:12s} {fps:7.2f} frames/s")
    return 0

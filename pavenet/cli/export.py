"""``pavenet export --weights CKPT --out model.onnx``: ONNX graphs for deployment.

The network is the one the checkpoint's stored config describes (as ``pavenet predict`` builds
it); a CONFIG argument (shipped name or YAML path) builds that network instead.

Writes the clip graph ``model.onnx`` (``frames`` (B, T, 3, H, W), ``mask`` (B, H, W)) and the
streaming pair ``model.encoder.onnx`` / ``model.decoder.onnx`` (see
:mod:`pavenet.export.onnx_export`), for one network input size ``--size H W``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from pavenet.cli.arguments import positive_int


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("export", help="export the network to ONNX (clip graph and streaming encoder/decoder)")
    p.add_argument("config", nargs="?", default=None,
                   help="model config: a shipped name or a YAML path (default: the checkpoint's stored config)")
    p.add_argument("--weights", required=True, help="checkpoint (model.safetensors, its folder or a run folder)")
    p.add_argument("--out", default="model.onnx", help="clip graph path; the streaming pair goes next to it "
                                                       "as NAME.encoder.onnx and NAME.decoder.onnx")
    p.add_argument("--size", type=positive_int, nargs=2, metavar=("H", "W"), default=None,
                   help="network input size after the test resize (default: that of a 1920x1080 video)")
    p.add_argument("--opset", type=positive_int, default=18,
                   help="ONNX opset, 18 up to the newest the installed onnx knows (default: 18)")
    p.add_argument("--dynamic-batch", action="store_true",
                   help="dynamic batch axis in the clip graph (the streaming pair always has one)")
    p.add_argument("--graphs", nargs="+", choices=["clip", "streaming"], default=["clip", "streaming"],
                   help="which graphs to write (default: both)")
    p.add_argument("--set", nargs="*", action="extend", default=[], metavar="KEY=VALUE", help="config overrides")
    return p


def run(args: argparse.Namespace) -> int:
    from pavenet.config import apply_overrides, load_config
    from pavenet.data.transforms import resized_size
    from pavenet.export.onnx_export import ExportOptions, export_clip, export_streaming
    from pavenet.model import build_model
    from pavenet.model.loading import stored_config
    from pavenet.runtime.files import remove_stale
    from pavenet.runtime.weights import load_model_weights

    if args.config is None:
        cfg = stored_config(args.weights)
        cfg = apply_overrides(cfg, args.set, f"{args.weights} (stored config)") if args.set else cfg
    else:
        cfg = load_config(args.config, args.set)
    model = build_model(cfg.model)
    load_model_weights(model, args.weights)
    if args.size is None:
        w, h = resized_size(1920, 1080, cfg.data.test_short_side, cfg.data.test_max_size)
    else:
        h, w = args.size
    opts = ExportOptions(h, w, args.opset, args.dynamic_batch)
    remove_stale(Path(args.out).parent)
    print(f"exporting for a {h}x{w} (H x W) network input, {cfg.model.num_frames} frames per clip")
    written = []
    if "clip" in args.graphs:
        written.append(export_clip(model, cfg, args.out, opts))
    if "streaming" in args.graphs:
        stream_opts = ExportOptions(h, w, args.opset, dynamic_batch=True)
        written.extend(export_streaming(model, cfg, args.out, stream_opts))
    for path in written:
        print(f"wrote {path}")
    return 0

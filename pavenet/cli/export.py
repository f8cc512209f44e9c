"""``pavenet export --weights CKPT --out model.onnx``: ONNX graphs for deployment.

The network is the one the checkpoint's stored config describes (as ``pavenet predict`` builds
it); a CONFIG argument (shipped name or YAML path) builds that network instead.

Writes the clip graph ``model.onnx`` (``frames`` (B, T, 3, H, W), ``mask`` (B, H, W)) and the
streaming pair ``model.encoder.onnx`` / ``model.decoder.onnx`` (see
:mod:`pavenet.export.onnx_export`), for one network input size ``--size H W``.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from pavenet.cli.arguments import add_size_argument, example_epilog, int_between


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "export", help="export the network to ONNX (clip graph and streaming encoder/decoder)",
        description="Export a checkpoint's network to ONNX for one network input size: the clip graph "
                    "NAME.onnx and the streaming pair NAME.encoder.onnx / NAME.decoder.onnx (one encoder "
                    "pass per frame), each carrying the config as metadata.",
        epilog=example_epilog("pavenet export --weights runs/demo/run_t3/last --out export/model.onnx --size 192 192"))
    p.add_argument("config", nargs="?", default=None,
                   help="model config: a shipped name or a YAML path (default: the checkpoint's stored config)")
    p.add_argument("--weights", required=True, help="checkpoint (model.safetensors, its folder or a run folder)")
    p.add_argument("--out", default="model.onnx", help="clip graph path; the streaming pair goes next to it "
                                                       "as NAME.encoder.onnx and NAME.decoder.onnx")
    add_size_argument(p, "--size", default=None, minimum=32,
                      help="network input size after the test resize, each side >= 32 "
                           "(default: that of a 1920x1080 video)")
    p.add_argument("--opset", type=int_between(18, 10_000), default=18,
                   help="ONNX opset, 18 up to the newest the installed onnx knows (default: 18)")
    p.add_argument("--dynamic-batch", action="store_true",
                   help="dynamic batch axis in the clip graph (the streaming pair always has one)")
    p.add_argument("--graphs", nargs="+", choices=["clip", "streaming"], default=["clip", "streaming"],
                   help="which graphs to write (default: both)")
    p.add_argument("--int8", action="store_true",
                   help="also int8 copies of the streaming pair, NAME.int8.encoder.onnx / NAME.int8.decoder.onnx "
                        "(dynamic quantisation of the matrix products; needs --graphs streaming)")
    p.add_argument("--set", nargs="*", action="extend", default=[], metavar="KEY=VALUE",
                   help="config overrides (default: none)")
    return p


def run(args: argparse.Namespace) -> int:
    from pavenet.cli import fail
    from pavenet.config import apply_overrides, load_config
    from pavenet.data.transforms import resized_size
    from pavenet.export.onnx_export import ExportOptions, export_clip, export_streaming
    from pavenet.export.onnx_quantize import quantize_streaming
    from pavenet.model import build_model
    from pavenet.model.loading import stored_config
    from pavenet.runtime.files import remove_stale
    from pavenet.runtime.weights import load_model_weights

    if args.int8 and "streaming" not in args.graphs:
        return fail("export", "--int8 quantises the streaming pair: add --graphs streaming")
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
    if "clip" in args.graphs:
        _timed("the clip graph", lambda: [export_clip(model, cfg, args.out, opts)])
    if "streaming" in args.graphs:
        stream_opts = ExportOptions(h, w, args.opset, dynamic_batch=True)
        _timed("the streaming pair", lambda: export_streaming(model, cfg, args.out, stream_opts))
    if args.int8:
        _timed("the int8 streaming pair", lambda: quantize_streaming(args.out))
    return 0


def _timed(what: str, export) -> None:
    """Say what is exported, run ``export`` (-> written paths) and print each path with the time."""
    print(f"exporting {what} ...", flush=True)
    start = time.perf_counter()
    written = export()
    took = time.perf_counter() - start
    for path in written:
        print(f"wrote {path} ({what}: {took:.1f} s)", flush=True)

"""``pavenet test CONFIG --weights CKPT``: predict a split with tracking and evaluate it."""
from __future__ import annotations

import argparse
from pathlib import Path

from pavenet.cli.arguments import add_batch_size_argument, add_output_arguments, add_threads_argument, example_epilog


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "test", help="predict a PoseTrack-layout split and report mAP / MOTA",
        description="Predict every sequence of a PoseTrack-layout split with tracking, write one prediction "
                    "file per sequence and report the official mAP and MOTA (and the metrics as JSON).",
        epilog=example_epilog("pavenet test synthetic_tiny --weights runs/synthetic_tiny/best "
                              "--set data.root=data/synthetic"))
    p.add_argument("config", help="the config the model was trained with: a shipped config name or a YAML path")
    p.add_argument("--weights", required=True, help="checkpoint (model.safetensors, its folder or a run folder)")
    p.add_argument("--set", nargs="*", action="extend", default=[], metavar="KEY=VALUE",
                   help="config overrides (default: none)")
    p.add_argument("--split", default=None, help="split to evaluate (default: data.val_split)")
    add_output_arguments(p, "runs/test_<split>", "output folder (predictions/ and metrics.json)", computed=True)
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: CUDA when available)")
    add_threads_argument(p)
    add_batch_size_argument(p, 1, "windows per forward pass")
    p.add_argument("--temporal-report", action="store_true",
                   help="on a temporal synthetic split (`pavenet synth --difficulty temporal`): also the AP on "
                        "degraded and clean key frames, the share of attention on the neighbouring frames and the AP "
                        "with every clip decoded from its key frame alone (temporal_report.json)")
    p.add_argument("--layer-report", action="store_true",
                   help="also how far each stage (proposal, pose-decoder and joint-decoder layers) puts the joints "
                        "from the ground truth, in PCKh radii, on the labelled key frames (layer_report.json; "
                        "PAVE-Net models)")
    return p


def _write_layer_report(est, cfg, split: str, out: Path) -> None:
    """``--layer-report``: print and write where each stage of the network puts the joints."""
    from pavenet.engine.layer_report import format_layers, layer_report
    from pavenet.runtime.files import atomic_write_json

    report = layer_report(est, cfg, split, progress=True)
    print("joints of each stage within the PCKh radius:\n" + format_layers(report))
    atomic_write_json(out / "layer_report.json", report)
    print(f"layer report in {out / 'layer_report.json'}")


def _write_results(est, cfg, split: str, out: Path, result: dict, subsets: dict | None,
                   batch_size: int = 1) -> None:
    """Print and write the metrics; given the degraded / clean key frames ``subsets``
    (``--temporal-report``) also the AP on each and, for T > 1, the attention on the
    neighbouring frames and the AP with every clip decoded from its key frame alone."""
    from pavenet.engine.temporal_report import ap_key_frame_only, attention_to_neighbours, format_attention
    from pavenet.eval.frame_subsets import ap_by_degradation, format_subsets
    from pavenet.eval.posetrack import format_table
    from pavenet.runtime.files import atomic_write_json

    print(format_table(result))
    atomic_write_json(out / "metrics.json", result)
    print(f"predictions in {out / 'predictions'}, metrics in {out / 'metrics.json'}")
    if subsets is None:
        return
    gt_dir = Path(cfg.data.root) / "annotations" / split
    report = {"ap": ap_by_degradation(gt_dir, out / "predictions", subsets)}
    print("AP by key-frame degradation:\n" + format_subsets(report["ap"]))
    if cfg.model.num_frames > 1:
        report["attention_on_neighbours"] = attention_to_neighbours(est, cfg, split, subsets, progress=True)
        print(format_attention(report["attention_on_neighbours"]))
        report["ap_key_frame_only"] = ap_key_frame_only(est, cfg, split, out / "predictions_key_frame_only",
                                                        subsets, batch_size, progress=True)
        print("AP with every clip decoded from its key frame alone (the neighbours replaced by it):\n"
              + format_subsets(report["ap_key_frame_only"]))
    atomic_write_json(out / "temporal_report.json", report)
    print(f"temporal report in {out / 'temporal_report.json'}")


def _predict_share(est, sequences, batch_size: int, quiet: bool) -> dict[str, bytes]:
    """The prediction files of this process's sequences: file name -> content."""
    import tempfile

    from pavenet.engine.evaluate import predict_sequence
    from pavenet.runtime.progress import progress_bar

    with tempfile.TemporaryDirectory(prefix="pavenet_test_") as tmp:
        for seq in progress_bar(sequences, desc="predict", unit="seq", disable=quiet, leave=False):
            predict_sequence(est, seq, Path(tmp) / seq.source.name, batch_size)
        return {p.name: p.read_bytes() for p in sorted(Path(tmp).iterdir())}


def _evaluate_sharded(est, cfg, split: str, pred_dir: Path, batch_size: int, info) -> dict | None:
    """Each process predicts its share of the sequences (:func:`pavenet.infer.sharding.shard`);
    rank 0 writes every prediction file into ``pred_dir`` and evaluates (others get None)."""
    import shutil

    from pavenet.data.build import load_split
    from pavenet.eval.posetrack import evaluate_posetrack
    from pavenet.infer.sharding import gather, shard
    from pavenet.runtime.files import atomic_write_bytes

    gt_dir = Path(cfg.data.root) / "annotations" / split
    if not gt_dir.is_dir():
        raise FileNotFoundError(f"{gt_dir}: PoseTrack evaluation needs one ground-truth JSON per sequence here")
    sequences = shard(load_split(cfg.data, split), info.rank, info.world_size)
    parts = gather(_predict_share(est, sequences, batch_size, not info.is_main))
    if not info.is_main:
        return None
    if pred_dir.exists():
        shutil.rmtree(pred_dir)
    pred_dir.mkdir(parents=True)
    for part in parts:
        for name, data in part.items():
            atomic_write_bytes(pred_dir / name, data)
    return evaluate_posetrack(gt_dir, pred_dir)


def _shared_out(args: argparse.Namespace, split: str, main: bool) -> Path:
    """The output folder, picked by rank 0 (a numbered one when the default exists)."""
    from pavenet.cli.arguments import output_folder
    from pavenet.infer.sharding import gather

    out = str(output_folder(args.out, args.exist_ok, default=Path("runs") / f"test_{split}")) if main else None
    return Path(gather(out)[0])


def run(args: argparse.Namespace) -> int:
    """Predict and evaluate a split; under torchrun the sequences are shared among the processes
    and rank 0 evaluates (the same predictions and metrics as one process)."""
    from pavenet.cli import apply_threads
    from pavenet.config import load_config
    from pavenet.engine.evaluate import evaluate_split
    from pavenet.errors import PavenetError
    from pavenet.eval.frame_subsets import temporal_subsets
    from pavenet.infer.estimator import PoseEstimator
    from pavenet.model import build
    from pavenet.runtime.distributed import cleanup, init_distributed
    from pavenet.runtime.weights import load_model_weights

    apply_threads(args)

    cfg = load_config(args.config, args.set)
    split = args.split or cfg.data.val_split
    # read (and refused when not a temporal split) before predicting
    subsets = temporal_subsets(Path(cfg.data.root) / "annotations" / split) if args.temporal_report else None
    if args.layer_report and cfg.model.arch != "pavenet":
        raise PavenetError(f"pavenet test --layer-report follows PAVE-Net's stages; this config has model.arch "
                           f"{cfg.model.arch!r}")
    info = init_distributed(args.device)
    try:
        out = _shared_out(args, split, info.is_main)
        model, _, _ = build(cfg)
        load_model_weights(model, args.weights)
        est = PoseEstimator.from_config(model, cfg, device=str(info.device) if info.distributed else args.device)
        if info.distributed:
            result = _evaluate_sharded(est, cfg, split, out / "predictions", args.batch_size, info)
        else:
            result = evaluate_split(est, cfg, split, out / "predictions", batch_size=args.batch_size)
        if result is not None:
            _write_results(est, cfg, split, out, result, subsets, args.batch_size)
            if args.layer_report:
                _write_layer_report(est, cfg, split, out)
        return 0
    finally:
        cleanup()

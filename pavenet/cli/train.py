"""``pavenet train CONFIG``: train a model (one process, or one per device under torchrun)."""
from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("train", help="train a model from a YAML config (torchrun for several GPUs)")
    p.add_argument("config", help="YAML config, e.g. configs/synthetic_tiny.yaml")
    p.add_argument("--set", nargs="*", action="extend", default=[], metavar="KEY=VALUE",
                   help="override config values with dotted keys, e.g. train.lr=1e-4")
    p.add_argument("--out", default=None, help="run directory (default: runs/<config name>)")
    p.add_argument("--resume", default=None, help="run directory or checkpoint to continue exactly")
    p.add_argument("--weights", default=None, help="initialise from a checkpoint (another T allowed)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: CUDA when available)")
    p.add_argument("--minutes", type=float, default=0.0, help="stop (with a checkpoint) after this time")
    p.add_argument("--no-val", action="store_true", help="skip periodic validation")
    return p


def run(args: argparse.Namespace) -> int:
    from pavenet.config import load_config
    from pavenet.data import build_dataset, collate
    from pavenet.engine.distributed import cleanup, init_distributed
    from pavenet.engine.evaluate import make_validator
    from pavenet.engine.trainer import Trainer

    cfg = load_config(args.config, args.set)
    dist = init_distributed(args.device)
    out = Path(args.out or Path("runs") / Path(args.config).stem)
    if args.resume and args.out is None:
        out = Path(args.resume) if Path(args.resume).is_dir() and (Path(args.resume) / "last").exists() else out
    dataset = build_dataset(cfg.data, cfg.data.train_split, cfg.model.num_frames, train=True)
    validate = None if args.no_val else make_validator(cfg, out, dist.device)
    trainer = Trainer(cfg, out, dist, dataset, collate, resume=args.resume,
                      weights=args.weights, validate=validate)
    t0 = time.time()
    try:
        metrics = trainer.fit(max_seconds=args.minutes * 60)
    finally:
        cleanup()
    if dist.is_main:
        print(f"done: {trainer.step} steps in {time.time() - t0:.0f} s; run directory {out}")
        if metrics:
            print("validation: " + ", ".join(f"{k} {v:.2f}" for k, v in metrics.items() if isinstance(v, float)))
    return 0

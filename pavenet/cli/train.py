"""``pavenet train CONFIG``: train a model (one process, or one per device under torchrun)."""
from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from pavenet.cli.arguments import (add_batch_size_argument, add_processes_argument, add_threads_argument,
                                   example_epilog, non_negative_float)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "train", help="train a model from a YAML config (torchrun for several GPUs)",
        description="Train a model from a shipped config or a YAML file, with periodic validation and "
                    "checkpoints in the run directory; an interrupted or time-limited run continues "
                    "exactly with --resume. Several GPUs or machines: torchrun --nproc_per_node N -m pavenet train ...",
        epilog=example_epilog("pavenet train synthetic_tiny --set data.root=data/synthetic --minutes 10",
                              "pavenet train synthetic_tiny --processes 2 --batch-size 1 --set data.root=data/synthetic",
                              "pavenet train synthetic_tiny --resume runs/synthetic_tiny"))
    p.add_argument("config", help="a shipped config name (e.g. synthetic_tiny, pavenet_r50) or a YAML path")
    p.add_argument("--set", nargs="*", action="extend", default=[], metavar="KEY=VALUE",
                   help="override config values with dotted keys, e.g. train.lr=1e-4 (default: none)")
    p.add_argument("--out", default=None, help="run directory (default: runs/<config name>; a folder that holds "
                                               "a run is refused unless --resume or --exist-ok)")
    p.add_argument("--resume", default=None, help="run directory or checkpoint to continue exactly (default: none)")
    p.add_argument("--exist-ok", action="store_true",
                   help="start a new run in an --out folder that holds a run (its checkpoints are kept)")
    p.add_argument("--allow-unsafe-pickle", action="store_true",
                   help="--resume from a train_state.pt of an older pavenet: unpickling it runs any code the "
                        "file holds, use it only for run folders you trust")
    p.add_argument("--weights", default=None,
                   help="initialise from a checkpoint (another T allowed; default: the config's initialisation)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: CUDA when available)")
    add_threads_argument(p)
    add_processes_argument(p, "as torchrun --standalone --nproc_per_node N: each takes data.batch_size clips per "
                              "step and its share of the threads, one GPU each on a machine with N GPUs; default: 1")
    p.add_argument("--minutes", type=non_negative_float, default=0.0,
                   help="stop (with a checkpoint) after this time (default: 0, no time limit)")
    p.add_argument("--no-val", action="store_true", help="skip periodic validation")
    add_batch_size_argument(p, None, "clips per step and process, the same as --set data.batch_size=N "
                                     "(default: the config's data.batch_size)")
    return p


def _out_dir(args: argparse.Namespace) -> Path:
    """--out, else the run folder of --resume (when it is in one), else runs/<config name>."""
    from pavenet.runtime.checkpoint import holds_run, run_dir_of

    if args.out is not None:
        return Path(args.out)
    if args.resume and holds_run(run_dir_of(args.resume)):
        return run_dir_of(args.resume)
    return Path("runs") / Path(args.config).stem


def run(args: argparse.Namespace) -> int:
    import os

    from pavenet.cli import apply_threads
    from pavenet.errors import PavenetError
    from pavenet.runtime.launch import run_local

    threads = apply_threads(args)
    if not args.processes or args.processes == 1:
        return train(args)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise PavenetError("--processes starts its own process group: use it instead of torchrun, not under it")
    plain = argparse.Namespace(**{k: v for k, v in vars(args).items() if k != "_module"})  # picklable
    return run_local(train, (plain,), args.processes, max(1, threads // args.processes))[0]


def train(args: argparse.Namespace) -> int:
    """Train in this process (one rank of the group under torchrun or ``--processes``)."""
    from pavenet.config import load_config
    from pavenet.data import build_dataset, collate
    from pavenet.engine.evaluate import make_validator
    from pavenet.engine.trainer import Trainer, check_run_dir
    from pavenet.runtime.distributed import cleanup, init_distributed
    from pavenet.runtime.launch import with_threads

    batch = [f"data.batch_size={args.batch_size}"] if args.batch_size is not None else []
    cfg = load_config(args.config, [*args.set, *batch])
    out = _out_dir(args)
    check_run_dir(out, args.resume, args.exist_ok)
    dist = init_distributed(args.device)
    dataset = build_dataset(cfg.data, cfg.data.train_split, cfg.model.num_frames, train=True)
    validate = with_threads(None if args.no_val else make_validator(cfg, out, dist.device))
    trainer = Trainer(cfg, out, dist, dataset, collate, resume=args.resume, weights=args.weights,
                      validate=validate, exist_ok=args.exist_ok, allow_pickle=args.allow_unsafe_pickle)
    t0 = time.time()
    try:
        metrics = trainer.fit(max_seconds=args.minutes * 60)
    finally:
        cleanup()
    if trainer.stopped_by is not None:
        if dist.is_main:
            print(f"stopped by {trainer.stopped_by} at step {trainer.step}: checkpoint saved in {out} "
                  f"(continue with --resume {out})", file=sys.stderr)
        return 128 + signal.Signals[trainer.stopped_by].value
    if dist.is_main:
        print(f"done: {trainer.step} steps in {time.time() - t0:.0f} s; run directory {out}")
        if metrics:
            print("validation: " + ", ".join(f"{k} {v:.2f}" for k, v in metrics.items() if isinstance(v, float)))
    return 0

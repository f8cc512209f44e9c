"""The ``pavenet`` command line.

Each subcommand lives in its own module of this package with two functions:
``add_parser(subparsers)`` (cheap imports only) and ``run(args) -> int``. A
:class:`pavenet.errors.PavenetError` (a bad config, annotation, image, video, prediction file or
checkpoint; a diverged run) or a missing file ends the command with its message and exit code 2,
no traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from pavenet.errors import PavenetError, user_message

#: Subcommand name -> module in this package. Only commands that really work are listed.
COMMANDS: dict[str, str] = {
    "synth": "synth",
    "train": "train",
    "test": "test",
    "eval": "eval",
    "predict": "predict",
    "demo": "demo",
    "export": "export",
    "bench": "bench",
    "convert": "convert",
}


#: subcommands that compute with torch on the CPU: their thread count is planned before torch loads
COMPUTE_COMMANDS = ("train", "test", "predict", "demo")


def _plan_threads(args: argparse.Namespace) -> None:
    """Measure the cores other programs keep busy and, if any, make OpenMP waiting passive;
    both must happen before torch loads OpenMP (:mod:`pavenet.runtime.threads`)."""
    from pavenet.runtime.threads import busy_cores, prefer_passive_waiting

    args.busy_cores = busy_cores() if args.threads is None else 0.0
    prefer_passive_waiting(args.busy_cores)


def apply_threads(args: argparse.Namespace) -> int:
    """Set torch's thread count for a compute subcommand and say it (stdout); returns it."""
    import os

    import torch

    from pavenet.runtime.threads import choose_threads

    count = choose_threads(args.threads, getattr(args, "busy_cores", None))
    torch.set_num_threads(count)
    wait = os.environ.get("OMP_WAIT_POLICY", "default").lower()
    origin = "--threads" if args.threads is not None else f"{getattr(args, 'busy_cores', 0.0):.1f} cores busy elsewhere"
    print(f"threads: {count} ({origin}; OpenMP wait policy {wait})", flush=True)
    return count


def build_parser() -> argparse.ArgumentParser:
    from pavenet import __version__

    parser = argparse.ArgumentParser(
        prog="pavenet",
        description="End-to-end multi-person pose estimation and tracking in video.",
    )
    parser.add_argument("--version", action="version", version=f"pavenet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in COMMANDS.items():
        mod = importlib.import_module(f"pavenet.cli.{module}")
        sp = mod.add_parser(sub)
        sp.set_defaults(_module=mod)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command in COMPUTE_COMMANDS:
        _plan_threads(args)
    try:
        return int(args._module.run(args) or 0)
    except (PavenetError, FileNotFoundError) as exc:
        print(f"pavenet {args.command}: error: {user_message(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

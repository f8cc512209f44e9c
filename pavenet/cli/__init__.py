"""The ``pavenet`` command line.

Each subcommand lives in its own module of this package with two functions:
``add_parser(subparsers)`` (cheap imports only) and ``run(args) -> int``. A
:class:`pavenet.errors.PavenetError` (a bad config, annotation, image, video, prediction file or
checkpoint; a diverged run) or a missing file ends the command with its message and exit code 2,
no traceback, in argparse's own form: ``pavenet COMMAND: error: MESSAGE`` (:func:`fail` prints
that line for a check made in ``run``).

Conventions of every subcommand (:mod:`pavenet.runtime.arguments`, :mod:`pavenet.cli.arguments`):
a description and an example in ``--help``, the default of every option shown, numbers checked
when parsing, sizes as ``--size H W``, ``--batch-size`` for batched work, did-you-mean for a
misspelled command, option or choice, and a numbered output folder (``runs/predict2``) when the
default one exists, unless ``--exist-ok``.
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
    """The ``pavenet`` parser: one subparser per :data:`COMMANDS` entry, all with the conventions
    of :mod:`pavenet.runtime.arguments` (defaults in ``--help``, did-you-mean, ``--size H W``)."""
    from pavenet import __version__
    from pavenet.cli.arguments import Parser, example_epilog

    parser = Parser(
        prog="pavenet",
        description="End-to-end multi-person pose estimation and tracking in video.\n"
                    "pavenet COMMAND --help shows the options and an example of each command.",
        epilog=example_epilog("pavenet demo --minutes 5",
                              "pavenet predict clip.mp4 --weights runs/demo/run_t3/last --render"),
    )
    parser.add_argument("--version", action="version", version=f"pavenet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name, module in COMMANDS.items():
        mod = importlib.import_module(f"pavenet.cli.{module}")
        sp = mod.add_parser(sub)
        sp.set_defaults(_module=mod)
    return parser


def fail(command: str, message: str) -> int:
    """Print ``pavenet COMMAND: error: MESSAGE`` to stderr (as argparse and :func:`main` do); returns 2."""
    print(f"pavenet {command}: error: {message}", file=sys.stderr)
    return 2


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
        return fail(args.command, user_message(exc))


if __name__ == "__main__":
    sys.exit(main())

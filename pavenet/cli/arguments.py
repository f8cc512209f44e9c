"""The pieces every ``pavenet`` subcommand's parser shares.

The conventions themselves (number types, ``--size H W``, defaults in ``--help``, did-you-mean)
are in :mod:`pavenet.runtime.arguments`, where the benchmarks' parsers reach them too; this
module re-exports them and adds the options of the command line proper: ``--threads`` and the
output folder of the commands that write one by default (``--out`` / ``--exist-ok``, numbered
``runs/predict2``, ``runs/predict3``, ... as Ultralytics does).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

from pavenet.runtime.arguments import (  # noqa: F401  (re-exported for the subcommands)
    HelpFormatter,
    Number,
    Parser,
    add_size_argument,
    example_epilog,
    int_between,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    unit_float,
)
from pavenet.runtime.files import OutputError


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    """``--threads N`` (default: the usable cores that other programs leave free, see
    :mod:`pavenet.runtime.threads`)."""
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="intra-op CPU threads (default: the cores this process may use, less "
                             "those other programs keep busy at start)")


def add_processes_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """``--processes N``: data-parallel training in N local processes (``args.processes``)."""
    parser.add_argument("--processes", type=positive_int, default=None,
                        help="train in N processes on this machine, one torch.distributed group; on a busy CPU "
                             "they can keep more of the pace than one process's threads (docs/training.md; "
                             f"{what})")


def add_batch_size_argument(parser: argparse.ArgumentParser, default: Optional[int], what: str) -> argparse.Action:
    """``--batch-size N``, an integer >= 1 (``args.batch_size``)."""
    return parser.add_argument("--batch-size", type=positive_int, default=default, help=what)


class DefaultFolder(str):
    """The default of an ``--out`` option. A ``str``, so code that takes it as a path works
    unchanged; its type tells :func:`output_folder` that ``--out`` was not given."""


def add_output_arguments(parser: argparse.ArgumentParser, default: str, what: str, computed: bool = False) -> None:
    """``--out DIR`` and ``--exist-ok`` of a command that writes into a default folder.

    ``what`` says what goes there. ``computed``: ``default`` only names the folder the command
    works out in ``run`` (e.g. ``runs/test_<split>``) and passes to :func:`output_folder`;
    ``--out`` then defaults to None.
    """
    parser.add_argument("--out", default=None if computed else DefaultFolder(default),
                        help=f"{what} (default: {default}; when it exists, a new numbered folder "
                             f"{default}2, {default}3, ... unless --exist-ok; a folder given here is used as it is)")
    parser.add_argument("--exist-ok", action="store_true",
                        help=f"write into {default} even when it exists (files of the same name are replaced)")


def numbered_folder(path: str | Path) -> Path:
    """``path`` if it does not exist, else the first of ``path2``, ``path3``, ... that does not;
    created here (``mkdir`` without ``exist_ok``), so two processes never get the same one."""
    path = Path(path)
    number = 1
    while True:
        candidate = path if number == 1 else path.with_name(f"{path.name}{number}")
        try:
            candidate.mkdir(parents=True)
            return candidate
        except FileExistsError:
            number += 1
        except OSError as exc:
            raise OutputError(f"{candidate}: cannot create the output folder ({exc.strerror or exc})") from exc


def output_folder(out: Optional[str | Path], exist_ok: bool = False,
                  default: Optional[str | Path] = None) -> Path:
    """The folder a command writes into.

    An ``--out`` given on the command line is used as it is (not created here). Otherwise the
    default folder (``out`` when it is a :class:`DefaultFolder`, else ``default``) is used when
    it does not exist or ``exist_ok``, else a new numbered one (:func:`numbered_folder`); a
    default folder is created here.
    """
    if out is not None and not isinstance(out, DefaultFolder):
        return Path(out)
    if out is None and default is None:
        raise ValueError("output_folder: neither --out nor a default folder")
    folder = Path(out if out is not None else default)
    if not exist_ok:
        return numbered_folder(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{folder}: cannot create the output folder ({exc.strerror or exc})") from exc
    return folder

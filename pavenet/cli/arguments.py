"""Argument types that check numbers when the command line is parsed (argparse then prints a
one-line usage error naming the option, exit code 2)."""
from __future__ import annotations

import argparse
import math
from typing import Callable, Optional


def _number(kind: type, lo: Optional[float], hi: Optional[float], what: str) -> Callable[[str], float]:
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not math.isfinite(value) or (lo is not None and value < lo) or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    parse.__name__ = what  # argparse names the type in some messages
    return parse


#: an integer >= 1
positive_int = _number(int, 1, None, "an integer >= 1")
#: an integer >= 0
non_negative_int = _number(int, 0, None, "an integer >= 0")
#: a finite number >= 0
non_negative_float = _number(float, 0.0, None, "a number >= 0")
#: a finite number > 0 (the smallest float above 0 counts)
positive_float = _number(float, 5e-324, None, "a number > 0")
#: a number in [0, 1] (scores, thresholds)
unit_float = _number(float, 0.0, 1.0, "a number between 0 and 1")


def int_between(lo: int, hi: int) -> Callable[[str], int]:
    """An integer in [lo, hi]."""
    return _number(int, lo, hi, f"an integer from {lo} to {hi}")


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    """``--threads N`` (default: the usable cores that other programs leave free, see
    :mod:`pavenet.runtime.threads`)."""
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="intra-op CPU threads (default: the cores this process may use, less "
                             "those other programs keep busy at start)")


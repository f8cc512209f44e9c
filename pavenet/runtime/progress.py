"""Progress bars that keep log files small.

On a terminal a tqdm bar redraws in place up to ten times a second. Redirected to a file
(``pavenet train ... > run.log``, a scheduler's job log) every redraw stays in the file as one
more carriage-return record: a 15-minute training run wrote one per step, with the losses. When
the bar's stream is not a terminal, :func:`progress_bar` redraws at most every
:data:`LOG_INTERVAL_S` seconds; the bar's last state is still written when it closes.
"""
from __future__ import annotations

import sys
from typing import Any, Iterable, Optional

from tqdm import tqdm

LOG_INTERVAL_S = 30.0


def is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is an interactive terminal (a stream without ``isatty`` is not)."""
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (ValueError, OSError):
        return False


def progress_bar(iterable: Optional[Iterable] = None, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)``, redrawn at most every :data:`LOG_INTERVAL_S` seconds when
    its stream (``file``, default standard error) is not a terminal and the caller did not set
    ``mininterval`` (tqdm's monitor thread, which redraws a bar silent for ``maxinterval``
    seconds, waits as long)."""
    stream = kwargs.get("file") or sys.stderr
    if not is_terminal(stream):
        kwargs.setdefault("mininterval", LOG_INTERVAL_S)
        kwargs.setdefault("maxinterval", max(LOG_INTERVAL_S, kwargs["mininterval"]))
    return tqdm(iterable, **kwargs)

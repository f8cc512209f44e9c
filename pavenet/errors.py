"""The common base of pavenet's own errors about what the user gave it.

Configs, annotation files, images, videos, prediction files and checkpoints are checked where
they are read, and the error raised there names the file (or setting) and the problem. Each such
error class also derives from :class:`PavenetError`, so the command line can print the message
alone instead of a traceback (``pavenet.cli.main``). Torch-free, so the CLI can import it cheaply.
"""
from __future__ import annotations

#: the line PyTorch's DataLoader puts before a worker's traceback in the re-raised message
_WORKER_TRACEBACK = "Original Traceback (most recent call last):"


class PavenetError(Exception):
    """An input, config or checkpoint that pavenet cannot use; the message says which and why."""


def user_message(exc: BaseException) -> str:
    """The message of ``exc``; for one re-raised from a DataLoader worker (whose message holds
    the worker's traceback) only the worker's own message, the traceback's last line."""
    text = str(exc)
    if _WORKER_TRACEBACK not in text:
        return text
    last = [line for line in text.splitlines() if line.strip()][-1]
    name = f"{type(exc).__module__}.{type(exc).__name__}: "
    return last[len(name):] if last.startswith(name) else last

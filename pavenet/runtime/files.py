"""Atomic writes: temporary names, the writers built on them, and removal of what an
interrupted write left behind.

pavenet writes a file or folder under a temporary name next to its target and renames it into
place once complete. The temporary name, ``.{target}.tmp-{host}-{pid}-{token}{suffix}``, records
the machine and the process that writes it, so :func:`remove_stale` can delete what a process
that no longer runs left behind (killed, out of power) without touching the writes of a live one.
Torch-free.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from pavenet.errors import PavenetError

_STALE = re.compile(r"^\..+\.tmp-(?P<host>\w+)-(?P<pid>\d+)-")
#: the names earlier versions gave a checkpoint folder and a link being written (no host in them)
_LEGACY = re.compile(r"^\.(?:tmp_step_\d+_|(?:last|best)\.tmp)(?P<pid>\d+)$")


def _host() -> str:
    return re.sub(r"\W", "_", socket.gethostname()) or "host"


def temp_prefix(target: str | Path) -> str:
    """The start of every temporary name of ``target`` written by this process."""
    return f".{Path(target).name}.tmp-{_host()}-{os.getpid()}-"


def temp_path(target: str | Path, suffix: str = "") -> Path:
    """This process's temporary path for ``target`` (same folder; ``suffix`` keeps a file
    extension for writers that pick the format from it)."""
    target = Path(target)
    return target.with_name(temp_prefix(target) + suffix)


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_stale(folder: str | Path) -> list[Path]:
    """Delete the temporary files and folders in ``folder`` whose writer (on this machine) no
    longer runs, those of earlier versions' checkpoint saves included; returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in folder.iterdir():
        match = _STALE.match(entry.name) or _LEGACY.match(entry.name)
        if match is None or match.groupdict().get("host", _host()) != _host() or _running(int(match["pid"])):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def public_mode() -> int:
    """File mode of a normally created file (0o666 minus the umask); mkstemp would give 0o600."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


class OutputError(PavenetError, OSError):
    """An output folder that cannot be written to."""


def ensure_writable(folder: str | Path) -> Path:
    """Create ``folder`` if needed and check that files can be written in it (before any work
    whose results would go there); raises :class:`OutputError` naming the folder."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=temp_prefix(folder / "probe"), dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"{folder}: cannot write output files there ({exc.strerror or exc})") from exc
    return folder


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[str]:
    """A temporary file name next to ``path`` (ending in ``suffix``, for writers that pick the
    format from it) to write by any means; renamed to ``path`` when the block succeeds.

    A failure inside the block removes the temporary file and leaves ``path`` untouched; what a
    killed process left is removed by :func:`remove_stale`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, public_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_open(path: str | Path, newline: str | None = None) -> Iterator[TextIO]:
    """Open a temporary text file next to ``path``; rename it to ``path`` when the block succeeds.

    A failure inside the block removes the temporary file and leaves ``path`` untouched.
    """
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline=newline) as f:
        yield f


def atomic_write_json(path: str | Path, payload: object) -> None:
    """Write ``payload`` as JSON to ``path`` through a temporary file and a rename."""
    with atomic_open(path) as f:
        json.dump(payload, f)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """A temporary folder next to ``path`` to fill; renamed to ``path`` (which must not exist)
    when the block succeeds, removed when it fails."""
    path = Path(path)
    tmp = temp_path(path)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_symlink(target: str, link: str | Path) -> None:
    """Point ``link`` at ``target``, replacing a link that is there in one rename."""
    tmp = temp_path(link)
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)

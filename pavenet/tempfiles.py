"""Temporary names for atomic writes, and removal of what an interrupted write left behind.

pavenet writes a file or folder under a temporary name next to its target and renames it into
place once complete. The temporary name, ``.{target}.tmp-{host}-{pid}-{token}{suffix}``, records
the machine and the process that writes it, so :func:`remove_stale` can delete what a process
that no longer runs left behind (killed, out of power) without touching the writes of a live one.
Torch-free.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
from pathlib import Path

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

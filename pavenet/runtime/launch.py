"""Data-parallel training in several local processes, without ``torchrun`` (``--processes N``).

:func:`run_local` starts what ``torchrun --standalone --nproc_per_node N`` starts (the same
environment variables, read by :func:`pavenet.runtime.distributed.init_distributed`), with
``torch.multiprocessing`` instead of a separate launcher, and keeps the processes in the
caller's session (torchrun gives each its own, which under Linux's session autogroup scheduling
earns each a CPU share of its own). On a 2-core CPU next to two busy processes of the same
session, 2 processes x 1 thread trained 67 steps in 90 s where one process trained 52; with each
busy process in a session of its own, 37 against 46 (docs/results.md, 2026-12-07), so one
process stays the default.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
from typing import Any, Callable, Iterator, Optional, TypeVar

import torch
import torch.multiprocessing as mp

from pavenet.errors import PavenetError, user_message

T = TypeVar("T")


class ProcessFailed(PavenetError, RuntimeError):
    """A training process stopped with an error (its message is this error's)."""


def with_threads(fn: Optional[Callable[..., T]], threads: Optional[int] = None) -> Optional[Callable[..., T]]:
    """``fn`` running with ``threads`` intra-op threads (the count before is restored after it);
    None stays None. The main rank of a training in several processes on this machine validates
    alone while the others wait, so by default it takes their threads meanwhile (its own count
    times ``LOCAL_WORLD_SIZE``)."""
    if fn is None:
        return None

    def run(*args, **kwargs) -> T:
        before = torch.get_num_threads()
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
        torch.set_num_threads(threads or before * max(1, local))
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(before)

    return run


def free_port() -> int:
    """A TCP port on the loopback interface that is free now (for the process group's store)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child(rank: int, fn: Callable[..., Any], args: tuple, env: dict[str, str], threads: int, results) -> None:
    os.environ.update(env, RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(threads)
    try:
        results.put((rank, None, fn(*args)))
    except PavenetError as exc:
        results.put((rank, user_message(exc), None))
        raise


@contextlib.contextmanager
def _forward_signals(pids: list[int]) -> Iterator[None]:
    """While the processes run, a SIGINT or SIGTERM of this process goes on to them (each saves
    its checkpoint and stops, as a single training process does) instead of stopping the wait."""
    def forward(signum, _frame):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def run_local(fn: Callable[..., Any], args: tuple, count: int, threads: int = 1) -> list[Any]:
    """Run ``fn(*args)`` in ``count`` new processes on this machine that form one
    torch.distributed group (rank ``i`` in process ``i``), each with ``threads`` intra-op
    threads; returns their results by rank. ``fn`` must be importable by name (the processes
    are spawned). A :class:`~pavenet.errors.PavenetError` raised in a process is raised here as
    :class:`ProcessFailed` with its message; the other processes are stopped."""
    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": str(count),
           "LOCAL_WORLD_SIZE": str(count)}
    context = mp.start_processes(_child, args=(fn, args, env, threads, results), nprocs=count, join=False,
                                 start_method="spawn")
    try:
        with _forward_signals(context.pids()):
            while not context.join():
                pass
    except (mp.ProcessRaisedException, mp.ProcessExitedException) as exc:
        messages = [message for _, message, _ in _drain(results) if message]
        if messages:
            raise ProcessFailed(messages[0]) from exc
        if isinstance(exc, mp.ProcessExitedException):  # killed (e.g. out of memory) or exited
            raise ProcessFailed(f"training process {exc.error_index} of {count} stopped: {exc}; the others were "
                                "stopped too") from exc
        raise
    by_rank = {rank: value for rank, _, value in _drain(results)}
    return [by_rank.get(rank) for rank in range(count)]


def _drain(queue) -> list[tuple[int, Optional[str], Any]]:
    items = []
    while not queue.empty():
        items.append(queue.get())
    return items

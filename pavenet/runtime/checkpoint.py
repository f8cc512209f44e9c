"""Checkpoints: ``model.safetensors`` (weights) + the training state, none of it pickled.

Layout of a run directory::

    RUN/checkpoints/step_00001200/model.safetensors        weights + metadata (config, step, run id)
    RUN/checkpoints/step_00001200/train_state.safetensors  optimizer, scheduler, EMA, RNG tensors
    RUN/checkpoints/step_00001200/train_state.json         the rest of the training state
    RUN/last -> checkpoints/step_00001200                   symlinks, swapped atomically
    RUN/best -> checkpoints/step_00000800

A checkpoint directory is written under a temporary name and renamed when complete; the
``last``/``best`` links are then replaced with an atomic rename. A save that fails at any
point (a full disk included) leaves the previous checkpoint and its links untouched, and what a
killed save left behind is removed by the next save. A checkpoint belongs to the run that wrote
it (``run_id`` in its metadata): a run prunes only its own checkpoints.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from pavenet.errors import PavenetError
from pavenet.runtime import train_state as ts
from pavenet.runtime.files import atomic_dir, atomic_symlink, remove_stale

WEIGHTS = "model.safetensors"


class CheckpointError(PavenetError, RuntimeError):
    """A checkpoint is missing, corrupt or does not fit the model, or cannot be written."""


def _owner(folder: Path) -> Optional[str]:
    """The ``run_id`` of the checkpoint in ``folder`` (None: written before run ids, or unreadable)."""
    try:
        with safe_open(str(folder / WEIGHTS), framework="pt") as f:
            raw = (f.metadata() or {}).get("run_id")
        return json.loads(raw) if raw else None
    except (SafetensorError, OSError, ValueError):
        return None


def _checkpoint_dir(ckpt_root: Path, step: int, run_id: Optional[str]) -> Path:
    """``step_XXXXXXXX``, or with the run id appended when another run's checkpoint has that name."""
    final = ckpt_root / f"step_{step:08d}"
    if final.exists() and run_id is not None and _owner(final) != run_id:
        final = ckpt_root / f"step_{step:08d}_{run_id}"
    return final


def _write(final: Path, model_state: dict[str, torch.Tensor], meta: dict[str, Any],
           train_state: dict[str, Any] | None) -> None:
    try:
        with atomic_dir(final) as tmp:
            tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model_state.items()}
            metadata = {k: json.dumps(v) for k, v in meta.items()}
            save_file(tensors, str(tmp / WEIGHTS), metadata=metadata)
            if train_state is not None:
                ts.save_train_state(tmp, train_state)
    except (OSError, SafetensorError) as exc:
        raise CheckpointError(f"{final}: could not write the checkpoint ({exc}); "
                              "the previous checkpoint is kept") from exc


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model_state: dict[str, torch.Tensor],
    meta: dict[str, Any],
    train_state: dict[str, Any] | None = None,
    tags: tuple[str, ...] = ("last",),
) -> Path:
    """Write the checkpoint of ``step`` and point each tag link at it; returns its directory.

    ``meta["run_id"]`` (optional) marks the checkpoint as the run's own; the run's older
    untagged checkpoints are then removed, those of other runs are never touched.
    """
    run_dir = Path(run_dir)
    ckpt_root = run_dir / "checkpoints"
    ckpt_root.mkdir(parents=True, exist_ok=True)
    remove_stale(run_dir)
    remove_stale(ckpt_root)
    run_id = meta.get("run_id")
    final = _checkpoint_dir(ckpt_root, step, run_id)
    if not final.exists():
        _write(final, model_state, meta, train_state)
    try:
        for tag in tags:
            atomic_symlink(os.path.relpath(final, run_dir), run_dir / tag)
    except OSError as exc:
        raise CheckpointError(f"{run_dir}: could not link the checkpoint of step {step} ({exc})") from exc
    prune_checkpoints(run_dir, run_id)
    return final


def prune_checkpoints(run_dir: Path, run_id: Optional[str] = None, tags: tuple[str, ...] = ("last", "best")) -> None:
    """Remove the checkpoint directories of run ``run_id`` that no tag link points to."""
    keep = {(run_dir / t).resolve() for t in tags if (run_dir / t).is_symlink()}
    for d in (run_dir / "checkpoints").glob("step_*"):
        if d.resolve() not in keep and _owner(d) == run_id:
            shutil.rmtree(d, ignore_errors=True)


def holds_run(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a run's checkpoints (a tag link or a checkpoint directory)."""
    run_dir = Path(run_dir)
    return (any((run_dir / t).is_symlink() for t in ("last", "best"))
            or any((run_dir / "checkpoints").glob("step_*")))


def run_dir_of(path: str | Path) -> Path:
    """The run directory of a checkpoint given as a run directory, a checkpoint directory or its weights."""
    p = Path(path)
    if p.is_file():
        p = p.parent
    if p.resolve().parent.name == "checkpoints":
        return p.resolve().parent.parent
    return p


def resolve_checkpoint(path: str | Path) -> Path:
    """Accept a run directory, a checkpoint directory or a ``model.safetensors`` file."""
    p = Path(path)
    if p.is_dir() and (p / "last").exists() and not (p / WEIGHTS).exists():
        p = p / "last"
    if p.is_dir():
        p = p / WEIGHTS
    if not p.is_file():
        raise CheckpointError(f"{path}: no checkpoint found (expected {WEIGHTS} or a run directory)")
    return p


def read_metadata(path: str | Path) -> dict[str, Any]:
    p = resolve_checkpoint(path)
    try:
        with safe_open(str(p), framework="pt") as f:
            raw = f.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{p}: unreadable checkpoint: {exc}") from exc
    meta = {}
    for key, value in raw.items():
        try:
            meta[key] = json.loads(value)
        except ValueError as exc:
            raise CheckpointError(f"{p}: metadata '{key}' is not valid JSON ({exc})") from None
    return meta


def non_finite(state: dict[str, torch.Tensor]) -> list[str]:
    """The names of the floating-point tensors of ``state`` that hold NaN or infinite values."""
    return [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def load_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Return (state dict, metadata) of a checkpoint."""
    p = resolve_checkpoint(path)
    try:
        state = load_file(str(p))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{p}: unreadable checkpoint: {exc}") from exc
    return state, read_metadata(p)


def load_train_state(path: str | Path, allow_pickle: bool = False) -> dict[str, Any]:
    """The training state next to a checkpoint's weights (see :mod:`pavenet.runtime.train_state`;
    a pickled state of older versions only with ``allow_pickle``)."""
    try:
        return ts.load_train_state(resolve_checkpoint(path).parent, allow_pickle)
    except ts.TrainStateError as exc:
        raise CheckpointError(str(exc)) from exc

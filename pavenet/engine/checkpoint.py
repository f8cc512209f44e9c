"""Checkpoints: ``model.safetensors`` (weights, no pickle) + ``train_state.pt`` (resume state).

Layout of a run directory::

    RUN/checkpoints/step_00001200/model.safetensors   weights + metadata (config, step, ...)
    RUN/checkpoints/step_00001200/train_state.pt      optimizer, scheduler, scaler, step, RNG
    RUN/last -> checkpoints/step_00001200              symlinks, swapped atomically
    RUN/best -> checkpoints/step_00000800

A checkpoint directory is written under a temporary name and renamed when complete; the
``last``/``best`` links are then replaced with an atomic rename. A save that fails at any
point leaves the previous checkpoint and its links untouched.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from pavenet.errors import PavenetError

WEIGHTS = "model.safetensors"
TRAIN_STATE = "train_state.pt"


class CheckpointError(PavenetError, RuntimeError):
    """A checkpoint is missing, corrupt or does not fit the model."""


def _atomic_symlink(target: str, link: Path) -> None:
    tmp = link.with_name(f".{link.name}.tmp{os.getpid()}")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model_state: dict[str, torch.Tensor],
    meta: dict[str, Any],
    train_state: dict[str, Any] | None = None,
    tags: tuple[str, ...] = ("last",),
) -> Path:
    """Write the checkpoint of ``step`` and point each tag link at it; returns its directory."""
    run_dir = Path(run_dir)
    ckpt_root = run_dir / "checkpoints"
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / f"step_{step:08d}"
    if not final.exists():
        tmp = ckpt_root / f".tmp_step_{step:08d}_{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model_state.items()}
            metadata = {k: json.dumps(v) for k, v in meta.items()}
            save_file(tensors, str(tmp / WEIGHTS), metadata=metadata)
            if train_state is not None:
                torch.save(train_state, tmp / TRAIN_STATE)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    for tag in tags:
        _atomic_symlink(os.path.relpath(final, run_dir), run_dir / tag)
    prune_checkpoints(run_dir)
    return final


def prune_checkpoints(run_dir: Path, tags: tuple[str, ...] = ("last", "best")) -> None:
    """Remove checkpoint directories that no tag link points to."""
    keep = {(run_dir / t).resolve() for t in tags if (run_dir / t).is_symlink()}
    for d in (run_dir / "checkpoints").glob("step_*"):
        if d.resolve() not in keep:
            shutil.rmtree(d, ignore_errors=True)


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
    return {k: json.loads(v) for k, v in raw.items()}


def load_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Return (state dict, metadata) of a checkpoint."""
    p = resolve_checkpoint(path)
    try:
        state = load_file(str(p))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{p}: unreadable checkpoint: {exc}") from exc
    return state, read_metadata(p)


def load_train_state(path: str | Path) -> dict[str, Any]:
    p = resolve_checkpoint(path).parent / TRAIN_STATE
    if not p.is_file():
        raise CheckpointError(f"{p}: no training state next to the weights (cannot resume)")
    return torch.load(p, map_location="cpu", weights_only=False)

"""Loading weights into a model: shape checks, and initialisation across clip lengths T.

Per-frame parameters are stacked along a frame axis (the network stores one slice per clip
frame). When a checkpoint was trained with another T (e.g. the image model, T=1, used to
initialise the video model), every frame slice of the new model starts from the checkpoint's
key-frame slice. Parameters that only serve training (a model's ``training_only`` key
prefixes: denoising embeddings, the auxiliary heatmap head) may be on one side only, so a model
with or without them loads a checkpoint trained without or with them. Additions that start at
zero (a model's ``zero_start`` prefixes: the mixing layer of the proposals from the whole clip)
may be missing from a checkpoint: the model keeps its zero start, which computes what the
checkpoint's network computed (e.g. a T=1 or published-proposal checkpoint initialising a model
with clip proposals). Anything else that does not fit raises :class:`CheckpointError` listing
every mismatched key.
"""
from __future__ import annotations

import warnings
from typing import Optional

import torch
from torch import nn

from pavenet.runtime.checkpoint import CheckpointError, load_weights, non_finite


def _frame_axis(src: torch.Size, dst: torch.Size, t_src: int, t_dst: int) -> Optional[int]:
    """The axis where ``src`` holds t_src frame slices and ``dst`` t_dst of the same size."""
    if len(src) != len(dst):
        return None
    diff = [d for d in range(len(src)) if src[d] != dst[d]]
    if len(diff) != 1:
        return None
    d = diff[0]
    if src[d] % t_src or dst[d] % t_dst or src[d] // t_src != dst[d] // t_dst:
        return None
    return d


def adapt_frames(value: torch.Tensor, axis: int, t_src: int, t_dst: int) -> torch.Tensor:
    """Replace the ``t_src`` frame slices along ``axis`` by ``t_dst`` copies of the key slice."""
    shape = list(value.shape)
    per = shape[axis] // t_src
    v = value.reshape(shape[:axis] + [t_src, per] + shape[axis + 1:])
    key = v.select(axis, t_src // 2).unsqueeze(axis)
    rep = [1] * key.dim()
    rep[axis] = t_dst
    out = key.repeat(*rep)
    return out.reshape(shape[:axis] + [t_dst * per] + shape[axis + 1:])


def fit_state_dict(
    model: nn.Module, state: dict[str, torch.Tensor], t_src: Optional[int], t_dst: Optional[int],
    strict: bool = True,
) -> dict[str, torch.Tensor]:
    """Return ``state`` adapted to ``model``; raise listing every key that does not fit.

    With ``strict=False`` keys present on one side only are allowed (the model keeps its own
    initialisation for those it lacks in the checkpoint) and listed in a warning; shape
    mismatches are errors either way.
    """
    own = model.state_dict()
    optional = tuple(getattr(model, "training_only", ()))
    may_be_missing = optional + tuple(getattr(model, "zero_start", ()))
    missing = sorted(k for k in set(own) - set(state) if not k.startswith(may_be_missing))
    unexpected = sorted(k for k in set(state) - set(own) if not k.startswith(optional))
    out, bad = {}, []
    for k in sorted(set(own) & set(state)):
        src, dst = state[k], own[k]
        if src.shape == dst.shape:
            out[k] = src
            continue
        axis = _frame_axis(src.shape, dst.shape, t_src, t_dst) if t_src and t_dst and t_src != t_dst else None
        if axis is None:
            bad.append(f"{k}: checkpoint {tuple(src.shape)} vs model {tuple(dst.shape)}")
        else:
            out[k] = adapt_frames(src, axis, t_src, t_dst)
    lines = [f"missing in checkpoint  {k}" for k in missing]
    lines += [f"not in model  {k}" for k in unexpected]
    if bad or (lines and strict):
        lines = [f"shape mismatch  {b}" for b in bad] + lines
        raise CheckpointError("checkpoint does not fit the model:\n  " + "\n  ".join(lines))
    if lines:
        warnings.warn(f"partial initialisation, {len(missing)} model keys keep their initial values, "
                      f"{len(unexpected)} checkpoint keys unused:\n  " + "\n  ".join(lines), stacklevel=2)
    return out


def _stored_frames(meta: dict) -> Optional[int]:
    """The clip length T a checkpoint was trained with, from its stored config (None: not stored)."""
    config = meta.get("config")
    model_cfg = config.get("model") if isinstance(config, dict) else None
    frames = model_cfg.get("num_frames") if isinstance(model_cfg, dict) else None
    return frames if isinstance(frames, int) and not isinstance(frames, bool) and frames > 0 else None


def load_model_weights(model: nn.Module, path: str, strict: bool = True) -> dict:
    """Load a checkpoint into ``model`` (clip lengths may differ); returns its metadata.

    ``strict=False`` allows keys on one side only (see :func:`fit_state_dict`).
    """
    state, meta = load_weights(path)
    bad = non_finite(state)
    if bad:
        raise CheckpointError(f"{path}: {len(bad)} tensors hold NaN or infinite values (e.g. {bad[0]}): the run "
                              "had diverged when it was saved; use an earlier checkpoint")
    t_src = _stored_frames(meta)
    t_dst = getattr(model, "num_frames", None)
    try:
        fitted = fit_state_dict(model, state, t_src, t_dst, strict)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    model.load_state_dict(fitted, strict=False)  # fit_state_dict has checked what strict allows
    return meta

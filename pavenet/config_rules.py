"""Ranges and cross-field rules of the config values, checked when a config is loaded.

:func:`problems` lists every value outside its range (each float must also be finite) and every
combination the network cannot be built with; ``pavenet.config`` raises the first as a
``ConfigError`` naming the file and the dotted key. Torch-free.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Optional

#: a check returns None when the value is fine, else what it must be
Check = Callable[[float], Optional[str]]


def at_least(lo: float) -> Check:
    return lambda v: None if v >= lo else f">= {lo}"


def above(lo: float) -> Check:
    return lambda v: None if v > lo else f"> {lo}"


def within(lo: float, hi: float, hi_open: bool = False) -> Check:
    if hi_open:
        return lambda v: None if lo <= v < hi else f"in [{lo}, {hi})"
    return lambda v: None if lo <= v <= hi else f"in [{lo}, {hi}]"


POSITIVE, NON_NEGATIVE, UNIT = at_least(1), at_least(0), within(0, 1)
#: the smallest image side the network takes (its coarsest level is 1/64 of it)
MIN_SIDE = 32

#: dotted key -> range (for a list: of each element); keys not listed only need finite floats
RANGES: dict[str, Check] = {
    **{f"model.{k}": POSITIVE for k in (
        "num_frames", "num_joints", "hidden_dim", "num_heads", "num_levels", "enc_points", "ffn_dim",
        "num_queries", "pose_dec_layers", "joint_dec_layers", "joint_dec_points", "num_kept",
        "refine_hidden", "embed_dim", "proposal_hidden", "fine_passes")},
    "model.enc_layers": NON_NEGATIVE, "model.dropout": within(0, 1, hi_open=True),
    "model.dn_groups": NON_NEGATIVE, "model.dn_noise": NON_NEGATIVE, "model.fine_radius": NON_NEGATIVE,
    "model.proposal_margin": within(0, 0.5, hi_open=True), "model.pose_box_min": NON_NEGATIVE,
    "model.backbone.out_indices": within(0, 4), "model.backbone.frozen_stages": at_least(-1),
    "model.backbone.extra_levels": NON_NEGATIVE,
    "model.vepe.score_threshold": UNIT,
    **{f"model.vepe.{k}": POSITIVE for k in ("stpe_layers", "stdme_layers", "stdme_points", "stpd_layers")},
    **{f"matcher.{k}": NON_NEGATIVE for k in ("cost_class", "cost_keypoint", "cost_oks")},
    **{f"loss.{k}": NON_NEGATIVE for k in (
        "focal_gamma", "weight_class", "weight_keypoint", "weight_oks", "weight_visibility",
        "weight_consistency", "consistency_margin", "weight_heatmap")},
    "loss.focal_alpha": UNIT, "loss.enc_one_to_many": POSITIVE, "loss.heatmap_sigma": above(0),
    "postprocess.top_k": POSITIVE, "postprocess.score_threshold": UNIT, "postprocess.nms_oks": UNIT,
    **{f"data.{k}": at_least(MIN_SIDE) for k in (
        "train_short_side", "train_max_size", "test_short_side", "test_max_size")},
    "data.frame_stride": POSITIVE, "data.rotation": within(0, 180), "data.pseudo_video_max_angle": within(0, 180),
    "data.pair_gap": POSITIVE, "data.batch_size": POSITIVE, "data.num_workers": NON_NEGATIVE,
    **{f"train.{k}": NON_NEGATIVE for k in (
        "epochs", "max_steps", "lr_backbone_mult", "lr_offsets_mult", "weight_decay", "clip_grad",
        "warmup_steps", "lr_drop_epochs", "eval_max_sequences", "seed")},
    "train.lr": above(0), "train.accumulate": POSITIVE, "train.ema": within(0, 1, hi_open=True),
    "train.eval_every": POSITIVE, "train.log_every": POSITIVE, "train.max_nan_steps": POSITIVE,
}


def _leaves(obj: Any, prefix: str = ""):
    """(dotted key, value) of every number in a config dataclass (list elements under their list's key)."""
    for f in dataclasses.fields(obj):
        value, key = getattr(obj, f.name), prefix + f.name
        if dataclasses.is_dataclass(value):
            yield from _leaves(value, key + ".")
        elif isinstance(value, list):
            yield from ((key, v) for v in value)
        else:
            yield key, value


def _range_problems(cfg: Any) -> list[str]:
    out = []
    for key, value in _leaves(cfg):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            out.append(f"'{key}' must be a finite number, got {value}")
            continue
        need = RANGES[key](value) if key in RANGES else None
        if need is not None:
            out.append(f"'{key}' must be {need}, got {value}")
    return out


def _model_problems(m: Any) -> list[str]:
    out = []
    if m.hidden_dim % m.num_heads or m.hidden_dim % 2:
        out.append(f"'model.hidden_dim' ({m.hidden_dim}) must be even and divisible by model.num_heads "
                   f"({m.num_heads})")
    levels = len(m.backbone.out_indices) + m.backbone.extra_levels
    if levels != m.num_levels:
        out.append(f"'model.num_levels' ({m.num_levels}) must equal the backbone's levels: {levels} "
                   f"(len(model.backbone.out_indices) + model.backbone.extra_levels)")
    if levels < 3:
        out.append(f"the backbone must give at least 3 levels, got {levels}")
    return out


def problems(cfg: Any) -> list[str]:
    """Every range and consistency problem of a :class:`pavenet.config.Config`, as messages."""
    out = _range_problems(cfg) + _model_problems(cfg.model)
    short = cfg.data.train_short_side
    if len(short) > 2 or (short and short[0] > short[-1]):
        out.append(f"'data.train_short_side' must be [], [side] or [min, max] with min <= max, got {short}")
    if cfg.loss.weight_heatmap > 0 and not cfg.model.heatmap_head:
        out.append("loss.weight_heatmap > 0 needs model.heatmap_head: true")
    return out

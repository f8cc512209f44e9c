"""AdamW with the published parameter groups, and the learning-rate schedule."""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from pavenet.config import TrainConfig

#: Parameter names containing one of these train at ``lr * lr_offsets_mult`` (as published:
#: sampling offsets and reference-point predictors learn slower than the rest).
SLOW_PARAM_KEYS = ("sampling_offsets", "reference_points")


def freeze_parameters(model: nn.Module, prefixes: list[str]) -> int:
    """Stop training the parameters whose name starts with one of ``prefixes``; returns their count.

    Must run before the model is wrapped in DistributedDataParallel.
    """
    count = 0
    for name, p in model.named_parameters():
        if prefixes and name.startswith(tuple(prefixes)):
            p.requires_grad_(False)
            count += 1
    return count


def param_groups(model: nn.Module, cfg: TrainConfig, extra: nn.Module | None = None) -> list[dict]:
    """Split trainable parameters into backbone / slow (offsets, reference points) / rest.

    Parameters whose name starts with one of ``cfg.freeze`` are frozen and left out, e.g. the
    spatial phase while VEPE trains its temporal phase. ``extra`` (the criterion, whose RLE
    flow has parameters) joins the "rest" group.
    """
    freeze_parameters(model, cfg.freeze)
    groups: dict[str, list[torch.nn.Parameter]] = {"backbone": [], "slow": [], "rest": []}
    if extra is not None:
        groups["rest"] += [p for p in extra.parameters() if p.requires_grad]
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith("backbone.") or ".backbone." in name:
            groups["backbone"].append(p)
        elif any(k in name for k in SLOW_PARAM_KEYS):
            groups["slow"].append(p)
        else:
            groups["rest"].append(p)
    mults = {"backbone": cfg.lr_backbone_mult, "slow": cfg.lr_offsets_mult, "rest": 1.0}
    return [
        {"params": ps, "lr": cfg.lr * mults[k], "name": k}
        for k, ps in groups.items()
        if ps
    ]


def build_optimizer(model: nn.Module, cfg: TrainConfig, extra: nn.Module | None = None) -> torch.optim.AdamW:
    return torch.optim.AdamW(param_groups(model, cfg, extra), lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(step: int, total_steps: int, steps_per_epoch: int, cfg: TrainConfig) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based)."""
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "cosine":
        span = max(1, total_steps - cfg.warmup_steps)
        progress = min(1.0, (step - cfg.warmup_steps) / span)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    epoch = step // max(1, steps_per_epoch)
    return 0.1 ** sum(1 for e in cfg.lr_drop_epochs if epoch >= e)


def build_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: Callable[[], int], steps_per_epoch: int, cfg: TrainConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    """``total_steps`` is read at every step, so a time-budgeted run can re-plan its length."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps(), steps_per_epoch, cfg)
    )

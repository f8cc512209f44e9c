"""One optimisation step: forward, loss, NaN guard, backward, clipping, update."""
from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from pavenet.errors import PavenetError
from pavenet.runtime.device import autocast_context
from pavenet.runtime.distributed import all_reduce_sum, is_dist


class TrainingDiverged(PavenetError, RuntimeError):
    """Too many consecutive non-finite losses."""


@dataclass
class StepResult:
    losses: dict[str, float]
    skipped: bool
    grad_norm: float


def move_batch(batch: dict, device: torch.device) -> dict:
    """Move frames, mask and every tensor of the targets to ``device``."""
    targets = [
        {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in t.items()}
        for t in batch["targets"]
    ]
    return {
        "frames": batch["frames"].to(device, non_blocking=True),
        "mask": batch["mask"].to(device, non_blocking=True),
        "targets": targets,
    }


def _all_finite(loss: torch.Tensor) -> bool:
    """True when the loss is finite on every rank (all ranks then agree to skip or not)."""
    bad = (~torch.isfinite(loss.detach())).float().reshape(1)
    return all_reduce_sum(bad).item() == 0


def _losses(criterion: nn.Module, outputs: dict, targets: list[dict], device: torch.device) -> dict:
    """The criterion's losses; non-finite outputs that stop the matcher (FloatingPointError) give
    a NaN loss instead, so that they take the same skip path (on every rank) as a NaN loss."""
    try:
        return criterion(outputs, targets)
    except FloatingPointError:
        return {"loss": torch.tensor(float("nan"), device=device)}


def sync_gradients(params: list[torch.nn.Parameter]) -> None:
    """Average the gradients of parameters outside DDP (the criterion's RLE flow) over ranks.

    One flat all-reduce; a parameter without a gradient on this rank (e.g. no person in its
    batch) takes part with zeros, so every rank runs the same collective.
    """
    if not is_dist() or not params:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    torch.distributed.all_reduce(flat)
    flat /= torch.distributed.get_world_size()
    offset = 0
    for p in params:
        p.grad.copy_(flat[offset:offset + p.numel()].view_as(p.grad))
        offset += p.numel()


def train_step(
    model: nn.Module,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    micro_batches: list[dict],
    clip_grad: float,
    amp: bool,
    device: torch.device,
    denoise: bool = False,
) -> StepResult:
    """Accumulate gradients over ``micro_batches`` and take one optimizer step.

    With ``denoise`` the model also gets the targets (to build its denoising queries).

    The loss of each micro-batch is divided by their number, so accumulating k batches of
    size b equals one batch of size k*b when the criterion normalises by global counts.
    A non-finite loss (non-finite outputs included) or gradient norm skips the update (on every
    rank) with a warning.
    """
    optimizer.zero_grad(set_to_none=True)
    totals: dict[str, float] = {}
    n = len(micro_batches)
    for i, batch in enumerate(micro_batches):
        sync = i == n - 1 or not hasattr(model, "no_sync")
        ctx = contextlib.nullcontext() if sync else model.no_sync()
        with ctx:
            with autocast_context(device, amp):
                extra = (batch["targets"],) if denoise else ()
                outputs = model(batch["frames"], batch["mask"], *extra)
                losses = _losses(criterion, outputs, batch["targets"], device)
            loss = losses["loss"].float()
            if not _all_finite(loss):
                optimizer.zero_grad(set_to_none=True)
                warnings.warn(f"non-finite loss ({loss.item()}), step skipped", RuntimeWarning)
                return StepResult({"loss": float("nan")}, True, float("nan"))
            (loss / n).backward()
        values = torch.stack([v.detach().float() for v in losses.values()]).tolist()  # one transfer
        for k, v in zip(losses, values):
            totals[k] = totals.get(k, 0.0) + v / n
    sync_gradients([p for p in criterion.parameters() if p.requires_grad])
    params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    max_norm = clip_grad if clip_grad > 0 else float("inf")
    norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    if not math.isfinite(norm):
        optimizer.zero_grad(set_to_none=True)
        warnings.warn("non-finite gradient norm, step skipped", RuntimeWarning)
        return StepResult(totals, True, norm)
    optimizer.step()
    return StepResult(totals, False, norm)

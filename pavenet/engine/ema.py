"""Exponential moving average of model weights."""
from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEMA:
    """Keeps ``ema = decay * ema + (1 - decay) * weights`` after every optimizer step.

    Floating-point parameters and buffers are averaged; integer buffers are copied.
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        src = model.state_dict()
        for name, value in self.module.state_dict().items():
            new = src[name].detach()
            if value.dtype.is_floating_point:
                value.mul_(self.decay).add_(new.to(value.dtype), alpha=1.0 - self.decay)
            else:
                value.copy_(new)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)

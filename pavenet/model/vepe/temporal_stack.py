"""The container shared by VEPE's temporal modules (STPE, STDME): a stack of layers and a
learned embedding of each clip frame."""
from __future__ import annotations

import copy

import torch
from torch import nn


class TemporalStack(nn.Module):
    """``num_layers`` copies of ``layer`` and ``frame_embed`` (T, D), initialised N(0, 0.02)."""

    def __init__(self, layer: nn.Module, num_layers: int, d_model: int, num_frames: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.frame_embed = nn.Parameter(torch.zeros(num_frames, d_model))
        nn.init.normal_(self.frame_embed, std=0.02)
        self.num_frames = num_frames

"""Sine position encoding of feature maps (DETR), normalised over the unpadded region."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class PositionEmbeddingSine(nn.Module):
    """2-D sine/cosine encoding: ``num_feats`` channels for y, then ``num_feats`` for x.

    Positions are cumulative counts of valid pixels, shifted by -0.5 and divided by the
    valid extent, so a cell's encoding does not depend on how much padding follows it.

    Args:
        num_feats: channels per axis (D / 2).
        temperature: base of the frequency ladder.
        scale: range of the normalised positions (2 pi by default).
    """

    def __init__(self, num_feats: int, temperature: float = 10000.0,
                 scale: float = 2 * math.pi) -> None:
        super().__init__()
        self.num_feats, self.temperature, self.scale = num_feats, temperature, scale

    def forward(self, mask: Tensor) -> Tensor:
        """``mask`` (N, H, W) bool, True on padding -> encoding (N, 2 * num_feats, H, W)."""
        not_mask = (~mask).float()
        eps = 1e-6
        y_embed = not_mask.cumsum(1)
        x_embed = not_mask.cumsum(2)
        y_embed = (y_embed - 0.5) / (y_embed[:, -1:, :] + eps) * self.scale
        x_embed = (x_embed - 0.5) / (x_embed[:, :, -1:] + eps) * self.scale
        dim_t = torch.arange(self.num_feats, dtype=torch.float32, device=mask.device)
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor")
                                     / self.num_feats)
        pos_x = x_embed[..., None] / dim_t
        pos_y = y_embed[..., None] / dim_t
        pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)

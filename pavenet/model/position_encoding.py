"""Sine position encoding of feature maps (DETR), normalised over the unpadded region."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def sine_encode(values: Tensor, num_feats: int, temperature: float = 10000.0,
                scale: float = 2 * math.pi) -> Tensor:
    """Sine/cosine encoding of values in [0, 1]: (..., K) -> (..., K * num_feats).

    Each value is multiplied by ``scale`` and divided by ``num_feats / 2`` geometric frequencies;
    channels alternate sin (even) and cos (odd), the K encodings are concatenated in order.
    """
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=values.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)
    pos = values.float()[..., None] * scale / dim_t
    pos = torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=-1).flatten(-2)
    return pos.flatten(-2)


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
        y_embed = (y_embed - 0.5) / (y_embed[:, -1:, :] + eps)
        x_embed = (x_embed - 0.5) / (x_embed[:, :, -1:] + eps)
        positions = torch.stack((y_embed, x_embed), dim=-1)
        encoded = sine_encode(positions, self.num_feats, self.temperature, self.scale)
        return encoded.permute(0, 3, 1, 2)

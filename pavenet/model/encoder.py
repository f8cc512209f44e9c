"""The per-frame deformable spatial encoder and the flattened multi-scale memory it produces."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from .deformable_attention import MSDeformAttn
from .post_norm import PostNormLayer


@dataclass
class FrameMemory:
    """Encoded frames; every tensor has the frame axis first except the level tables.

    Attributes:
        memory: (N, S, D) encoder output tokens, levels flattened row-major in order.
        spatial_shapes: (L, 2) long tensor of (H_l, W_l).
        level_start_index: (L,) long tensor, index of each level's first token.
        valid_ratios: (N, L, 2) unpadded fraction (x, y) of each level's map.
        padding_mask: (N, S) bool, True on padding tokens.
        shapes: the same level shapes as Python ints (no device read needed).
        fine: (N, C, h, w) the stride-4 map of ``model.fine_refine``
            (:mod:`pavenet.model.fine_refine`), else None.
        fine_ratio: (N, 2) its unpadded fraction (x, y), else None.
    """

    memory: Tensor
    spatial_shapes: Tensor
    level_start_index: Tensor
    valid_ratios: Tensor
    padding_mask: Tensor
    shapes: tuple[tuple[int, int], ...]
    fine: Optional[Tensor] = None
    fine_ratio: Optional[Tensor] = None

    def select(self, index: Tensor) -> "FrameMemory":
        """Frames ``index`` (1-D long tensor) in that order, e.g. to assemble clips from a cache."""
        fine = None if self.fine is None else self.fine[index]
        ratio = None if self.fine_ratio is None else self.fine_ratio[index]
        return FrameMemory(self.memory[index], self.spatial_shapes, self.level_start_index,
                           self.valid_ratios[index], self.padding_mask[index], self.shapes,
                           fine, ratio)

    @staticmethod
    def cat(items: list["FrameMemory"]) -> "FrameMemory":
        """Concatenate per-frame memories along the frame axis (same level layout required)."""
        first = items[0]
        fine = ratio = None
        has_fine = [m.fine is not None for m in items]
        if any(has_fine) and not all(has_fine):
            raise ValueError("FrameMemory.cat: some memories have a fine map and some not")
        if all(has_fine):
            fine = torch.cat([m.fine for m in items])
            ratio = torch.cat([m.fine_ratio for m in items])
        return FrameMemory(torch.cat([m.memory for m in items]), first.spatial_shapes,
                           first.level_start_index, torch.cat([m.valid_ratios for m in items]),
                           torch.cat([m.padding_mask for m in items]), first.shapes, fine, ratio)


def flatten_levels(maps: list[Tensor], masks: list[Tensor], pos: list[Tensor],
                   level_embed: Tensor) -> tuple[Tensor, Tensor, Tensor, FrameMemory]:
    """Flatten level maps to tokens; return (tokens, pos + level embedding, mask, layout).

    The returned FrameMemory holds the layout (shapes, ratios, mask) with ``memory`` set to the
    flattened input tokens.
    """
    shapes = tuple((int(m.shape[-2]), int(m.shape[-1])) for m in maps)
    tokens = torch.cat([m.flatten(2).transpose(1, 2) for m in maps], 1)
    pos_flat = torch.cat([p.flatten(2).transpose(1, 2) + level_embed[i].view(1, 1, -1)
                          for i, p in enumerate(pos)], 1)
    mask_flat = torch.cat([m.flatten(1) for m in masks], 1)
    valid_ratios = torch.stack([valid_ratio(m) for m in masks], 1)
    device = tokens.device
    spatial_shapes = torch.tensor(shapes, dtype=torch.long, device=device)
    sizes = torch.tensor([h * w for h, w in shapes], dtype=torch.long, device=device)
    starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    layout = FrameMemory(tokens, spatial_shapes, starts, valid_ratios, mask_flat, shapes)
    return tokens, pos_flat, mask_flat, layout


def valid_ratio(mask: Tensor) -> Tensor:
    """(N, H, W) padding mask -> (N, 2) unpadded fraction (x, y)."""
    _, h, w = mask.shape
    valid_h = (~mask[:, :, 0]).sum(1).to(torch.float32)
    valid_w = (~mask[:, 0, :]).sum(1).to(torch.float32)
    return torch.stack([valid_w / w, valid_h / h], -1)


def token_centers(shapes: tuple[tuple[int, int], ...], valid_ratios: Tensor) -> Tensor:
    """Token centres (N, S, 2) as (x, y) relative to each frame's unpadded region."""
    centers = []
    for level, (h, w) in enumerate(shapes):
        ref_y, ref_x = torch.meshgrid(
            torch.linspace(0.5, h - 0.5, h, dtype=torch.float32, device=valid_ratios.device),
            torch.linspace(0.5, w - 0.5, w, dtype=torch.float32, device=valid_ratios.device),
            indexing="ij")
        ref_y = ref_y.reshape(1, -1) / (valid_ratios[:, None, level, 1] * h)
        ref_x = ref_x.reshape(1, -1) / (valid_ratios[:, None, level, 0] * w)
        centers.append(torch.stack((ref_x, ref_y), -1))
    return torch.cat(centers, 1)


def encoder_reference_points(shapes: tuple[tuple[int, int], ...], valid_ratios: Tensor) -> Tensor:
    """Token centres as (N, S, L, 2) sampling references, scaled into every level's map."""
    return token_centers(shapes, valid_ratios)[:, :, None] * valid_ratios[:, None]


class EncoderLayer(PostNormLayer):
    """Post-norm layer: deformable self-attention, then a feed-forward network."""

    def __init__(self, d_model: int, num_heads: int, num_levels: int, num_points: int,
                 ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.attn = MSDeformAttn(d_model, num_heads, num_levels, num_points)
        self.norm1 = nn.LayerNorm(d_model)
        self.add_feed_forward(d_model, ffn_dim, dropout, "norm2")

    def forward(self, src: Tensor, pos: Tensor, reference_points: Tensor,
                shapes: tuple[tuple[int, int], ...], padding_mask: Tensor) -> Tensor:
        """(N, S, D) tokens -> (N, S, D)."""
        attn = self.attn(src + pos, reference_points, src, shapes, padding_mask)
        src = self.norm1(src + self.dropout(attn))
        return self.feed_forward(src)


class SpatialEncoder(nn.Module):
    """A stack of ``num_layers`` deformable encoder layers, run on every frame independently."""

    def __init__(self, layer: EncoderLayer, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))

    def forward(self, tokens: Tensor, pos: Tensor, layout: FrameMemory) -> Tensor:
        """Encode (N, S, D) tokens of N independent frames with the given layout."""
        refs = encoder_reference_points(layout.shapes, layout.valid_ratios)
        out = tokens
        for layer in self.layers:
            out = layer(out, pos, refs, layout.shapes, layout.padding_mask)
        return out

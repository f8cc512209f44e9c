"""Deformable cross-attention over the T frames of a clip (PAVE-Net's pose-aware attention).

Each query carries its own anchor points in every frame. Frame t's sampling points are its
anchors plus offsets from frame-t linear layers, and are sampled only from frame t's encoder
memory. The attention logits of all frames x levels x points of a head go through ONE
softmax (``torch.softmax`` subtracts the maximum, so it is numerically stable), then the
frames' weighted samples are summed. The value projection is shared by all frames.

The pose decoder anchors the P = J points of a head at the query's J keypoints and scales
offsets by half the size of that frame's pose box; the joint decoder anchors all P points at
one joint and scales offsets by the size of a level's cell.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .deformable_attention import init_grid_offsets, ms_deform_attn
from .encoder import FrameMemory


class FrameDeformAttn(nn.Module):
    """Multi-frame multi-scale deformable attention with one joint softmax over frames.

    Args:
        d_model: D.
        num_heads: M.
        num_levels: L.
        num_points: P points per head, level and frame.
        num_frames: T (per-frame offset and weight layers).
        zero_offsets: start offsets at exactly zero (pose decoder) instead of
            Deformable-DETR's radial grid (joint decoder).
        value_mask: "after_proj" zeroes the projected values of padding tokens (they read as
            zeros whatever the padding); "before_proj" zeroes the memory before the projection,
            as the published model does (padded values then hold the projection's bias).
    """

    def __init__(self, d_model: int, num_heads: int, num_levels: int, num_points: int,
                 num_frames: int, zero_offsets: bool, value_mask: str = "after_proj") -> None:
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model {d_model} is not divisible by num_heads {num_heads}")
        if value_mask not in ("after_proj", "before_proj"):
            raise ValueError(f"value_mask must be 'after_proj' or 'before_proj', got {value_mask!r}")
        self.value_mask = value_mask
        self.d_model, self.num_heads, self.num_levels = d_model, num_heads, num_levels
        self.num_points, self.num_frames = num_points, num_frames
        n_samples = num_frames * num_heads * num_levels * num_points
        self.sampling_offsets = nn.Linear(d_model, n_samples * 2)
        self.attention_weights = nn.Linear(d_model, n_samples)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters(zero_offsets)

    def reset_parameters(self, zero_offsets: bool) -> None:
        """Zero offset weights (bias zero or radial grid), uniform attention, Xavier projections."""
        nn.init.zeros_(self.sampling_offsets.weight)
        if zero_offsets:
            nn.init.zeros_(self.sampling_offsets.bias)
        else:
            bias = self.sampling_offsets.bias.view(self.num_frames, -1)
            for t in range(self.num_frames):
                init_grid_offsets(bias[t], self.num_heads, self.num_levels, self.num_points)
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for proj in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.zeros_(proj.bias)

    def project_value(self, memory: FrameMemory) -> Tensor:
        """(B*T, S, D) memory -> (B*T, S, M, Dh) values, masked on padding (see ``value_mask``)."""
        padding = memory.padding_mask[..., None]
        if self.value_mask == "before_proj":
            value = self.value_proj(memory.memory.masked_fill(padding, 0.0))
        else:
            value = self.value_proj(memory.memory).masked_fill(padding, 0.0)
        return value.unflatten(-1, (self.num_heads, self.d_model // self.num_heads))

    def sampling(self, query: Tensor, anchors: Tensor, scale: Tensor,
                 valid_ratios: Tensor) -> tuple[Tensor, Tensor]:
        """Sampling locations and jointly normalised weights.

        Args:
            query: (B, Q, D).
            anchors: (B, Q, T, P or 1, 2) in [0, 1] of the unpadded image.
            scale: offset scale broadcastable to (B, Q, T, L, P, 2), unpadded units.
            valid_ratios: (B, T, L, 2).

        Returns:
            locations (B, T, Q, M, L, P, 2) in the padded maps, weights (B, T, Q, M, L, P).
        """
        b, q, _ = query.shape
        t, m, lv, p = self.num_frames, self.num_heads, self.num_levels, self.num_points
        offsets = self.sampling_offsets(query).view(b, q, t, m, lv, p, 2)
        points = anchors[:, :, :, None, None] + offsets * scale[:, :, :, None]
        locations = points * valid_ratios[:, None, :, None, :, None, :]
        logits = self.attention_weights(query).view(b, q, t, m, lv * p)
        logits = logits.transpose(2, 3).reshape(b, q, m, t * lv * p)
        weights = torch.softmax(logits.float(), dim=-1).to(query.dtype)
        weights = weights.view(b, q, m, t, lv, p).permute(0, 3, 1, 2, 4, 5)
        return locations.permute(0, 2, 1, 3, 4, 5, 6), weights

    def sample_frames(self, query: Tensor, anchors: Tensor, scale: Tensor,
                      memory: FrameMemory, value: Tensor | None = None) -> Tensor:
        """Per-frame weighted samples (B, T, Q, D) before the sum over frames.

        ``memory`` holds the B*T frames in clip order (batch-major); frame t of clip b reads
        only row b*T + t of the memory. ``value`` may pass a precomputed ``project_value``.
        """
        b, q, _ = query.shape
        t = self.num_frames
        if value is None:
            value = self.project_value(memory)
        ratios = memory.valid_ratios.view(b, t, self.num_levels, 2)
        locations, weights = self.sampling(query, anchors, scale, ratios)
        sampled = ms_deform_attn(value, memory.shapes, locations.flatten(0, 1),
                                 weights.flatten(0, 1))
        return sampled.view(b, t, q, self.d_model)

    def forward(self, query: Tensor, anchors: Tensor, scale: Tensor,
                memory: FrameMemory) -> Tensor:
        """Fuse the T frames: (B, Q, D) queries -> (B, Q, D)."""
        return self.output_proj(self.sample_frames(query, anchors, scale, memory).sum(1))

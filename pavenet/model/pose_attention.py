"""Deformable cross-attention over the T frames of a clip (PAVE-Net's pose-aware attention).

Each query carries its own anchor points in every frame. Frame t's sampling points are its
anchors plus offsets from frame-t linear layers, and are sampled only from frame t's encoder
memory. The attention logits of all frames x levels x points of a head go through ONE
softmax (``torch.softmax`` subtracts the maximum, so it is numerically stable), then the
frames' weighted samples are summed. The value projection is shared by all frames.

The pose decoder anchors the P = J points of a head at the query's J keypoints and scales
offsets by half the size of that frame's pose box; the joint decoder anchors all P points at
one joint and scales offsets by the size of a level's cell.

``frame_weights="content"`` (pavenet's option, not the published network) lets what a frame
shows decide its share. The joint softmax factors exactly into a softmax over frames of the
frames' log-sum-exp logits times a softmax within each frame; the content mode adds to each
frame's logit a score of its sampled values, <W q, v_t> / sqrt(Dh) per head. W starts at zero,
so an untrained content mode computes the published attention.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .deformable_attention import init_grid_offsets, ms_deform_attn
from .encoder import FrameMemory


def wide(x: Tensor) -> Tensor:
    """``x`` in at least float32 (softmax and log-sum-exp of half-precision logits)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


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
        frame_weights: "query" = the frames' shares come from the query alone (published);
            "content" = plus a score of each frame's sampled values (module docstring); one
            frame (T = 1) always computes "query".
    """

    def __init__(self, d_model: int, num_heads: int, num_levels: int, num_points: int,
                 num_frames: int, zero_offsets: bool, value_mask: str = "after_proj",
                 frame_weights: str = "query") -> None:
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model {d_model} is not divisible by num_heads {num_heads}")
        if value_mask not in ("after_proj", "before_proj"):
            raise ValueError(f"value_mask must be 'after_proj' or 'before_proj', got {value_mask!r}")
        if frame_weights not in ("query", "content"):
            raise ValueError(f"frame_weights must be 'query' or 'content', got {frame_weights!r}")
        self.value_mask = value_mask
        self.frame_weights = frame_weights if num_frames > 1 else "query"
        self.d_model, self.num_heads, self.num_levels = d_model, num_heads, num_levels
        self.num_points, self.num_frames = num_points, num_frames
        n_samples = num_frames * num_heads * num_levels * num_points
        self.sampling_offsets = nn.Linear(d_model, n_samples * 2)
        self.attention_weights = nn.Linear(d_model, n_samples)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.content_query = nn.Linear(d_model, d_model) if self.frame_weights == "content" else None
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
        if self.content_query is not None:
            nn.init.zeros_(self.content_query.weight)
            nn.init.zeros_(self.content_query.bias)

    def project_value(self, memory: FrameMemory) -> Tensor:
        """(B*T, S, D) memory -> (B*T, S, M, Dh) values, masked on padding (see ``value_mask``)."""
        padding = memory.padding_mask[..., None]
        if self.value_mask == "before_proj":
            value = self.value_proj(memory.memory.masked_fill(padding, 0.0))
        else:
            value = self.value_proj(memory.memory).masked_fill(padding, 0.0)
        return value.unflatten(-1, (self.num_heads, self.d_model // self.num_heads))

    def locations_logits(self, query: Tensor, anchors: Tensor, scale: Tensor,
                         valid_ratios: Tensor) -> tuple[Tensor, Tensor]:
        """Sampling locations (B, T, Q, M, L, P, 2) in the padded maps and the query's
        attention logits (B, Q, M, T, L*P); arguments as in :meth:`sampling`."""
        b, q, _ = query.shape
        t, m, lv, p = self.num_frames, self.num_heads, self.num_levels, self.num_points
        offsets = self.sampling_offsets(query).view(b, q, t, m, lv, p, 2)
        points = anchors[:, :, :, None, None] + offsets * scale[:, :, :, None]
        locations = points * valid_ratios[:, None, :, None, :, None, :]
        logits = self.attention_weights(query).view(b, q, t, m, lv * p).transpose(2, 3)
        return locations.permute(0, 2, 1, 3, 4, 5, 6), logits

    def sampling(self, query: Tensor, anchors: Tensor, scale: Tensor,
                 valid_ratios: Tensor) -> tuple[Tensor, Tensor]:
        """Sampling locations and the query's jointly normalised weights.

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
        locations, logits = self.locations_logits(query, anchors, scale, valid_ratios)
        weights = torch.softmax(wide(logits.reshape(b, q, m, t * lv * p)), dim=-1).to(query.dtype)
        return locations, weights.view(b, q, m, t, lv, p).permute(0, 3, 1, 2, 4, 5)

    def frame_share(self, frame_logits: Tensor, content: Tensor) -> Tensor:
        """Each frame's share of a head's weight (B, T, Q, M), a softmax over the T frames of
        the query's frame logits (B, Q, M, T) plus the content scores (B, T, Q, M)."""
        total = wide(frame_logits.permute(0, 3, 1, 2)) + wide(content)
        return torch.softmax(total, dim=1).to(content.dtype)

    def content_frames(self, query: Tensor, anchors: Tensor, scale: Tensor,
                       memory: FrameMemory, value: Tensor) -> Tensor:
        """``frame_weights="content"``: per-frame weighted samples (B, T, Q, M, Dh)."""
        b, q, _ = query.shape
        t, m, dh = self.num_frames, self.num_heads, self.d_model // self.num_heads
        ratios = memory.valid_ratios.view(b, t, self.num_levels, 2)
        locations, logits = self.locations_logits(query, anchors, scale, ratios)
        within = torch.softmax(wide(logits), dim=-1).to(query.dtype)  # (B, Q, M, T, L*P)
        within = within.view(b, q, m, t, self.num_levels, self.num_points).permute(0, 3, 1, 2, 4, 5)
        frames = ms_deform_attn(value, memory.shapes, locations.flatten(0, 1), within.flatten(0, 1))
        frames = frames.view(b, t, q, m, dh)
        key = self.content_query(query).view(b, 1, q, m, dh)
        content = (frames * key).sum(-1) / math.sqrt(dh)
        share = self.frame_share(torch.logsumexp(wide(logits), dim=-1), content)
        return frames * share[..., None]

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
        if self.content_query is not None:
            return self.content_frames(query, anchors, scale, memory, value).view(b, t, q, self.d_model)
        ratios = memory.valid_ratios.view(b, t, self.num_levels, 2)
        locations, weights = self.sampling(query, anchors, scale, ratios)
        sampled = ms_deform_attn(value, memory.shapes, locations.flatten(0, 1),
                                 weights.flatten(0, 1))
        return sampled.view(b, t, q, self.d_model)

    def forward(self, query: Tensor, anchors: Tensor, scale: Tensor,
                memory: FrameMemory) -> Tensor:
        """Fuse the T frames: (B, Q, D) queries -> (B, Q, D)."""
        return self.output_proj(self.sample_frames(query, anchors, scale, memory).sum(1))

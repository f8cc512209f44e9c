"""Spatio-Temporal Deformable Memory Encoder (VEPE): every frame's memory reads the whole clip.

Temporal multi-scale deformable attention: a token of frame f samples K points per head and
level around its own position in EACH of the T frames' memories (T x L x K points), and ONE
softmax normalises the weights over all of them. This is
:class:`pavenet.model.pose_attention.FrameDeformAttn` anchored at the token centres with
offsets in level-cell units, exactly Deformable-DETR's encoder sampling when T = 1. A learned
embedding of the query's own frame lets the per-frame offset layers tell "my frame" from
"another frame". Layers are post-norm: attention, norm, FFN, norm.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..encoder import FrameMemory, token_centers
from ..joint_decoder import level_cell_scale
from ..pose_attention import FrameDeformAttn
from ..position_encoding import PositionEmbeddingSine
from ..post_norm import PostNormLayer
from .temporal_stack import TemporalStack


def memory_position(memory: FrameMemory, position: PositionEmbeddingSine,
                    level_embed: Tensor) -> Tensor:
    """The encoder's position embedding (N, S, D) of the memory tokens, rebuilt from the mask.

    Sine encoding of every level's padding mask plus that level's learned embedding, as
    :meth:`PAVENet.encode` adds it before the spatial encoder.
    """
    n = memory.padding_mask.shape[0]
    sizes = [h * w for h, w in memory.shapes]
    parts = []
    for level, (mask, (h, w)) in enumerate(zip(memory.padding_mask.split(sizes, 1), memory.shapes)):
        pos = position(mask.view(n, h, w)).flatten(2).transpose(1, 2)
        parts.append(pos + level_embed[level].view(1, 1, -1))
    return torch.cat(parts, 1).to(memory.memory.dtype)


def temporal_deform_attn(attn: FrameDeformAttn, query: Tensor, memory: FrameMemory,
                         batch: int) -> Tensor:
    """Every token of every frame attends to all T frames of its clip.

    Args:
        attn: a FrameDeformAttn over T = ``attn.num_frames`` frames.
        query: (B*T, S, D) queries (tokens with position embedding), clip order.
        memory: the B*T frames' memory (values), clip order.
        batch: B.

    Returns:
        (B*T, S, D).
    """
    n, s, d = query.shape
    t = attn.num_frames
    if n != batch * t:
        raise ValueError(f"temporal_deform_attn: {n} frames for {batch} clips of {t} frames")
    centers = token_centers(memory.shapes, memory.valid_ratios).to(query.dtype)  # (B*T, S, 2)
    anchors = centers.view(batch, t * s, 1, 1, 2).expand(-1, -1, t, -1, -1)
    scale = level_cell_scale(memory, batch, t).to(query.dtype)
    out = attn(query.reshape(batch, t * s, d), anchors, scale, memory)
    return out.view(n, s, d)


class STDMELayer(PostNormLayer):
    """Post-norm layer: temporal deformable attention over the clip's memories, then an FFN."""

    def __init__(self, d_model: int, num_heads: int, num_levels: int, num_points: int,
                 num_frames: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.attn = FrameDeformAttn(d_model, num_heads, num_levels, num_points, num_frames,
                                    zero_offsets=False)
        self.norm1 = nn.LayerNorm(d_model)
        self.add_feed_forward(d_model, ffn_dim, dropout, "norm2")

    def forward(self, memory: FrameMemory, query_pos: Tensor, batch: int) -> Tensor:
        """``query_pos`` (B*T, S, D) position + frame embedding -> new memory (B*T, S, D)."""
        src = memory.memory
        attn = temporal_deform_attn(self.attn, src + query_pos, memory, batch)
        src = self.norm1(src + self.dropout(attn))
        return self.feed_forward(src)


class STDME(TemporalStack):
    """``num_layers`` STDME layers and the embedding (T, D) of a query token's own frame."""

    def forward(self, memory: FrameMemory, pos: Tensor, batch: int) -> FrameMemory:
        """Fuse the B*T frames' memory (clip order); ``pos`` (B*T, S, D) token positions."""
        n, s, d = pos.shape
        frame = self.frame_embed.to(pos.dtype)[None, :, None, :]
        query_pos = (pos.view(batch, self.num_frames, s, d) + frame).view(n, s, d)
        for layer in self.layers:
            memory = FrameMemory(layer(memory, query_pos, batch), memory.spatial_shapes,
                                 memory.level_start_index, memory.valid_ratios,
                                 memory.padding_mask, memory.shapes)
        return memory

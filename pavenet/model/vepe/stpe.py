"""Spatio-Temporal Pose Encoder (VEPE): key-frame pose queries read the other frames' queries.

Each layer (post-norm): self-attention among the key-frame queries (a query sees the kept
queries and itself), cross-attention from the key-frame queries to the pose queries of all T
frames through the instance mask (:func:`pavenet.model.vepe.query_selection.instance_mask`),
then an FFN. A learned frame embedding tells the cross-attention which frame a query is from.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..post_norm import PostNormLayer
from .temporal_stack import TemporalStack


def _blocked(allowed: Tensor, num_heads: int) -> Tensor:
    """(B, Q, K) True = allowed -> (B * heads, Q, K) True = blocked, as MultiheadAttention wants."""
    return (~allowed).repeat_interleave(num_heads, dim=0)


class STPELayer(PostNormLayer):
    """Self-attention over key queries, masked cross-attention to the frames' queries, FFN."""

    def __init__(self, d_model: int, num_heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.add_self_attention(d_model, num_heads, dropout)
        self.cross_attn = nn.MultiheadAttention(d_model, num_heads, dropout=dropout,
                                                batch_first=True)
        self.norm2 = nn.LayerNorm(d_model)
        self.add_feed_forward(d_model, ffn_dim, dropout, "norm3")

    def forward(self, tgt: Tensor, pos: Tensor, self_allowed: Tensor, frames: Tensor,
                frames_pos: Tensor, cross_allowed: Tensor) -> Tensor:
        """Update the key queries.

        Args:
            tgt, pos: (B, Q, D) key-frame queries and their position embedding.
            self_allowed: (B, Q, Q) bool, key query i may attend to key query j.
            frames, frames_pos: (B, T*Q, D) the pose queries of all frames (frame-major)
                and their position (+ frame) embedding.
            cross_allowed: (B, Q, T*Q) bool, the instance mask.
        """
        q = tgt + pos
        attn = self.self_attn(q, q, tgt, attn_mask=_blocked(self_allowed, self.num_heads),
                              need_weights=False)[0]
        tgt = self.norm1(tgt + self.dropout(attn))
        cross = self.cross_attn(tgt + pos, frames + frames_pos, frames,
                                attn_mask=_blocked(cross_allowed, self.num_heads),
                                need_weights=False)[0]
        tgt = self.norm2(tgt + self.dropout(cross))
        return self.feed_forward(tgt)


class STPE(TemporalStack):
    """``num_layers`` STPE layers and the frame embedding (T, D) of the frames' queries."""

    def forward(self, tgt: Tensor, pos: Tensor, keep: Tensor, frames: Tensor, frames_pos: Tensor,
                cross_allowed: Tensor, key_frame: int) -> Tensor:
        """Key queries (B, Q, D) -> (B, Q, D).

        ``keep`` (B, T, Q) selected queries; ``frames``/``frames_pos`` (B, T, Q, D) every
        frame's pose queries and positions; ``cross_allowed`` (B, Q, T*Q) the instance mask.
        """
        b, t, q, d = frames.shape
        eye = torch.eye(q, dtype=torch.bool, device=keep.device)
        self_allowed = keep[:, key_frame, None, :] | eye
        frames_pos = frames_pos + self.frame_embed[None, :, None, :].to(frames.dtype)
        flat, flat_pos = frames.reshape(b, t * q, d), frames_pos.reshape(b, t * q, d)
        for layer in self.layers:
            tgt = layer(tgt, pos, self_allowed, flat, flat_pos, cross_allowed)
        return tgt

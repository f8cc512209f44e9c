"""Spatio-Temporal Pose Decoder (VEPE) and its key-frame-only ablation.

STPD is PAVE-Net's pose decoder (:class:`pavenet.model.pose_decoder.PoseDecoder`) over the T
frames: per layer self-attention among the queries, deformable feature-to-pose
cross-attention (each query samples around its own keypoints in every frame, one softmax over
frames x levels x points), an FFN, and per-frame heads refining every frame's pose in
inverse-sigmoid space. With STPD switched off the same decoder reads only the key frame's
memory (:class:`KeyFrameDecoderLayer`); its heads still refine all T frames' poses.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ...config import ModelConfig
from ..encoder import FrameMemory
from ..heads import PoseHeads
from ..pose_decoder import PoseDecoder, PoseDecoderLayer
from ..spatial import pose_position


class KeyFrameDecoderLayer(PoseDecoderLayer):
    """A one-frame pose-decoder layer fed the key frame of T-frame clips."""

    def forward(self, tgt: Tensor, pos: Tensor, reference: Tensor, memory: FrameMemory,
                attn_mask: Optional[Tensor] = None, key_padding_mask: Optional[Tensor] = None) -> Tensor:
        """``reference`` (B, Q, T, J, 2), ``memory`` of B*T frames -> (B, Q, D)."""
        b, t = tgt.shape[0], reference.shape[2]
        key = t // 2
        rows = torch.arange(b, device=tgt.device) * t + key
        return super().forward(tgt, pos, reference[:, :, key:key + 1], memory.select(rows),
                               attn_mask, key_padding_mask)


def build_stpd(cfg: ModelConfig, num_levels: int, temporal: bool) -> PoseDecoder:
    """STPD (``temporal``) or the key-frame-only decoder, with T-frame heads."""
    d, t, j = cfg.hidden_dim, cfg.num_frames, cfg.num_joints
    layer_cls, frames = (PoseDecoderLayer, t) if temporal else (KeyFrameDecoderLayer, 1)
    layer = layer_cls(d, cfg.num_heads, num_levels, j, frames, cfg.ffn_dim, cfg.dropout,
                      frame_weights=cfg.frame_weights)
    return PoseDecoder(layer, PoseHeads(d, cfg.refine_hidden, j, t), cfg.vepe.stpd_layers,
                       pose_position(cfg))

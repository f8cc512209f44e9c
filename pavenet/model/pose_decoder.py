"""The spatiotemporal pose decoder: pose queries refined over the T frames of a clip."""
from __future__ import annotations

import copy
from typing import Optional

import torch
from torch import Tensor, nn

from .encoder import FrameMemory
from .heads import MLP, PoseHeads
from .pose_attention import FrameDeformAttn
from .position_encoding import sine_encode
from .post_norm import PostNormLayer


def pose_box_scale(reference: Tensor, valid_ratios: Optional[Tensor] = None,
                   min_size: float = 0.0) -> Tensor:
    """Half the size (w, h) of each frame's pose box, in unpadded units.

    ``reference`` (B, Q, T, J, 2) -> (B, Q, T, 1, 1, 2). With ``min_size`` > 0 the size is
    bounded below by ``min_size`` in the units of each level's PADDED map, as the published
    model does, which needs ``valid_ratios`` (B, T, L, 2) and gives (B, Q, T, L, 1, 2).
    """
    size = reference.amax(dim=-2) - reference.amin(dim=-2)
    if min_size <= 0:
        return (0.5 * size)[:, :, :, None, None, :]
    if valid_ratios is None:
        raise ValueError("pose_box_scale: min_size > 0 needs the valid ratios")
    ratios = valid_ratios[:, None].to(size.dtype)
    padded = (size[:, :, :, None] * ratios).clamp(min=min_size)
    return (0.5 * padded / ratios)[:, :, :, :, None, :]


class PosePosition(nn.Module):
    """Query position from the key-frame reference pose (``model.query_pos: pose``).

    The box around the pose, (cx, cy, w, h) in [0, 1], is sine-encoded (D / 4 channels each)
    and mapped by a 2-layer MLP to D channels, as DAB-DETR does with anchor boxes; the decoder
    recomputes it from the refined reference before every layer, so self-attention sees where
    each query is and how large its person is (convergence aid; the published model uses only
    the learned embedding).
    """

    def __init__(self, d_model: int) -> None:
        super().__init__()
        if d_model % 8:
            raise ValueError(f"PosePosition needs hidden_dim divisible by 8, got {d_model}")
        self.d_model = d_model
        self.mlp = MLP(d_model, [d_model], d_model)

    def forward(self, reference: Tensor) -> Tensor:
        """``reference`` (B, Q, T, J, 2) -> (B, Q, D), from frame T // 2."""
        pose = reference[:, :, reference.shape[2] // 2]
        lo, hi = pose.amin(dim=-2), pose.amax(dim=-2)
        box = torch.cat(((lo + hi) / 2, hi - lo), dim=-1)
        return self.mlp(sine_encode(box, self.d_model // 4).to(reference.dtype))


class PoseDecoderLayer(PostNormLayer):
    """Post-norm layer: self-attention over queries, pose-aware cross-attention, FFN.

    The cross-attention samples, per head, level and frame, one point per joint, anchored
    at the query's reference keypoint in that frame.
    """

    def __init__(self, d_model: int, num_heads: int, num_levels: int, num_joints: int,
                 num_frames: int, ffn_dim: int, dropout: float, value_mask: str = "after_proj",
                 box_min: float = 0.0, frame_weights: str = "query") -> None:
        super().__init__()
        self.add_self_attention(d_model, num_heads, dropout)
        self.cross_attn = FrameDeformAttn(d_model, num_heads, num_levels, num_joints,
                                          num_frames, zero_offsets=True, value_mask=value_mask,
                                          frame_weights=frame_weights)
        self.box_min = box_min
        self.norm2 = nn.LayerNorm(d_model)
        self.add_feed_forward(d_model, ffn_dim, dropout, "norm3")

    def forward(self, tgt: Tensor, pos: Tensor, reference: Tensor, memory: FrameMemory,
                attn_mask: Optional[Tensor] = None, key_padding_mask: Optional[Tensor] = None) -> Tensor:
        """``tgt``/``pos`` (B, Q, D), ``reference`` (B, Q, T, J, 2) -> (B, Q, D); ``attn_mask``
        (Q, Q) and ``key_padding_mask`` (B, Q), True = may not attend, go to the self-attention."""
        q = k = tgt + pos
        attn = self.self_attn(q, k, tgt, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                              need_weights=False)[0]
        tgt = self.norm1(tgt + self.dropout(attn))
        ratios = memory.valid_ratios.view(reference.shape[0], reference.shape[2], -1, 2)
        scale = pose_box_scale(reference, ratios, self.box_min)
        cross = self.cross_attn(tgt + pos, reference, scale, memory)
        tgt = self.norm2(tgt + self.dropout(cross))
        return self.feed_forward(tgt)


class PoseDecoder(nn.Module):
    """``num_layers`` pose-decoder layers, each followed by its own heads.

    After every layer the heads refine each frame's reference pose in inverse-sigmoid
    space; the next layer samples at the refined pose (detached with ``detach``, as
    Deformable-DETR does; the released model lets the gradient through). With
    ``pose_position`` the query position of every layer adds the encoding of its current
    reference pose.
    """

    def __init__(self, layer: PoseDecoderLayer, heads: PoseHeads, num_layers: int,
                 pose_position: Optional[PosePosition] = None, detach: bool = True) -> None:
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.heads = nn.ModuleList(copy.deepcopy(heads) for _ in range(num_layers))
        self.pose_position = pose_position
        self.detach = detach

    def forward(self, tgt: Tensor, pos: Tensor, reference: Tensor, memory: FrameMemory,
                attn_mask: Optional[Tensor] = None,
                key_padding_mask: Optional[Tensor] = None) -> tuple[list[dict[str, Tensor]], Tensor]:
        """Decode; returns every layer's head outputs and the last layer's queries (B, Q, D).

        ``reference`` (B, Q, T, J, 2) in [0, 1] of the unpadded image; ``memory`` holds the
        B*T frames in clip order; the masks go to every layer's self-attention.
        """
        outputs = []
        for layer, head in zip(self.layers, self.heads):
            layer_pos = pos if self.pose_position is None else pos + self.pose_position(reference)
            tgt = layer(tgt, layer_pos, reference, memory, attn_mask, key_padding_mask)
            out = head(tgt, reference)
            outputs.append(out)
            reference = out["keypoints"].detach() if self.detach else out["keypoints"]
        return outputs, tgt

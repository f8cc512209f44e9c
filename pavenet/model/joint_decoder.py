"""The joint decoder: J joint queries per kept person, refined over the T frames of a clip.

Joint j of a person starts from the learned joint embedding j (plus, optionally, a projection
of the person's pose-decoder feature); each layer runs self-attention among the person's J joints,
deformable cross-attention at the joint's location in each of the T frames (frames fused by
one softmax), an FFN, and a per-frame 2-D refinement in inverse-sigmoid space.
"""
from __future__ import annotations

import copy
from typing import Optional

import torch
from torch import Tensor, nn

from .encoder import FrameMemory
from .fine_refine import FineRefine
from .heads import MLP, FrameMLP, inverse_sigmoid
from .pose_attention import FrameDeformAttn
from .post_norm import PostNormLayer


def level_cell_scale(memory: FrameMemory, batch: int, num_frames: int) -> Tensor:
    """Size of one cell of each level in unpadded units: (B, 1, T, L, 1, 2)."""
    sizes = memory.spatial_shapes.flip(-1).to(memory.valid_ratios.dtype)  # (L, 2) as (W, H)
    scale = 1.0 / (memory.valid_ratios * sizes)
    return scale.view(batch, 1, num_frames, -1, 1, 2)


class JointHeads(nn.Module):
    """Per-joint per-frame refinement, visibility and sigma from joint features (B, K, J, D).

    ``per_frame``: the refinement is T separate MLPs D-D-D-2 (published); otherwise one
    MLP D-D-2T shared by the frames.
    """

    def __init__(self, d_model: int, num_frames: int, per_frame: bool = False) -> None:
        super().__init__()
        self.num_frames, self.per_frame = num_frames, per_frame
        if per_frame:
            self.refine = FrameMLP(d_model, [d_model, d_model], 2, num_frames, zero_last=True)
        else:
            self.refine = MLP(d_model, [d_model], 2 * num_frames, zero_last=True)
        self.visibility = nn.Linear(d_model, num_frames)
        self.sigma = nn.Linear(d_model, 2 * num_frames)

    def forward(self, feats: Tensor, reference: Tensor) -> dict[str, Tensor]:
        """``reference`` (B, K, T, J, 2) -> keypoints/sigma (B, K, T, J, 2), visibility (B, K, T, J)."""
        t = self.num_frames
        if self.per_frame:
            residual = self.refine(feats).transpose(2, 3)
        else:
            residual = self.refine(feats).unflatten(-1, (t, 2)).transpose(2, 3)
        sigma = self.sigma(feats).unflatten(-1, (t, 2)).transpose(2, 3)
        return {
            "keypoints": torch.sigmoid(residual + inverse_sigmoid(reference)),
            "visibility": self.visibility(feats).transpose(2, 3),
            "sigma": torch.sigmoid(sigma),
        }


class JointDecoderLayer(PostNormLayer):
    """Post-norm layer: self-attention among a person's joints, multi-frame deformable attention, FFN."""

    def __init__(self, d_model: int, num_heads: int, num_levels: int, num_points: int,
                 num_frames: int, ffn_dim: int, dropout: float, value_mask: str = "after_proj",
                 frame_weights: str = "query") -> None:
        super().__init__()
        self.add_self_attention(d_model, num_heads, dropout)
        self.cross_attn = FrameDeformAttn(d_model, num_heads, num_levels, num_points,
                                          num_frames, zero_offsets=False, value_mask=value_mask,
                                          frame_weights=frame_weights)
        self.norm2 = nn.LayerNorm(d_model)
        self.add_feed_forward(d_model, ffn_dim, dropout, "norm3")

    def forward(self, tgt: Tensor, pos: Tensor, reference: Tensor,
                memory: FrameMemory) -> Tensor:
        """``tgt``/``pos`` (B, K, J, D), ``reference`` (B, K, T, J, 2) -> (B, K, J, D)."""
        b, k, j, d = tgt.shape
        t = reference.shape[2]
        q = (tgt + pos).reshape(b * k, j, d)
        attn = self.self_attn(q, q, tgt.reshape(b * k, j, d), need_weights=False)[0]
        tgt = self.norm1(tgt + self.dropout(attn.view(b, k, j, d)))
        anchors = reference.permute(0, 1, 3, 2, 4).reshape(b, k * j, t, 1, 2)
        scale = level_cell_scale(memory, b, t)
        cross = self.cross_attn((tgt + pos).view(b, k * j, d), anchors, scale, memory)
        tgt = self.norm2(tgt + self.dropout(cross.view(b, k, j, d)))
        return self.feed_forward(tgt)


class JointDecoder(nn.Module):
    """``num_layers`` joint-decoder layers with per-layer heads.

    Args:
        layer: a layer to copy. heads: per-layer heads to copy.
        d_model: D. num_joints: J. num_layers: number of layers.
        person_query: add a projection of the person's feature to the joint queries (False:
            the learned joint embedding only, as published).
        detach: detach the refined reference between layers (the incoming pose-decoder
            reference is always detached, as released).
        fine: moves the last layer's keypoints with the memory's stride-4 map
            (``model.fine_refine``), or None (published).
    """

    def __init__(self, layer: JointDecoderLayer, heads: JointHeads, d_model: int,
                 num_joints: int, num_layers: int, person_query: bool = True,
                 detach: bool = True, fine: Optional[FineRefine] = None) -> None:
        super().__init__()
        self.detach = detach
        self.fine = fine
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.heads = nn.ModuleList(copy.deepcopy(heads) for _ in range(num_layers))
        self.joint_tgt = nn.Embedding(num_joints, d_model)
        self.joint_pos = nn.Embedding(num_joints, d_model)
        self.person_proj = nn.Linear(d_model, d_model) if person_query else None

    def forward(self, person: Tensor, reference: Tensor,
                memory: FrameMemory) -> list[dict[str, Tensor]]:
        """``person`` (B, K, D) features of the kept queries, ``reference`` (B, K, T, J, 2).

        Returns every layer's outputs for the K persons.
        """
        b, k = reference.shape[:2]
        tgt = self.joint_tgt.weight[None, None].expand(b, k, -1, -1)
        if self.person_proj is not None:
            tgt = self.person_proj(person)[:, :, None] + tgt
        pos = self.joint_pos.weight[None, None].expand_as(tgt)
        reference = reference.detach()
        outputs = []
        for layer, head in zip(self.layers, self.heads):
            tgt = layer(tgt, pos, reference, memory)
            out = head(tgt, reference)
            outputs.append(out)
            reference = out["keypoints"].detach() if self.detach else out["keypoints"]
        if self.fine is not None:
            if memory.fine is None:
                raise ValueError("the joint decoder's fine refinement needs the memory's fine map "
                                 "(encode with the same model)")
            outputs[-1]["keypoints"] = self.fine(memory.fine, memory.fine_ratio, tgt,
                                                 outputs[-1]["keypoints"])
        return outputs

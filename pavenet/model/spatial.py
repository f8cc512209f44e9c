"""The spatial stage both video networks share (DESIGN.md sections 2-3).

Per frame: backbone, channel mapper, sine position + level embedding, deformable spatial
encoder (:meth:`SpatialStage.encode`); then the two-stage query initialisation on the frames
the network decodes from. PAVE-Net (:mod:`pavenet.model.network`) and VEPE
(:mod:`pavenet.model.vepe.network`) each add their decoders and their ``decode``.

The networks extend :class:`SpatialStage` instead of holding it as a child module so that the
parameter names stay ``backbone.*``, ``mapper.*``, ``level_embed``, ``encoder.*`` and
``query_init.*``: every checkpoint, the published-weights conversion and the optimiser's
parameter groups use these names.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from ..config import ModelConfig
from .backbone import ChannelMapper, build_backbone
from .swin import SWIN_VARIANTS
from .encoder import EncoderLayer, FrameMemory, SpatialEncoder, flatten_levels
from .fine_refine import FINE_CHANNELS, FineMap
from .heads import PoseHeads
from .pose_decoder import PoseDecoder, PoseDecoderLayer, PosePosition
from .position_encoding import PositionEmbeddingSine
from .query_init import QueryInit


@dataclass
class SpatialParts:
    """The modules of the spatial stage, built from a config by :func:`build_spatial_parts`."""

    backbone: nn.Module
    mapper: ChannelMapper
    encoder: SpatialEncoder
    query_init: QueryInit
    num_levels: int
    #: train the backbone and encoder on every clip frame (False: on the key frame only)
    neighbour_grad: bool = True
    #: the stride-4 map of ``model.fine_refine`` (the backbone then returns it first), or None
    fine_map: Optional[FineMap] = None


class SpatialStage(nn.Module):
    """Backbone, mapper, position and level embeddings, encoder and query initialisation of a
    network over clips of ``num_frames`` frames, whose key frame is ``num_frames // 2``.

    ``embed`` maps a decoded query to its instance embedding (``embed_dim``); ``num_kept`` is
    how many queries a network refines or reports as kept.
    """

    def __init__(self, parts: SpatialParts, d_model: int, num_frames: int, num_kept: int) -> None:
        super().__init__()
        self.backbone, self.mapper, self.encoder = parts.backbone, parts.mapper, parts.encoder
        self.position = PositionEmbeddingSine(d_model // 2)
        self.level_embed = nn.Parameter(torch.empty(parts.num_levels, d_model))
        nn.init.normal_(self.level_embed)
        self.query_init = parts.query_init
        self.num_frames, self.num_kept = num_frames, num_kept
        self.key_frame = num_frames // 2
        self.neighbour_grad = parts.neighbour_grad
        self.fine_map = parts.fine_map

    def encode(self, images: Tensor, mask: Tensor) -> FrameMemory:
        """Backbone, channel mapper and spatial encoder of N independent frames.

        ``images`` (N, 3, H, W), ``mask`` (N, H, W) True on padding.
        """
        features = self.backbone(images)
        fine = None
        if self.fine_map is not None:
            fine, features = self.fine_map(features[0], mask), features[1:]
        maps, masks = self.mapper(features, mask)
        pos = [self.position(m).to(x.dtype) for x, m in zip(maps, masks)]
        tokens, pos_flat, _, layout = flatten_levels(maps, masks, pos, self.level_embed)
        layout.memory = self.encoder(tokens, pos_flat, layout)
        if fine is not None:
            layout.fine, layout.fine_ratio = fine
        return layout

    def encode_clips(self, frames: Tensor, mask: Tensor) -> FrameMemory:
        """The memory of the B*T frames of ``frames`` (B, T, 3, H, W) in clip order; ``mask``
        (B, H, W) True on padding, the same for every frame of a clip."""
        t = frames.shape[1]
        if t != self.num_frames:
            raise ValueError(f"the model was built for {self.num_frames} frames, got {t}")
        if self.training and not self.neighbour_grad and t > 1 and torch.is_grad_enabled():
            return self._encode_key_with_grad(frames, mask)
        return self.encode(frames.flatten(0, 1), _per_frame(mask, t))

    def _encode_key_with_grad(self, frames: Tensor, mask: Tensor) -> FrameMemory:
        """:meth:`encode_clips` with gradients through the key frames only: the B key frames and
        the B*(T-1) others are encoded apart, then put back in clip order."""
        b, t = frames.shape[:2]
        others = [f for f in range(t) if f != self.key_frame]
        key = self.encode(frames[:, self.key_frame], mask)
        with torch.no_grad():
            rest = self.encode(frames[:, others].flatten(0, 1), _per_frame(mask, t - 1))
        position = torch.empty(b, t, dtype=torch.long, device=frames.device)  # in cat(key, rest)
        position[:, self.key_frame] = torch.arange(b, device=frames.device)
        position[:, others] = b + torch.arange(b * (t - 1), device=frames.device).view(b, t - 1)
        return FrameMemory.cat([key, rest]).select(position.flatten())

    def check_memory(self, memory: FrameMemory, batch: int) -> None:
        """Raise unless ``memory`` holds ``batch`` clips of ``num_frames`` frames."""
        if memory.memory.shape[0] != batch * self.num_frames:
            raise ValueError(f"decode: {memory.memory.shape[0]} frames for {batch} clips "
                             f"of {self.num_frames} frames")


def _per_frame(mask: Tensor, frames: int) -> Tensor:
    """The clip masks (B, H, W) repeated for each of ``frames`` frames of a clip: (B*frames, H, W)."""
    return mask[:, None].expand(-1, frames, -1, -1).flatten(0, 1)


def _check_sizes(cfg: ModelConfig, channels: list[int]) -> int:
    """The number of feature levels, after checking the config's sizes against the backbone."""
    bcfg = cfg.backbone
    levels = len(channels) + bcfg.extra_levels
    if levels != cfg.num_levels:
        raise ValueError(f"model.num_levels={cfg.num_levels} but the backbone gives {levels} "
                         f"levels ({len(channels)} out_indices + {bcfg.extra_levels} extra)")
    if levels < 3:
        raise ValueError("the backbone must give at least 3 levels")
    for key in ("num_frames", "num_queries", "pose_dec_layers", "joint_dec_layers"):
        if getattr(cfg, key) < 1:
            raise ValueError(f"model.{key} must be >= 1, got {getattr(cfg, key)}")
    return levels


def build_spatial_parts(cfg: ModelConfig) -> SpatialParts:
    """The spatial stage's modules for ``cfg`` (no weights are downloaded)."""
    bcfg = cfg.backbone
    if cfg.fine_refine and cfg.arch != "pavenet":
        raise ValueError("model.fine_refine refines PAVE-Net's joint decoder (model.arch=pavenet)")
    backbone = build_backbone(bcfg.name, _backbone_indices(cfg), bcfg.frozen_stages, bcfg.frozen_bn,
                              bcfg.pretrained_path)
    channels = backbone.channels[1:] if cfg.fine_refine else backbone.channels
    fine_map = FineMap(backbone.channels[0], FINE_CHANNELS) if cfg.fine_refine else None
    levels = _check_sizes(cfg, channels)
    d = cfg.hidden_dim
    mapper = ChannelMapper(channels, d, bcfg.extra_levels, masked=cfg.neck_norm == "masked")
    layer = EncoderLayer(d, cfg.num_heads, levels, cfg.enc_points, cfg.ffn_dim, cfg.dropout)
    if cfg.proposal_frames == "clip" and cfg.arch != "pavenet":
        raise ValueError("model.proposal_frames=clip is PAVE-Net's (model.arch=pavenet); VEPE proposes on every frame")
    query_init = QueryInit(d, cfg.num_queries, cfg.num_joints, cfg.proposal_hidden, cfg.proposal_margin,
                           neighbours=cfg.proposal_frames == "clip" and cfg.num_frames > 1)
    return SpatialParts(backbone, mapper, SpatialEncoder(layer, cfg.enc_layers), query_init, levels,
                        cfg.neighbour_grad, fine_map)


def _backbone_indices(cfg: ModelConfig) -> list[int]:
    """The backbone's out indices: the config's, with ``model.fine_refine`` the stage before
    the first one (its stride-4 map for a stride-8 first level) in front."""
    indices = list(cfg.backbone.out_indices)
    if not cfg.fine_refine:
        return indices
    if cfg.backbone.name in SWIN_VARIANTS or indices[0] < 1:
        raise ValueError("model.fine_refine needs a timm backbone with a stage before "
                         f"model.backbone.out_indices[0] (got {cfg.backbone.name}, {indices})")
    return [indices[0] - 1, *indices]


def pose_position(cfg: ModelConfig) -> PosePosition | None:
    """The pose-derived query position of ``model.query_pos``, or None for the learned one."""
    if cfg.query_pos not in ("learned", "pose"):
        raise ValueError(f"model.query_pos must be 'learned' or 'pose', got {cfg.query_pos!r}")
    return PosePosition(cfg.hidden_dim) if cfg.query_pos == "pose" else None


def build_pose_decoder(cfg: ModelConfig, num_levels: int, num_frames: int) -> PoseDecoder:
    """PAVE-Net's pose decoder over clips of ``num_frames`` frames (VEPE runs it on one frame)."""
    d, j = cfg.hidden_dim, cfg.num_joints
    layer = PoseDecoderLayer(d, cfg.num_heads, num_levels, j, num_frames, cfg.ffn_dim, cfg.dropout,
                             cfg.value_mask, cfg.pose_box_min, cfg.frame_weights)
    return PoseDecoder(layer, PoseHeads(d, cfg.refine_hidden, j, num_frames), cfg.pose_dec_layers,
                       pose_position(cfg), cfg.detach_references)

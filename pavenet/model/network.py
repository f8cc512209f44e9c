"""PAVE-Net assembled: backbone, spatial encoder, query init, pose decoder, joint decoder."""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ModelConfig
from .backbone import Backbone, ChannelMapper
from .encoder import EncoderLayer, FrameMemory, SpatialEncoder, flatten_levels
from .heads import PoseHeads
from .heatmap import HeatmapHead
from .joint_decoder import JointDecoder, JointDecoderLayer, JointHeads
from .pose_decoder import PoseDecoder, PoseDecoderLayer, PosePosition
from .position_encoding import PositionEmbeddingSine
from .query_init import QueryInit

PER_QUERY_KEYS = ("keypoints", "visibility", "sigma")


class PAVENet(nn.Module):
    """End-to-end multi-person pose estimation over clips of T frames.

    ``forward(frames, mask)`` takes ``frames`` (B, T, 3, H, W) and ``mask`` (B, H, W) bool,
    True on padding, and returns a dict (Q queries, J joints, K = num_kept, S key-frame
    tokens, E embedding size; coordinates (x, y) in [0, 1] of the UNPADDED image):

    - ``logits`` (B, Q): person logit per query (sigmoid = score), last pose-decoder layer.
    - ``keypoints`` (B, Q, T, J, 2): last pose-decoder layer, with the K queries of
      ``kept_index`` replaced by the last joint-decoder layer.
    - ``visibility`` (B, Q, T, J): per-frame per-joint presence logit (same replacement).
    - ``sigma`` (B, Q, T, J, 2): RLE scale in (0, 1) (same replacement).
    - ``embedding`` (B, Q, E): L2-normalised query embedding.
    - ``kept_index`` (B, K) int64: the top-K queries by last-layer logit, refined by the
      joint decoder (the same rule in training and inference).
    - ``aux_outputs``: list of dicts, every pose-decoder layer (``logits``, ``keypoints``,
      ``visibility``, ``sigma``; the last one included), then every joint-decoder layer but
      the last (``keypoints``, ``visibility``, ``sigma`` scattered into the last pose-decoder
      outputs, and ``query_mask`` (B, Q) bool marking the kept queries).
    - ``enc_outputs``: key-frame proposals, ``logits`` (B, S), ``keypoints`` and ``sigma``
      (B, S, T, J, 2) (the key-frame proposal repeated over T), ``token_mask`` (B, S) bool
      True on real tokens.
    - ``heatmap`` (training only, when built with a heatmap head): ``logits`` (B, T, J, H, W)
      per-joint heatmap logits on the finest encoder level, ``valid_ratios`` (B, T, 2) and
      ``padding`` (B, T, H, W) bool (see :class:`pavenet.model.heatmap.HeatmapHead`).

    The key frame is index T // 2. ``encode`` and ``decode`` split the work so that video
    inference can encode each frame once and decode many overlapping clips.
    """

    def __init__(self, backbone: nn.Module, mapper: ChannelMapper, encoder: SpatialEncoder,
                 query_init: QueryInit, pose_decoder: PoseDecoder, joint_decoder: JointDecoder,
                 d_model: int, num_levels: int, num_frames: int, num_kept: int,
                 embed_dim: int, heatmap_head: Optional[HeatmapHead] = None) -> None:
        super().__init__()
        self.backbone, self.mapper, self.encoder = backbone, mapper, encoder
        self.position = PositionEmbeddingSine(d_model // 2)
        self.level_embed = nn.Parameter(torch.empty(num_levels, d_model))
        nn.init.normal_(self.level_embed)
        self.query_init, self.pose_decoder, self.joint_decoder = query_init, pose_decoder, joint_decoder
        self.embed = nn.Linear(d_model, embed_dim)
        self.num_frames, self.num_kept = num_frames, num_kept
        self.key_frame = num_frames // 2
        self.heatmap_head = heatmap_head

    def encode(self, images: Tensor, mask: Tensor) -> FrameMemory:
        """Backbone, channel mapper and spatial encoder of N independent frames.

        ``images`` (N, 3, H, W), ``mask`` (N, H, W) True on padding.
        """
        maps, masks = self.mapper(self.backbone(images), mask)
        pos = [self.position(m).to(x.dtype) for x, m in zip(maps, masks)]
        tokens, pos_flat, _, layout = flatten_levels(maps, masks, pos, self.level_embed)
        layout.memory = self.encoder(tokens, pos_flat, layout)
        return layout

    def decode(self, memory: FrameMemory, batch: int) -> dict[str, Any]:
        """Decode ``batch`` clips from the memory of their B*T frames in clip order."""
        t = self.num_frames
        if memory.memory.shape[0] != batch * t:
            raise ValueError(f"decode: {memory.memory.shape[0]} frames for {batch} clips "
                             f"of {t} frames")
        key = torch.arange(batch, device=memory.memory.device) * t + self.key_frame
        init = self.query_init(memory.memory[key], memory.padding_mask[key], memory.shapes,
                               memory.valid_ratios[key])
        reference = init.reference[:, :, None].expand(-1, -1, t, -1, -1)
        pose_outs, person = self.pose_decoder(init.tgt, init.pos, reference, memory)
        last = pose_outs[-1]
        kept = last["logits"].detach().topk(self.num_kept, dim=1).indices
        joint_outs = self.joint_decoder(_gather(person, kept), _gather(last["keypoints"], kept),
                                        memory)
        scattered = [_scatter_outputs(last, out, kept) for out in joint_outs]
        outputs: dict[str, Any] = {"logits": last["logits"], **scattered[-1]}
        del outputs["query_mask"]
        outputs["embedding"] = F.normalize(self.embed(person), dim=-1)
        outputs["kept_index"] = kept
        outputs["aux_outputs"] = [*pose_outs, *scattered[:-1]]
        outputs["enc_outputs"] = _expand_proposals(init.proposals, t)
        return outputs

    def forward(self, frames: Tensor, mask: Tensor) -> dict[str, Any]:
        """``frames`` (B, T, 3, H, W), ``mask`` (B, H, W) True on padding; see the class doc."""
        b, t = frames.shape[:2]
        if t != self.num_frames:
            raise ValueError(f"the model was built for {self.num_frames} frames, got {t}")
        frame_mask = mask[:, None].expand(-1, t, -1, -1).flatten(0, 1)
        memory = self.encode(frames.flatten(0, 1), frame_mask)
        outputs = self.decode(memory, b)
        if self.heatmap_head is not None and self.training:
            outputs["heatmap"] = self.heatmap_head(memory, b)
        return outputs


def _gather(x: Tensor, index: Tensor) -> Tensor:
    """Rows ``index`` (B, K) of ``x`` (B, Q, ...) -> (B, K, ...)."""
    view = index.view(*index.shape, *([1] * (x.dim() - 2)))
    return torch.gather(x, 1, view.expand(-1, -1, *x.shape[2:]))


def _scatter_outputs(base: dict[str, Tensor], joint: dict[str, Tensor],
                     index: Tensor) -> dict[str, Tensor]:
    """Put the K joint-decoder rows into copies of the (B, Q, ...) pose-decoder outputs (in the
    wider of the two dtypes: under autocast one may be bfloat16 and the other float32)."""
    out = {}
    for key in PER_QUERY_KEYS:
        dtype = torch.promote_types(base[key].dtype, joint[key].dtype)
        src = joint[key].to(dtype)
        view = index.view(*index.shape, *([1] * (src.dim() - 2))).expand_as(src)
        out[key] = base[key].to(dtype).scatter(1, view, src)
    query_mask = torch.zeros_like(base["logits"], dtype=torch.bool)
    out["query_mask"] = query_mask.scatter(1, index, True)
    return out


def _expand_proposals(proposals: dict[str, Tensor], num_frames: int) -> dict[str, Tensor]:
    """Repeat the key-frame proposal keypoints and sigma over the T frames."""
    out = dict(proposals)
    for key in ("keypoints", "sigma"):
        out[key] = proposals[key][:, :, None].expand(-1, -1, num_frames, -1, -1)
    return out


def pose_position(cfg: ModelConfig) -> Optional[PosePosition]:
    """The pose-derived query position of ``model.query_pos``, or None for the learned one."""
    if cfg.query_pos not in ("learned", "pose"):
        raise ValueError(f"model.query_pos must be 'learned' or 'pose', got {cfg.query_pos!r}")
    return PosePosition(cfg.hidden_dim) if cfg.query_pos == "pose" else None


def build_model(cfg: ModelConfig) -> PAVENet:
    """Build PAVE-Net from a :class:`ModelConfig` (no weights are downloaded)."""
    if cfg.arch == "vepe":
        if cfg.heatmap_head:
            raise ValueError("model.heatmap_head is implemented for PAVE-Net, not VEPE")
        from pavenet.model.vepe.network import build_vepe
        return build_vepe(cfg)
    if cfg.arch != "pavenet":
        raise ValueError(f"build_model builds model.arch 'pavenet', not '{cfg.arch}'")
    bcfg = cfg.backbone
    backbone = Backbone(bcfg.name, bcfg.out_indices, bcfg.frozen_stages, bcfg.frozen_bn,
                        bcfg.pretrained_path)
    levels = len(backbone.channels) + bcfg.extra_levels
    if levels != cfg.num_levels:
        raise ValueError(f"model.num_levels={cfg.num_levels} but the backbone gives {levels} "
                         f"levels ({len(backbone.channels)} out_indices + {bcfg.extra_levels} extra)")
    if len(backbone.channels) + bcfg.extra_levels < 3:
        raise ValueError("the backbone must give at least 3 levels")
    d, heads, t, j = cfg.hidden_dim, cfg.num_heads, cfg.num_frames, cfg.num_joints
    for key in ("num_frames", "num_queries", "pose_dec_layers", "joint_dec_layers"):
        if getattr(cfg, key) < 1:
            raise ValueError(f"model.{key} must be >= 1, got {getattr(cfg, key)}")
    mapper = ChannelMapper(backbone.channels, d, bcfg.extra_levels)
    enc_layer = EncoderLayer(d, heads, levels, cfg.enc_points, cfg.ffn_dim, cfg.dropout)
    pose_layer = PoseDecoderLayer(d, heads, levels, j, t, cfg.ffn_dim, cfg.dropout)
    joint_layer = JointDecoderLayer(d, heads, levels, cfg.joint_dec_points, t, cfg.ffn_dim,
                                    cfg.dropout)
    return PAVENet(
        backbone=backbone, mapper=mapper,
        encoder=SpatialEncoder(enc_layer, cfg.enc_layers),
        query_init=QueryInit(d, cfg.num_queries, j),
        pose_decoder=PoseDecoder(pose_layer, PoseHeads(d, cfg.refine_hidden, j, t),
                                 cfg.pose_dec_layers, pose_position(cfg)),
        joint_decoder=JointDecoder(joint_layer, JointHeads(d, t), d, j, cfg.joint_dec_layers),
        d_model=d, num_levels=levels, num_frames=t,
        num_kept=min(cfg.num_kept, cfg.num_queries), embed_dim=cfg.embed_dim,
        heatmap_head=HeatmapHead(d, j) if cfg.heatmap_head else None)

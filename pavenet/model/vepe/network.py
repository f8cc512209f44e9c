"""VEPE assembled on the spatial stage it shares with PAVE-Net (DESIGN.md section 3).

Spatial stage (per frame, :class:`pavenet.model.spatial.SpatialStage`): backbone, channel
mapper, sine position + level embedding, deformable spatial encoder, two-stage query
initialisation, and PAVE-Net's pose decoder on one frame, run on EVERY frame of the clip. Temporal stage:
Pose Query Selection (score threshold, a keep mask), instance embeddings linking each
key-frame query to one query per frame, STPE (key queries read the frames' queries through the
instance mask), STDME (memory fused across frames) and STPD (3-layer decoder refining every
frame's pose). Each temporal component has a switch in ``model.vepe`` (the ablation rows).
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...config import ModelConfig
from ..clip_outputs import PER_QUERY_KEYS, expand_proposals
from ..encoder import FrameMemory
from ..pose_decoder import PoseDecoder
from ..spatial import SpatialParts, SpatialStage, build_pose_decoder, build_spatial_parts
from .query_selection import (associate, embedding_similarity, gather_linked, instance_mask, pose_similarity,
                              select_queries)
from .stdme import STDME, STDMELayer, memory_position
from .stpd import build_stpd
from .stpe import STPE, STPELayer


class VEPENet(SpatialStage):
    """VEPE with PAVE-Net's output contract (docs/interfaces.md "Model output").

    ``forward(frames, mask)`` = ``decode(encode_clips(frames, mask), B)``; ``encode`` and
    ``num_frames`` come from :class:`SpatialStage`; ``decode(memory, batch)`` returns (Q queries = the key frame's spatial queries):

    - ``logits`` (B, Q), ``keypoints``/``sigma`` (B, Q, T, J, 2), ``visibility`` (B, Q, T, J):
      the last STPD layer (every frame's pose of the person, refined from the pose of the
      query linked to it in that frame).
    - ``embedding`` (B, Q, E): the key-frame instance embeddings (L2-normalised), which the
      Instance Consistency Loss trains (``loss.weight_consistency``).
    - ``kept_index`` (B, K): the top-K queries by logit. VEPE has no joint decoder, so their
      outputs are the STPD's and ``aux_outputs`` holds no joint-decoder entries.
    - ``aux_outputs``: every spatial pose-decoder layer (logits of the key frame; frame t's
      pose etc. of the linked query), then every STPD layer but the last (the top level).
    - ``enc_outputs``: the key frame's encoder proposals expanded over T, as PAVE-Net's.

    ``pose_decoder`` is the spatial (one-frame) decoder; ``embed`` gives instance embeddings.
    """

    def __init__(self, spatial: SpatialParts, pose_decoder: PoseDecoder, stpd: PoseDecoder,
                 stpe: Optional[STPE], stdme: Optional[STDME], use_instances: bool,
                 score_threshold: float, d_model: int, num_frames: int, num_kept: int,
                 embed_dim: int) -> None:
        super().__init__(spatial, d_model, num_frames, num_kept)
        self.pose_decoder = pose_decoder
        self.embed = nn.Linear(d_model, embed_dim)
        self.stpd, self.stpe, self.stdme = stpd, stpe, stdme
        self.use_instances, self.score_threshold = use_instances, score_threshold

    def spatial(self, memory: FrameMemory, batch: int) -> dict[str, Any]:
        """Query init and the one-frame pose decoder on every frame; selection and links."""
        t, key = self.num_frames, self.key_frame
        init = self.query_init(memory.memory, memory.padding_mask, memory.shapes,
                               memory.valid_ratios)
        outs, feats = self.pose_decoder(init.tgt, init.pos, init.reference[:, :, None], memory)
        q, d = feats.shape[1:]
        last = outs[-1]
        keep = select_queries(last["logits"].view(batch, t, q), self.score_threshold)
        embedding = F.normalize(self.embed(feats), dim=-1).view(batch, t, q, -1)
        if self.use_instances:
            similarity = embedding_similarity(embedding, key)
        else:
            similarity = pose_similarity(last["keypoints"].view(batch, t, q, -1, 2), key)
        link = associate(similarity, keep, key)
        rows = torch.arange(batch, device=feats.device) * t + key
        return {
            "aux": [_link_outputs(out, link, batch, t, key) for out in outs],
            "queries": feats.view(batch, t, q, d), "pos": init.pos.view(batch, t, q, d),
            "keep": keep, "link": link, "embedding": embedding[:, key],
            "proposals": {k: v[rows] for k, v in init.proposals.items()},
        }

    def decode(self, memory: FrameMemory, batch: int) -> dict[str, Any]:
        """Decode ``batch`` clips from the memory of their B*T frames in clip order."""
        self.check_memory(memory, batch)
        t, key = self.num_frames, self.key_frame
        sp = self.spatial(memory, batch)
        tgt, pos = sp["queries"][:, key], sp["pos"][:, key]
        if self.stpe is not None:
            allowed = instance_mask(sp["link"], sp["keep"], key, self.use_instances)
            tgt = self.stpe(tgt, pos, sp["keep"], sp["queries"], sp["pos"], allowed, key)
        if self.stdme is not None:
            pos_tokens = memory_position(memory, self.position, self.level_embed)
            memory = self.stdme(memory, pos_tokens, batch)
        reference = sp["aux"][-1]["keypoints"].detach()
        outs, _ = self.stpd(tgt, pos, reference, memory)
        top = outs[-1]
        outputs: dict[str, Any] = {k: top[k] for k in ("logits", *PER_QUERY_KEYS)}
        outputs["embedding"] = sp["embedding"]
        outputs["kept_index"] = top["logits"].detach().topk(self.num_kept, dim=1).indices
        outputs["aux_outputs"] = [*sp["aux"], *outs[:-1]]
        outputs["enc_outputs"] = expand_proposals(sp["proposals"], t)
        return outputs

    def forward(self, frames: Tensor, mask: Tensor, targets: Optional[list[dict]] = None) -> dict[str, Any]:
        """``frames`` (B, T, 3, H, W), ``mask`` (B, H, W) True on padding; see the class doc.
        ``targets`` are not read (VEPE has no denoising queries)."""
        return self.decode(self.encode_clips(frames, mask), frames.shape[0])


def _link_outputs(out: dict[str, Tensor], link: Tensor, batch: int, num_frames: int,
                  key: int) -> dict[str, Tensor]:
    """One-frame decoder outputs of B*T frames -> per key query over T via the links."""
    q = out["logits"].shape[1]
    linked = {"logits": out["logits"].view(batch, num_frames, q)[:, key]}
    for name in PER_QUERY_KEYS:
        value = out[name][:, :, 0]  # drop the one-frame axis: (B*T, Q, ...)
        linked[name] = gather_linked(value.view(batch, num_frames, *value.shape[1:]), link)
    return linked


def build_vepe(cfg: ModelConfig) -> VEPENet:
    """Build VEPE from a :class:`ModelConfig` with ``arch: vepe`` (no weights are downloaded);
    ``joint_dec_*`` settings are not used."""
    if cfg.arch != "vepe":
        raise ValueError(f"build_vepe builds model.arch 'vepe', not '{cfg.arch}'")
    if cfg.heatmap_head or cfg.dn_groups:
        raise ValueError("model.heatmap_head and model.dn_groups are implemented for PAVE-Net, not VEPE")
    v = cfg.vepe
    if not 0.0 <= v.score_threshold <= 1.0:
        raise ValueError(f"model.vepe.score_threshold must be in [0, 1], got {v.score_threshold}")
    for key in ("stpe_layers", "stdme_layers", "stdme_points", "stpd_layers"):
        if getattr(v, key) < 1:
            raise ValueError(f"model.vepe.{key} must be >= 1, got {getattr(v, key)}")
    spatial = build_spatial_parts(cfg)
    d, heads, t, levels = cfg.hidden_dim, cfg.num_heads, cfg.num_frames, spatial.num_levels
    stpe = (STPE(STPELayer(d, heads, cfg.ffn_dim, cfg.dropout), v.stpe_layers, d, t)
            if v.stpe else None)
    stdme = (STDME(STDMELayer(d, heads, levels, v.stdme_points, t, cfg.ffn_dim, cfg.dropout),
                   v.stdme_layers, d, t) if v.stdme else None)
    return VEPENet(spatial, build_pose_decoder(cfg, levels, 1), build_stpd(cfg, levels, v.stpd),
                   stpe, stdme, v.icm, v.score_threshold, d, t, min(cfg.num_kept, cfg.num_queries),
                   cfg.embed_dim)

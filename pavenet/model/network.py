"""PAVE-Net assembled: backbone, spatial encoder, query init, pose decoder, joint decoder."""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ModelConfig
from .clip_outputs import PER_QUERY_KEYS, expand_proposals
from .denoising import DenoisingQueries, attention_mask, make_denoising_queries
from .encoder import FrameMemory
from .heatmap import HeatmapHead
from .fine_refine import FINE_CHANNELS, FineRefine
from .joint_decoder import JointDecoder, JointDecoderLayer, JointHeads
from .joint_selection import MatchedQuerySelector
from .pose_decoder import PoseDecoder
from .spatial import SpatialParts, SpatialStage, build_pose_decoder, build_spatial_parts


class PAVENet(SpatialStage):
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
    - ``kept_index`` (B, K) int64: the queries refined by the joint decoder: the top-K by
      last-layer logit, or in training with ``model.joint_train: matched`` every query matched
      to a person, then the best-scoring others (K = the most matches in the batch).
    - ``aux_outputs``: list of dicts, every pose-decoder layer (``logits``, ``keypoints``,
      ``visibility``, ``sigma``; the last one included), then every joint-decoder layer but
      the last (``keypoints``, ``visibility``, ``sigma`` scattered into the last pose-decoder
      outputs, and ``query_mask`` (B, Q) bool marking the kept queries).
    - ``enc_outputs``: key-frame proposals, ``logits`` (B, S), ``keypoints`` and ``sigma``
      (B, S, T, J, 2) (the key-frame proposal repeated over T), ``token_mask`` (B, S) bool
      True on real tokens. With ``model.proposal_frames: clip`` the key-frame tokens' features
      also carry the other frames' (:mod:`pavenet.model.query_init`).
    - ``heatmap`` (training only, when built with a heatmap head): ``logits`` (B, T, J, H, W)
      per-joint heatmap logits on the finest encoder level, ``valid_ratios`` (B, T, 2) and
      ``padding`` (B, T, H, W) bool (see :class:`pavenet.model.heatmap.HeatmapHead`).
    - ``dn_outputs``, ``dn_track``, ``dn_valid`` (training with ``targets``, when built with
      ``dn_groups`` > 0; :mod:`pavenet.model.denoising`): for the N denoising queries, every
      pose-decoder layer's and every joint-decoder layer's outputs (as in ``aux_outputs``, all N
      refined by the joint decoder), the index (B, N) of the track each reconstructs (-1 on
      padding) and (B, N) bool, False on padding. The other outputs do not depend on them.

    ``training_only``: prefixes of the parameters used only in training (checkpoints may lack
    them or have them without the model having them; :mod:`pavenet.runtime.weights`).
    ``zero_start``: prefixes of additions that start at zero (the proposals' mixing of the other
    frames), which a checkpoint may lack.

    The key frame is index T // 2. ``encode`` and ``decode`` split the work so that video
    inference can encode each frame once and decode many overlapping clips.
    """

    training_only = ("dn_tgt", "dn_pos", "heatmap_head.")
    zero_start = ("query_init.neighbour_mix.",)

    def __init__(self, spatial: SpatialParts, pose_decoder: PoseDecoder, joint_decoder: JointDecoder,
                 d_model: int, num_frames: int, num_kept: int, embed_dim: int,
                 heatmap_head: Optional[HeatmapHead] = None, dn_groups: int = 0, dn_noise: float = 0.4,
                 joint_selector: Optional[MatchedQuerySelector] = None) -> None:
        super().__init__(spatial, d_model, num_frames, num_kept)
        self.pose_decoder, self.joint_decoder = pose_decoder, joint_decoder
        self.embed = nn.Linear(d_model, embed_dim)
        self.heatmap_head = heatmap_head
        self.dn_groups, self.dn_noise = dn_groups, dn_noise
        self.joint_selector = joint_selector
        if dn_groups:
            self.dn_tgt = nn.Parameter(torch.zeros(d_model))
            self.dn_pos = nn.Parameter(torch.zeros(d_model))
            nn.init.normal_(self.dn_tgt, std=0.02)
            nn.init.normal_(self.dn_pos, std=0.02)

    def decode(self, memory: FrameMemory, batch: int, denoising: Optional[DenoisingQueries] = None,
               targets: Optional[list[dict]] = None) -> dict[str, Any]:
        """Decode ``batch`` clips from the memory of their B*T frames in clip order (with the
        denoising queries appended to the matching ones when given). In training with a joint
        selector and ``targets``, the joint decoder refines the matched queries instead of the
        top-k (:mod:`pavenet.model.joint_selection`)."""
        self.check_memory(memory, batch)
        t = self.num_frames
        key = torch.arange(batch, device=memory.memory.device) * t + self.key_frame
        init = self.query_init(memory.memory[key], memory.padding_mask[key], memory.shapes,
                               memory.valid_ratios[key], self._other_frames(memory, batch))
        reference = init.reference[:, :, None].expand(-1, -1, t, -1, -1)
        q = reference.shape[1]
        tgt, pos, masks = init.tgt, init.pos, ()
        if denoising is not None:
            tgt, pos, reference, masks = self._append_denoising(tgt, pos, reference, denoising)
        pose_outs, person = self.pose_decoder(tgt, pos, reference, memory, *masks)
        if denoising is not None:
            pose_outs, dn_pose_outs = _split_outputs(pose_outs, q)
            person, dn_person = person[:, :q], person[:, q:]
        last = pose_outs[-1]
        kept = self._joint_queries(last, targets)
        joint_person, joint_reference = _gather(person, kept), _gather(last["keypoints"], kept)
        if denoising is not None:
            joint_person = torch.cat((joint_person, dn_person), 1)
            joint_reference = torch.cat((joint_reference, dn_pose_outs[-1]["keypoints"].to(joint_reference.dtype)), 1)
        joint_outs = self.joint_decoder(joint_person, joint_reference, memory)
        if denoising is not None:
            joint_outs, dn_joint_outs = _split_outputs(joint_outs, kept.shape[1])
        scattered = [_scatter_outputs(last, out, kept) for out in joint_outs]
        outputs: dict[str, Any] = {"logits": last["logits"], **scattered[-1]}
        del outputs["query_mask"]
        outputs["embedding"] = F.normalize(self.embed(person), dim=-1)
        outputs["kept_index"] = kept
        outputs["aux_outputs"] = [*pose_outs, *scattered[:-1]]
        outputs["enc_outputs"] = expand_proposals(init.proposals, t)
        if denoising is not None:
            outputs["dn_outputs"] = [*dn_pose_outs, *dn_joint_outs]
            outputs["dn_track"], outputs["dn_valid"] = denoising.track, denoising.valid
        return outputs

    def _other_frames(self, memory: FrameMemory, batch: int) -> Optional[Tensor]:
        """(B, T-1, S, D) memory of each clip's non-key frames when the proposals use them
        (``model.proposal_frames: clip``), else None."""
        if self.query_init.neighbour_mix is None:
            return None
        t, key = self.num_frames, self.key_frame
        clips = memory.memory.view(batch, t, *memory.memory.shape[1:])
        return torch.cat((clips[:, :key], clips[:, key + 1:]), 1)

    def _joint_queries(self, last: dict[str, Tensor], targets: Optional[list[dict]]) -> Tensor:
        """(B, K) queries for the joint decoder: the top-k by score, or in training with a
        selector and targets, the matched ones."""
        if self.training and self.joint_selector is not None and targets is not None:
            return self.joint_selector(last, targets)
        return last["logits"].detach().topk(self.num_kept, dim=1).indices

    def _append_denoising(self, tgt: Tensor, pos: Tensor, reference: Tensor,
                          denoising: DenoisingQueries) -> tuple[Tensor, Tensor, Tensor, tuple[Tensor, Tensor]]:
        """The matching queries' (tgt, pos, reference) with the denoising queries appended, and
        the pose decoder's (self-attention mask, key padding mask)."""
        b, n = denoising.valid.shape
        q = tgt.shape[1]
        tgt = torch.cat((tgt, self.dn_tgt.to(tgt.dtype).expand(b, n, -1)), 1)
        pos = torch.cat((pos, self.dn_pos.to(pos.dtype).expand(b, n, -1)), 1)
        reference = torch.cat((reference, denoising.reference.to(reference.dtype)), 1)
        mask = attention_mask(q, denoising.groups, n // denoising.groups, tgt.device)
        padding = torch.cat((torch.zeros(b, q, dtype=torch.bool, device=tgt.device), ~denoising.valid), 1)
        return tgt, pos, reference, (mask, padding)

    def forward(self, frames: Tensor, mask: Tensor, targets: Optional[list[dict]] = None) -> dict[str, Any]:
        """``frames`` (B, T, 3, H, W), ``mask`` (B, H, W) True on padding; see the class doc.
        ``targets`` (the criterion's) are read only to build denoising queries when training."""
        b = frames.shape[0]
        memory = self.encode_clips(frames, mask)
        denoising = None
        if self.training and self.dn_groups and targets is not None:
            denoising = make_denoising_queries(targets, self.dn_groups, self.dn_noise, frames.device)
            denoising = denoising if denoising.valid.numel() else None
        extras: dict[str, Any] = {}
        if denoising is not None:
            extras["denoising"] = denoising
        if self.training and self.joint_selector is not None:
            extras["targets"] = targets
        outputs = self.decode(memory, b, **extras)
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


def _split_outputs(outputs: list[dict[str, Tensor]], count: int) -> tuple[list[dict], list[dict]]:
    """Each dict's per-query tensors (B, Q + N, ...) cut into the first ``count`` and the rest."""
    return ([{k: v[:, :count] for k, v in out.items()} for out in outputs],
            [{k: v[:, count:] for k, v in out.items()} for out in outputs])


def build_pavenet(cfg: ModelConfig, joint_selector: Optional[MatchedQuerySelector] = None) -> PAVENet:
    """Build PAVE-Net from a :class:`ModelConfig` with ``arch: pavenet`` (no weights are
    downloaded); the ``joint_selector`` (training with ``model.joint_train: matched``) comes from
    :func:`pavenet.model.build`."""
    if cfg.arch != "pavenet":
        raise ValueError(f"build_pavenet builds model.arch 'pavenet', not '{cfg.arch}'")
    if cfg.dn_groups < 0 or cfg.dn_noise < 0:
        raise ValueError(f"model.dn_groups and model.dn_noise must be >= 0, got {cfg.dn_groups}, {cfg.dn_noise}")
    spatial = build_spatial_parts(cfg)
    d, t, levels = cfg.hidden_dim, cfg.num_frames, spatial.num_levels
    joint_layer = JointDecoderLayer(d, cfg.num_heads, levels, cfg.joint_dec_points, t, cfg.ffn_dim,
                                    cfg.dropout, cfg.value_mask, cfg.frame_weights)
    joint_heads = JointHeads(d, t, per_frame=cfg.joint_refine == "per_frame")
    fine = FineRefine(d, FINE_CHANNELS, cfg.fine_radius, d, cfg.fine_passes) if cfg.fine_refine else None
    return PAVENet(
        spatial, build_pose_decoder(cfg, levels, t),
        JointDecoder(joint_layer, joint_heads, d, cfg.num_joints, cfg.joint_dec_layers,
                     person_query=cfg.joint_query == "person", detach=cfg.detach_references,
                     fine=fine),
        d_model=d, num_frames=t, num_kept=min(cfg.num_kept, cfg.num_queries), embed_dim=cfg.embed_dim,
        heatmap_head=HeatmapHead(d, cfg.num_joints) if cfg.heatmap_head else None,
        dn_groups=cfg.dn_groups, dn_noise=cfg.dn_noise, joint_selector=joint_selector)

"""Hungarian matching between pose queries and the ground-truth tracks of a clip.

A query is one person through the whole clip, so it is matched to a TRACK (a person with one
track id over the clip's T frames), not to a single-frame pose. The cost of query ``q`` for track
``g`` is::

    cost_class * focal(q)  +  cost_keypoint * L1(q, g)  +  cost_oks * (1 - OKS(q, g))

* ``focal(q)``: the focal-loss difference between calling ``q`` a person and calling it
  background (Deformable-DETR's classification cost), from ``sigmoid(logit)``.
* ``L1(q, g)``: mean absolute coordinate error over the annotated joints of the supervised
  frames where ``g`` is present (each joint counts its x and y error, the sum is divided by
  twice the number of joints, as PETR normalises its keypoint cost). 0 if ``g`` has none.
* ``OKS(q, g)``: OKS in each supervised frame where ``g`` has an annotated joint, averaged over
  those frames. The cost term is 0 if there is no such frame.

Supervised frames are the labelled frames of the clip (``mode="clip"``), or only the key frame
(``mode="keyframe"``, the published behaviour). Only *active* tracks - present in at least one
supervised frame - take part; the returned target indices index the clip's full track list.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional, Sequence

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from pavenet.config import MatcherConfig
from pavenet.data.joints import RELEASED_OKS_SIGMAS
from pavenet.model.oks import oks_sigmas, pairwise_oks

MatchMode = Literal["clip", "keyframe"]
Indices = list[tuple[Tensor, Tensor]]


@dataclass
class Supervision:
    """Which parts of one clip's targets carry a loss.

    Attributes:
        frames: (T,) bool, supervised frames (labelled; only the key frame in keyframe mode).
        track_frames: (G, T) bool, supervised frames in which the track is present.
        joints: (G, T, J) bool, annotated joints of ``track_frames``.
        active: (G,) bool, tracks present in at least one supervised frame.
    """

    frames: Tensor
    track_frames: Tensor
    joints: Tensor
    active: Tensor


def supervision(target: dict, keyframe_only: bool) -> Supervision:
    """The supervision masks of one clip (see :class:`Supervision`)."""
    frames = target["labeled"].bool().clone()
    if keyframe_only:
        key = torch.zeros_like(frames)
        key[int(target["key_frame"])] = True
        frames = frames & key
    track_frames = target["present"].bool() & frames[None]
    joints = target["visible"].bool() & track_frames[..., None]
    return Supervision(frames, track_frames, joints, track_frames.any(-1))


def focal_class_cost(logits: Tensor, alpha: float, gamma: float) -> Tensor:
    """(Q,) cost of labelling each query a person rather than background."""
    prob = logits.sigmoid()
    eps = 1e-8
    pos = alpha * (1 - prob).pow(gamma) * -(prob + eps).log()
    neg = (1 - alpha) * prob.pow(gamma) * -(1 - prob + eps).log()
    return pos - neg


def keypoint_l1_cost(pred: Tensor, gt: Tensor, joints: Tensor) -> Tensor:
    """(Q, G) mean absolute coordinate error over each track's supervised joints.

    Args:
        pred: (Q, T, J, 2); gt: (G, T, J, 2); joints: (G, T, J) bool.
    """
    diff = (pred[:, None] - gt[None]).abs().sum(-1)
    weight = joints.to(diff.dtype)
    total = (diff * weight[None]).flatten(2).sum(-1)
    return total / (2.0 * weight.flatten(1).sum(-1)).clamp(min=1.0)[None]


def oks_cost(pred: Tensor, gt: Tensor, joints: Tensor, areas: Tensor, sigmas: Tensor) -> Tensor:
    """(Q, G) one minus the OKS averaged over each track's frames with annotated joints."""
    sim = pairwise_oks(pred, gt, joints, areas, sigmas)
    frames = joints.any(-1).to(sim.dtype)
    mean = (sim * frames[None]).sum(-1) / frames.sum(-1).clamp(min=1.0)[None]
    return (1.0 - mean) * (frames.sum(-1) > 0).to(sim.dtype)[None]


class HungarianMatcher(nn.Module):
    """One-to-one assignment of queries to ground-truth tracks (see the module docstring)."""

    def __init__(
        self,
        cost_class: float = 2.0,
        cost_keypoint: float = 70.0,
        cost_oks: float = 7.0,
        mode: MatchMode = "clip",
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        sigmas: Optional[Sequence[float]] = None,
    ) -> None:
        super().__init__()
        if mode not in ("clip", "keyframe"):
            raise ValueError(f"matcher mode must be 'clip' or 'keyframe', got {mode!r}")
        self.cost_class = cost_class
        self.cost_keypoint = cost_keypoint
        self.cost_oks = cost_oks
        self.mode = mode
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.sigmas = None if sigmas is None else torch.as_tensor(sigmas, dtype=torch.float64)

    def _sigmas(self, like: Tensor) -> Tensor:
        return oks_sigmas(like.device, like.dtype, self.sigmas)

    def cost_matrix(self, logits: Optional[Tensor], keypoints: Tensor, target: dict, sup: Supervision) -> Tensor:
        """(Q, G) total cost of one clip; columns of inactive tracks are included.

        Args:
            logits: (Q,) person logits, or None (no class cost).
            keypoints: (Q, T, J, 2) predicted keypoints.
            target: the clip's target dict (docs/interfaces.md).
            sup: its supervision masks.

        Only the supervised frames enter the computation (one frame in keyframe mode).
        """
        frames = sup.frames.nonzero().flatten().to(keypoints.device)
        pred = keypoints[:, frames].to(torch.promote_types(keypoints.dtype, torch.float32))
        gt = target["keypoints"].to(pred.device, pred.dtype)[:, frames]
        joints = sup.joints.to(pred.device)[:, frames]
        areas = target["areas"].to(pred.device, pred.dtype)[:, frames]
        cost = self.cost_keypoint * keypoint_l1_cost(pred, gt, joints)
        cost = cost + self.cost_oks * oks_cost(pred, gt, joints, areas, self._sigmas(pred))
        if logits is not None:
            cls = focal_class_cost(logits.to(pred.dtype), self.focal_alpha, self.focal_gamma)
            cost = cost + self.cost_class * cls[:, None]
        return cost

    @torch.no_grad()
    def forward(
        self,
        outputs: dict,
        targets: list[dict],
        query_mask: Optional[Tensor] = None,
        keyframe_only: Optional[bool] = None,
    ) -> Indices:
        """Match every clip of the batch.

        Args:
            outputs: ``keypoints`` (B, Q, T, J, 2) and optionally ``logits`` (B, Q).
            targets: B target dicts.
            query_mask: (B, Q) bool, the queries that may be matched (default: all).
            keyframe_only: overrides the mode when given (True = key frame only).

        Returns:
            B pairs ``(query_idx, target_idx)`` of int64 CPU tensors of equal length
            ``min(#valid queries, #active tracks)``, sorted by query index.
        """
        return self._match(outputs, targets, query_mask, keyframe_only, _hungarian)

    @torch.no_grad()
    def match_many(self, outputs: dict, targets: list[dict], k: int, query_mask: Optional[Tensor] = None,
                   keyframe_only: Optional[bool] = None) -> Indices:
        """One-to-many assignment: every active track takes its ``k`` cheapest queries.

        A query wanted by several tracks stays with the one it is cheapest for. A convergence
        aid for the dense encoder proposals (many positives per person); ``k=1`` is not the
        Hungarian assignment, use :meth:`forward` for that.
        """
        return self._match(outputs, targets, query_mask, keyframe_only, lambda cost: _k_cheapest(cost, k))

    def _match(self, outputs: dict, targets: list[dict], query_mask: Optional[Tensor],
               keyframe_only: Optional[bool], assign) -> Indices:
        kf = self.mode == "keyframe" if keyframe_only is None else keyframe_only
        logits = outputs.get("logits")
        indices: Indices = []
        for b, target in enumerate(targets):
            sup = supervision(target, kf)
            tracks = sup.active.nonzero().flatten().cpu()
            queries = torch.arange(outputs["keypoints"].shape[1])
            if query_mask is not None:
                queries = query_mask[b].nonzero().flatten().cpu()
            if len(tracks) == 0 or len(queries) == 0:
                empty = torch.zeros(0, dtype=torch.int64)
                indices.append((empty, empty.clone()))
                continue
            cost = self.cost_matrix(None if logits is None else logits[b], outputs["keypoints"][b], target, sup)
            cost = cost[queries.to(cost.device)][:, tracks.to(cost.device)].cpu()
            if not torch.isfinite(cost).all():
                raise FloatingPointError(f"matcher: non-finite matching cost in clip {b} of the batch")
            rows, cols = assign(cost)
            indices.append((queries[rows], tracks[cols]))
        return indices


def _hungarian(cost: Tensor) -> tuple[Tensor, Tensor]:
    rows, cols = linear_sum_assignment(cost.numpy())
    return torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)


def _k_cheapest(cost: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """(rows, cols): each column's k cheapest rows; a row chosen twice keeps its cheapest column."""
    top = cost.topk(min(k, cost.shape[0]), dim=0, largest=False).indices
    chosen = torch.full_like(cost, float("inf"))
    chosen.scatter_(0, top, cost.gather(0, top))
    best, cols = chosen.min(1)
    rows = torch.isfinite(best).nonzero().flatten()
    return rows, cols[rows]


def matcher_sigmas(cfg: MatcherConfig) -> Optional[Sequence[float]]:
    """The OKS sigmas of ``matcher.oks_sigmas`` (None: the evaluation's, the default)."""
    return RELEASED_OKS_SIGMAS.tolist() if cfg.oks_sigmas == "released" else None


def build_matcher(cfg: MatcherConfig, focal_alpha: float = 0.25, focal_gamma: float = 2.0) -> HungarianMatcher:
    """A matcher from a :class:`pavenet.config.MatcherConfig`."""
    return HungarianMatcher(cfg.cost_class, cfg.cost_keypoint, cfg.cost_oks, cfg.mode, focal_alpha, focal_gamma,
                            matcher_sigmas(cfg))

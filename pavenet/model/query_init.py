"""Two-stage query initialisation from the key frame's encoder tokens (PETR / PAVE-Net).

Every key-frame token predicts a person score and J keypoints around its grid position; the
top-Q tokens give the Q reference poses (copied to all T frames by the caller), the query
content is the detached token feature plus a learned embedding, the query position a learned
embedding.

With ``neighbours=True`` (``model.proposal_frames: clip``, pavenet's option) a token's proposal
also sees the other frames of the clip at the same position: its feature becomes
``f_key + MLP([f_key, mean_t f_t])`` over the non-key frames t, the MLP's last layer zero at
initialisation (then the published proposals). As published, a key frame that shows nobody
(a dropped, black frame; heavy blur) proposes nobody, and the decoder, which starts from the
proposals, cannot find the people its neighbours show.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import torch
from torch import Tensor, nn

from .encoder import token_centers
from .heads import MLP, focal_prior_bias, inverse_sigmoid


class QueryInitResult(NamedTuple):
    """Proposals and initial queries.

    proposals: ``logits`` (B, S), ``keypoints`` (B, S, J, 2), ``sigma`` (B, S, J, 2),
    ``token_mask`` (B, S) True on tokens that are proposals (not padding, not outside the margin). reference: (B, Q, J, 2) detached.
    tgt, pos: (B, Q, D) query content and position.
    """

    proposals: dict[str, Tensor]
    reference: Tensor
    tgt: Tensor
    pos: Tensor


class QueryInit(nn.Module):
    """Encoder proposal heads and top-Q selection.

    Args:
        d_model: D.
        num_queries: Q.
        num_joints: J.
        hidden: hidden widths of the proposal keypoint MLP.
        margin: with ``margin`` > 0, tokens whose centre lies outside (margin, 1 - margin) on
            either axis are no proposals, as in the published model: their memory (and that of
            padding tokens) is zeroed before the projection, their keypoints are 1 (a reference
            at +inf) and they are never selected. With 0, padding tokens only are excluded and
            their projected features zeroed.
        neighbours: add the other frames' features to each token's (``forward``'s ``others``).
    """

    def __init__(self, d_model: int, num_queries: int, num_joints: int,
                 hidden: Sequence[int] = (256, 256), margin: float = 0.0, neighbours: bool = False) -> None:
        super().__init__()
        if not 0.0 <= margin < 0.5:
            raise ValueError(f"model.proposal_margin must be in [0, 0.5), got {margin}")
        self.num_queries, self.num_joints, self.margin = num_queries, num_joints, margin
        self.enc_output = nn.Linear(d_model, d_model)
        self.enc_norm = nn.LayerNorm(d_model)
        self.cls = nn.Linear(d_model, 1)
        nn.init.constant_(self.cls.bias, focal_prior_bias())
        self.keypoints = MLP(d_model, list(hidden), 2 * num_joints)
        self.sigma = nn.Linear(d_model, 2 * num_joints)
        self.tgt_embed = nn.Embedding(num_queries, d_model)
        self.pos_embed = nn.Embedding(num_queries, d_model)
        self.neighbour_mix = MLP(2 * d_model, [d_model], d_model, zero_last=True) if neighbours else None

    def features(self, memory: Tensor, padding_mask: Tensor, centers: Tensor) -> tuple[Tensor, Tensor]:
        """Projected token features (B, S, D) and the (B, S) mask of tokens that are no proposals."""
        if self.margin <= 0:
            feats = self.enc_norm(self.enc_output(memory)).masked_fill(padding_mask[..., None], 0.0)
            return feats, padding_mask
        inside = ((centers > self.margin) & (centers < 1.0 - self.margin)).all(-1)
        invalid = padding_mask | ~inside
        return self.enc_norm(self.enc_output(memory.masked_fill(invalid[..., None], 0.0))), invalid

    def with_neighbours(self, feats: Tensor, invalid: Tensor, others: Tensor, padding_mask: Tensor,
                        centers: Tensor) -> Tensor:
        """``feats`` (B, S, D) plus the mixing MLP of them and the mean projected feature of
        ``others`` (B, N, S, D), the clip's other frames (same padding as the key frame);
        unchanged on tokens that are no proposals."""
        b, n, s, _ = others.shape
        flat, _ = self.features(others.flatten(0, 1), padding_mask.repeat_interleave(n, 0),
                                centers.repeat_interleave(n, 0))
        mean = flat.view(b, n, s, -1).mean(1)
        return feats + self.neighbour_mix(torch.cat((feats, mean), -1)).masked_fill(invalid[..., None], 0.0)

    def forward(self, memory: Tensor, padding_mask: Tensor, shapes: tuple[tuple[int, int], ...],
                valid_ratios: Tensor, others: Optional[Tensor] = None) -> QueryInitResult:
        """``memory`` (B, S, D) key-frame tokens, ``padding_mask`` (B, S), ``valid_ratios`` (B, L, 2);
        ``others`` (B, N, S, D): the clip's other frames, used when built with ``neighbours``."""
        b, s, _ = memory.shape
        if s < self.num_queries:
            raise ValueError(f"the key frame has {s} tokens, fewer than num_queries="
                             f"{self.num_queries}: use larger images or fewer queries")
        centers = token_centers(shapes, valid_ratios)
        feats, invalid = self.features(memory, padding_mask, centers)
        if self.neighbour_mix is not None and others is not None and others.shape[1] > 0:
            feats = self.with_neighbours(feats, invalid, others, padding_mask, centers)
        anchor = inverse_sigmoid(centers).to(feats.dtype)
        if self.margin > 0:
            anchor = anchor.masked_fill(invalid[..., None], float("inf"))
        j = self.num_joints
        keypoints = torch.sigmoid(self.keypoints(feats).view(b, s, j, 2) + anchor[:, :, None])
        proposals = {
            "logits": self.cls(feats).squeeze(-1),
            "keypoints": keypoints,
            "sigma": torch.sigmoid(self.sigma(feats).view(b, s, j, 2)),
            "token_mask": ~invalid,
        }
        scores = proposals["logits"].detach().masked_fill(invalid, float("-inf"))
        index = scores.topk(self.num_queries, dim=1).indices
        reference = torch.gather(keypoints.detach(), 1, index[:, :, None, None].expand(-1, -1, j, 2))
        content = torch.gather(feats.detach(), 1, index[:, :, None].expand(-1, -1, feats.shape[-1]))
        tgt = content + self.tgt_embed.weight[None]
        pos = self.pos_embed.weight[None].expand(b, -1, -1)
        return QueryInitResult(proposals, reference, tgt, pos)

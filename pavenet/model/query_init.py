"""Two-stage query initialisation from the key frame's encoder tokens (PETR / PAVE-Net).

Every key-frame token predicts a person score and J keypoints around its grid position; the
top-Q tokens give the Q reference poses (copied to all T frames by the caller), the query
content is the detached token feature plus a learned embedding, the query position a learned
embedding.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from .encoder import token_centers
from .heads import MLP, focal_prior_bias, inverse_sigmoid


class QueryInitResult(NamedTuple):
    """Proposals and initial queries.

    proposals: ``logits`` (B, S), ``keypoints`` (B, S, J, 2), ``sigma`` (B, S, J, 2),
    ``token_mask`` (B, S) True on real tokens. reference: (B, Q, J, 2) detached.
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
    """

    def __init__(self, d_model: int, num_queries: int, num_joints: int) -> None:
        super().__init__()
        self.num_queries, self.num_joints = num_queries, num_joints
        self.enc_output = nn.Linear(d_model, d_model)
        self.enc_norm = nn.LayerNorm(d_model)
        self.cls = nn.Linear(d_model, 1)
        nn.init.constant_(self.cls.bias, focal_prior_bias())
        self.keypoints = MLP(d_model, [d_model, d_model], 2 * num_joints)
        self.sigma = nn.Linear(d_model, 2 * num_joints)
        self.tgt_embed = nn.Embedding(num_queries, d_model)
        self.pos_embed = nn.Embedding(num_queries, d_model)

    def forward(self, memory: Tensor, padding_mask: Tensor,
                shapes: tuple[tuple[int, int], ...], valid_ratios: Tensor) -> QueryInitResult:
        """``memory`` (B, S, D) key-frame tokens, ``padding_mask`` (B, S), ``valid_ratios`` (B, L, 2)."""
        b, s, _ = memory.shape
        if s < self.num_queries:
            raise ValueError(f"the key frame has {s} tokens, fewer than num_queries="
                             f"{self.num_queries}: use larger images or fewer queries")
        feats = self.enc_norm(self.enc_output(memory)).masked_fill(padding_mask[..., None], 0.0)
        centers = inverse_sigmoid(token_centers(shapes, valid_ratios)).to(feats.dtype)
        j = self.num_joints
        keypoints = torch.sigmoid(self.keypoints(feats).view(b, s, j, 2) + centers[:, :, None])
        proposals = {
            "logits": self.cls(feats).squeeze(-1),
            "keypoints": keypoints,
            "sigma": torch.sigmoid(self.sigma(feats).view(b, s, j, 2)),
            "token_mask": ~padding_mask,
        }
        scores = proposals["logits"].detach().masked_fill(padding_mask, float("-inf"))
        index = scores.topk(self.num_queries, dim=1).indices
        reference = torch.gather(keypoints.detach(), 1, index[:, :, None, None].expand(-1, -1, j, 2))
        content = torch.gather(feats.detach(), 1, index[:, :, None].expand(-1, -1, feats.shape[-1]))
        tgt = content + self.tgt_embed.weight[None]
        pos = self.pos_embed.weight[None].expand(b, -1, -1)
        return QueryInitResult(proposals, reference, tgt, pos)

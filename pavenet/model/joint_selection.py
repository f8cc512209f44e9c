"""Which queries the joint decoder refines in training.

At inference the joint decoder refines the ``num_kept`` best-scoring queries. In training,
``model.joint_train: topk`` does the same; ``matched`` (the released model) refines every query
the matcher assigns to a person on the last pose-decoder layer, so that the joint decoder learns
from every person from the first step on, however low the person scores are still.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .matcher import HungarianMatcher


class MatchedQuerySelector(nn.Module):
    """(B, K) query indices: each clip's matched queries first, then its best-scoring others,
    K = the largest number of matches in the batch (at least ``min_count``).

    The same matcher as the criterion's, on the same last-layer outputs, so the criterion's
    matching of that layer pairs exactly these queries with their tracks. Non-finite outputs
    (a diverging run) fall back to the best-scoring queries; the criterion reports them.
    """

    def __init__(self, matcher: HungarianMatcher, min_count: int = 1) -> None:
        super().__init__()
        self.matcher, self.min_count = matcher, min_count

    @torch.no_grad()
    def forward(self, outputs: dict[str, Tensor], targets: list[dict]) -> Tensor:
        logits = outputs["logits"].detach()
        order = logits.argsort(dim=1, descending=True)
        try:
            matched = [q.to(logits.device) for q, _ in self.matcher(outputs, targets)]
        except FloatingPointError:
            return order[:, :self.min_count]
        k = min(max(self.min_count, *(len(q) for q in matched)), logits.shape[1])
        rows = []
        for b, q in enumerate(matched):
            rest = order[b][~torch.isin(order[b], q)]
            rows.append(torch.cat([q, rest[:k - len(q)]]))
        return torch.stack(rows)

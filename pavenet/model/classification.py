"""Element-wise classification losses of the person score: focal (RetinaNet) and varifocal."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, alpha: float, gamma: float) -> Tensor:
    """Element-wise sigmoid focal loss (RetinaNet)."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t).pow(gamma)
    return loss * (alpha * targets + (1 - alpha) * (1 - targets))


def varifocal_loss(logits: Tensor, quality: Tensor, positive: Tensor, alpha: float, gamma: float) -> Tensor:
    """Element-wise varifocal loss (VarifocalNet): BCE towards ``quality`` on positives, weighted
    by that quality; down-weighted focal BCE towards 0 (``alpha * p ** gamma``) on negatives."""
    prob = logits.sigmoid().detach()
    target = torch.where(positive, quality, torch.zeros_like(quality))
    weight = torch.where(positive, quality, alpha * prob.pow(gamma))
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none") * weight

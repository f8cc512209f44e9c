"""Auxiliary keypoint heatmaps on the finest encoder level (a training-only convergence aid).

PETR supervises a per-joint heatmap predicted from the encoder memory next to the set losses:
every token of the finest level gets a dense target, so the encoder learns joint-specific
features long before the sparse set losses alone would teach them. The head is used in training
only; inference outputs and exported graphs do not change.

Targets follow CenterNet: per frame and joint, a Gaussian of ``sigma`` cells around the cell
that holds each annotated joint (value exactly 1 there), the maximum over people; the loss is
the penalty-reduced focal loss (alpha 2, beta 4) summed over the unpadded cells of the labelled
frames and divided by the number of annotated joints. Every person in a frame is assumed to be
annotated (true for the synthetic data): unannotated people would count as background.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .heads import MLP, focal_prior_bias


class HeatmapHead(nn.Module):
    """Joint heatmap logits from the finest-level tokens of the encoder memory.

    ``forward(memory, batch)`` takes a :class:`~pavenet.model.encoder.FrameMemory` of
    ``batch`` clips (B*T frames in clip order) and returns ``logits`` (B, T, J, H, W),
    ``valid_ratios`` (B, T, 2), the unpadded fraction (x, y) of the map, and ``padding``
    (B, T, H, W) bool, True on padding cells (the memory's own mask of that level).
    """

    def __init__(self, d_model: int, num_joints: int) -> None:
        super().__init__()
        self.mlp = MLP(d_model, [d_model], num_joints)
        nn.init.constant_(self.mlp.layers[-1].bias, focal_prior_bias(0.1))

    def forward(self, memory, batch: int) -> dict[str, Tensor]:
        h, w = memory.shapes[0]
        tokens = memory.memory[:, : h * w]
        logits = self.mlp(tokens).transpose(1, 2).unflatten(-1, (h, w))
        return {"logits": logits.unflatten(0, (batch, -1)),
                "valid_ratios": memory.valid_ratios[:, 0].unflatten(0, (batch, -1)),
                "padding": memory.padding_mask[:, : h * w].unflatten(1, (h, w)).unflatten(0, (batch, -1))}


def heatmap_targets(keypoints: Tensor, joints: Tensor, valid_ratios: Tensor,
                    shape: tuple[int, int], sigma: float) -> Tensor:
    """Gaussian targets (T, J, H, W) of one clip.

    Args:
        keypoints: (G, T, J, 2) normalised (x, y) in the unpadded image.
        joints: (G, T, J) bool, the joints to draw.
        valid_ratios: (T, 2) unpadded fraction (x, y) of the map.
        shape: (H, W) of the map.
        sigma: Gaussian standard deviation in cells.
    """
    h, w = shape
    t, j = keypoints.shape[1:3]
    out = keypoints.new_zeros(t, j, h, w)
    if keypoints.shape[0] == 0:
        return out
    size = keypoints.new_tensor([w, h])
    cells = torch.floor(keypoints * valid_ratios[None, :, None] * size)
    inside = joints & (cells >= 0).all(-1) & (cells < size).all(-1)
    ys = torch.arange(h, device=keypoints.device, dtype=keypoints.dtype)
    xs = torch.arange(w, device=keypoints.device, dtype=keypoints.dtype)
    dx = (xs - cells[..., 0:1]).pow(2)
    dy = (ys - cells[..., 1:2]).pow(2)
    gauss = torch.exp(-(dy[..., :, None] + dx[..., None, :]) / (2.0 * sigma ** 2))
    gauss = gauss * inside[..., None, None].to(gauss.dtype)
    return torch.maximum(out, gauss.amax(0))


def centernet_focal_loss(logits: Tensor, target: Tensor, weight: Tensor) -> Tensor:
    """Summed penalty-reduced focal loss (alpha 2, beta 4) over the cells where ``weight`` is 1."""
    logits, target = logits.float(), target.float()
    prob = logits.sigmoid()
    pos = target.eq(1.0).to(prob.dtype)
    pos_loss = -F.logsigmoid(logits) * (1.0 - prob).pow(2) * pos
    neg_loss = -F.logsigmoid(-logits) * prob.pow(2) * (1.0 - target).pow(4) * (1.0 - pos)
    return ((pos_loss + neg_loss) * weight).sum()

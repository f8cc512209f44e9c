"""Object keypoint similarity (OKS) between keypoint sets, shared by the matcher and the criterion.

COCO's definition: for each annotated joint ``j`` with distance ``d_j`` between prediction and
ground truth, ``k_j = exp(-d_j^2 / (2 * area * (2 * sigma_j)^2))``; OKS is the mean of ``k_j``
over the annotated joints. Coordinates and ``area`` are in the same (normalised) units, so the
result does not depend on the image size.
"""
from __future__ import annotations

import torch
from torch import Tensor

from pavenet.data.joints import OKS_SIGMAS

#: Lower bound on the area, so that a degenerate (single-joint) person gives finite values.
MIN_AREA = 1e-6


def oks_sigmas(device: torch.device | None = None, dtype: torch.dtype = torch.float32,
               sigmas: Tensor | None = None) -> Tensor:
    """``sigmas`` (default: the 15 PoseTrack OKS sigmas of the model joints) as a tensor."""
    return torch.as_tensor(OKS_SIGMAS if sigmas is None else sigmas, device=device, dtype=dtype)


def keypoint_similarity(pred: Tensor, gt: Tensor, area: Tensor, sigmas: Tensor) -> Tensor:
    """Per-joint similarity ``k_j``.

    Args:
        pred, gt: (..., J, 2) keypoints, broadcastable against each other.
        area: (...) person area in the units of the coordinates squared.
        sigmas: (J,) per-joint OKS sigmas.

    Returns:
        (..., J) values in (0, 1].
    """
    if pred.shape[-1] != 2 or gt.shape[-1] != 2:
        raise ValueError(f"keypoints must end in 2 coordinates, got {tuple(pred.shape)} / {tuple(gt.shape)}")
    if sigmas.shape[-1] != pred.shape[-2]:
        raise ValueError(f"{sigmas.shape[-1]} OKS sigmas for {pred.shape[-2]} joints")
    d2 = (pred - gt).pow(2).sum(-1)
    variance = (2.0 * sigmas).pow(2)
    return torch.exp(-d2 / (2.0 * area.clamp(min=MIN_AREA).unsqueeze(-1) * variance))


def oks(pred: Tensor, gt: Tensor, visible: Tensor, area: Tensor, sigmas: Tensor) -> Tensor:
    """OKS over the visible joints; 0 where no joint is visible.

    Args:
        pred, gt: (..., J, 2) keypoints, broadcastable against each other.
        visible: (..., J) bool, the annotated joints of ``gt``.
        area: (...) person area.
        sigmas: (J,) per-joint OKS sigmas.

    Returns:
        (...) OKS in [0, 1].
    """
    k = keypoint_similarity(pred, gt, area, sigmas)
    weight = visible.to(k.dtype)
    count = weight.sum(-1)
    return (k * weight).sum(-1) / count.clamp(min=1.0)


def pairwise_oks(pred: Tensor, gt: Tensor, visible: Tensor, area: Tensor, sigmas: Tensor) -> Tensor:
    """OKS of every prediction against every ground truth, frame by frame.

    Args:
        pred: (Q, T, J, 2) predicted keypoints.
        gt: (G, T, J, 2) ground-truth keypoints.
        visible: (G, T, J) bool annotated joints.
        area: (G, T) areas.
        sigmas: (J,) OKS sigmas.

    Returns:
        (Q, G, T) OKS.
    """
    return oks(pred[:, None], gt[None], visible[None], area[None], sigmas)

"""Prediction heads: MLPs, per-frame MLPs, and the per-layer person heads of the pose decoder."""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    """Logit of ``x`` clamped to [0, 1], with ``eps`` keeping it finite at 0 and 1."""
    x = x.clamp(0.0, 1.0)
    return torch.log(x.clamp(min=eps) / (1.0 - x).clamp(min=eps))


def focal_prior_bias(prior: float = 0.01) -> float:
    """Classifier bias giving an initial sigmoid score of ``prior`` (focal loss practice)."""
    return -math.log((1.0 - prior) / prior)


class MLP(nn.Module):
    """Linear layers ``in -> hidden... -> out`` with ReLU between them; ``zero_last`` zeroes the
    last layer (the MLP then starts as zero, e.g. a residual branch or a refinement head)."""

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int, zero_last: bool = False) -> None:
        super().__init__()
        dims = [in_dim, *hidden, out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        if zero_last:
            nn.init.zeros_(self.layers[-1].weight)
            nn.init.zeros_(self.layers[-1].bias)

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class FrameMLP(nn.Module):
    """T independent MLPs ``in -> hidden... -> out`` applied to the same input.

    ``(..., in)`` -> ``(..., T, out)``; frame t uses only its own weights. Each frame's layer
    is initialised like ``nn.Linear``; ``zero_last`` zeroes the last layer (refinement heads
    then start as the identity).
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int, num_frames: int,
                 zero_last: bool = False) -> None:
        super().__init__()
        dims = [in_dim, *hidden, out_dim]
        self.num_frames = num_frames
        self.weights = nn.ParameterList(nn.Parameter(torch.empty(num_frames, a, b))
                                        for a, b in zip(dims[:-1], dims[1:]))
        self.biases = nn.ParameterList(nn.Parameter(torch.empty(num_frames, b)) for b in dims[1:])
        for w, bias in zip(self.weights, self.biases):
            bound = 1.0 / math.sqrt(w.shape[1])
            nn.init.uniform_(w, -bound, bound)
            nn.init.uniform_(bias, -bound, bound)
        if zero_last:
            nn.init.zeros_(self.weights[-1])
            nn.init.zeros_(self.biases[-1])

    def forward(self, x: Tensor) -> Tensor:
        first, rest = self.weights[0], list(zip(self.weights, self.biases))[1:]
        x = torch.einsum("...d,tdh->...th", x, first) + self.biases[0]
        for w, b in rest:
            x = torch.einsum("...th,tho->...to", F.relu(x), w) + b
        return x


class PoseHeads(nn.Module):
    """Per-layer person heads on pose queries (B, Q, D) with reference poses (B, Q, T, J, 2).

    Outputs ``logits`` (B, Q), ``keypoints`` (B, Q, T, J, 2) = sigmoid(residual + logit of the
    reference), ``visibility`` (B, Q, T, J) logits and ``sigma`` (B, Q, T, J, 2) in (0, 1)
    (sigmoid, as RLE uses it).
    """

    def __init__(self, d_model: int, refine_hidden: Sequence[int], num_joints: int,
                 num_frames: int) -> None:
        super().__init__()
        self.num_joints = num_joints
        self.cls = nn.Linear(d_model, 1)
        nn.init.constant_(self.cls.bias, focal_prior_bias())
        self.refine = FrameMLP(d_model, refine_hidden, 2 * num_joints, num_frames, zero_last=True)
        self.visibility = FrameMLP(d_model, [], num_joints, num_frames)
        self.sigma = FrameMLP(d_model, [], 2 * num_joints, num_frames)

    def forward(self, tgt: Tensor, reference: Tensor) -> dict[str, Tensor]:
        j = self.num_joints
        residual = self.refine(tgt).unflatten(-1, (j, 2))
        return {
            "logits": self.cls(tgt).squeeze(-1),
            "keypoints": torch.sigmoid(residual + inverse_sigmoid(reference)),
            "visibility": self.visibility(tgt),
            "sigma": torch.sigmoid(self.sigma(tgt).unflatten(-1, (j, 2))),
        }

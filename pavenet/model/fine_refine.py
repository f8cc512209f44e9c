"""Fine joint refinement: a last joint correction read from the stride-4 backbone map.

pavenet's option (``model.fine_refine``; the published PAVE-Net has none). The decoders
sample the encoder's levels, the finest at stride 8, while the PoseTrack evaluation's PCKh
radius on small people is about half a stride-8 cell. With the option the backbone's stride-4
map is projected to a few channels (:class:`FineMap`) and kept beside the encoder memory;
after the last joint-decoder layer every joint of every frame reads a (2r+1) x (2r+1) grid of
samples of its frame's map centred on its position, one stride-4 cell apart, and an MLP of the
samples and the joint's feature, zero at initialisation, moves it (:class:`FineRefine`);
with ``model.fine_passes`` > 1 further MLPs move it again, each reading the grid around the
joints the one before moved.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbone import MaskedGroupNorm
from .encoder import valid_ratio
from .heads import MLP, inverse_sigmoid

#: channels of the fine map (:class:`FineMap`) that PAVE-Net builds with ``model.fine_refine``
FINE_CHANNELS = 32


class FineMap(nn.Module):
    """1x1 conv + padding-invariant GroupNorm of a backbone map, zero on padding."""

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.norm = MaskedGroupNorm(math.gcd(8, channels), channels)
        nn.init.xavier_uniform_(self.conv.weight, gain=1)

    def forward(self, feature: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """``feature`` (N, C_in, h, w), ``mask`` (N, H, W) True on padding ->
        map (N, C, h, w) and its unpadded fraction (N, 2) as (x, y)."""
        level_mask = F.interpolate(mask[:, None].float(), size=feature.shape[-2:], mode="nearest")
        valid = (1.0 - level_mask).to(feature.dtype)
        fine = self.norm(self.conv(feature * valid), valid) * valid
        return fine, valid_ratio(level_mask[:, 0] > 0.5)


def sample_grid(radius: int) -> Tensor:
    """(G, 2) offsets (x, y) in cells of the (2r+1)^2 grid, x fastest."""
    steps = torch.arange(-radius, radius + 1, dtype=torch.float32)
    gy, gx = torch.meshgrid(steps, steps, indexing="ij")
    return torch.stack((gx, gy), -1).view(-1, 2)


class FineRefine(nn.Module):
    """Move each joint by an MLP of the fine map's samples around it and the joint's feature.

    Args:
        d_model: D, the joint features' size. channels: C of the fine map.
        radius: r; the grid is (2r+1)^2 samples one cell apart. hidden: the MLP's width.
        passes: moves in a row, each by its own MLP reading the grid around the joints the
            previous one moved (``mlp`` the first, ``more`` the others).
    """

    def __init__(self, d_model: int, channels: int, radius: int, hidden: int, passes: int = 1) -> None:
        super().__init__()
        if radius < 0:
            raise ValueError(f"model.fine_radius must be >= 0, got {radius}")
        if passes < 1:
            raise ValueError(f"model.fine_passes must be >= 1, got {passes}")
        self.register_buffer("grid", sample_grid(radius), persistent=False)
        width = d_model + self.grid.shape[0] * channels
        self.mlp = MLP(width, [hidden], 2, zero_last=True)
        self.more = nn.ModuleList(MLP(width, [hidden], 2, zero_last=True) for _ in range(passes - 1))

    def sample(self, fine: Tensor, ratio: Tensor, keypoints: Tensor) -> Tensor:
        """Samples (B, K, T, J, G, C) of the maps ``fine`` (B*T, C, h, w) in clip order, whose
        unpadded fraction is ``ratio`` (B*T, 2), around ``keypoints`` (B, K, T, J, 2) given
        in [0, 1] of the unpadded image; zero outside the map."""
        b, k, t, j, _ = keypoints.shape
        n, c, h, w = fine.shape
        points = keypoints.permute(0, 2, 1, 3, 4).reshape(n, k * j, 1, 2).to(fine.dtype)
        cell = points.new_tensor([1.0 / w, 1.0 / h])
        loc = points * ratio.view(n, 1, 1, 2).to(fine.dtype) + self.grid.to(fine.dtype) * cell
        samples = F.grid_sample(fine, 2.0 * loc - 1.0, mode="bilinear", padding_mode="zeros",
                                align_corners=False)  # (N, C, K*J, G)
        return samples.view(b, t, c, k, j, -1).permute(0, 3, 1, 4, 5, 2)

    def forward(self, fine: Tensor, ratio: Tensor, feats: Tensor, keypoints: Tensor) -> Tensor:
        """``feats`` (B, K, J, D) joint features, ``keypoints`` (B, K, T, J, 2) -> the moved
        keypoints (B, K, T, J, 2). The samples are read at the detached positions; the
        gradient reaches ``keypoints`` through the residual."""
        t = keypoints.shape[2]
        joint = feats[:, :, None].expand(-1, -1, t, -1, -1)
        for mlp in (self.mlp, *self.more):
            samples = self.sample(fine, ratio, keypoints.detach()).flatten(-2)
            x = torch.cat((samples.to(feats.dtype), joint), -1)
            keypoints = torch.sigmoid(inverse_sigmoid(keypoints) + mlp(x).to(keypoints.dtype))
        return keypoints

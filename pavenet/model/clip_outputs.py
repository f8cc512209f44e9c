"""Pieces of the output contract both networks share (docs/interfaces.md "Model output")."""
from __future__ import annotations

from torch import Tensor

#: the per-query outputs (B, Q, T, ...) beside the person logits
PER_QUERY_KEYS = ("keypoints", "visibility", "sigma")


def expand_proposals(proposals: dict[str, Tensor], num_frames: int) -> dict[str, Tensor]:
    """The key-frame encoder proposals with their keypoints and sigma repeated over T frames."""
    out = dict(proposals)
    for key in ("keypoints", "sigma"):
        out[key] = proposals[key][:, :, None].expand(-1, -1, num_frames, -1, -1)
    return out

"""Random clip targets and model outputs following docs/interfaces.md, for the criterion tests."""
from __future__ import annotations

import torch
from torch import Generator, Tensor


def random_target(
    num_tracks: int,
    num_frames: int,
    num_joints: int,
    gen: Generator,
    key_frame: int | None = None,
    video_id: int = 0,
    track_ids: list[int] | None = None,
) -> dict:
    """A clip target with random keypoints, visibility, presence and labelled frames."""
    G, T, J = num_tracks, num_frames, num_joints
    key = T // 2 if key_frame is None else key_frame
    keypoints = 0.1 + 0.8 * torch.rand(G, T, J, 2, generator=gen)
    present = torch.rand(G, T, generator=gen) < 0.8
    visible = (torch.rand(G, T, J, generator=gen) < 0.7) & present[..., None]
    labeled = torch.rand(T, generator=gen) < 0.8
    labeled[key] = True
    return {
        "keypoints": keypoints,
        "visible": visible,
        "present": present,
        "labeled": labeled,
        "areas": box_areas(keypoints, visible),
        "track_ids": torch.tensor(track_ids if track_ids is not None else list(range(G)), dtype=torch.int64),
        "video_id": video_id,
        "key_frame": key,
        "size": torch.tensor([64, 64]),
        "orig_size": torch.tensor([64, 64]),
        "image_ids": torch.arange(T, dtype=torch.int64),
        "frame_indices": torch.arange(T, dtype=torch.int64),
    }


def box_areas(keypoints: Tensor, visible: Tensor) -> Tensor:
    """(G, T) area of the box around the visible joints (at least 1e-2)."""
    big = torch.finfo(keypoints.dtype).max
    lo = torch.where(visible[..., None], keypoints, big).amin(-2)
    hi = torch.where(visible[..., None], keypoints, -big).amax(-2)
    wh = (hi - lo).clamp(min=0.0)
    area = torch.where(visible.any(-1), wh[..., 0] * wh[..., 1], torch.zeros(()))
    return area.clamp(min=1e-2)


def random_outputs(batch: int, queries: int, frames: int, joints: int, gen: Generator, embed: int = 8) -> dict:
    """A model output dict (top level only) with random values."""
    emb = torch.randn(batch, queries, embed, generator=gen)
    return {
        "logits": torch.randn(batch, queries, generator=gen),
        "keypoints": torch.rand(batch, queries, frames, joints, 2, generator=gen),
        "visibility": torch.randn(batch, queries, frames, joints, generator=gen),
        "sigma": 0.05 + 0.2 * torch.rand(batch, queries, frames, joints, 2, generator=gen),
        "embedding": torch.nn.functional.normalize(emb, dim=-1),
    }

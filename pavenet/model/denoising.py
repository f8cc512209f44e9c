"""Pose denoising queries (DN-DETR's query denoising, for poses; training only).

Besides its Q matching queries, the pose decoder gets, for every ground-truth track of the clip,
``groups`` extra queries whose reference pose is the track's pose with noise added; they must
reconstruct that track, whose identity is known, so they are supervised without matching.
This gives the decoders many more positive samples per step than the few tracks that bipartite
matching pairs with a query, and a stable target from the first step (convergence aid; the
published PAVE-Net has none).

Noise, in each frame, relative to the half size (w/2, h/2) of the track's box: the whole pose
is shifted by ``noise * U(-1, 1)`` and each joint again by ``noise * U(-1, 1)``. Joints that are
not annotated start at the mean of the frame's annotated joints; frames where the track is not
annotated start from the track's nearest annotated frame. Tracks without any annotated joint get
no denoising queries.

Attention (``attention_mask``): the matching queries never see the denoising queries, so the
matching part computes exactly what it computes without them; each denoising group sees the
matching queries and itself, not the other groups.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor


class DenoisingQueries(NamedTuple):
    """The denoising queries of a batch, N = groups * (largest number of usable tracks).

    reference: (B, N, T, J, 2) noised poses in [0, 1]. track: (B, N) int64 index into the
    clip's targets, -1 on padding. valid: (B, N) bool, False on padding. groups: G.
    """

    reference: Tensor
    track: Tensor
    valid: Tensor
    groups: int


def filled_poses(keypoints: Tensor, visible: Tensor) -> tuple[Tensor, Tensor]:
    """Complete poses to start denoising queries from.

    ``keypoints`` (G, T, J, 2), ``visible`` (G, T, J) bool -> (poses (G, T, J, 2), usable (G,)).
    Unannotated joints take the mean of their frame's annotated joints; a frame without
    annotated joints takes the nearest (lowest index on ties) frame that has some.
    """
    g, t = keypoints.shape[:2]
    weight = visible.to(keypoints.dtype)[..., None]
    count = weight.sum(2)
    centre = (keypoints * weight).sum(2) / count.clamp(min=1.0)
    poses = torch.where(visible[..., None], keypoints, centre[:, :, None])
    has = visible.any(-1)
    frames = torch.arange(t, device=keypoints.device)
    distance = (frames[:, None] - frames[None]).abs().to(keypoints.dtype)
    distance = distance[None].expand(g, -1, -1).masked_fill(~has[:, None, :], float("inf"))
    nearest = distance.argmin(-1)
    source = torch.gather(poses, 1, nearest[:, :, None, None].expand(-1, -1, *poses.shape[2:]))
    return source, has.any(-1)


def noised(poses: Tensor, noise: float, generator: Optional[torch.Generator] = None) -> Tensor:
    """``poses`` (..., J, 2) with a whole-pose and a per-joint shift of up to ``noise`` times the
    half box size, per frame, clamped to [0, 1]."""
    half = 0.5 * (poses.amax(-2, keepdim=True) - poses.amin(-2, keepdim=True))
    shift = torch.rand(poses.shape[:-2] + (1, 2), generator=generator, device=poses.device,
                       dtype=poses.dtype) * 2 - 1
    jitter = torch.rand(poses.shape, generator=generator, device=poses.device, dtype=poses.dtype) * 2 - 1
    return (poses + noise * half * (shift + jitter)).clamp(0.0, 1.0)


def make_denoising_queries(targets: list[dict], groups: int, noise: float, device: torch.device,
                           generator: Optional[torch.Generator] = None) -> DenoisingQueries:
    """Denoising queries of a batch: group-major, slot ``g * M + i`` is the i-th usable track."""
    usable_tracks, starts = [], []
    for target in targets:
        poses, usable = filled_poses(target["keypoints"].float().to(device), target["visible"].bool().to(device)
                                     & target["present"].bool().to(device)[..., None])
        usable_tracks.append(usable.nonzero().squeeze(1))
        starts.append(poses[usable])
    m = max((len(u) for u in usable_tracks), default=0)
    b = len(targets)
    t, j = targets[0]["keypoints"].shape[1:3] if targets else (0, 0)
    reference = torch.zeros(b, groups, m, t, j, 2, device=device)
    track = torch.full((b, groups, m), -1, dtype=torch.int64, device=device)
    for i, (tracks, start) in enumerate(zip(usable_tracks, starts)):
        n = len(tracks)
        reference[i, :, :n] = noised(start[None].expand(groups, -1, -1, -1, -1), noise, generator)
        track[i, :, :n] = tracks
    return DenoisingQueries(reference.flatten(1, 2), track.flatten(1), track.flatten(1) >= 0, groups)


def attention_mask(num_queries: int, groups: int, group_size: int, device: torch.device) -> Tensor:
    """(L, L) bool self-attention mask, True = may not attend, for the Q matching queries followed
    by ``groups`` denoising groups of ``group_size`` queries."""
    total = num_queries + groups * group_size
    group = torch.full((total,), -1, dtype=torch.int64, device=device)
    group[num_queries:] = torch.arange(groups, device=device).repeat_interleave(group_size)
    matching_key = group[None, :] < 0
    blocked = group[:, None] != group[None, :]
    return blocked & ~matching_key

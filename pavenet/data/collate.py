"""Batch collation: pad clips to the largest frame of the batch and build the padding mask."""
from __future__ import annotations

from typing import Any

import torch


def _flatten(items: list[Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for item in items:
        out.extend(item if isinstance(item, (list, tuple)) else [item])
    return out


def collate(items: list[Any]) -> dict[str, Any]:
    """Items (or pairs of items) -> ``{"frames": (B, T, 3, H, W), "mask": (B, H, W), "targets"}``.

    Frames are zero-padded at the bottom/right to the largest height and width of the batch;
    ``mask`` is True on padding. Paired items (lists of two clips of one video) are flattened
    so both clips land in the same batch, next to each other.
    """
    flat = _flatten(items)
    if not flat:
        raise ValueError("collate: empty batch")
    shapes = [it["frames"].shape for it in flat]
    t, c = shapes[0][0], shapes[0][1]
    if any(s[0] != t or s[1] != c for s in shapes):
        raise ValueError(f"collate: clips differ in frame count or channels: {shapes}")
    h, w = max(s[2] for s in shapes), max(s[3] for s in shapes)
    frames = flat[0]["frames"].new_zeros((len(flat), t, c, h, w))
    mask = torch.ones((len(flat), h, w), dtype=torch.bool)
    for b, it in enumerate(flat):
        _, _, ih, iw = it["frames"].shape
        frames[b, :, :, :ih, :iw] = it["frames"]
        mask[b, :ih, :iw] = False
    return {"frames": frames, "mask": mask, "targets": [it["target"] for it in flat]}

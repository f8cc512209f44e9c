"""Decode every clip from its key frame alone (a diagnostic of the temporal model).

:class:`KeyFrameOnly` makes a network's ``decode`` read each clip's key frame in place of its
other frames, as if the clip were the key frame repeated T times. Comparing a temporal model's
predictions with and without it measures how much its output depends on the neighbouring
frames (``pavenet test --temporal-report``); a model that ignores them gives the same poses.
"""
from __future__ import annotations

import torch
from torch import nn

from .encoder import FrameMemory


def key_frame_memory(memory: FrameMemory, batch: int, num_frames: int, key_frame: int) -> FrameMemory:
    """The memory of ``batch`` clips of ``num_frames`` frames (clip order) with every frame of a
    clip replaced by the clip's frame ``key_frame``."""
    index = torch.arange(batch, device=memory.memory.device) * num_frames + key_frame
    return memory.select(index.repeat_interleave(num_frames))


class KeyFrameOnly:
    """``with KeyFrameOnly(model): ...``: ``model.decode`` sees only each clip's key frame."""

    def __init__(self, model: nn.Module) -> None:
        for name in ("decode", "num_frames", "key_frame"):
            if not hasattr(model, name):
                raise TypeError(f"KeyFrameOnly needs a clip network with {name!r}, got {type(model).__name__}")
        self.model = model

    def __enter__(self) -> "KeyFrameOnly":
        model = self.model
        original = model.decode

        def decode(memory: FrameMemory, batch: int, *args, **kwargs):
            memory = key_frame_memory(memory, batch, model.num_frames, model.key_frame)
            return original(memory, batch, *args, **kwargs)
        model.decode = decode
        return self

    def __exit__(self, *exc: object) -> None:
        del self.model.decode  # the instance attribute; the class method shows again

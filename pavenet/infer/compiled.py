"""``CompiledNetwork``: a network's ``encode`` and ``decode`` through ``torch.compile``.

What :class:`pavenet.infer.estimator.PoseEstimator` runs with ``compile=MODE`` (``pavenet
predict --compile MODE``). On a GPU at batch 1 the eager network is bound by kernel launches;
``mode="reduce-overhead"`` replays CUDA graphs and removes most of that cost (see the GPU rows
of the README's benchmark section).

CUDA-graph modes reuse their output memory on the next replay, so outputs that live on (cached
per-frame memories, post-processed results) are copied out with :func:`copy_outputs`, and each
call first marks a new step (``torch.compiler.cudagraph_mark_step_begin``).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor, nn

from pavenet.infer import GRAPH_MODES, check_compile_mode


def copy_outputs(outputs: Any) -> Any:
    """A deep copy of tensors in (nested dicts, lists, tuples and dataclasses such as
    :class:`pavenet.model.encoder.FrameMemory` of) ``outputs``; other values are kept."""
    if isinstance(outputs, Tensor):
        return outputs.clone()
    if isinstance(outputs, dict):
        return {k: copy_outputs(v) for k, v in outputs.items()}
    if isinstance(outputs, (list, tuple)):
        return type(outputs)(copy_outputs(v) for v in outputs)
    if dataclasses.is_dataclass(outputs) and not isinstance(outputs, type):
        return dataclasses.replace(outputs, **{f.name: copy_outputs(getattr(outputs, f.name))
                                               for f in dataclasses.fields(outputs)})
    return outputs


class CompiledNetwork(nn.Module):
    """``model.encode`` / ``model.decode`` compiled with ``torch.compile(mode=mode)``.

    Args:
        model: a network with ``encode(frames, mask)``, ``decode(memory, batch)`` and
            ``num_frames`` (PAVE-Net or VEPE).
        mode: a ``torch.compile`` mode (:data:`pavenet.infer.COMPILE_MODES`).
        backend: the ``torch.compile`` backend; ``mode`` applies to "inductor" only (tests use
            "eager", which needs no compiler).
    """

    def __init__(self, model: nn.Module, mode: str = "default", backend: str = "inductor") -> None:
        super().__init__()
        check_compile_mode(mode)
        self.model = model
        self.num_frames = int(model.num_frames)
        self.graphs = backend == "inductor" and mode in GRAPH_MODES
        options: dict[str, Any] = {"mode": mode} if backend == "inductor" else {}
        self._encode = torch.compile(model.encode, backend=backend, **options)
        self._decode = torch.compile(model.decode, backend=backend, **options)

    def _call(self, fn: Any, *args: Any) -> Any:
        if self.graphs:
            torch.compiler.cudagraph_mark_step_begin()
            return copy_outputs(fn(*args))
        return fn(*args)

    def encode(self, frames: Tensor, mask: Tensor) -> Any:
        return self._call(self._encode, frames, mask)

    def decode(self, memory: Any, batch: int) -> dict[str, Tensor]:
        return self._call(self._decode, memory, batch)

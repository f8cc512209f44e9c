"""ONNX Runtime (CPU) stand-in for the network behind :class:`pavenet.infer.estimator.PoseEstimator`.

:class:`OnnxRuntimeNetwork` runs the exported streaming pair (``*.encoder.onnx``,
``*.decoder.onnx``) and implements the part of the ``PAVENet`` interface the estimator uses:
``encode(images, mask) -> FrameMemory``, ``decode(memory, batch) -> outputs``,
``num_frames``, ``to(device)`` and ``eval()``. The estimator's frame cache, sliding windows,
post-processor and tracker are therefore the same code for both backends.

Each graph pair is exported for one network input size. Built :meth:`from_export` (files
written by ``pavenet export``), a frame of another size is an error naming the file and both
sizes; built :meth:`from_checkpoint`, the pair for a new size is exported on first use and kept in
the user's cache (:mod:`pavenet.export.onnx_cache`), so the next run with the same checkpoint and
size loads it instead of exporting again.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import Tensor

from pavenet.config import Config, config_from_dict
from pavenet.export.onnx_cache import StreamingPairCache
from pavenet.export.onnx_export import CLIP_OUTPUTS, read_onnx_metadata, streaming_paths
from pavenet.model.encoder import FrameMemory
from pavenet.model.loading import load_checkpoint_model
from pavenet.runtime.checkpoint import resolve_checkpoint
from pavenet.runtime.device import DeviceError

Size = tuple[int, int]
Exporter = Callable[[Size], tuple[Path, Path]]


def find_streaming_pair(path: str | Path) -> tuple[Path, Path]:
    """Encoder/decoder files for ``model.onnx``, ``model.encoder.onnx`` or a folder holding one pair."""
    path = Path(path)
    if path.is_dir():
        encoders = sorted(path.glob("*.encoder.onnx"))
        if len(encoders) != 1:
            raise FileNotFoundError(f"{path}: expected one *.encoder.onnx file, found {len(encoders)}")
        path = encoders[0]
    name = path.name
    for suffix in (".encoder.onnx", ".decoder.onnx"):
        if name.endswith(suffix):
            path = path.with_name(name[:-len(suffix)] + ".onnx")
    pair = streaming_paths(path)
    missing = [str(p) for p in pair if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{path}: the streaming pair is missing ({', '.join(missing)}); "
                                "export it with `pavenet export ... --graphs streaming`")
    return pair


class _Pair:
    """The two ONNX Runtime sessions of one input size."""

    def __init__(self, encoder: Path, decoder: Path, threads: Optional[int]) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ImportError("the onnxruntime backend needs ONNX Runtime: pip install 'pavenet[onnx]'") from exc
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.meta = read_onnx_metadata(encoder)
        dec_meta = read_onnx_metadata(decoder)
        if (self.meta["graph"], dec_meta["graph"]) != ("encoder", "decoder"):
            raise ValueError(f"{encoder}, {decoder}: not an encoder/decoder pair "
                             f"({self.meta['graph']}, {dec_meta['graph']})")
        if self.meta["level_shapes"] != dec_meta["level_shapes"]:
            raise ValueError(f"{decoder}: exported for another input size than {encoder}")
        self.size: Size = tuple(self.meta["input_size"])
        self.shapes = tuple(tuple(s) for s in self.meta["level_shapes"])
        providers = ["CPUExecutionProvider"]
        self.encoder = ort.InferenceSession(str(encoder), options, providers=providers)
        self.decoder = ort.InferenceSession(str(decoder), options, providers=providers)


class OnnxRuntimeNetwork:
    """Encode frames and decode clips with ONNX Runtime on the CPU (see the module docstring)."""

    def __init__(self, pair: Optional[_Pair], config: Config, exporter: Optional[Exporter] = None,
                 threads: Optional[int] = None, source: str = "") -> None:
        self.config, self.source = config, source
        self.num_frames = int(config.model.num_frames)
        self._exporter, self._threads = exporter, threads
        self._pairs: dict[Size, _Pair] = {pair.size: pair} if pair is not None else {}

    @classmethod
    def from_export(cls, path: str | Path, threads: Optional[int] = None) -> "OnnxRuntimeNetwork":
        """Load the streaming pair found from ``path`` (see :func:`find_streaming_pair`)."""
        encoder, decoder = find_streaming_pair(path)
        pair = _Pair(encoder, decoder, threads)
        cfg = config_from_dict(pair.meta["config"], source=str(encoder))
        return cls(pair, cfg, threads=threads, source=str(encoder))

    @classmethod
    def from_checkpoint(cls, path: str | Path, threads: Optional[int] = None,
                        cache_root: Optional[Path] = None) -> "OnnxRuntimeNetwork":
        """Export the checkpoint's streaming pair for each input size when it is first needed,
        or load it from the cache (``cache_root``: default ``~/.cache/pavenet/onnx``, see
        :mod:`pavenet.export.onnx_cache`)."""
        model, cfg = load_checkpoint_model(str(path))
        exporter = StreamingPairCache(resolve_checkpoint(path), model, cfg, root=cache_root)
        return cls(None, cfg, exporter, threads, source=str(path))

    # the slice of the nn.Module interface PoseEstimator calls
    def to(self, device: str | torch.device) -> "OnnxRuntimeNetwork":
        """Only the CPU is supported; another device is an error."""
        if torch.device(device).type != "cpu":
            raise DeviceError(f"--device {device}: the onnxruntime backend runs on the CPU only")
        return self

    def eval(self) -> "OnnxRuntimeNetwork":
        """Inference graphs only: nothing to switch."""
        return self

    def _pair(self, size: Size) -> _Pair:
        if size not in self._pairs:
            if self._exporter is None:
                have = ", ".join(f"{h}x{w}" for h, w in self._pairs)
                raise ValueError(f"{self.source}: exported for {have} (H x W) network input, got "
                                 f"{size[0]}x{size[1]}; export the model again with --size {size[0]} {size[1]}")
            self._pairs[size] = _Pair(*self._exporter(size), self._threads)
        return self._pairs[size]

    def encode(self, images: Tensor, mask: Tensor) -> FrameMemory:
        """``images`` (N, 3, H, W), ``mask`` (N, H, W) -> the memory of N frames (as ``PAVENet.encode``)."""
        pair = self._pair((int(images.shape[-2]), int(images.shape[-1])))
        feeds = {"images": _numpy(images, np.float32), "mask": _numpy(mask, np.bool_)}
        names = [o.name for o in pair.encoder.get_outputs()]
        outputs = dict(zip(names, (torch.from_numpy(x) for x in pair.encoder.run(names, feeds))))
        sizes = [h * w for h, w in pair.shapes]
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        return FrameMemory(outputs["memory"], torch.tensor(pair.shapes, dtype=torch.long),
                           torch.tensor(starts, dtype=torch.long), outputs["valid_ratios"],
                           outputs["padding_mask"], pair.shapes, outputs.get("fine"), outputs.get("fine_ratio"))

    def decode(self, memory: FrameMemory, batch: int) -> dict[str, Any]:
        """Decode ``batch`` clips from the memory of their B*T frames in clip order (as ``PAVENet.decode``,
        without the training-only ``aux_outputs`` and ``enc_outputs``)."""
        t = self.num_frames
        if memory.memory.shape[0] != batch * t:
            raise ValueError(f"decode: {memory.memory.shape[0]} frames for {batch} clips of {t} frames")
        pair = next((p for p in self._pairs.values() if p.shapes == tuple(memory.shapes)), None)
        if pair is None:
            raise ValueError(f"{self.source}: no decoder for the level shapes {memory.shapes}")
        feeds = {"memory": _numpy(memory.memory, np.float32).reshape(batch, t, *memory.memory.shape[1:]),
                 "valid_ratios": _numpy(memory.valid_ratios, np.float32).reshape(batch, t, -1, 2),
                 "padding_mask": _numpy(memory.padding_mask, np.bool_).reshape(batch, t, -1)}
        if memory.fine is not None:
            feeds["fine"] = _numpy(memory.fine, np.float32).reshape(batch, t, *memory.fine.shape[1:])
            feeds["fine_ratio"] = _numpy(memory.fine_ratio, np.float32).reshape(batch, t, 2)
        outputs = pair.decoder.run(list(CLIP_OUTPUTS), feeds)
        return {name: torch.from_numpy(x) for name, x in zip(CLIP_OUTPUTS, outputs)}


def _numpy(x: Tensor, dtype: type) -> np.ndarray:
    return np.ascontiguousarray(x.detach().cpu().numpy().astype(dtype, copy=False))

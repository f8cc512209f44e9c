"""ONNX export of PAVE-Net: the whole clip network and the streaming encoder/decoder pair.

Three graphs, all exported with the ``torch.export``-based ONNX exporter for one network input
size ``H x W`` (the image size is baked in: the multi-scale level shapes are Python ints in the
network, so a graph exported for one size cannot run another) and, optionally, a dynamic batch
axis:

- clip graph (``model.onnx``): ``frames`` (B, T, 3, H, W) float32 and ``mask`` (B, H, W) bool,
  True on padding -> the deployment outputs :data:`CLIP_OUTPUTS` of ``PAVENet.forward``.
  The training-only outputs (``aux_outputs``, ``enc_outputs``) are left out.
- encoder graph (``model.encoder.onnx``): ``images`` (N, 3, H, W), ``mask`` (N, H, W) ->
  ``memory`` (N, S, D), ``valid_ratios`` (N, L, 2), ``padding_mask`` (N, S): backbone and
  spatial encoder of N independent frames, run once per video frame. With
  ``model.fine_refine`` also ``fine`` (N, C, h, w) and ``fine_ratio`` (N, 2), the stride-4 map.
- decoder graph (``model.decoder.onnx``): ``memory`` (B, T, S, D), ``valid_ratios``
  (B, T, L, 2), ``padding_mask`` (B, T, S) (and ``fine`` (B, T, C, h, w), ``fine_ratio``
  (B, T, 2)) of B clips of cached frames -> :data:`CLIP_OUTPUTS`.

Every file carries ``pavenet.*`` metadata (graph kind, input size, level shapes, number of
frames and the full config), enough to run it without the checkpoint.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor, nn

from pavenet.config import Config, config_to_dict
from pavenet.errors import PavenetError
from pavenet.model.encoder import FrameMemory
from pavenet.runtime.files import atomic_path

#: Outputs of the clip and decoder graphs, in order (names and shapes as ``PAVENet.forward``).
CLIP_OUTPUTS = ("logits", "keypoints", "visibility", "sigma", "embedding", "kept_index")
#: Outputs of the encoder graph, in order.
MEMORY_OUTPUTS = ("memory", "valid_ratios", "padding_mask")
#: Further outputs of the encoder graph of a model with ``model.fine_refine``.
FINE_OUTPUTS = ("fine", "fine_ratio")
#: Opset used unless asked otherwise (the exporter's supported range starts at 18).
DEFAULT_OPSET = 18
META_PREFIX = "pavenet."


def memory_outputs(model: nn.Module) -> tuple[str, ...]:
    """The encoder graph's outputs (the decoder graph's inputs) for ``model``."""
    fine = getattr(model, "fine_map", None) is not None
    return MEMORY_OUTPUTS + FINE_OUTPUTS if fine else MEMORY_OUTPUTS


class ClipGraph(nn.Module):
    """``PAVENet.forward`` returning the deployment outputs as a tuple."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, frames: Tensor, mask: Tensor) -> tuple[Tensor, ...]:
        """``frames`` (B, T, 3, H, W), ``mask`` (B, H, W) -> :data:`CLIP_OUTPUTS`."""
        out = self.model(frames, mask)
        return tuple(out[k] for k in CLIP_OUTPUTS)


class EncoderGraph(nn.Module):
    """``PAVENet.encode`` returning the per-frame memory tensors."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor, mask: Tensor) -> tuple[Tensor, ...]:
        """``images`` (N, 3, H, W), ``mask`` (N, H, W) -> :func:`memory_outputs`."""
        mem = self.model.encode(images, mask)
        if mem.fine is None:
            return mem.memory, mem.valid_ratios, mem.padding_mask
        return mem.memory, mem.valid_ratios, mem.padding_mask, mem.fine, mem.fine_ratio


class DecoderGraph(nn.Module):
    """``PAVENet.decode`` of B clips of T cached frames with fixed level shapes."""

    def __init__(self, model: nn.Module, shapes: tuple[tuple[int, int], ...]) -> None:
        super().__init__()
        self.model, self.shapes = model, shapes
        sizes = [h * w for h, w in shapes]
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        self.register_buffer("spatial_shapes", torch.tensor(shapes, dtype=torch.long), persistent=False)
        self.register_buffer("level_start_index", torch.tensor(starts, dtype=torch.long), persistent=False)

    def forward(self, memory: Tensor, valid_ratios: Tensor, padding_mask: Tensor,
                fine: Optional[Tensor] = None, fine_ratio: Optional[Tensor] = None) -> tuple[Tensor, ...]:
        """``memory`` (B, T, S, D), ``valid_ratios`` (B, T, L, 2), ``padding_mask`` (B, T, S);
        with ``model.fine_refine`` ``fine`` (B, T, C, h, w) and ``fine_ratio`` (B, T, 2)."""
        batch = memory.shape[0]
        fine, fine_ratio = (None, None) if fine is None else (fine.flatten(0, 1), fine_ratio.flatten(0, 1))
        frames = FrameMemory(memory.flatten(0, 1), self.spatial_shapes, self.level_start_index,
                             valid_ratios.flatten(0, 1), padding_mask.flatten(0, 1), self.shapes,
                             fine, fine_ratio)
        out = self.model.decode(frames, batch)
        return tuple(out[k] for k in CLIP_OUTPUTS)


class ExportError(PavenetError, ValueError):
    """Export options the exporter cannot honour."""


def max_opset() -> int:
    """The newest ONNX opset the installed ``onnx`` package knows."""
    import onnx.defs

    return int(onnx.defs.onnx_opset_version())


@dataclass(frozen=True)
class ExportOptions:
    """Network input size (after the test-time resize), opset and whether batch is dynamic."""

    height: int
    width: int
    opset: int = DEFAULT_OPSET
    dynamic_batch: bool = True

    def __post_init__(self) -> None:
        if self.height < 32 or self.width < 32:
            raise ExportError(f"export size {self.height}x{self.width}: both sides must be >= 32")
        if not DEFAULT_OPSET <= self.opset <= max_opset():
            raise ExportError(f"--opset {self.opset}: the ONNX exporter writes opsets {DEFAULT_OPSET} "
                              f"to {max_opset()}")


def streaming_paths(out: str | Path) -> tuple[Path, Path]:
    """``dir/name.onnx`` -> (``dir/name.encoder.onnx``, ``dir/name.decoder.onnx``)."""
    out = Path(out)
    stem = out.name[:-len(".onnx")] if out.name.endswith(".onnx") else out.name
    return out.with_name(f"{stem}.encoder.onnx"), out.with_name(f"{stem}.decoder.onnx")


def _batch_dims(names: tuple[str, ...], dynamic: bool) -> Optional[dict[str, dict[int, Any]]]:
    if not dynamic:
        return None
    batch = torch.export.Dim("batch", min=1, max=4096)
    return {name: {0: batch} for name in names}


def _save(module: nn.Module, args: tuple[Tensor, ...], path: Path, input_names: tuple[str, ...],
          output_names: tuple[str, ...], opts: ExportOptions, metadata: dict[str, Any]) -> Path:
    """Export ``module`` on ``args`` and write one self-contained ``.onnx`` file atomically."""
    with warnings.catch_warnings():  # every input shares the one batch Dim, which is intended
        warnings.filterwarnings("ignore", message=".*shares the same shape constraints")
        program = torch.onnx.export(
            module.eval(), args, dynamo=True, opset_version=opts.opset, verbose=False,
            input_names=list(input_names), output_names=list(output_names),
            dynamic_shapes=_batch_dims(input_names, opts.dynamic_batch))
    if program is None:
        raise RuntimeError(f"{path}: the ONNX exporter returned no program")
    written = program.model.opset_imports.get("", None)
    if written != opts.opset:
        raise ExportError(f"--opset {opts.opset}: the exporter could only convert the graph to opset "
                          f"{written}; nothing written to {path}")
    for key, value in metadata.items():
        program.model.metadata_props[META_PREFIX + key] = json.dumps(value)
    with atomic_path(path, ".onnx") as tmp:
        program.save(tmp, external_data=False)
    return path


def _metadata(cfg: Config, kind: str, opts: ExportOptions, shapes: tuple[tuple[int, int], ...]) -> dict[str, Any]:
    return {"graph": kind, "input_size": [opts.height, opts.width], "num_frames": cfg.model.num_frames,
            "level_shapes": [list(s) for s in shapes], "dynamic_batch": opts.dynamic_batch,
            "config": config_to_dict(cfg)}


def _example_frames(count: int, opts: ExportOptions) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(count, 3, opts.height, opts.width, generator=gen)
    return images, torch.zeros(count, opts.height, opts.width, dtype=torch.bool)


@torch.no_grad()
def level_shapes(model: nn.Module, opts: ExportOptions) -> tuple[tuple[int, int], ...]:
    """The (H_l, W_l) of every level for the export input size."""
    return model.eval().encode(*_example_frames(1, opts)).shapes


def export_clip(model: nn.Module, cfg: Config, out: str | Path, opts: ExportOptions) -> Path:
    """Write the clip graph (frames, mask) -> :data:`CLIP_OUTPUTS` to ``out``."""
    t = cfg.model.num_frames
    batch = 2 if opts.dynamic_batch else 1  # an example batch of 1 would be specialised
    images, mask = _example_frames(batch * t, opts)
    args = (images.view(batch, t, *images.shape[1:]), mask[::t].clone())
    meta = _metadata(cfg, "clip", opts, level_shapes(model, opts))
    return _save(ClipGraph(model), args, Path(out), ("frames", "mask"), CLIP_OUTPUTS, opts, meta)


def export_streaming(model: nn.Module, cfg: Config, out: str | Path, opts: ExportOptions) -> tuple[Path, Path]:
    """Write the encoder and decoder graphs next to ``out`` (see :func:`streaming_paths`)."""
    enc_path, dec_path = streaming_paths(out)
    t = cfg.model.num_frames
    batch = 2 if opts.dynamic_batch else 1
    images, mask = _example_frames(batch * t, opts)
    with torch.no_grad():
        mem = model.eval().encode(images, mask)
    shapes, names = mem.shapes, memory_outputs(model)
    _save(EncoderGraph(model), (images, mask), enc_path, ("images", "mask"), names, opts,
          _metadata(cfg, "encoder", opts, shapes))
    tensors = (mem.memory, mem.valid_ratios, mem.padding_mask, mem.fine, mem.fine_ratio)[:len(names)]
    args = tuple(x.view(batch, t, *x.shape[1:]) for x in tensors)
    _save(DecoderGraph(model, shapes), args, dec_path, names, CLIP_OUTPUTS, opts,
          _metadata(cfg, "decoder", opts, shapes))
    return enc_path, dec_path


def read_onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The ``pavenet.*`` metadata of an exported file (without loading its weights)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such ONNX file")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises several parser error types
        raise ValueError(f"{path}: not a readable ONNX file: {exc}") from exc
    meta = {p.key[len(META_PREFIX):]: json.loads(p.value) for p in proto.metadata_props
            if p.key.startswith(META_PREFIX)}
    if "graph" not in meta or "config" not in meta:
        raise ValueError(f"{path}: not a pavenet export (no pavenet.graph/config metadata)")
    return meta

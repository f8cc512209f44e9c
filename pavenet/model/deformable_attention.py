"""Multi-scale deformable attention (Deformable-DETR): reference path and kernel dispatch.

``ms_deform_attn`` is the single entry point of every attention in the network. Its
``backend`` picks the implementation: ``"reference"`` is pure PyTorch (bilinear
``grid_sample``, zero padding, ``align_corners=False``) and the test oracle for any faster
kernel; ``"triton"`` is the fused kernel of :mod:`pavenet.model.deform_attn_triton`;
``"bags"`` is the CPU formulation of :mod:`pavenet.model.deform_attn_bag` (weighted bags of
table rows, pure PyTorch too). ``"auto"`` (default) takes the Triton kernel for CUDA tensors of
float32 / bfloat16 / float16 when triton imports, the bags for CPU tensors of float32 /
float64 (not while ``torch.compile`` traces), and the reference otherwise, always during ONNX
export (a graph of standard operators). ``MSDeformAttn`` is the module with the offset,
attention-weight, value and output projections.
"""
from __future__ import annotations

import math
from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .deform_attn_bag import bags_supported, ms_deform_attn_bags
from .deform_attn_triton import HAS_TRITON, dtypes_supported, ms_deform_attn_triton, triton_available

Shapes = Sequence[tuple[int, int]]


def shape_list(spatial_shapes: Union[Tensor, Shapes]) -> list[tuple[int, int]]:
    """Return level shapes as Python ints; a tensor is read once (a device sync)."""
    if isinstance(spatial_shapes, Tensor):
        return [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    return [(int(h), int(w)) for h, w in spatial_shapes]


BACKENDS = ("auto", "reference", "triton", "bags")


def resolve_backend(backend: str, value: Tensor, sampling_locations: Tensor,
                    attention_weights: Tensor) -> str:
    """The implementation ``backend`` means for these inputs ("reference", "triton" or "bags");
    raise when it is unknown or cannot run on them."""
    tensors = (value, sampling_locations, attention_weights)
    if backend == "auto":
        if torch.onnx.is_in_onnx_export():
            return "reference"
        if value.is_cuda and HAS_TRITON and dtypes_supported(*tensors):
            return "triton"
        if bags_supported(*tensors) and not torch.compiler.is_compiling():
            return "bags"
        return "reference"
    if backend == "bags":
        if not bags_supported(*tensors):
            raise ValueError('ms_deform_attn: backend="bags" needs CPU tensors of float32 or float64, got '
                             + ", ".join(f"{t.dtype} on {t.device}" for t in tensors))
        return backend
    if backend == "triton":
        _check_triton(value)
        return backend
    if backend != "reference":
        raise ValueError(f"ms_deform_attn: unknown backend {backend!r}, expected one of {BACKENDS}")
    return backend


def _check_triton(value: Tensor) -> None:
    if not HAS_TRITON:
        raise RuntimeError('ms_deform_attn: backend="triton" but triton is not installed')
    if not triton_available(value):
        raise RuntimeError(f'ms_deform_attn: backend="triton" needs CUDA tensors, got '
                           f"{value.device} (on CPU only with TRITON_INTERPRET=1 set before "
                           "pavenet is imported)")


def ms_deform_attn(value: Tensor, spatial_shapes: Union[Tensor, Shapes],
                   sampling_locations: Tensor, attention_weights: Tensor,
                   backend: str = "auto") -> Tensor:
    """Sample multi-scale values at fractional locations and sum them with attention weights.

    Args:
        value: (N, S, M, Dh) values of M heads; S = sum of H_l * W_l, levels in order, each
            level flattened row-major.
        spatial_shapes: (L, 2) long tensor or a sequence of (H_l, W_l); passing Python ints
            avoids reading the tensor back from the device.
        sampling_locations: (N, Q, M, L, P, 2) as (x, y); (0, 0) is the top-left corner of a
            level's map and (1, 1) its bottom-right corner. Points outside read zeros.
        attention_weights: (N, Q, M, L, P).
        backend: "auto" (Triton for supported CUDA inputs, the bags for CPU float32 / float64,
            else the reference), "reference" (pure PyTorch ``grid_sample``), "bags" (a
            ValueError for other devices or dtypes) or "triton" (a RuntimeError when triton or
            CUDA is missing, a ValueError for float64 inputs).

    Returns:
        (N, Q, M * Dh) in ``value``'s dtype: for each head, the sum over levels and points of
        weight x bilinear sample (computed in the wider of the value and location dtypes).
    """
    shapes = shape_list(spatial_shapes)
    n, _, m, dh = value.shape
    _, q, _, num_levels, p, _ = sampling_locations.shape
    if len(shapes) != num_levels:
        raise ValueError(f"ms_deform_attn: {len(shapes)} spatial shapes for {num_levels} levels")
    chosen = resolve_backend(backend, value, sampling_locations, attention_weights)
    if chosen == "triton":
        return ms_deform_attn_triton(value, shapes, sampling_locations, attention_weights)
    if chosen == "bags":
        return ms_deform_attn_bags(value, shapes, sampling_locations, attention_weights)
    # sample in the wider of the two dtypes: bfloat16 locations would be off by pixels
    dtype = torch.promote_types(value.dtype, sampling_locations.dtype)
    values = value.to(dtype).split([h * w for h, w in shapes], dim=1)
    grids = 2.0 * sampling_locations.to(dtype) - 1.0
    weights = attention_weights.to(dtype).transpose(1, 2).reshape(n * m, 1, q, num_levels, p)
    out = grids.new_zeros(n * m, dh, q)
    for level, (h, w) in enumerate(shapes):
        v = values[level].permute(0, 2, 3, 1).reshape(n * m, dh, h, w)
        g = grids[:, :, :, level].transpose(1, 2).reshape(n * m, q, p, 2)
        sampled = F.grid_sample(v, g, mode="bilinear", padding_mode="zeros",
                                align_corners=False)  # (N*M, Dh, Q, P)
        out = out + (sampled * weights[:, :, :, level]).sum(-1)
    return out.view(n, m * dh, q).transpose(1, 2).to(value.dtype).contiguous()


def init_grid_offsets(bias: Tensor, num_heads: int, num_groups: int, num_points: int) -> None:
    """Deformable-DETR offset bias: head h points along angle 2*pi*h/M, point i at radius i+1.

    ``bias`` is viewed as (M, num_groups, P, 2) (num_groups = levels, or frames x levels).
    """
    thetas = torch.arange(num_heads, dtype=torch.float64) * (2.0 * math.pi / num_heads)
    grid = torch.stack([thetas.cos(), thetas.sin()], -1)
    grid = grid / grid.abs().max(-1, keepdim=True)[0]
    grid = grid.view(num_heads, 1, 1, 2).repeat(1, num_groups, num_points, 1)
    grid = grid * torch.arange(1, num_points + 1, dtype=torch.float64).view(1, 1, -1, 1)
    with torch.no_grad():
        bias.copy_(grid.flatten().to(bias.dtype))


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention with Deformable-DETR's projections and initialisation.

    Args:
        d_model: channel size D (divisible by ``num_heads``).
        num_heads: M.
        num_levels: L.
        num_points: P sampling points per head and level.
    """

    def __init__(self, d_model: int, num_heads: int, num_levels: int, num_points: int) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model {d_model} is not divisible by num_heads {num_heads}")
        self.d_model, self.num_heads = d_model, num_heads
        self.num_levels, self.num_points = num_levels, num_points
        self.sampling_offsets = nn.Linear(d_model, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(d_model, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Zero offset weights with a radial bias grid, uniform attention, Xavier projections."""
        nn.init.zeros_(self.sampling_offsets.weight)
        init_grid_offsets(self.sampling_offsets.bias, self.num_heads, self.num_levels,
                          self.num_points)
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for proj in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.zeros_(proj.bias)

    def forward(self, query: Tensor, reference_points: Tensor, input_flatten: Tensor,
                spatial_shapes: Shapes, padding_mask: Tensor | None = None) -> Tensor:
        """Attend from queries to multi-scale features.

        Args:
            query: (N, Q, D) queries (with position embedding added).
            reference_points: (N, Q, L, 2) in [0, 1] of each level's padded map (already
                multiplied by the valid ratios).
            input_flatten: (N, S, D) flattened multi-scale features.
            spatial_shapes: the L level shapes (H_l, W_l) as Python ints.
            padding_mask: (N, S) bool, True on padding tokens (their values are zeroed).

        Returns:
            (N, Q, D).
        """
        n, q, _ = query.shape
        m, num_levels, p = self.num_heads, self.num_levels, self.num_points
        value = self.value_proj(input_flatten)
        if padding_mask is not None:
            value = value.masked_fill(padding_mask[..., None], 0.0)
        value = value.view(n, -1, m, self.d_model // m)
        offsets = self.sampling_offsets(query).view(n, q, m, num_levels, p, 2)
        weights = self.attention_weights(query).view(n, q, m, num_levels * p)
        weights = weights.softmax(-1).view(n, q, m, num_levels, p)
        normalizer = query.new_tensor([[w, h] for h, w in spatial_shapes])
        locations = (reference_points[:, :, None, :, None, :]
                     + offsets / normalizer[None, None, None, :, None, :])
        return self.output_proj(ms_deform_attn(value, spatial_shapes, locations, weights))

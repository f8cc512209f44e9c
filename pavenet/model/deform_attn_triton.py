"""Multi-scale deformable attention as Triton kernels (forward and backward).

``ms_deform_attn_triton`` has the contract of the reference
:func:`pavenet.model.deformable_attention.ms_deform_attn`: bilinear sampling with
``F.grid_sample``'s ``align_corners=False`` / zero-padding semantics (pixel coordinate
``loc * size - 0.5``, corners outside a map read zero). Inputs may be float32, bfloat16 or
float16 (each independently); the kernels load them, compute and accumulate in float32 and
return the value's dtype, with each gradient in its input's dtype. Non-finite locations read
zeros (the reference returns NaN there).

One program handles a block of queries of one head of one batch element and loops over levels
and points. The backward kernel uses the same layout: it stores the location and attention
weight gradients directly (each is owned by one program) and scatters the value gradient with
``tl.atomic_add`` into a float32 buffer.

``triton.jit`` picks the interpreter from ``TRITON_INTERPRET=1`` when the kernels are
decorated, i.e. when this module is imported; in that mode the kernels also run on CPU tensors
(used by the parity tests).
"""
from __future__ import annotations

import functools
import os
from collections.abc import Sequence

import torch
from torch import Tensor

try:
    import triton
    import triton.language as tl
except ImportError:
    triton = None
    tl = None

HAS_TRITON = triton is not None
INTERPRET = HAS_TRITON and os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on")
SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def triton_available(device: torch.device | str | Tensor) -> bool:
    """True when triton imports and ``device`` (or a tensor's device) is CUDA, or when the
    kernels were built for the interpreter (``TRITON_INTERPRET=1`` at import)."""
    if isinstance(device, Tensor):
        device = device.device
    return HAS_TRITON and (INTERPRET or torch.device(device).type == "cuda")


def dtypes_supported(*tensors: Tensor) -> bool:
    """True when every tensor's dtype is one the kernels load (float32, bfloat16, float16)."""
    return all(t.dtype in SUPPORTED_DTYPES for t in tensors)


if HAS_TRITON:
    @triton.jit
    def _corner(base, xi, yi, h, w, row_stride, d, q_mask, d_mask):
        """Load the (BLOCK_Q, BLOCK_D) values at integer pixel (xi, yi); zero outside the map.

        Returns the values and the per-query in-map mask."""
        inside = q_mask & (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        ptrs = base + (yi * w + xi).to(tl.int64)[:, None] * row_stride + d[None, :]
        mask = inside[:, None] & d_mask[None, :]
        return tl.load(ptrs, mask=mask, other=0.0).to(tl.float32), inside

    @triton.jit
    def _pixel(loc_ptr, idx, q_mask, h, w):
        """Pixel coordinates of the points at ``idx``: the top-left corner (int) and fractions.

        Coordinates are clamped to [-2, size + 1], which leaves every sample and gradient
        unchanged (all four corners are outside either way) and keeps the int cast in range."""
        wf = w.to(tl.float32)
        hf = h.to(tl.float32)
        x = tl.load(loc_ptr + idx * 2, mask=q_mask, other=0.0).to(tl.float32) * wf - 0.5
        y = tl.load(loc_ptr + idx * 2 + 1, mask=q_mask, other=0.0).to(tl.float32) * hf - 0.5
        x = tl.minimum(tl.maximum(x, -2.0), wf + 1.0)
        y = tl.minimum(tl.maximum(y, -2.0), hf + 1.0)
        x0 = tl.floor(x)
        y0 = tl.floor(y)
        return x0.to(tl.int32), y0.to(tl.int32), x - x0, y - y0

    @triton.jit
    def _corners(base, x0, y0, h, w, row_stride, d, q_mask, d_mask):
        """Values and in-bounds flags of the four pixels around (x0, y0): top-left, top-right,
        bottom-left, bottom-right."""
        v00, in00 = _corner(base, x0, y0, h, w, row_stride, d, q_mask, d_mask)
        v01, in01 = _corner(base, x0 + 1, y0, h, w, row_stride, d, q_mask, d_mask)
        v10, in10 = _corner(base, x0, y0 + 1, h, w, row_stride, d, q_mask, d_mask)
        v11, in11 = _corner(base, x0 + 1, y0 + 1, h, w, row_stride, d, q_mask, d_mask)
        return v00, v01, v10, v11, in00, in01, in10, in11

    @triton.jit
    def _tile(Q, M, DH, BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr):
        """This program's head m, batch n, channel lanes d, lane masks and (n, q, m) rows."""
        m = tl.program_id(1)
        n = tl.program_id(2).to(tl.int64)
        q = tl.program_id(0) * BLOCK_Q + tl.arange(0, BLOCK_Q)
        d = tl.arange(0, BLOCK_D)
        return m, n, d, q < Q, d < DH, (n * Q + q) * M + m

    @triton.jit
    def _fwd_kernel(value_ptr, levels_ptr, loc_ptr, attn_ptr, out_ptr, S, Q,
                    M: tl.constexpr, L: tl.constexpr, P: tl.constexpr, DH: tl.constexpr,
                    BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr):
        """out[n, q, m, :] = sum over levels and points of weight x bilinear sample."""
        m, n, d, q_mask, d_mask, rows = _tile(Q, M, DH, BLOCK_Q, BLOCK_D)
        head_base = value_ptr + n * S * M * DH + m * DH
        acc = tl.zeros((BLOCK_Q, BLOCK_D), dtype=tl.float32)
        for lvl in range(L):
            h = tl.load(levels_ptr + lvl * 3)
            w = tl.load(levels_ptr + lvl * 3 + 1)
            base = head_base + tl.load(levels_ptr + lvl * 3 + 2).to(tl.int64) * M * DH
            for pt in range(P):
                idx = (rows * L + lvl) * P + pt
                a = tl.load(attn_ptr + idx, mask=q_mask, other=0.0).to(tl.float32)
                x0, y0, fx, fy = _pixel(loc_ptr, idx, q_mask, h, w)
                v00, v01, v10, v11, _, _, _, _ = _corners(base, x0, y0, h, w, M * DH, d, q_mask, d_mask)
                top = v00 + (v01 - v00) * fx[:, None]
                bottom = v10 + (v11 - v10) * fx[:, None]
                acc += a[:, None] * (top + (bottom - top) * fy[:, None])
        out_ptrs = out_ptr + rows[:, None] * DH + d[None, :]
        tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty),
                 mask=q_mask[:, None] & d_mask[None, :])

    @triton.jit
    def _scatter(grad_base, xi, yi, w, row_stride, d, inside, d_mask, contrib):
        """Atomically add ``contrib`` (BLOCK_Q, BLOCK_D) to the value gradient at (xi, yi)."""
        ptrs = grad_base + (yi * w + xi).to(tl.int64)[:, None] * row_stride + d[None, :]
        tl.atomic_add(ptrs, contrib, mask=inside[:, None] & d_mask[None, :], sem="relaxed")

    @triton.jit
    def _bwd_kernel(value_ptr, levels_ptr, loc_ptr, attn_ptr, grad_out_ptr, grad_value_ptr,
                    grad_loc_ptr, grad_attn_ptr, S, Q,
                    M: tl.constexpr, L: tl.constexpr, P: tl.constexpr, DH: tl.constexpr,
                    BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr):
        """Gradients of value (atomic, float32), sampling locations and attention weights."""
        m, n, d, q_mask, d_mask, rows = _tile(Q, M, DH, BLOCK_Q, BLOCK_D)
        go_ptrs = grad_out_ptr + rows[:, None] * DH + d[None, :]
        go = tl.load(go_ptrs, mask=q_mask[:, None] & d_mask[None, :], other=0.0).to(tl.float32)
        head_offset = n * S * M * DH + m * DH
        for lvl in range(L):
            h = tl.load(levels_ptr + lvl * 3)
            w = tl.load(levels_ptr + lvl * 3 + 1)
            level_offset = head_offset + tl.load(levels_ptr + lvl * 3 + 2).to(tl.int64) * M * DH
            base = value_ptr + level_offset
            grad_base = grad_value_ptr + level_offset
            for pt in range(P):
                idx = (rows * L + lvl) * P + pt
                a = tl.load(attn_ptr + idx, mask=q_mask, other=0.0).to(tl.float32)
                x0, y0, fx, fy = _pixel(loc_ptr, idx, q_mask, h, w)
                v00, v01, v10, v11, in00, in01, in10, in11 = _corners(base, x0, y0, h, w, M * DH, d,
                                                                      q_mask, d_mask)
                gx = fx[:, None]
                gy = fy[:, None]
                top = v00 + (v01 - v00) * gx
                bottom = v10 + (v11 - v10) * gx
                sample = top + (bottom - top) * gy
                tl.store(grad_attn_ptr + idx, tl.sum(go * sample, axis=1), mask=q_mask)
                dx = (v01 - v00) * (1.0 - gy) + (v11 - v10) * gy
                dy = bottom - top
                grad_x = a * w.to(tl.float32) * tl.sum(go * dx, axis=1)
                grad_y = a * h.to(tl.float32) * tl.sum(go * dy, axis=1)
                tl.store(grad_loc_ptr + idx * 2, grad_x, mask=q_mask)
                tl.store(grad_loc_ptr + idx * 2 + 1, grad_y, mask=q_mask)
                ga = a[:, None] * go
                _scatter(grad_base, x0, y0, w, M * DH, d, in00, d_mask,
                         ga * ((1.0 - gx) * (1.0 - gy)))
                _scatter(grad_base, x0 + 1, y0, w, M * DH, d, in01, d_mask, ga * (gx * (1.0 - gy)))
                _scatter(grad_base, x0, y0 + 1, w, M * DH, d, in10, d_mask, ga * ((1.0 - gx) * gy))
                _scatter(grad_base, x0 + 1, y0 + 1, w, M * DH, d, in11, d_mask, ga * (gx * gy))


# elements of a (BLOCK_Q, BLOCK_D) tile for the default 4 warps: at Dh=32 for sm_90 ptxas
# reports 72 registers for the forward and 120 for the backward kernel without spills, while
# 1024-element tiles spill in both
TILE = 512


def _launch_meta(value: Tensor, locations: Tensor) -> tuple[tuple[int, ...], dict]:
    """The grid and the size arguments shared by the forward and backward launches."""
    n, s, m, dh = value.shape
    _, q, _, num_levels, p, _ = locations.shape
    block_d = triton.next_power_of_2(dh)
    block_q = max(1, min(TILE // block_d, triton.next_power_of_2(q)))
    grid = (triton.cdiv(q, block_q), m, n)
    sizes = {"S": s, "Q": q, "M": m, "L": num_levels, "P": p, "DH": dh,
             "BLOCK_Q": block_q, "BLOCK_D": block_d}
    return grid, sizes


class _MSDeformAttnFunction(torch.autograd.Function):
    """Autograd wrapper; inputs are contiguous with shapes checked by the caller."""

    @staticmethod
    def forward(ctx, value: Tensor, levels: Tensor, locations: Tensor,
                weights: Tensor) -> Tensor:
        n, _, m, dh = value.shape
        q = locations.shape[1]
        out = value.new_empty(n, q, m * dh)
        if out.numel():
            grid, sizes = _launch_meta(value, locations)
            _fwd_kernel[grid](value, levels, locations, weights, out, **sizes)
        ctx.save_for_backward(value, levels, locations, weights)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        value, levels, locations, weights = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_value = torch.zeros(value.shape, dtype=torch.float32, device=value.device)
        grad_loc = torch.zeros(locations.shape, dtype=torch.float32, device=value.device)
        grad_attn = torch.zeros(weights.shape, dtype=torch.float32, device=value.device)
        if grad_out.numel():
            grid, sizes = _launch_meta(value, locations)
            _bwd_kernel[grid](value, levels, locations, weights, grad_out, grad_value, grad_loc,
                              grad_attn, **sizes)
        return (grad_value.to(value.dtype), None, grad_loc.to(locations.dtype),
                grad_attn.to(weights.dtype))


def _level_rows(shapes: tuple[tuple[int, int], ...], device: torch.device) -> Tensor:
    """(L, 3) int32 rows (H, W, start offset in S)."""
    rows, start = [], 0
    for h, w in shapes:
        rows.append((h, w, start))
        start += h * w
    return torch.tensor(rows, dtype=torch.int32, device=device)


_cached_level_rows = functools.lru_cache(maxsize=64)(_level_rows)


def _level_table(shapes: tuple[tuple[int, int], ...], device: torch.device) -> Tensor:
    """The level rows, built once per shapes and device in eager mode (no host-to-device copy
    per call). Under torch.compile they are built in the graph, a constant there: dynamo does
    not trace through a cache (it warns and skips the wrapper)."""
    if torch.compiler.is_compiling():
        return _level_rows(shapes, device)
    return _cached_level_rows(shapes, device)


def _check_inputs(value: Tensor, shapes: tuple[tuple[int, int], ...], locations: Tensor,
                  weights: Tensor) -> None:
    """Raise on an unusable device or dtype, or on inconsistent shapes (before any launch)."""
    if not HAS_TRITON:
        raise RuntimeError("ms_deform_attn_triton: triton is not installed")
    if not triton_available(value):
        raise RuntimeError(f"ms_deform_attn_triton: tensors on {value.device} need CUDA "
                           "(or TRITON_INTERPRET=1 set before pavenet is imported)")
    if not dtypes_supported(value, locations, weights):
        raise ValueError("ms_deform_attn_triton supports float32, bfloat16 and float16, got "
                         f"{value.dtype}, {locations.dtype}, {weights.dtype}")
    if len({value.device, locations.device, weights.device}) != 1:
        raise ValueError("ms_deform_attn_triton: inputs are on different devices")
    n, s, m, _ = value.shape
    expected = (n, locations.shape[1], m, len(shapes), locations.shape[4])
    if tuple(locations.shape) != expected + (2,) or tuple(weights.shape) != expected:
        raise ValueError(f"ms_deform_attn_triton: locations {tuple(locations.shape)} and "
                         f"weights {tuple(weights.shape)} do not match (N, Q, M, L, P) = "
                         f"{expected} from value {tuple(value.shape)} and {len(shapes)} levels")
    if s != sum(h * w for h, w in shapes):
        raise ValueError(f"ms_deform_attn_triton: value has {s} tokens, the level shapes "
                         f"{list(shapes)} have {sum(h * w for h, w in shapes)}")


def ms_deform_attn_triton(value: Tensor, shapes: Sequence[tuple[int, int]],
                          sampling_locations: Tensor, attention_weights: Tensor) -> Tensor:
    """Triton multi-scale deformable attention with the reference's contract.

    Args:
        value: (N, S, M, Dh).
        shapes: the L level shapes (H_l, W_l) as Python ints, in the order of S.
        sampling_locations: (N, Q, M, L, P, 2) as (x, y) in [0, 1] of each level's map.
        attention_weights: (N, Q, M, L, P).

    Returns:
        (N, Q, M * Dh) in ``value``'s dtype, computed in float32.
    """
    shapes = tuple((int(h), int(w)) for h, w in shapes)
    _check_inputs(value, shapes, sampling_locations, attention_weights)
    levels = _level_table(shapes, value.device)
    return _MSDeformAttnFunction.apply(value.contiguous(), levels,
                                       sampling_locations.contiguous(),
                                       attention_weights.contiguous())

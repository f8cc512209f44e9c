"""Multi-scale deformable attention for the CPU as weighted bags of table rows.

Every output row of deformable attention (one query, one head) is a weighted sum of value rows:
for each level and point, the four bilinear corners with weight ``attention x bilinear``. That
is exactly ``F.embedding_bag(mode="sum", per_sample_weights=...)``, whose CPU kernel gathers
and sums without materialising the samples; PyTorch's own backward of it sorts every index and
is slow, so :class:`BilinearBags` supplies the two products the gradients need:

- the weights' gradient, one dot product per (bag, entry), is a sampled dense-dense product
  (``torch.sparse.sampled_addmm`` over the bags' index pattern);
- the table's gradient is the transposed product, again bag sums: the points are sorted once by
  the row of their top-left corner, and for each of the four corners every row sums the output
  gradients of its points times their corner weights (then moved to the corner's row).

The values are laid out per (batch, head) with each level padded by two zero rows and columns
on every side, so a point's four corners are ``base, base + 1, base + W', base + W' + 1`` with
no bounds test: a corner outside the map reads a padding zero (``grid_sample``'s zero padding
with ``align_corners=False``), and a point far outside is clamped into the padding, where all
four corners are zero. Gradients reach the attention weights and locations through ordinary
PyTorch ops on the per-corner weights. :func:`pavenet.model.deformable_attention.ms_deform_attn`
(``backend="reference"``) is the oracle of the tests.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

#: zero rows / columns around each level's map
PAD = 2
SUPPORTED_DTYPES = (torch.float32, torch.float64)


def bags_supported(value: Tensor, sampling_locations: Tensor, attention_weights: Tensor) -> bool:
    """True for CPU tensors of float32 / float64 (the kernels ``sampled_addmm`` has)."""
    tensors = (value, sampling_locations, attention_weights)
    return all(t.device.type == "cpu" and t.dtype in SUPPORTED_DTYPES for t in tensors)


class BilinearBags(torch.autograd.Function):
    """Bilinear samples of a :func:`padded_table` summed with weights, with fast CPU gradients.

    ``table`` (B * S', D) for B = batch x heads blocks; ``base`` (R, L, P) int64, the table row
    of each point's top-left corner; ``weight`` (R, L, P, 4), the weights of the corners
    ``base + (0, 1, W'_l, W'_l + 1)``; ``shapes`` the L unpadded level shapes. Returns (R, D):
    ``out[r] = sum over (l, p, k) of weight[r, l, p, k] * table[base[r, l, p] + offset_l[k]]``.
    First derivatives only.
    """

    @staticmethod
    def forward(ctx, table: Tensor, base: Tensor, weight: Tensor, shapes: Sequence[tuple[int, int]]) -> Tensor:
        offsets = torch.tensor([[0, 1, w + 2 * PAD, w + 2 * PAD + 1] for _, w in shapes], device=base.device)
        index = (base[..., None] + offsets[:, None, :]).flatten(1)
        ctx.save_for_backward(table, base, weight, index)
        ctx.shapes = [tuple(s) for s in shapes]
        return F.embedding_bag(index, table, per_sample_weights=weight.flatten(1), mode="sum")

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        table, base, weight, index = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_table = grad_weight = None
        if ctx.needs_input_grad[2]:
            grad_weight = _entry_products(grad_out, table, index).view_as(weight)
        if ctx.needs_input_grad[0]:
            grad_table = _transposed_bags(grad_out, base, weight, table.shape[0], ctx.shapes)
        return grad_table, None, grad_weight, None


def _entry_products(grad_out: Tensor, table: Tensor, index: Tensor) -> Tensor:
    """(R, E): ``grad_out[r] . table[index[r, e]]`` (duplicate indices in a row are fine)."""
    rows, entries = index.shape
    crow = torch.arange(0, rows * entries + 1, entries, dtype=torch.int64, device=index.device)
    zeros = torch.zeros(rows * entries, dtype=table.dtype, device=table.device)
    with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state", once per process
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)
        pattern = torch.sparse_csr_tensor(crow, index.reshape(-1), zeros, size=(rows, table.shape[0]),
                                          check_invariants=False)
    products = torch.sparse.sampled_addmm(pattern, grad_out, table.t(), beta=0.0)
    return products.values().view(rows, entries)


def _transposed_bags(grad_out: Tensor, base: Tensor, weight: Tensor, table_rows: int,
                     shapes: Sequence[tuple[int, int]]) -> Tensor:
    """(T, D): each table row's sum of ``corner weight x grad_out`` over the corners that read it.

    The points are sorted by top-left row once; each corner k sums into ``corner_k[row]`` the
    points whose top-left corner is ``row`` (one bag sum per corner), and ``corner_k`` is then
    added ``offset_l[k]`` rows further on (the offset is constant within a level's region, and
    no corner leaves its region, so the shift never crosses regions)."""
    points = base.shape[1] * base.shape[2]
    flat = base.reshape(-1)
    order = torch.argsort(flat.to(torch.int32) if table_rows < 2 ** 31 else flat, stable=True)
    counts = torch.bincount(flat, minlength=table_rows)
    starts = torch.cumsum(counts, 0) - counts
    bag_of_point = torch.div(order, points, rounding_mode="floor")
    corner_weights = weight.reshape(-1, 4).index_select(0, order)
    corners = [F.embedding_bag(bag_of_point, grad_out, starts, per_sample_weights=corner_weights[:, k].contiguous(),
                               mode="sum") for k in range(4)]
    grad = corners[0]
    grad[1:] += corners[1][:-1]
    sizes = padded_sizes(shapes)
    blocks = grad.view(-1, sum(sizes), grad.shape[-1])
    below, below_right = (c.view_as(blocks) for c in corners[2:])
    start = 0
    for size, (_, w) in zip(sizes, shapes):
        row = w + 2 * PAD
        blocks[:, start + row:start + size] += below[:, start:start + size - row]
        blocks[:, start + row + 1:start + size] += below_right[:, start:start + size - row - 1]
        start += size
    return grad


def padded_sizes(shapes: Sequence[tuple[int, int]]) -> list[int]:
    """The rows of each padded level in one (batch, head) block of :func:`padded_table` (their
    sum is the block's size S')."""
    return [(h + 2 * PAD) * (w + 2 * PAD) for h, w in shapes]


def padded_table(value: Tensor, shapes: Sequence[tuple[int, int]]) -> Tensor:
    """(N, S, M, Dh) values -> (N * M * S', Dh): per (batch, head) the levels, each padded by
    ``PAD`` zeros on every side and flattened row-major."""
    n, _, m, dh = value.shape
    levels = []
    for v, (h, w) in zip(value.split([h * w for h, w in shapes], dim=1), shapes):
        grid = v.reshape(n, h, w, m, dh).permute(0, 3, 1, 2, 4)
        levels.append(F.pad(grid, (0, 0, PAD, PAD, PAD, PAD)).reshape(n, m, -1, dh))
    return torch.cat(levels, dim=2).reshape(-1, dh)


def corner_entries(shapes: Sequence[tuple[int, int]], sampling_locations: Tensor,
                   attention_weights: Tensor) -> tuple[Tensor, Tensor]:
    """The points of every (batch, query, head) bag, for :class:`BilinearBags`.

    Returns ``base`` (N * Q * M, L, P) int64, the :func:`padded_table` row of each point's
    top-left corner (clamped into the padding when the point is outside the map), and
    ``weight`` (N * Q * M, L, P, 4), attention weight x bilinear weight of its four corners.
    """
    n, q, m, num_levels, p, _ = sampling_locations.shape
    device, dtype = sampling_locations.device, sampling_locations.dtype
    padded = padded_sizes(shapes)
    # per-(level, point, coordinate) constants, in the locations' memory order (element-wise
    # ops then run over contiguous rows of L * P * 2 instead of broadcasting pairs)
    sizes = _constant([[w, h] for h, w in shapes], p, dtype, device)
    # a corner's row in its level: origin + x + y * row length, origin the row of corner (0, 0)
    steps = _constant([[1, w + 2 * PAD] for _, w in shapes], p, dtype, device)
    origin = torch.tensor([sum(padded[:i]) + PAD * (w + 2 * PAD) + PAD for i, (_, w) in enumerate(shapes)],
                          dtype=dtype, device=device).view(1, num_levels, 1)

    pixel = sampling_locations.reshape(-1, num_levels * p * 2) * sizes - 0.5
    corner = pixel.floor()
    frac = (pixel - corner).view(-1, num_levels, p, 2)
    # a point outside the map reads padding zeros only; fmax / fmin also send NaN into the padding
    # (its weights stay NaN, so the output is NaN as the reference's)
    corner = torch.fmin(torch.fmax(corner, corner.new_tensor(-PAD)), sizes)
    local = (corner * steps).view(-1, num_levels, p, 2).sum(-1) + origin  # exact small integers
    # the (batch, head) block of each bag, bags in (N, Q, M) order
    blocks = torch.arange(n * m, device=device).view(n, 1, m).expand(n, q, m) * sum(padded)
    base = local.long() + blocks.reshape(-1, 1, 1)

    one_minus = 1.0 - frac
    along_x = torch.stack([one_minus[..., 0], frac[..., 0]], dim=-1)
    along_y = torch.stack([one_minus[..., 1], frac[..., 1]], dim=-1)
    along_y = along_y * attention_weights.reshape(-1, num_levels, p, 1)
    weight = along_y[..., :, None] * along_x[..., None, :]  # corners (0, 0), (1, 0), (0, 1), (1, 1)
    return base, weight.view(-1, num_levels, p, 4)


def _constant(rows: list[list[int]], points: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """(1, L * P * 2): each level's (x, y) pair repeated for its P points."""
    pairs = torch.tensor(rows, dtype=dtype, device=device).view(len(rows), 1, 2).expand(-1, points, 2)
    return pairs.reshape(1, -1)


def ms_deform_attn_bags(value: Tensor, shapes: Sequence[tuple[int, int]], sampling_locations: Tensor,
                        attention_weights: Tensor) -> Tensor:
    """The contract of :func:`pavenet.model.deformable_attention.ms_deform_attn` on CPU tensors
    of float32 / float64 (computed in the wider dtype, returned in the value's)."""
    n, _, m, dh = value.shape
    q = sampling_locations.shape[1]
    dtype = torch.promote_types(value.dtype, sampling_locations.dtype)
    table = padded_table(value.to(dtype), shapes)
    base, weight = corner_entries(shapes, sampling_locations.to(dtype), attention_weights.to(dtype))
    out = BilinearBags.apply(table, base, weight, shapes)
    return out.view(n, q, m * dh).to(value.dtype)

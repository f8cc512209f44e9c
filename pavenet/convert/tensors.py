"""Tensor rules of the checkpoint conversion, and the bookkeeping of which tensor went where.

Each rule turns released tensors into pavenet's layout exactly (no training):

* ``fold_linears``: a chain of Linear layers with no activation between them (the released sigma
  heads) is one affine map, ``W = W_n ... W_1``, ``b = W_n (... (W_2 b_1 + b_2) ...) + b_n``;
* ``frame_mlp``: T per-frame MLPs (``nn.Sequential`` of Linear/ReLU, one per frame) -> one
  :class:`pavenet.model.heads.FrameMLP` (weights stacked on a frame axis, transposed);
* ``concat``: per-frame offset / attention-weight projections stacked along the output axis in
  frame order (previous, key, next), as :class:`pavenet.model.pose_attention.FrameDeformAttn`
  reads them;
* joint selection of output rows (PETR's 17 COCO joints -> the model's 15).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
from torch import Tensor

from .reading import ConvertError


@dataclass
class Conversion:
    """Released tensors in, pavenet tensors out, with the record of every tensor's fate."""

    source: dict[str, Tensor]
    path: str
    out: dict[str, Tensor] = field(default_factory=dict)
    used: set[str] = field(default_factory=set)
    dropped: dict[str, str] = field(default_factory=dict)
    initialised: dict[str, str] = field(default_factory=dict)

    def take(self, key: str) -> Tensor:
        """The released tensor ``key`` (marked as used)."""
        if key not in self.source:
            raise ConvertError(f"{self.path}: tensor '{key}' is missing (not the expected model?)")
        self.used.add(key)
        return self.source[key]

    def put(self, key: str, value: Tensor) -> None:
        self.out[key] = value.detach().clone().contiguous()

    def linear(self, src: str, dst: str, rows: Optional[Tensor] = None) -> None:
        """Copy a Linear (weight and bias), optionally only the output ``rows``."""
        weight, bias = self.take(src + ".weight"), self.take(src + ".bias")
        if rows is not None:
            weight, bias = weight[rows], bias[rows]
        self.put(dst + ".weight", weight)
        self.put(dst + ".bias", bias)

    def copy(self, src: str, dst: str) -> None:
        self.put(dst, self.take(src))

    def drop(self, prefix: str, why: str) -> None:
        """Record every unused released tensor under ``prefix`` as dropped for ``why``."""
        for key in self.source:
            if key.startswith(prefix) and key not in self.used:
                self.dropped[key] = why

    def mlp_layers(self, src: str, count: int) -> list[tuple[Tensor, Tensor]]:
        """(weight, bias) of the ``count`` Linears of a Sequential Linear/ReLU/.../Linear."""
        return [(self.take(f"{src}.{2 * i}.weight"), self.take(f"{src}.{2 * i}.bias"))
                for i in range(count)]

    def mlp(self, src: str, dst: str, count: int, last_rows: Optional[Tensor] = None) -> None:
        """A Sequential MLP -> :class:`pavenet.model.heads.MLP` (``layers.i``), optionally
        keeping only some output rows of the last layer."""
        for i, (w, b) in enumerate(self.mlp_layers(src, count)):
            if last_rows is not None and i == count - 1:
                w, b = w[last_rows], b[last_rows]
            self.put(f"{dst}.layers.{i}.weight", w)
            self.put(f"{dst}.layers.{i}.bias", b)

    def frame_mlp(self, srcs: Sequence[str], dst: str, count: int,
                  last_rows: Optional[Tensor] = None) -> None:
        """One Sequential MLP per frame (``srcs`` in frame order) -> a FrameMLP."""
        per_frame = [self.mlp_layers(s, count) for s in srcs]
        for i in range(count):
            weights = [layers[i][0] for layers in per_frame]
            biases = [layers[i][1] for layers in per_frame]
            if last_rows is not None and i == count - 1:
                weights, biases = [w[last_rows] for w in weights], [b[last_rows] for b in biases]
            self.put(f"{dst}.weights.{i}", torch.stack([w.t() for w in weights]))
            self.put(f"{dst}.biases.{i}", torch.stack(biases))

    def folded(self, src: str, names: Sequence[str]) -> tuple[Tensor, Tensor]:
        """The affine map of the Linears ``src.<name>`` applied in order (no activation)."""
        layers = [(self.take(f"{src}.{n}.weight"), self.take(f"{src}.{n}.bias")) for n in names]
        return fold_linears(layers)


def fold_linears(layers: Sequence[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """(W, b) of Linear layers (weight, bias) applied in order with nothing between them."""
    weight, bias = layers[0][0].double(), layers[0][1].double()
    for w, b in layers[1:]:
        weight = w.double() @ weight
        bias = w.double() @ bias + b.double()
    dtype = layers[-1][0].dtype
    return weight.to(dtype), bias.to(dtype)


def joint_rows(joints: Sequence[int], per_joint: int) -> Tensor:
    """Output rows of the ``joints`` when each joint owns ``per_joint`` consecutive rows."""
    return torch.tensor([j * per_joint + k for j in joints for k in range(per_joint)])


def point_rows(num_groups: int, src_points: int, points: Sequence[int], per_point: int) -> Tensor:
    """Rows of a deformable-attention projection viewed as (groups, src_points, per_point),
    keeping ``points`` of every group (heads x levels): selects the joints' sampling points."""
    return torch.tensor([g * src_points * per_point + p * per_point + k
                         for g in range(num_groups) for p in points for k in range(per_point)])

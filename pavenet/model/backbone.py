"""Backbone (any timm ``features_only`` model) and the channel mapper to d channels.

Nothing is downloaded: timm models are created with ``pretrained=False`` and weights come
only from a local state-dict file (``.pth``, ``.pt`` or ``.safetensors``).
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Optional, Sequence

import timm
import torch
import torch.nn.functional as F
from timm.layers import freeze_batch_norm_2d
from torch import Tensor, nn

from pavenet.runtime.state_dict import read_state_dict

from .swin import SWIN_VARIANTS, build_swin


def _dotted(key: str) -> str:
    """timm feature wrappers flatten top-level names ('layers.0' -> 'layers_0'); undo that."""
    head, sep, rest = key.partition(".")
    return re.sub(r"_(\d+)$", r".\1", head) + sep + rest


def load_backbone_weights(body: nn.Module, path: str | Path) -> None:
    """Copy a local timm checkpoint into the feature extractor ``body``.

    Weights of modules the extractor lacks (the classifier, stages after the last output)
    are ignored. Raises ValueError naming the file when a backbone weight is missing, has
    another shape, or the checkpoint has extra weights inside the extractor's modules (a
    checkpoint of another architecture).
    """
    state = read_state_dict(path)
    own = body.state_dict()
    source = {k: k if k in state else _dotted(k) for k in own}
    missing = [k for k, src in source.items()
               if src not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise ValueError(f"{path}: {len(missing)} backbone weights missing, e.g. {missing[:5]}")
    wrong = [f"{k}: {tuple(state[src].shape)} vs {tuple(own[k].shape)}"
             for k, src in source.items() if src in state and state[src].shape != own[k].shape]
    if wrong:
        raise ValueError(f"{path}: weights of the wrong shape, e.g. {wrong[:5]}")
    heads = {_dotted(name + ".") for name, _ in body.named_children()}
    used = set(source.values())
    extra = [k for k in state if k not in used and not k.endswith("num_batches_tracked")
             and any(k.startswith(h) for h in heads)]
    if extra:
        raise ValueError(f"{path}: {len(extra)} unexpected weights inside the backbone "
                         f"(another architecture?), e.g. {extra[:5]}")
    body.load_state_dict({k: state[src] for k, src in source.items() if src in state},
                         strict=False)


class Backbone(nn.Module):
    """A timm ``features_only`` model returning the feature maps of ``out_indices``.

    Args:
        name: timm model name (resnet50, resnet18, hrnet_w48, a swin, ...).
        out_indices: feature levels to return (>= 1 of them; strides from timm).
        frozen_stages: 0 freezes nothing; k >= 1 freezes the stem and the first k stages
            (their parameters stop training and their BatchNorms are frozen).
        frozen_bn: replace every BatchNorm by a FrozenBatchNorm (fixed statistics and affine).
        pretrained_path: optional local state dict of the timm model.
    """

    def __init__(self, name: str, out_indices: Sequence[int], frozen_stages: int = 0,
                 frozen_bn: bool = False, pretrained_path: Optional[str] = None) -> None:
        super().__init__()
        self.body = timm.create_model(name, pretrained=False, features_only=True,
                                      out_indices=tuple(out_indices))
        if pretrained_path:
            load_backbone_weights(self.body, pretrained_path)
        self.channels: list[int] = list(self.body.feature_info.channels())
        self.strides: list[int] = list(self.body.feature_info.reduction())
        fmt = getattr(self.body, "output_fmt", "NCHW")
        self.channels_last = getattr(fmt, "value", fmt) == "NHWC"  # e.g. swin
        if frozen_stages > 0:
            self._freeze_stages(frozen_stages)
        if frozen_bn:
            self.body = freeze_batch_norm_2d(self.body)

    def _freeze_stages(self, frozen_stages: int) -> None:
        info = self.body.feature_info.info
        if frozen_stages + 1 >= len(info):
            raise ValueError(f"frozen_stages={frozen_stages}: the backbone has {len(info) - 1} "
                             "stages after its stem and at least one must train")
        boundary = info[frozen_stages + 1]["module"].replace(".", "_")
        names = [name for name, _ in self.body.named_children()]
        if boundary not in names:
            raise ValueError(f"frozen_stages: stage module '{boundary}' is not a top-level "
                             f"module of the backbone ({names})")
        for name in names[:names.index(boundary)]:
            child = freeze_batch_norm_2d(getattr(self.body, name))
            setattr(self.body, name, child)
            for param in child.parameters():
                param.requires_grad_(False)

    def forward(self, images: Tensor) -> list[Tensor]:
        """``images`` (N, 3, H, W) -> one (N, C_i, H_i, W_i) map per out index."""
        features = list(self.body(images))
        if self.channels_last:
            features = [f.permute(0, 3, 1, 2) for f in features]
        return features


def build_backbone(name: str, out_indices: Sequence[int], frozen_stages: int = 0,
                   frozen_bn: bool = False, pretrained_path: Optional[str] = None) -> nn.Module:
    """The backbone named ``name``.

    ``swin_{tiny,small,base,large}_mmdet``: :class:`pavenet.model.swin.SwinBackbone`, mmdet's
    Swin Transformer layout (released PETR / PAVE-Net Swin weights load by stripping
    ``backbone.``); ``out_indices`` are its stage indices 0..3 and ``frozen_bn`` is moot (no
    BatchNorm). Any other name: a timm ``features_only`` model (:class:`Backbone`).

    Every backbone exposes ``channels`` and ``strides`` (one per returned level) and maps
    (N, 3, H, W) images to a list of (N, C_i, H_i, W_i) maps.
    """
    if name in SWIN_VARIANTS:
        return build_swin(name, out_indices, frozen_stages, pretrained_path)
    return Backbone(name, out_indices, frozen_stages, frozen_bn, pretrained_path)


class MaskedGroupNorm(nn.GroupNorm):
    """GroupNorm whose statistics use only the valid (non-padding) positions.

    An image's normalised features then do not depend on how much padding the batch adds.
    """

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:  # type: ignore[override]
        """``x`` (N, C, H, W), ``valid`` (N, 1, H, W) float in {0, 1}."""
        n, c, h, w = x.shape
        g = self.num_groups
        xg = x.view(n, g, c // g, h, w)
        vg = valid.view(n, 1, 1, h, w).to(x.dtype)
        count = (vg.sum(dim=(2, 3, 4), keepdim=True) * (c // g)).clamp(min=1.0)
        mean = (xg * vg).sum(dim=(2, 3, 4), keepdim=True) / count
        var = (((xg - mean) * vg) ** 2).sum(dim=(2, 3, 4), keepdim=True) / count
        y = ((xg - mean) * torch.rsqrt(var + self.eps)).view(n, c, h, w)
        return y * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)


class ChannelMapper(nn.Module):
    """Map backbone levels to ``d`` channels (1x1 conv + GroupNorm) and add stride-2 levels.

    The first extra level is a 3x3 stride-2 conv on the last backbone map, each further one
    on the previous extra level. With ``masked`` (padding-invariant), features are zeroed on
    padding before every conv, so a conv near the image border reads the same zeros as at the
    map border, GroupNorm statistics use the valid positions only and the outputs are zero on
    padding. Without it (the published neck) the convs and a plain GroupNorm see every
    position; both are the same on unpadded inputs.

    Args:
        in_channels: channels of the backbone levels.
        d_model: output channels D.
        extra_levels: number of added levels.
        masked: padding-invariant normalisation (see above).
    """

    def __init__(self, in_channels: Sequence[int], d_model: int, extra_levels: int = 1,
                 masked: bool = True) -> None:
        super().__init__()
        self.masked = masked
        groups = math.gcd(32, d_model)
        # no conv bias: the GroupNorm that follows removes it (with one channel per group its
        # true gradient is zero, and Adam would turn the float noise into full-size updates)
        self.proj = nn.ModuleList(nn.Conv2d(c, d_model, 1, bias=False) for c in in_channels)
        self.extra = nn.ModuleList(
            nn.Conv2d(in_channels[-1] if i == 0 else d_model, d_model, 3, stride=2, padding=1, bias=False)
            for i in range(extra_levels))
        self.norms = nn.ModuleList(MaskedGroupNorm(groups, d_model)
                                   for _ in range(len(in_channels) + extra_levels))
        for conv in [*self.proj, *self.extra]:
            nn.init.xavier_uniform_(conv.weight, gain=1)

    def forward(self, features: Sequence[Tensor], mask: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """``features`` from the backbone, ``mask`` (N, H, W) True on padding.

        Returns the level maps (N, D, H_l, W_l) and their padding masks (N, H_l, W_l).
        """
        maps, masks = [], []
        last = features[-1]
        for i in range(len(self.proj) + len(self.extra)):
            if i < len(self.proj):
                x, conv = features[i], self.proj[i]
                size = x.shape[-2:]
            else:
                x, conv = last, self.extra[i - len(self.proj)]
                size = ((x.shape[-2] + 1) // 2, (x.shape[-1] + 1) // 2)
            level_mask = F.interpolate(mask[:, None].float(), size=size, mode="nearest")
            if self.masked:
                valid = 1.0 - level_mask
                x_mask = F.interpolate(mask[:, None].float(), size=x.shape[-2:], mode="nearest")
                y = self.norms[i](conv(x * (1.0 - x_mask).to(x.dtype)), valid)
                y = y * valid.to(y.dtype)
            else:
                y = F.group_norm(conv(x), self.norms[i].num_groups, self.norms[i].weight,
                                 self.norms[i].bias, self.norms[i].eps)
            maps.append(y)
            masks.append(level_mask[:, 0] > 0.5)
            last = y if i >= len(self.proj) else last
        return maps, masks

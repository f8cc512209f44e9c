"""Swin Transformer backbone laid out like mmdet's ``SwinTransformer`` (PAVE-Net's Swin-L).

Names, shapes and computation follow mmdet 2.x: the ``backbone.*`` tensors of a released
PETR / PAVE-Net checkpoint load strictly once the ``backbone.`` prefix is removed. Where mmdet
differs from the original Swin code (and from timm), it is reproduced on purpose:

* the patch embedding and every patch merging zero-pad the bottom/right of the map to a
  multiple of their stride ("corner" adaptive padding), so any input size works;
* each block zero-pads its normalised tokens to a multiple of the window size, and the
  padded tokens take part in the attention (they are not masked); windows are never shrunk
  and every odd block shifts, even on maps smaller than a window;
* tokens of different regions of a shifted window get ``-100`` added to their logits;
* patch merging concatenates a 2x2 neighbourhood in ``nn.Unfold`` order (channel-major,
  ``merged[c * 4 + 2 * dy + dx] = x[2i + dy, 2j + dx, c]``; timm stacks the four positions);
* ``relative_position_index`` is a persistent buffer (it is in the state dict).

Tokens are kept as (B, H, W, C) maps between modules; outputs are NCHW.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as checkpoint
from timm.layers import DropPath  # stochastic depth per sample, as mmcv's (scaled by 1 / keep)
from torch import Tensor, nn

from pavenet.runtime.state_dict import read_state_dict

#: logit offset between tokens of different regions of a shifted window (mmdet's value)
MASK_VALUE = -100.0


@dataclass(frozen=True)
class SwinSpec:
    """Sizes of one Swin variant (mmdet's standard configs, patch 4, window 7)."""

    embed_dims: int
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    window_size: int
    drop_path_rate: float


#: build_backbone names -> sizes; drop-path rates as in mmdet's configs (Swin-L: PAVE-Net's)
SWIN_VARIANTS: dict[str, SwinSpec] = {
    "swin_tiny_mmdet": SwinSpec(96, (2, 2, 6, 2), (3, 6, 12, 24), 7, 0.2),
    "swin_small_mmdet": SwinSpec(96, (2, 2, 18, 2), (3, 6, 12, 24), 7, 0.2),
    "swin_base_mmdet": SwinSpec(128, (2, 2, 18, 2), (4, 8, 16, 32), 7, 0.3),
    "swin_large_mmdet": SwinSpec(192, (2, 2, 18, 2), (6, 12, 24, 48), 7, 0.3),
}


def relative_position_index(window: int) -> Tensor:
    """(N, N) long, N = window**2: row of the bias table for query p and key q.

    Tokens are numbered row-major inside the window; the row is
    ``(dy + window - 1) * (2 * window - 1) + (dx + window - 1)`` with (dy, dx) = p - q.
    """
    ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    coords = torch.stack([ys.flatten(), xs.flatten()])  # 2, N
    rel = coords[:, :, None] - coords[:, None, :] + (window - 1)  # 2, N, N
    return rel[0] * (2 * window - 1) + rel[1]


def window_partition(x: Tensor, window: int) -> Tensor:
    """(B, H, W, C) with H, W multiples of ``window`` -> (B * nH * nW, window, window, C)."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, window, window, c)


def window_reverse(windows: Tensor, window: int, h: int, w: int) -> Tensor:
    """Inverse of :func:`window_partition`: (B * nH * nW, window, window, C) -> (B, H, W, C)."""
    c = windows.shape[-1]
    x = windows.view(-1, h // window, w // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, h, w, c)


def shifted_window_mask(h: int, w: int, window: int, shift: int,
                        device: Optional[torch.device] = None,
                        dtype: torch.dtype = torch.float32) -> Tensor:
    """(nW, N, N) logit offsets of the shifted windows of an (h, w) padded, rolled map.

    After rolling by ``-shift``, rows ``[0, h - window)``, ``[h - window, h - shift)`` and
    ``[h - shift, h)`` (and likewise columns) come from different parts of the image; two
    tokens of a window attend to each other only when they share both bands (offset 0),
    otherwise the offset is :data:`MASK_VALUE`.
    """
    def bands(size: int) -> Tensor:
        band = torch.zeros(size, dtype=torch.long, device=device)
        band[size - window:size - shift] = 1
        band[size - shift:] = 2
        return band

    region = bands(h)[:, None] * 3 + bands(w)[None, :]
    ids = window_partition(region[None, :, :, None], window).reshape(-1, window * window)
    same = ids[:, :, None] == ids[:, None, :]
    return torch.zeros(same.shape, dtype=dtype, device=device).masked_fill(~same, MASK_VALUE)


class WindowMSA(nn.Module):
    """Multi-head self-attention inside windows with a learned relative position bias."""

    def __init__(self, dim: int, num_heads: int, window: int, qkv_bias: bool = True,
                 qk_scale: Optional[float] = None, attn_drop: float = 0.0,
                 proj_drop: float = 0.0) -> None:
        super().__init__()
        self.num_heads, self.window_size = num_heads, window
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def position_bias(self) -> Tensor:
        """(heads, N, N) bias added to the logits of every window."""
        n = self.window_size ** 2
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(n, n, -1).permute(2, 0, 1)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """``x`` (B * nW, N, C) window tokens, ``mask`` (nW, N, N) offsets or None."""
        b, n, c = x.shape
        heads = self.num_heads
        q, k, v = self.qkv(x).view(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4).unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1) + self.position_bias()
        if mask is not None:
            nw = mask.shape[0]
            attn = (attn.view(b // nw, nw, heads, n, n) + mask[None, :, None]).view(b, heads, n, n)
        attn = self.attn_drop(attn.softmax(dim=-1))
        return self.proj_drop(self.proj((attn @ v).transpose(1, 2).reshape(b, n, c)))


class ShiftWindowMSA(nn.Module):
    """(Shifted) window attention over a (B, H, W, C) map: pad, roll, attend, undo."""

    def __init__(self, dim: int, num_heads: int, window: int, shift: int, qkv_bias: bool,
                 qk_scale: Optional[float], attn_drop: float, proj_drop: float,
                 drop_path: float) -> None:
        super().__init__()
        if not 0 <= shift < window:
            raise ValueError(f"shift {shift} must be in [0, window={window})")
        self.window_size, self.shift_size = window, shift
        self.w_msa = WindowMSA(dim, num_heads, window, qkv_bias, qk_scale, attn_drop, proj_drop)
        self.drop = DropPath(drop_path)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """``x`` (B, H, W, C) normalised tokens; ``mask``: the padded map's shift mask.

        ``mask`` is only used by shifted blocks and computed here when not given.
        """
        b, h, w, c = x.shape
        ws, shift = self.window_size, self.shift_size
        x = F.pad(x, (0, 0, 0, (-w) % ws, 0, (-h) % ws))
        hp, wp = x.shape[1], x.shape[2]
        if shift:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
            if mask is None:
                mask = shifted_window_mask(hp, wp, ws, shift, x.device, x.dtype)
        out = self.w_msa(window_partition(x, ws).view(-1, ws * ws, c), mask if shift else None)
        x = window_reverse(out.view(-1, ws, ws, c), ws, hp, wp)
        if shift:
            x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
        return self.drop(x[:, :h, :w].contiguous())


class FFN(nn.Module):
    """mmcv's two-layer FFN (Linear, GELU, Dropout, Linear, Dropout) with its residual."""

    def __init__(self, dim: int, hidden: int, drop: float, drop_path: float) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(drop)),
            nn.Linear(hidden, dim), nn.Dropout(drop))
        self.dropout_layer = DropPath(drop_path)

    def forward(self, x: Tensor, identity: Tensor) -> Tensor:
        """``identity + drop_path(mlp(x))``."""
        return identity + self.dropout_layer(self.layers(x))


class SwinBlock(nn.Module):
    """Pre-norm block: x + attn(norm1(x)), then + ffn(norm2(.))."""

    def __init__(self, dim: int, num_heads: int, hidden: int, window: int, shift: bool,
                 qkv_bias: bool = True, qk_scale: Optional[float] = None, drop: float = 0.0,
                 attn_drop: float = 0.0, drop_path: float = 0.0, with_cp: bool = False) -> None:
        super().__init__()
        self.with_cp = with_cp
        self.norm1 = nn.LayerNorm(dim)
        self.attn = ShiftWindowMSA(dim, num_heads, window, window // 2 if shift else 0,
                                   qkv_bias, qk_scale, attn_drop, drop, drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = FFN(dim, hidden, drop, drop_path)

    def _forward(self, x: Tensor, mask: Optional[Tensor]) -> Tensor:
        x = x + self.attn(self.norm1(x), mask)
        return self.ffn(self.norm2(x), x)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """``x`` (B, H, W, C) -> same shape; gradient checkpointing when ``with_cp``."""
        if self.with_cp and x.requires_grad:
            return checkpoint.checkpoint(self._forward, x, mask, use_reentrant=False)
        return self._forward(x, mask)


def merge_2x2(x: Tensor) -> Tensor:
    """(B, H, W, C) -> (B, ceil(H/2), ceil(W/2), 4C) in ``nn.Unfold`` order.

    The map is zero-padded to even sizes at the bottom/right first; then
    ``out[b, i, j, c * 4 + 2 * dy + dx] = x[b, 2i + dy, 2j + dx, c]``.
    """
    x = F.pad(x, (0, 0, 0, x.shape[2] % 2, 0, x.shape[1] % 2))
    b, h, w, c = x.shape
    x = x.view(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(b, h // 2, w // 2, 4 * c)


class PatchMerging(nn.Module):
    """Halve the resolution: merge 2x2 neighbourhoods (:func:`merge_2x2`), LayerNorm, Linear."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """(B, H, W, C) -> (B, ceil(H/2), ceil(W/2), out_dim)."""
        return self.reduction(self.norm(merge_2x2(x)))


class PatchEmbed(nn.Module):
    """Non-overlapping patch conv + LayerNorm; pads the image bottom/right to the patch size."""

    def __init__(self, in_channels: int, dim: int, patch: int) -> None:
        super().__init__()
        self.patch = patch
        self.projection = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.norm = nn.LayerNorm(dim)

    def forward(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, ceil(H/p), ceil(W/p), dim)."""
        h, w = images.shape[-2:]
        images = F.pad(images, (0, (-w) % self.patch, 0, (-h) % self.patch))
        return self.norm(self.projection(images).permute(0, 2, 3, 1))


class SwinStage(nn.Module):
    """``depth`` blocks (odd ones shifted) and an optional patch merging after them."""

    def __init__(self, dim: int, depth: int, num_heads: int, window: int, mlp_ratio: float,
                 drop_paths: Sequence[float], downsample: bool, **block_kw) -> None:
        super().__init__()
        self.window_size = window
        self.blocks = nn.ModuleList(
            SwinBlock(dim, num_heads, int(mlp_ratio * dim), window, shift=j % 2 == 1,
                      drop_path=drop_paths[j], **block_kw) for j in range(depth))
        self.downsample = PatchMerging(dim, 2 * dim) if downsample else None

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, H, W, C) -> (stage output, input of the next stage: merged if downsampling)."""
        ws = self.window_size
        mask = None
        if len(self.blocks) > 1:  # one mask for all shifted blocks of the stage
            hp, wp = -(-x.shape[1] // ws) * ws, -(-x.shape[2] // ws) * ws
            mask = shifted_window_mask(hp, wp, ws, ws // 2, x.device, x.dtype)
        for block in self.blocks:
            x = block(x, mask)
        return x, (self.downsample(x) if self.downsample is not None else x)


def _checked_out_indices(out_indices: Sequence[int], stages: int, heads: int,
                         frozen_stages: int) -> list[int]:
    """``out_indices`` as a list; ValueError unless increasing stage indices, one head count
    per stage and 0 <= frozen_stages <= stages."""
    out = [int(i) for i in out_indices]
    if not out or sorted(set(out)) != out or not set(out) <= set(range(stages)) or heads != stages:
        raise ValueError(f"Swin: out_indices {out} must be increasing stage indices in "
                         f"0..{stages - 1} (and num_heads one per stage)")
    if not 0 <= frozen_stages <= stages:
        raise ValueError(f"Swin: frozen_stages={frozen_stages} must be in 0..{stages}")
    return out


class SwinBackbone(nn.Module):
    """mmdet-compatible Swin Transformer returning the (normalised) maps of ``out_indices``.

    Args:
        embed_dims, depths, num_heads, window_size, mlp_ratio, patch_size, qkv_bias, qk_scale,
            drop_rate, attn_drop_rate, drop_path_rate: as mmdet's ``SwinTransformer`` (drop
            path grows linearly over all blocks from 0 to ``drop_path_rate``).
        out_indices: stages (0..3) whose outputs are returned, increasing; each gets a
            LayerNorm ``norm{i}``. Stage i has ``embed_dims * 2**i`` channels, stride
            ``patch_size * 2**i``.
        frozen_stages: pavenet's convention: 0 freezes nothing (mmdet -1); k >= 1 freezes the
            patch embedding and stages 0..k-1 (each with the patch merging that follows it)
            and their output norms, exactly like mmdet's ``frozen_stages=k``, and keeps them in
            eval mode (no drop path). mmdet's 0 (patch embedding only) has no equivalent.
        pretrained_path: optional local state dict (see :func:`load_swin_weights`).
        with_cp: gradient checkpointing of every block.
    """

    def __init__(self, embed_dims: int = 96, depths: Sequence[int] = (2, 2, 6, 2),
                 num_heads: Sequence[int] = (3, 6, 12, 24), window_size: int = 7,
                 out_indices: Sequence[int] = (0, 1, 2, 3), mlp_ratio: float = 4.0,
                 patch_size: int = 4, in_channels: int = 3, qkv_bias: bool = True,
                 qk_scale: Optional[float] = None, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.1,
                 frozen_stages: int = 0, pretrained_path: Optional[str] = None,
                 with_cp: bool = False) -> None:
        super().__init__()
        n = len(depths)
        self.out_indices = _checked_out_indices(out_indices, n, len(num_heads), frozen_stages)
        dims = [embed_dims * 2 ** i for i in range(n)]
        self.patch_embed = PatchEmbed(in_channels, embed_dims, patch_size)
        self.drop_after_pos = nn.Dropout(drop_rate)
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        starts = [sum(depths[:i]) for i in range(n + 1)]
        self.stages = nn.ModuleList(
            SwinStage(dims[i], depths[i], num_heads[i], window_size, mlp_ratio,
                      rates[starts[i]:starts[i + 1]], i < n - 1, qkv_bias=qkv_bias,
                      qk_scale=qk_scale, drop=drop_rate, attn_drop=attn_drop_rate,
                      with_cp=with_cp) for i in range(n))
        for i in self.out_indices:
            self.add_module(f"norm{i}", nn.LayerNorm(dims[i]))
        self.channels: list[int] = [dims[i] for i in self.out_indices]
        self.strides: list[int] = [patch_size * 2 ** i for i in self.out_indices]
        self.frozen_stages = frozen_stages
        self.init_weights()
        if pretrained_path:
            load_swin_weights(self, pretrained_path)
        for module in self.frozen_modules():
            module.requires_grad_(False)
        self.train(self.training)

    def init_weights(self) -> None:
        """Truncated-normal (std 0.02) Linear weights and bias tables, zero biases, unit LNs."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, WindowMSA):
                nn.init.trunc_normal_(m.relative_position_bias_table, std=0.02)

    def frozen_modules(self) -> list[nn.Module]:
        """Modules frozen by ``frozen_stages`` (see the class docstring)."""
        if self.frozen_stages <= 0:
            return []
        modules: list[nn.Module] = [self.patch_embed, self.drop_after_pos]
        for i in range(self.frozen_stages):
            modules.append(self.stages[i])
            if i in self.out_indices:
                modules.append(getattr(self, f"norm{i}"))
        return modules

    def train(self, mode: bool = True) -> "SwinBackbone":
        """Set the mode, keeping the frozen modules in eval mode."""
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()
        return self

    def forward(self, images: Tensor) -> list[Tensor]:
        """``images`` (N, 3, H, W), any H, W -> one (N, C_i, H_i, W_i) map per out index.

        H_0 = ceil(H / 4), each later stage ceil(previous / 2).
        """
        x = self.drop_after_pos(self.patch_embed(images))
        outs = []
        for i, stage in enumerate(self.stages[:self.out_indices[-1] + 1]):
            out, x = stage(x)
            if i in self.out_indices:
                outs.append(getattr(self, f"norm{i}")(out).permute(0, 3, 1, 2).contiguous())
        return outs


def load_swin_weights(module: SwinBackbone, path: str | Path) -> None:
    """Load an mmdet Swin state dict into ``module``, strictly.

    The file is read with :func:`pavenet.runtime.state_dict.read_state_dict` (an mmdet
    checkpoint's ``state_dict`` is unwrapped). When keys start with ``backbone.`` (a whole
    detector/PAVE-Net checkpoint) only those are used, the prefix stripped; otherwise all
    keys are. Raises ValueError naming the file when a key is missing, left over or of
    another shape (e.g. an original-Swin-repo checkpoint, which mmdet converts first).
    """
    state = read_state_dict(path)
    if any(k.startswith("backbone.") for k in state):
        state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    wrong = [f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}"
             for k, v in own.items() if k in state and state[k].shape != v.shape]
    if missing or extra or wrong:
        raise ValueError(
            f"{path}: not an mmdet SwinTransformer state dict of this size: "
            f"{len(missing)} weights missing (e.g. {missing[:3]}), {len(extra)} unexpected "
            f"(e.g. {extra[:3]}), {len(wrong)} of the wrong shape (e.g. {wrong[:3]})")
    module.load_state_dict(state, strict=True)


def build_swin(name: str, out_indices: Sequence[int], frozen_stages: int = 0,
               pretrained_path: Optional[str] = None) -> SwinBackbone:
    """The :data:`SWIN_VARIANTS` backbone ``name`` (mmdet's sizes, patch 4)."""
    spec = SWIN_VARIANTS[name]
    return SwinBackbone(spec.embed_dims, spec.depths, spec.num_heads, spec.window_size,
                        out_indices, drop_path_rate=spec.drop_path_rate,
                        frozen_stages=frozen_stages, pretrained_path=pretrained_path)

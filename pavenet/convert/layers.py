"""Conversion rules shared by the released PAVE-Net and PETR: backbone, neck, encoder, layers.

Released names (mmdet/mmcv) -> pavenet names:

* ``backbone.X`` -> the network's backbone module (``backbone.body.X`` for timm backbones);
  BatchNorm ``num_batches_tracked`` counters are dropped (frozen statistics need none).
* ``neck.convs.i.{conv,gn}`` -> ``mapper.proj.i`` / ``mapper.norms.i``; ``neck.extra_convs.e``
  -> ``mapper.extra.e`` / ``mapper.norms.(levels + e)``.
* encoder layer: ``attentions.0.*`` -> ``attn.*``, ``ffns.0.layers.{0.0,1}`` ->
  ``linear1``/``linear2``, ``norms.{0,1}`` -> ``norm1``/``norm2``.
* decoder layer: ``attentions.0.attn.*`` -> ``self_attn.*``, ``attentions.1.*`` ->
  ``cross_attn.*`` (per-frame projections concatenated in frame order), FFN as above,
  ``norms.{0,1,2}`` -> ``norm1..3``.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from .tensors import Conversion

HEAD = "bbox_head."
TRANSFORMER = "bbox_head.transformer."
COUNTER = "BatchNorm counter (frozen statistics need none)"


def backbone(conv: Conversion, model_keys: Sequence[str]) -> None:
    """Every backbone tensor of the model from ``backbone.*`` (same names below the prefix)."""
    prefix = "backbone.body." if any(k.startswith("backbone.body.") for k in model_keys) else "backbone."
    for key in model_keys:
        if key.startswith(prefix):
            conv.copy("backbone." + key[len(prefix):], key)
    for key in conv.source:
        if key.startswith("backbone.") and key.endswith("num_batches_tracked") and key not in conv.used:
            conv.dropped[key] = COUNTER


def neck(conv: Conversion, num_inputs: int, num_extra: int) -> None:
    """The channel mapper: 1x1 convs + GroupNorm per input level, stride-2 extra levels."""
    for i in range(num_inputs):
        conv.copy(f"neck.convs.{i}.conv.weight", f"mapper.proj.{i}.weight")
        conv.linear(f"neck.convs.{i}.gn", f"mapper.norms.{i}")
    for e in range(num_extra):
        conv.copy(f"neck.extra_convs.{e}.conv.weight", f"mapper.extra.{e}.weight")
        conv.linear(f"neck.extra_convs.{e}.gn", f"mapper.norms.{num_inputs + e}")


def ffn_and_norms(conv: Conversion, src: str, dst: str, num_norms: int) -> None:
    conv.linear(src + "ffns.0.layers.0.0", dst + "linear1")
    conv.linear(src + "ffns.0.layers.1", dst + "linear2")
    for n in range(num_norms):
        conv.linear(f"{src}norms.{n}", f"{dst}norm{n + 1}")


def encoder(conv: Conversion, num_layers: int) -> None:
    """Encoder layers, level embedding and the proposal projection."""
    for i in range(num_layers):
        src, dst = f"{TRANSFORMER}encoder.layers.{i}.", f"encoder.layers.{i}."
        for name in ("sampling_offsets", "attention_weights", "value_proj", "output_proj"):
            conv.linear(f"{src}attentions.0.{name}", f"{dst}attn.{name}")
        ffn_and_norms(conv, src, dst, 2)
    conv.copy(TRANSFORMER + "level_embeds", "level_embed")
    conv.linear(TRANSFORMER + "enc_output", "query_init.enc_output")
    conv.linear(TRANSFORMER + "enc_output_norm", "query_init.enc_norm")


def decoder_layer(conv: Conversion, src: str, dst: str, frame_prefixes: Sequence[str],
                  offset_rows: Optional[Tensor] = None, weight_rows: Optional[Tensor] = None) -> None:
    """One decoder layer. Frame t's offset / attention-weight projections are
    ``attentions.1.<frame_prefixes[t]>sampling_offsets`` (a prefix may repeat: a single-frame
    attention copied to every frame), optionally restricted to some output rows."""
    for name in ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"):
        conv.copy(f"{src}attentions.0.attn.{name}", f"{dst}self_attn.{name}")
    attn = f"{src}attentions.1."
    for name, rows in (("sampling_offsets", offset_rows), ("attention_weights", weight_rows)):
        for part in ("weight", "bias"):
            frames = [conv.take(f"{attn}{p}{name}.{part}") for p in frame_prefixes]
            if rows is not None:
                frames = [f[rows] for f in frames]
            conv.put(f"{dst}cross_attn.{name}.{part}", torch.cat(frames))
    for name in ("value_proj", "output_proj"):
        conv.linear(attn + name, f"{dst}cross_attn.{name}")
    ffn_and_norms(conv, src, dst, 3)


def split_embedding(conv: Conversion, src: str, pos_dst: str, content_dst: str,
                    rows: Optional[Tensor] = None) -> None:
    """A released (N, 2D) query embedding = [position | content] -> two (N, D) embeddings."""
    weight = conv.take(src)
    if rows is not None:
        weight = weight[rows]
    d = weight.shape[1] // 2
    conv.put(pos_dst, weight[:, :d])
    conv.put(content_dst, weight[:, d:])


def visibility_always_on(conv: Conversion, dst: str, weight_shape: Sequence[int],
                         bias_shape: Sequence[int], weight: str, bias: str) -> None:
    """pavenet's visibility head, which the released model lacks: zero weights and a bias of
    20 (sigmoid = 1 - 2e-9), so the ``nms_free`` joint scores come from sigma alone."""
    conv.put(f"{dst}.{weight}", torch.zeros(weight_shape))
    conv.put(f"{dst}.{bias}", torch.full(bias_shape, 20.0))
    reason = "no released visibility head: zero weights, bias 20 (always visible)"
    conv.initialised[f"{dst}.{weight}"] = reason
    conv.initialised[f"{dst}.{bias}"] = reason

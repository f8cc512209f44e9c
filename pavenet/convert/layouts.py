"""The head rules of the two released layouts: PAVE-Net (T = 3 video model) and PETR (image model).

PAVE-Net -> the exact released network: per-frame keypoint heads stacked into FrameMLPs, the
key-frame-only sigma heads (three Linears, no activation) folded into one Linear and used for
every frame, per-frame joint refinement MLPs, query embeddings split into position | content.

PETR (COCO, 17 joints) -> a T-frame pavenet initialised as the published recipe's first stage:
the 15 model joints taken from COCO's 17 (:data:`pavenet.data.joints.COCO_TO_MODEL`), every
attention and keypoint head copied to every frame; PETR has no sigma heads, so those keep
pavenet's initialisation.
"""
from __future__ import annotations

from typing import Callable

import torch

from pavenet.config import ModelConfig
from pavenet.data.joints import COCO_TO_MODEL

from . import layers
from .layers import HEAD, TRANSFORMER
from .reading import ConvertError
from .tensors import Conversion, joint_rows, point_rows

#: the released PAVE-Net's per-frame name prefixes, frame order (previous, key, next)
FRAME_PREFIXES = ("pre_", "", "next_")
SIGMA_LINEARS = ("0", "1", "2.linear")
FLOWS = "RLE normalizing flow (training only)"
HEATMAP = "auxiliary heatmap head (training only, loss weight 0)"


def _common(conv: Conversion, cfg: ModelConfig, model_keys: list[str], num_inputs: int) -> None:
    layers.backbone(conv, model_keys)
    layers.neck(conv, num_inputs, cfg.backbone.extra_levels)
    layers.encoder(conv, cfg.enc_layers)
    split = layers.split_embedding
    split(conv, HEAD + "query_embedding.weight", "query_init.pos_embed.weight", "query_init.tgt_embed.weight")


def _pose_visibility(conv: Conversion, cfg: ModelConfig) -> None:
    t, d, j = cfg.num_frames, cfg.hidden_dim, cfg.num_joints
    for lv in range(cfg.pose_dec_layers):
        layers.visibility_always_on(conv, f"pose_decoder.heads.{lv}.visibility", (t, d, j), (t, j),
                                    "weights.0", "biases.0")
    for lv in range(cfg.joint_dec_layers):
        layers.visibility_always_on(conv, f"joint_decoder.heads.{lv}.visibility", (t, d), (t,),
                                    "weight", "bias")


def _person_projection(conv: Conversion, cfg: ModelConfig) -> None:
    if cfg.joint_query != "person":
        return
    d = cfg.hidden_dim
    conv.put("joint_decoder.person_proj.weight", torch.zeros(d, d))
    conv.put("joint_decoder.person_proj.bias", torch.zeros(d))
    for k in ("weight", "bias"):
        conv.initialised[f"joint_decoder.person_proj.{k}"] = (
            "zeros: the released joint queries have no person term")


def _check_per_frame_refine(cfg: ModelConfig, conv: Conversion) -> None:
    if cfg.joint_refine != "per_frame":
        raise ConvertError(f"{conv.path}: the released joint refinement is one MLP per frame: "
                           "convert with a config that has model.joint_refine: per_frame")


def convert_pavenet(conv: Conversion, cfg: ModelConfig, model_keys: list[str]) -> None:
    """Released PAVE-Net (T = 3) -> pavenet."""
    if cfg.num_frames != len(FRAME_PREFIXES):
        raise ConvertError(f"{conv.path}: the released PAVE-Net reads {len(FRAME_PREFIXES)} frames, "
                           f"the config {cfg.num_frames} (model.num_frames)")
    _check_per_frame_refine(cfg, conv)
    t, n_pose = cfg.num_frames, cfg.pose_dec_layers
    _common(conv, cfg, model_keys, num_inputs=len(cfg.backbone.out_indices))
    for lv in range(n_pose):
        layers.decoder_layer(conv, f"{TRANSFORMER}decoder.layers.{lv}.", f"pose_decoder.layers.{lv}.",
                             FRAME_PREFIXES)
        dst = f"pose_decoder.heads.{lv}."
        conv.linear(f"{HEAD}cls_branches.{lv}", dst + "cls")
        conv.frame_mlp([f"{HEAD}{p}kpt_branches.{lv}" for p in FRAME_PREFIXES], dst + "refine", 4)
        weight, bias = conv.folded(f"{HEAD}dec_fc_sigma_branches.{lv}", SIGMA_LINEARS)
        conv.put(dst + "sigma.weights.0", weight.t()[None].repeat(t, 1, 1))
        conv.put(dst + "sigma.biases.0", bias[None].repeat(t, 1))
    conv.linear(f"{HEAD}cls_branches.{n_pose}", "query_init.cls")
    conv.mlp(f"{HEAD}kpt_branches.{n_pose}", "query_init.keypoints", 4)
    weight, bias = conv.folded(f"{HEAD}dec_fc_sigma_branches.{n_pose}", SIGMA_LINEARS)
    conv.put("query_init.sigma.weight", weight)
    conv.put("query_init.sigma.bias", bias)
    for lv in range(cfg.joint_dec_layers):
        layers.decoder_layer(conv, f"{TRANSFORMER}refine_decoder.layers.{lv}.",
                             f"joint_decoder.layers.{lv}.", FRAME_PREFIXES)
        dst = f"joint_decoder.heads.{lv}."
        conv.frame_mlp([f"{HEAD}{p}refine_kpt_branches.{lv}" for p in FRAME_PREFIXES], dst + "refine", 3)
        weight, bias = conv.folded(f"{HEAD}refine_fc_sigma_branches.{lv}", SIGMA_LINEARS)
        conv.put(dst + "sigma.weight", weight.repeat(t, 1))
        conv.put(dst + "sigma.bias", bias.repeat(t))
    layers.split_embedding(conv, TRANSFORMER + "refine_query_embedding.weight",
                           "joint_decoder.joint_pos.weight", "joint_decoder.joint_tgt.weight")
    _pose_visibility(conv, cfg)
    _person_projection(conv, cfg)
    for prefix in ("enc_flow.", "dec_flow.", "flow."):
        conv.drop(HEAD + prefix, FLOWS)
    conv.drop(HEAD + "fc_hm.", HEATMAP)


def convert_petr(conv: Conversion, cfg: ModelConfig, model_keys: list[str]) -> None:
    """PETR (COCO, 17 joints) -> a T-frame pavenet initialisation."""
    _check_per_frame_refine(cfg, conv)
    src_joints = conv.take(f"{HEAD}kpt_branches.0.6.weight").shape[0] // 2
    if src_joints != len(COCO_TO_MODEL) + 2 or cfg.num_joints != len(COCO_TO_MODEL):
        raise ConvertError(f"{conv.path}: expected PETR with 17 COCO joints and a 15-joint config, "
                           f"got {src_joints} and {cfg.num_joints}")
    t, m, lv_count, n_pose = cfg.num_frames, cfg.num_heads, cfg.num_levels, cfg.pose_dec_layers
    frames = ("",) * t
    kpt_rows = joint_rows(COCO_TO_MODEL, 2)
    _common(conv, cfg, model_keys, num_inputs=len(cfg.backbone.out_indices))
    for lv in range(n_pose):
        layers.decoder_layer(conv, f"{TRANSFORMER}decoder.layers.{lv}.", f"pose_decoder.layers.{lv}.",
                             frames, point_rows(m * lv_count, src_joints, COCO_TO_MODEL, 2),
                             point_rows(m * lv_count, src_joints, COCO_TO_MODEL, 1))
        dst = f"pose_decoder.heads.{lv}."
        conv.linear(f"{HEAD}cls_branches.{lv}", dst + "cls")
        conv.frame_mlp([f"{HEAD}kpt_branches.{lv}"] * t, dst + "refine", 4, last_rows=kpt_rows)
    conv.linear(f"{HEAD}cls_branches.{n_pose}", "query_init.cls")
    conv.mlp(f"{HEAD}kpt_branches.{n_pose}", "query_init.keypoints", 4, last_rows=kpt_rows)
    for lv in range(cfg.joint_dec_layers):
        layers.decoder_layer(conv, f"{TRANSFORMER}refine_decoder.layers.{lv}.",
                             f"joint_decoder.layers.{lv}.", frames)
        conv.frame_mlp([f"{HEAD}refine_kpt_branches.{lv}"] * t, f"joint_decoder.heads.{lv}.refine", 3)
    layers.split_embedding(conv, TRANSFORMER + "refine_query_embedding.weight",
                           "joint_decoder.joint_pos.weight", "joint_decoder.joint_tgt.weight",
                           rows=torch.tensor(COCO_TO_MODEL))
    _pose_visibility(conv, cfg)
    _person_projection(conv, cfg)
    conv.drop(TRANSFORMER + "hm_encoder.", "heatmap encoder (training only)")
    conv.drop(HEAD + "fc_hm.", HEATMAP)


#: layout name -> rule
RULES: dict[str, Callable[[Conversion, ModelConfig, list[str]], None]] = {
    "pavenet": convert_pavenet,
    "petr": convert_petr,
}

#: pavenet tensors a layout has no source for and that keep the model's initialisation
KEEP_INIT: dict[str, dict[str, str]] = {
    "pavenet": {"embed.": "tracking embedding: no released counterpart (pavenet's initialisation, seed 0)"},
    "petr": {
        "embed.": "tracking embedding: no PETR counterpart (pavenet's initialisation, seed 0)",
        "query_init.sigma.": "PETR has no sigma heads (pavenet's initialisation, seed 0)",
        "pose_decoder.heads.": "PETR has no sigma heads (pavenet's initialisation, seed 0)",
        "joint_decoder.heads.": "PETR has no sigma heads (pavenet's initialisation, seed 0)",
    },
}

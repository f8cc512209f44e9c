"""The config schema: one dataclass per section, with the defaults of every field.

A YAML file lists only what differs from these; :mod:`pavenet.config` loads, checks and saves
them (types here, ranges and cross-field rules in :mod:`pavenet.config_rules`). Torch-free.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional


@dataclass
class BackboneConfig:
    name: str = "resnet50"
    out_indices: list[int] = field(default_factory=lambda: [2, 3, 4])
    frozen_stages: int = 1
    frozen_bn: bool = True
    extra_levels: int = 1
    pretrained_path: Optional[str] = None


@dataclass
class VepeConfig:
    """VEPE components (used when ``model.arch`` is ``vepe``); each switch is one ablation row."""

    #: Spatio-Temporal Pose Encoder: key-frame queries read the linked queries of every frame
    stpe: bool = True
    #: Instance Consistency Module: link queries across frames by instance embeddings (else by pose)
    icm: bool = True
    #: Spatio-Temporal Deformable Memory Encoder: fuse every frame's memory across the clip
    stdme: bool = True
    #: Spatio-Temporal Pose Decoder over all T frames (else the key frame's memory only)
    stpd: bool = True
    #: Pose Query Selection: queries scoring at least this take part in the temporal stage
    score_threshold: float = 0.3
    #: layer counts and STDME's sampling points per head, level and frame
    stpe_layers: int = 2
    stdme_layers: int = 1
    stdme_points: int = 4
    stpd_layers: int = 3


@dataclass
class ModelConfig:
    #: the network :func:`pavenet.model.build` builds
    arch: Literal["pavenet", "vepe"] = "pavenet"
    #: T, the clip length (key frame T // 2), and J, the joints per person
    num_frames: int = 3
    num_joints: int = 15
    #: transformer width, attention heads, feature levels (backbone outputs + extra levels)
    hidden_dim: int = 256
    num_heads: int = 8
    num_levels: int = 4
    #: spatial encoder: layers, deformable sampling points per head and level
    enc_layers: int = 6
    enc_points: int = 4
    ffn_dim: int = 1024
    dropout: float = 0.1
    #: person queries taken from the encoder proposals
    num_queries: int = 300
    pose_dec_layers: int = 3
    joint_dec_layers: int = 2
    joint_dec_points: int = 4
    num_kept: int = 20
    refine_hidden: list[int] = field(default_factory=lambda: [512, 512, 512])
    #: "learned": query position = learned embedding (published); "pose": plus an encoding of
    #: the current reference pose's box before every pose-decoder layer (convergence aid)
    query_pos: Literal["learned", "pose"] = "learned"
    #: train a per-joint heatmap head on the finest encoder level (PETR's auxiliary heatmap
    #: loss, training only; convergence aid; published PAVE-Net: off). Needs loss.weight_heatmap
    heatmap_head: bool = False
    #: pose denoising queries per ground-truth track (DN-DETR's query denoising for poses,
    #: training only; convergence aid; published PAVE-Net: 0 = none) and their noise, as a
    #: fraction of the half box size (see pavenet/model/denoising.py)
    dn_groups: int = 0
    dn_noise: float = 0.4
    embed_dim: int = 128
    #: hidden widths of the encoder-proposal keypoint MLP (published: [512, 512, 512])
    proposal_hidden: list[int] = field(default_factory=lambda: [256, 256])
    #: encoder tokens whose centre lies outside (m, 1 - m) of the image on either axis are no
    #: proposals (their memory zeroed before the proposal heads, never selected); published:
    #: 0.01. 0 = only padding tokens are excluded (their features zeroed after the projection)
    proposal_margin: float = 0.0
    #: joint-decoder queries: "embedding" = the learned joint embedding only (published);
    #: "person" = plus a projection of the person's pose-decoder feature
    joint_query: Literal["embedding", "person"] = "person"
    #: joint-decoder 2-D refinement: "per_frame" = one MLP D-D-D-2 per frame (published);
    #: "shared" = one MLP D-D-2T for all frames
    joint_refine: Literal["per_frame", "shared"] = "shared"
    #: multi-frame attentions zero padding tokens "before_proj" of the value projection
    #: (published; padded values then keep the bias) or "after_proj" (padding-invariant)
    value_mask: Literal["before_proj", "after_proj"] = "after_proj"
    #: lower bound of a pose box's width/height (normalised units of the padded maps) when it
    #: scales the pose-aware sampling offsets (published: 1e-4; 0 = no bound)
    pose_box_min: float = 0.0
    #: channel-mapper normalisation: "masked" = GroupNorm statistics over the valid positions
    #: only (padding-invariant, for batched inference); "plain" = nn.GroupNorm (published)
    neck_norm: Literal["masked", "plain"] = "masked"
    #: queries the joint decoder refines in training: "matched" = every query the matcher
    #: assigns to a person (released), "topk" = the num_kept best-scoring ones (as at inference)
    joint_train: Literal["topk", "matched"] = "topk"
    #: detach the reference poses between decoder layers (Deformable-DETR); the released model
    #: lets gradients flow through them (false)
    detach_references: bool = True
    #: training: false = the non-key frames of a clip pass the backbone and the spatial encoder
    #: without gradients (the key frame's path trains the shared weights; a cheaper T > 1
    #: step; trainable BatchNorm then takes its statistics from the key frames and the other
    #: frames apart); true = every frame is trained (released). Inference is the same either way
    neighbour_grad: bool = True
    #: pose-aware attention (pose and joint decoders, VEPE's STPD): "query" = each frame's
    #: share of a head's weight comes from the query alone (published); "content" = plus a
    #: score of the values sampled in that frame, zero at initialisation (pavenet's option)
    frame_weights: Literal["query", "content"] = "query"
    #: PAVE-Net's encoder proposals: "key" = from the key frame's tokens alone (published);
    #: "clip" = each token also sees the mean of the other frames' tokens at its position
    #: (a zero-initialised MLP; a black or blurred key frame can propose its neighbours' people)
    proposal_frames: Literal["key", "clip"] = "key"
    #: PAVE-Net's joints: false = the last joint-decoder layer's (published); true = then moved
    #: by a zero-initialised MLP of a (2r+1)^2 grid of samples of the stride-4 backbone map
    #: around each joint, one cell apart, r = fine_radius (pavenet/model/fine_refine.py);
    #: fine_passes > 1: as many moves, each by its own MLP reading the grid at the moved joints
    fine_refine: bool = False
    fine_radius: int = 2
    fine_passes: int = 1
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    vepe: VepeConfig = field(default_factory=VepeConfig)


@dataclass
class MatcherConfig:
    mode: Literal["clip", "keyframe"] = "clip"
    #: OKS sigmas of the matcher and the OKS loss: "evaluation" (PoseTrack's) or "released"
    #: (the released code's: 0.079 for head_bottom and head_top instead of 0.025)
    oks_sigmas: Literal["evaluation", "released"] = "evaluation"
    cost_class: float = 2.0
    cost_keypoint: float = 70.0
    cost_oks: float = 7.0


@dataclass
class LossConfig:
    keypoint_loss: Literal["rle", "l1"] = "rle"
    #: RLE form: "released" = residual log(sigma sqrt(2 pi)) + |e| / sqrt(2), flow prior
    #: N(0.5, I), one flow per stage (proposals, pose decoder, joint decoder), normalised per
    #: coordinate; "pavenet" = log(2 sigma) + |e|, N(0, I), one shared flow, per joint
    rle: Literal["pavenet", "released"] = "pavenet"
    #: focal class loss (and the matcher's class cost)
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    #: weights of the loss terms (each also the matcher's weight of its cost)
    weight_class: float = 0.5
    weight_keypoint: float = 1.0
    weight_oks: float = 0.0
    weight_visibility: float = 1.0
    #: VEPE's instance consistency loss: weight and the margin of its hinge
    weight_consistency: float = 0.0
    consistency_margin: float = 0.3
    #: >1: each track supervises its k cheapest encoder proposals (convergence aid; published: 1)
    enc_one_to_many: int = 1
    #: "binary": focal loss with target 1 (published); "oks": varifocal loss towards the OKS of
    #: the matched prediction (scores rank poses by quality; convergence aid)
    class_target: Literal["binary", "oks"] = "binary"
    #: weight of the auxiliary heatmap loss (needs model.heatmap_head; 0 = off, published)
    weight_heatmap: float = 0.0
    #: standard deviation of the heatmap targets, in cells of the finest encoder level
    heatmap_sigma: float = 1.0


@dataclass
class PostprocessConfig:
    #: "nms_free": the top-k queries, joint score from sigma and visibility (the papers' claim);
    #: "official": the released test-time rule (joint score from sigma as released, coordinates
    #: clamped to the image and reweighted, OKS-NMS); see pavenet/model/postprocess.py
    mode: Literal["nms_free", "official"] = "nms_free"
    top_k: int = 20
    #: people under this score are dropped and not tracked
    score_threshold: float = 0.3
    #: OKS above which the lower-scoring of two people is suppressed (mode "official")
    nms_oks: float = 0.45


@dataclass
class DataConfig:
    dataset: Literal["synthetic", "posetrack17", "posetrack18", "posetrack21", "coco"] = "synthetic"
    root: str = "data/synthetic"
    train_split: str = "train"
    val_split: str = "val"
    frame_stride: int = 1
    train_short_side: list[int] = field(default_factory=lambda: [400, 1200])
    train_max_size: int = 1333
    test_short_side: int = 800
    test_max_size: int = 1333
    #: test-time resize: "antialias" = bilinear with antialiasing (PIL, on 8-bit frames);
    #: "official" = bilinear without antialiasing on float frames, as the released pipeline
    test_resize: Literal["antialias", "official"] = "antialias"
    rotation: float = 30.0
    flip: bool = True
    crop: bool = True
    photometric: bool = True
    pseudo_video_max_angle: float = 5.0
    pair_clips: bool = False
    pair_gap: int = 8
    batch_size: int = 1
    num_workers: int = 2
    skip_bad: bool = False


@dataclass
class TrainConfig:
    epochs: int = 50
    max_steps: int = 0
    lr: float = 2e-5
    lr_backbone_mult: float = 0.1
    lr_offsets_mult: float = 0.1
    weight_decay: float = 1e-4
    clip_grad: float = 0.1
    warmup_steps: int = 0
    schedule: Literal["step", "cosine", "constant"] = "step"
    lr_drop_epochs: list[int] = field(default_factory=lambda: [40])
    accumulate: int = 1
    amp: bool = True
    compile: bool = False
    ema: float = 0.0
    seed: int = 42
    eval_every: int = 1
    eval_max_sequences: int = 0
    log_every: int = 20
    max_nan_steps: int = 10
    freeze: list[str] = field(default_factory=list)
    #: False: `--weights` may lack some of the model's keys or hold extra ones (e.g. an ablation
    #: row without some VEPE component initialised from the full spatial phase); listed in a warning
    init_strict: bool = True


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    matcher: MatcherConfig = field(default_factory=MatcherConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

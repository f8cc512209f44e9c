"""Typed configuration: dataclasses loaded from YAML with strict checking.

Every section is a dataclass with defaults; a YAML file only lists what differs.
Unknown keys and values of the wrong type raise :class:`ConfigError` naming the
dotted key and the file. ``--set a.b=value`` overrides use the same checks. The configs
shipped in ``pavenet/configs`` load by name (``load_config("pavenet_r50")``) from anywhere.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from pavenet.config_rules import problems
from pavenet.errors import PavenetError
from pavenet.runtime.files import atomic_open

#: the configs shipped with pavenet, loadable by name
CONFIG_DIR = Path(__file__).resolve().parent / "configs"


class ConfigError(PavenetError, ValueError):
    """A configuration file or override is invalid."""


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


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and return the typed value."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: '{key}' must be a mapping, got {type(value).__name__}")
        return build_dataclass(tp, value, source, key + ".")
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], key, source)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{source}: '{key}' must be one of {list(args)}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: '{key}' must be a list, got {type(value).__name__}")
        return [_convert(v, args[0], f"{key}[{i}]", source) for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: '{key}' must be a bool, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: '{key}' must be an int, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise ConfigError(f"{source}: '{key}' must be a float, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: '{key}' must be a float, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: '{key}' must be a string, got {value!r}")
        return value
    raise ConfigError(f"{source}: '{key}' has unsupported type {_type_name(tp)}")


def build_dataclass(cls: type, data: dict, source: str, prefix: str = "") -> Any:
    """An instance of the dataclass ``cls`` from ``data``, strictly checked (unknown keys and wrong
    types raise :class:`ConfigError` naming ``source`` and the dotted key)."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            raise ConfigError(f"{source}: unknown key '{prefix}{key}' (valid: {sorted(names)})")
    kwargs = {k: _convert(v, hints[k], prefix + k, source) for k, v in data.items()}
    return cls(**kwargs)


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path: Path, what: str = "config") -> Any:
    """What a YAML file holds (an empty file: {}); :class:`ConfigError` naming the file when it
    is missing (``"{what} file not found"``) or malformed."""
    if not path.is_file():
        raise ConfigError(f"{path}: {what} file not found")
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: malformed YAML: {exc}") from exc


def _read_yaml(path: Path) -> dict:
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    base = data.pop("_base_", None)
    if base is not None:
        data = _merge(_read_yaml(path.parent / base), data)
    return data


def parse_overrides(overrides: list[str]) -> dict:
    """Turn ``["a.b=1", "c=x"]`` into a nested dict, values parsed as YAML scalars."""
    out: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set: expected key=value, got '{item}'")
        key, raw = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw)
    return out


def validate(cfg: Config, source: str) -> Config:
    """``cfg`` when every value is in range and the network can be built from it; else
    :class:`ConfigError` naming ``source`` and the key (see :mod:`pavenet.config_rules`)."""
    found = problems(cfg)
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise ConfigError(f"{source}: {found[0]}{more}")
    return cfg


def config_from_dict(data: dict, source: str = "<dict>") -> Config:
    return validate(build_dataclass(Config, data, source), source)


def config_names() -> list[str]:
    """The names of the shipped configs (``pavenet/configs/NAME.yaml``)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def config_path(config: str | Path) -> Path:
    """The YAML file of ``config``: a path to a file, or the name of a shipped config
    (``pavenet_r50`` or ``pavenet_r50.yaml``); raises :class:`ConfigError` otherwise."""
    path = Path(config)
    if path.is_file():
        return path
    name = path.name.removesuffix(".yaml")
    shipped = CONFIG_DIR / f"{name}.yaml"
    if str(path) not in (name, path.name):  # a path with folders: a file of the user's
        hint = f" (the shipped config of that name is '{name}')" if shipped.is_file() else ""
        raise ConfigError(f"{config}: config file not found{hint}")
    if shipped.is_file():
        return shipped
    close = difflib.get_close_matches(name, config_names(), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise ConfigError(f"{config}: config file not found, and not the name of a shipped config "
                      f"({', '.join(config_names())}){hint}")


def apply_overrides(cfg: Config, overrides: list[str], source: str) -> Config:
    """``cfg`` with ``--set`` overrides applied and checked."""
    merged = _merge(config_to_dict(cfg), parse_overrides(overrides))
    return validate(build_dataclass(Config, merged, "--set"), f"{source} with --set")


def load_config(config: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a config by path or shipped name (``_base_: other.yaml`` inherits) and apply
    ``--set`` overrides; without ``config``, the defaults."""
    if config is None:
        data, source = {}, "<defaults>"
    else:
        path = config_path(config)
        data, source = _read_yaml(path), str(path)
    cfg = build_dataclass(Config, data, source)
    if overrides:
        return apply_overrides(cfg, overrides, source)
    return validate(cfg, source)


def config_to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | Path) -> None:
    with atomic_open(path) as f:
        f.write(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))

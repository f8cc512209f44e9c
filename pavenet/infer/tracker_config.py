"""Tracker settings from a YAML file (``pavenet predict --tracker tracker.yaml``).

The file's top-level keys are the fields of :class:`pavenet.infer.linker.LinkerConfig`; the
One-Euro settings of :class:`pavenet.infer.smoothing.SmoothingConfig` go under ``smoothing:``
(a ``smoothing:`` section turns smoothing on unless it says ``enabled: false``). A key left out
keeps its default; ``score_threshold`` left out keeps the checkpoint's
``postprocess.score_threshold``. An unknown key, a value of the wrong type or out of range
raises :class:`pavenet.config.ConfigError` naming the file and the key::

    max_missed: 60          # frames a lost track may be re-found in
    embedding_weight: 1.0
    smoothing:
      min_cutoff: 0.5
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from pavenet.config import ConfigError, build_dataclass, read_yaml
from pavenet.infer.linker import LinkerConfig
from pavenet.infer.smoothing import SmoothingConfig


@dataclass
class _TrackerFile(LinkerConfig):
    """What a tracker file may hold: the linker's fields and ``smoothing``."""

    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)


def _unit(v: float) -> bool:
    return 0.0 <= v <= 1.0


def _non_negative(v: float) -> bool:
    return v >= 0


def _positive(v: float) -> bool:
    return v > 0


#: key -> (the check a value must pass, how to say it)
RULES: dict[str, tuple[Callable[[float], bool], str]] = {
    "score_threshold": (_unit, "in [0, 1]"), "joint_threshold": (_unit, "in [0, 1]"),
    "pose_weight": (_non_negative, ">= 0"), "embedding_weight": (_non_negative, ">= 0"),
    "min_similarity": (_unit, "in [0, 1]"), "min_pose_similarity": (_unit, "in [0, 1]"),
    "reid_min_similarity": (_unit, "in [0, 1]"), "max_missed": (_non_negative, ">= 0"),
    "embedding_momentum": (_unit, "in [0, 1]"), "min_area": (_positive, "> 0"),
    "sigma_scale": (_positive, "> 0"),
    "smoothing.min_cutoff": (_positive, "> 0"), "smoothing.beta": (_non_negative, ">= 0"),
    "smoothing.derivative_cutoff": (_positive, "> 0"), "smoothing.forget_after": (_non_negative, ">= 0"),
}


@dataclass(frozen=True)
class TrackerConfig:
    """Linker and smoothing settings; ``given``: the linker keys the file set."""

    linker: LinkerConfig = field(default_factory=LinkerConfig)
    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)
    given: frozenset[str] = frozenset()

    def linker_for(self, defaults: Mapping[str, float]) -> LinkerConfig:
        """The linker settings, with the ``defaults`` (e.g. the checkpoint's score threshold,
        :func:`pavenet.infer.linker.postprocess_defaults`) for the keys the file did not set."""
        return dataclasses.replace(self.linker, **{k: v for k, v in defaults.items() if k not in self.given})


def _check_ranges(loaded: _TrackerFile, source: str) -> None:
    for key, (check, wanted) in RULES.items():
        section, _, name = key.rpartition(".")
        value = getattr(loaded.smoothing if section else loaded, name)
        if not check(value):
            raise ConfigError(f"{source}: '{key}' must be {wanted}, got {value!r}")
    if loaded.pose_weight + loaded.embedding_weight <= 0:
        raise ConfigError(f"{source}: 'pose_weight' and 'embedding_weight' are both 0: nothing could match")


def tracker_config_from_dict(data: dict[str, Any], source: str = "<dict>") -> TrackerConfig:
    """A :class:`TrackerConfig` from the mapping of a tracker file (see the module docstring)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a tracker file is a mapping of settings, got {type(data).__name__}")
    data = dict(data)
    if "smoothing" in data and (data["smoothing"] is None or isinstance(data["smoothing"], dict)):
        data["smoothing"] = {"enabled": True, **(data["smoothing"] or {})}  # a section turns it on
    loaded = build_dataclass(_TrackerFile, data, source)
    _check_ranges(loaded, source)
    linker = LinkerConfig(**{f.name: getattr(loaded, f.name) for f in dataclasses.fields(LinkerConfig)})
    return TrackerConfig(linker, loaded.smoothing, frozenset(k for k in data if k != "smoothing"))


def load_tracker_config(path: str | Path) -> TrackerConfig:
    """Read a tracker YAML file (see the module docstring)."""
    path = Path(path)
    return tracker_config_from_dict(read_yaml(path, "tracker"), str(path))


def tracker_yaml(cfg: TrackerConfig | None = None) -> str:
    """A tracker file holding every setting of ``cfg`` (default: the defaults)."""
    cfg = cfg or TrackerConfig()
    data = {**dataclasses.asdict(cfg.linker), "smoothing": dataclasses.asdict(cfg.smoothing)}
    return yaml.safe_dump(data, sort_keys=False)

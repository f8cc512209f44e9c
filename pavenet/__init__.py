"""pavenet: end-to-end multi-person pose estimation and tracking in video.

The public API::

    from pavenet import PoseEstimator, load_config, build

``PoseEstimator`` turns videos and live streams into tracked poses (:mod:`pavenet.infer.estimator`;
per frame a ``FramePrediction``, :mod:`pavenet.infer.results`; ``load_tracker_config`` reads
tracker settings, :mod:`pavenet.infer.tracker_config`),
``load_config`` reads a shipped config by name (``"pavenet_r50"``) or a YAML path, and
``build(cfg)`` returns ``(model, criterion, postprocessor)``. They load on first use, so that
``import pavenet`` stays light and the command line can plan CPU threads before torch loads.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> the module that defines it
_EXPORTS = {
    "PoseEstimator": "pavenet.infer.estimator",
    "FramePrediction": "pavenet.infer.results",
    "PersonPrediction": "pavenet.infer.results",
    "load_tracker_config": "pavenet.infer.tracker_config",
    "TrackerConfig": "pavenet.infer.tracker_config",
    "load_config": "pavenet.config",
    "Config": "pavenet.config",
    "config_names": "pavenet.config",
    "build": "pavenet.model",
    "build_model": "pavenet.model",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:
    from pavenet.config import Config, config_names, load_config
    from pavenet.infer.estimator import PoseEstimator
    from pavenet.infer.results import FramePrediction, PersonPrediction
    from pavenet.infer.tracker_config import TrackerConfig, load_tracker_config
    from pavenet.model import build, build_model


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pavenet' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)

"""The network, its matcher/criterion and its post-processor.

``build(cfg) -> (model, criterion, postprocessor)`` is the one entry point (:mod:`.build`,
dispatching on ``model.arch``); the pieces are also importable from their modules
(``network``, ``vepe``, ``matcher``, ``criterion``, ``postprocess``).
"""
from __future__ import annotations

from .build import ARCHITECTURES, build, build_model

__all__ = ["ARCHITECTURES", "build", "build_model"]

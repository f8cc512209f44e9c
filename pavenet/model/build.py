"""``build(cfg) -> (model, criterion, postprocessor)``: the network named by ``model.arch``."""
from __future__ import annotations

from typing import Optional

from torch import nn

from ..config import Config, ModelConfig
from .criterion import build_criterion
from .joint_selection import MatchedQuerySelector
from .network import build_pavenet
from .postprocess import build_postprocessor
from .vepe.network import build_vepe

#: ``model.arch`` -> the builder of that network
ARCHITECTURES = {"pavenet": build_pavenet, "vepe": build_vepe}


def build_model(cfg: ModelConfig, joint_selector: Optional[MatchedQuerySelector] = None) -> nn.Module:
    """The network of ``cfg.arch`` (no weights are downloaded). ``joint_selector``: PAVE-Net's
    joint-decoder queries in training with ``model.joint_train: matched``."""
    if cfg.arch not in ARCHITECTURES:
        raise ValueError(f"model.arch must be one of {', '.join(ARCHITECTURES)}, got {cfg.arch!r}")
    if cfg.arch == "pavenet":
        return build_pavenet(cfg, joint_selector)
    if joint_selector is not None:
        raise ValueError("model.joint_train: matched is implemented for PAVE-Net, not VEPE")
    return ARCHITECTURES[cfg.arch](cfg)


def build(cfg: Config) -> tuple[nn.Module, nn.Module, nn.Module]:
    """Build the network named by ``cfg.model.arch`` with its criterion and post-processor."""
    if cfg.loss.weight_heatmap > 0 and not cfg.model.heatmap_head:
        raise ValueError("loss.weight_heatmap > 0 needs model.heatmap_head: true")
    criterion = build_criterion(cfg)
    selector = MatchedQuerySelector(criterion.matcher) if cfg.model.joint_train == "matched" else None
    return build_model(cfg.model, selector), criterion, build_postprocessor(cfg)

"""The network, its matcher/criterion and its post-processor.

``build(cfg) -> (model, criterion, postprocessor)`` is the one entry point; the pieces are
also importable from their modules (``network``, ``matcher``, ``criterion``, ``postprocess``).
"""
from __future__ import annotations

from torch import nn

from pavenet.config import Config


def build(cfg: Config) -> tuple[nn.Module, nn.Module, nn.Module]:
    """Build the network named by ``cfg.model.arch`` with its criterion and post-processor."""
    from pavenet.model.criterion import build_criterion
    from pavenet.model.joint_selection import MatchedQuerySelector
    from pavenet.model.network import build_model
    from pavenet.model.postprocess import build_postprocessor

    if cfg.loss.weight_heatmap > 0 and not cfg.model.heatmap_head:
        raise ValueError("loss.weight_heatmap > 0 needs model.heatmap_head: true")
    criterion = build_criterion(cfg)
    if cfg.model.joint_train == "matched":
        if cfg.model.arch != "pavenet":
            raise ValueError("model.joint_train: matched is implemented for PAVE-Net, not VEPE")
        model = build_model(cfg.model, MatchedQuerySelector(criterion.matcher))
    else:
        model = build_model(cfg.model)
    return model, criterion, build_postprocessor(cfg)


__all__ = ["build"]

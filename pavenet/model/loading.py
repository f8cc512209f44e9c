"""A network rebuilt from a pavenet checkpoint: its stored config, then its weights."""
from __future__ import annotations

from pathlib import Path

from torch import nn

from pavenet.config import Config, config_from_dict
from pavenet.model.build import build_model
from pavenet.runtime.checkpoint import CheckpointError, read_metadata
from pavenet.runtime.weights import load_model_weights


def stored_config(path: str | Path) -> Config:
    """The config stored in a pavenet checkpoint's metadata."""
    meta = read_metadata(path)
    if not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{path}: no config in the checkpoint metadata (not a pavenet checkpoint?)")
    return config_from_dict(meta["config"], source=str(path))


def load_checkpoint_model(path: str | Path) -> tuple[nn.Module, Config]:
    """The network described by a checkpoint's stored config, with the checkpoint's weights."""
    cfg = stored_config(path)
    model = build_model(cfg.model)
    load_model_weights(model, str(path))
    return model, cfg

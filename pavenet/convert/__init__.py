"""``pavenet convert``: published PAVE-Net / PETR checkpoints -> a pavenet checkpoint folder.

:func:`convert_checkpoint` reads the checkpoint without executing pickled code
(:mod:`pavenet.convert.reading`), maps every released tensor by the rules of its layout
(:mod:`pavenet.convert.layouts`), checks that every released tensor is used or dropped for a
stated reason and every pavenet tensor is filled or initialised for a stated reason, loads the
result strictly into the network the config builds, and writes ``DIR/model.safetensors``
(weights + the config in its metadata, as training writes them) and ``DIR/config.yaml``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import save_file

from pavenet.config import Config, config_to_dict, load_config, save_config
from pavenet.model import build_model
from pavenet.runtime.files import atomic_path

from .layouts import KEEP_INIT, RULES
from .reading import LAYOUTS, ConvertError, detect_layout, read_state_dict
from .tensors import Conversion

#: the shipped config each layout is converted to when none is given
DEFAULT_CONFIG = {"pavenet": "pavenet_r50", "petr": "pavenet_r50"}
WEIGHTS, CONFIG = "model.safetensors", "config.yaml"


@dataclass
class ConversionReport:
    """What happened to every tensor: released ones used or dropped (with why), pavenet ones
    taken from the release or initialised otherwise (with how)."""

    layout: str
    config: Config
    used: int
    dropped: dict[str, str] = field(default_factory=dict)
    initialised: dict[str, str] = field(default_factory=dict)
    total_source: int = 0
    total_model: int = 0


def _config(layout: str, path: Optional[str | Path]) -> Config:
    if path is None:
        path = DEFAULT_CONFIG[layout]
    cfg = load_config(path)
    if cfg.model.arch != "pavenet":
        raise ConvertError(f"{path}: published checkpoints convert to model.arch 'pavenet', not "
                           f"'{cfg.model.arch}'")
    cfg.model.backbone.pretrained_path = None
    return cfg


def _fill_missing(conv: Conversion, own: dict[str, torch.Tensor], keep: dict[str, str]) -> None:
    """Model tensors without a released source: allowed ones keep the model's initialisation."""
    missing = [k for k in own if k not in conv.out]
    bad = [k for k in missing if not k.startswith(tuple(keep))]
    if bad:
        raise ConvertError(f"{conv.path}: no released tensor for {len(bad)} pavenet tensors "
                           f"(another architecture or config?), e.g. {bad[:4]}")
    for key in missing:
        conv.put(key, own[key])
        conv.initialised[key] = next(why for prefix, why in keep.items() if key.startswith(prefix))


def _check(conv: Conversion, own: dict[str, torch.Tensor]) -> None:
    leftover = [k for k in conv.source if k not in conv.used and k not in conv.dropped]
    if leftover:
        raise ConvertError(f"{conv.path}: {len(leftover)} released tensors have no place in the "
                           f"network of this config (another backbone or architecture?), "
                           f"e.g. {leftover[:4]}")
    wrong = [f"{k}: converted {tuple(v.shape)} vs model {tuple(own[k].shape)}"
             for k, v in conv.out.items() if k in own and v.shape != own[k].shape]
    if wrong:
        raise ConvertError(f"{conv.path}: {len(wrong)} tensors do not fit the config's network, "
                           f"e.g. {wrong[:3]}")


def convert_state(state: dict[str, torch.Tensor], cfg: Config, layout: str,
                  path: str = "<state dict>") -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Convert a released state dict for the network of ``cfg`` (strictly loadable)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model(cfg.model)
    own = model.state_dict()
    conv = Conversion(state, path)
    RULES[layout](conv, cfg.model, list(own))
    _fill_missing(conv, own, KEEP_INIT[layout])
    _check(conv, own)
    conv.out = {k: v.to(own[k].dtype) for k, v in conv.out.items()}
    model.load_state_dict(conv.out, strict=True)
    report = ConversionReport(layout, cfg, len(conv.used), conv.dropped, conv.initialised,
                              len(state), len(own))
    return conv.out, report


def write_checkpoint(out_dir: str | Path, state: dict[str, torch.Tensor], cfg: Config,
                     source: str) -> None:
    """``out_dir/model.safetensors`` (with the config in its metadata) and ``out_dir/config.yaml``,
    each written under a temporary name and renamed."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"config": json.dumps(config_to_dict(cfg)), "converted_from": json.dumps(source)}
    with atomic_path(out / WEIGHTS, suffix=".safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, tmp, metadata=meta)
    with atomic_path(out / CONFIG, suffix=".yaml") as tmp:
        save_config(cfg, tmp)


def convert_checkpoint(src: str | Path, out_dir: str | Path, layout: str = "auto",
                       config: Optional[str | Path] = None) -> ConversionReport:
    """Convert the checkpoint ``src`` (layout "auto", "pavenet" or "petr") into ``out_dir``."""
    if layout not in ("auto", *LAYOUTS):
        raise ConvertError(f"unknown layout {layout!r}, expected auto, {' or '.join(LAYOUTS)}")
    state = read_state_dict(src)
    found = detect_layout(state, src)
    if layout != "auto" and layout != found:
        raise ConvertError(f"{src}: --from {layout}, but the file is a {found} checkpoint")
    cfg = _config(found, config)
    converted, report = convert_state(state, cfg, found, str(src))
    write_checkpoint(out_dir, converted, cfg, f"{found}:{Path(src).name}")
    return report


__all__ = ["ConversionReport", "ConvertError", "convert_checkpoint", "convert_state",
           "read_state_dict", "write_checkpoint"]

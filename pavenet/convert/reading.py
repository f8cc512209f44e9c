"""Reading published checkpoints without executing pickled code, and telling their layout.

The published PAVE-Net and PETR checkpoints are mmcv files: a ``torch.save``'d dict with
``state_dict`` (and usually ``meta`` and ``optimizer``); a bare state dict is accepted too.
They are read with ``torch.load(weights_only=True)``, which rebuilds tensors and plain
containers only: a file that needs any other Python object (a pickle payload) is refused.
numpy scalars and dtypes, which mmcv's ``meta`` may hold, are allowed by name.
"""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from pavenet.errors import PavenetError

LAYOUTS = ("pavenet", "petr")


class ConvertError(PavenetError, ValueError):
    """A checkpoint that cannot be converted; the message names the file and the problem."""


def _numpy_globals() -> list:
    """numpy objects a checkpoint's metadata may hold (scalars and their dtypes)."""
    core = getattr(np, "_core", None) or np.core
    names = [core.multiarray.scalar, np.dtype]
    names += [type(np.dtype(t)) for t in ("f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "b1")]
    return names


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The tensors of an mmcv checkpoint (``state_dict`` entry) or of a bare state dict."""
    p = Path(path)
    if not p.is_file():
        raise ConvertError(f"{p}: no such checkpoint file")
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            data = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConvertError(f"{p}: refused: the file holds Python objects other than tensors and "
                           f"plain containers, and pavenet does not execute pickled code "
                           f"({first})") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as exc:
        raise ConvertError(f"{p}: not a readable PyTorch checkpoint (truncated or corrupt?): "
                           f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}") from None
    state = data.get("state_dict", data) if isinstance(data, dict) else None
    if not isinstance(state, dict) or not state:
        raise ConvertError(f"{p}: expected a state dict or an mmcv checkpoint holding 'state_dict'")
    tensors = {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, Tensor)}
    if len(tensors) != len(state):
        raise ConvertError(f"{p}: the state dict holds entries that are not tensors")
    return tensors


def detect_layout(state: dict[str, Tensor], path: str | Path) -> str:
    """"pavenet" (the released PAVE-Net) or "petr" (PETR); raise for anything else."""
    if "query_init.cls.weight" in state or any(k.startswith("pose_decoder.") for k in state):
        raise ConvertError(f"{path}: this is already a pavenet checkpoint: pass it to --weights "
                           "directly, there is nothing to convert")
    if any(k.startswith("bbox_head.pre_kpt_branches.") for k in state):
        return "pavenet"
    if "bbox_head.kpt_branches.0.0.weight" in state and "bbox_head.query_embedding.weight" in state:
        return "petr"
    raise ConvertError(f"{path}: neither a released PAVE-Net nor a PETR checkpoint "
                       "(no bbox_head keypoint branches)")

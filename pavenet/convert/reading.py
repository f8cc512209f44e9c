"""Reading published checkpoints without executing pickled code, and telling their layout.

The published PAVE-Net and PETR checkpoints are mmcv files: a ``torch.save``'d dict with
``state_dict`` (and usually ``meta`` and ``optimizer``); a bare state dict is accepted too.
They are read by :mod:`pavenet.runtime.state_dict` (no pickled code is executed).
"""
from __future__ import annotations

from pathlib import Path

from torch import Tensor

from pavenet.errors import PavenetError
from pavenet.runtime.state_dict import WeightsFileError, WeightsFileMissing
from pavenet.runtime.state_dict import read_state_dict as runtime_read_state_dict

LAYOUTS = ("pavenet", "petr")


class ConvertError(PavenetError, ValueError):
    """A checkpoint that cannot be converted; the message names the file and the problem."""


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The tensors of an mmcv checkpoint (``state_dict`` entry) or of a bare state dict
    (:func:`pavenet.runtime.state_dict.read_state_dict`, its errors as :class:`ConvertError`)."""
    try:
        return runtime_read_state_dict(path)
    except WeightsFileMissing:
        raise
    except WeightsFileError as exc:
        raise ConvertError(str(exc)) from None


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

"""Reading a state dict from a weights file without executing pickled code.

One reader for every weights file pavenet did not write itself: pretrained backbones and the
published PAVE-Net / PETR checkpoints. ``.safetensors`` files are read with safetensors; any
other file with ``torch.load(weights_only=True)``, which rebuilds tensors and plain containers
only, so a file that needs other Python objects (a pickle payload) is refused. numpy scalars
and dtypes, which an mmcv checkpoint's ``meta`` may hold, are allowed by name. A checkpoint
that wraps its weights in ``state_dict`` (mmcv) or ``model`` is unwrapped and a ``module.``
prefix (DistributedDataParallel) is dropped.
"""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from pavenet.errors import PavenetError

#: the keys under which checkpoints wrap their state dict
WRAPPERS = ("state_dict", "model")


class WeightsFileError(PavenetError, ValueError):
    """A weights file that cannot be read as a state dict; the message names the file."""


class WeightsFileMissing(PavenetError, FileNotFoundError):
    """A weights file that does not exist."""


def _numpy_globals() -> list:
    """numpy objects a checkpoint's metadata may hold (scalars and their dtypes)."""
    core = getattr(np, "_core", None) or np.core
    names = [core.multiarray.scalar, np.dtype]
    names += [type(np.dtype(t)) for t in ("f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "b1")]
    return names


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _load(path: Path) -> object:
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise WeightsFileError(f"{path}: not a readable safetensors file (truncated or "
                                   f"corrupt?): {_first_line(exc)}") from None
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise WeightsFileError(f"{path}: refused: the file holds Python objects other than "
                               f"tensors and plain containers, and pavenet does not execute "
                               f"pickled code ({_first_line(exc)})") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as exc:
        raise WeightsFileError(f"{path}: not a readable PyTorch checkpoint (truncated or "
                               f"corrupt?): {_first_line(exc)}") from None


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The tensors of the state dict in ``path`` (see the module doc); raises
    :class:`WeightsFileMissing` or :class:`WeightsFileError` naming the file."""
    p = Path(path)
    if not p.is_file():
        raise WeightsFileMissing(f"{p}: no such checkpoint file")
    state = _load(p)
    for wrapper in WRAPPERS:
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not state:
        raise WeightsFileError(f"{p}: expected a state dict or a checkpoint holding 'state_dict'")
    tensors = {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, Tensor)}
    if len(tensors) != len(state):
        raise WeightsFileError(f"{p}: the state dict holds entries that are not tensors")
    return tensors

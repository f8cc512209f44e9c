"""The training state of a checkpoint (optimizer, scheduler, EMA, RNG, counters), stored without pickle.

``train_state.safetensors`` holds every tensor, ``train_state.json`` the structure around them:
dicts, lists and numbers as they are, each tensor as ``{"$tensor": key}``, and the Python types
JSON lacks tagged so that loading gives them back (``$tuple``, ``$items`` for a dict whose keys are
not all strings, ``$ndarray``). Loading reads data only: nothing in the files is executed.

Older pavenet versions pickled the state to ``train_state.pt``; unpickling runs any code the file
holds, so such a file is read only when the caller allows it (``pavenet train
--allow-unsafe-pickle``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from pavenet.errors import PavenetError

TENSORS = "train_state.safetensors"
STRUCTURE = "train_state.json"
#: the pickled training state of older versions
LEGACY = "train_state.pt"
#: the flag of ``pavenet train`` that allows reading :data:`LEGACY`
UNSAFE_FLAG = "--allow-unsafe-pickle"


class TrainStateError(PavenetError, RuntimeError):
    """A training state that is missing, corrupt or not allowed to be read."""


def encode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """A JSON-ready copy of ``value``; its tensors are moved into ``tensors``."""
    if isinstance(value, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = value.detach().cpu().contiguous().clone()
        return {"$tensor": key}
    if isinstance(value, np.ndarray):
        return {"$ndarray": value.tolist(), "dtype": value.dtype.str}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return {"$tuple": [encode(v, tensors) for v in value]}
    if isinstance(value, list):
        return [encode(v, tensors) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("$") for k in value):
            return {k: encode(v, tensors) for k, v in value.items()}
        return {"$items": [[encode(k, tensors), encode(v, tensors)] for k, v in value.items()]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"the training state cannot hold a {type(value).__name__}")


def decode(node: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The value :func:`encode` was given; raises KeyError / TypeError / ValueError on bad input."""
    if isinstance(node, list):
        return [decode(v, tensors) for v in node]
    if not isinstance(node, dict):
        return node
    if "$tensor" in node:
        return tensors[node["$tensor"]]
    if "$ndarray" in node:
        return np.array(node["$ndarray"], dtype=np.dtype(node["dtype"]))
    if "$tuple" in node:
        return tuple(decode(v, tensors) for v in node["$tuple"])
    if "$items" in node:
        return {_hashable(decode(k, tensors)): decode(v, tensors) for k, v in node["$items"]}
    return {k: decode(v, tensors) for k, v in node.items()}


def _hashable(key: Any) -> Any:
    if isinstance(key, (list, dict)):
        raise TypeError(f"a dict key cannot be a {type(key).__name__}")
    return key


def save_train_state(folder: Path, state: dict[str, Any]) -> None:
    """Write ``state`` as :data:`TENSORS` + :data:`STRUCTURE` into ``folder``."""
    tensors: dict[str, torch.Tensor] = {}
    structure = encode(state, tensors)
    save_file(tensors, str(folder / TENSORS))
    (folder / STRUCTURE).write_text(json.dumps(structure))


def load_train_state(folder: Path, allow_pickle: bool = False) -> dict[str, Any]:
    """The training state stored in the checkpoint folder ``folder``.

    A pickled :data:`LEGACY` file is read only with ``allow_pickle``; otherwise, and for a missing
    or corrupt state, :class:`TrainStateError` names the file.
    """
    folder = Path(folder)
    if (folder / STRUCTURE).is_file():
        return _load_safe(folder)
    legacy = folder / LEGACY
    if not legacy.is_file():
        raise TrainStateError(f"{folder / STRUCTURE}: no training state next to the weights (cannot resume)")
    if not allow_pickle:
        raise TrainStateError(
            f"{legacy}: a training state pickled by an older pavenet; unpickling runs any code the file "
            f"holds, so it is read only with {UNSAFE_FLAG} (use it only for run folders you trust)")
    try:
        state = torch.load(legacy, map_location="cpu", weights_only=False)
    except Exception as exc:  # unpickling a corrupt file raises any of many types
        raise TrainStateError(f"{legacy}: unreadable training state ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict):
        raise TrainStateError(f"{legacy}: not a training state (a {type(state).__name__}, expected a dict)")
    return state


def _load_safe(folder: Path) -> dict[str, Any]:
    path = folder / STRUCTURE
    try:
        structure = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TrainStateError(f"{path}: unreadable training state ({exc})") from exc
    try:
        tensors = load_file(str(folder / TENSORS))
    except (SafetensorError, OSError) as exc:
        raise TrainStateError(f"{folder / TENSORS}: unreadable training state ({exc})") from exc
    try:
        state = decode(structure, tensors)
    except (KeyError, TypeError, ValueError) as exc:
        raise TrainStateError(f"{path}: malformed training state ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict):
        raise TrainStateError(f"{path}: not a training state (expected a JSON object)")
    return state

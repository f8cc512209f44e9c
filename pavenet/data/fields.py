"""Typed reading of the values in annotation and prediction JSON files.

Every reader of PoseTrack / COCO files takes its numbers, ids and lists through these functions,
so a malformed value (a string where a number belongs, NaN, a number too large for a float, a
list where an id belongs) raises :class:`AnnotationError` with ``where`` (the file and the
entry) and what was expected, instead of another exception or a silently wrong value.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from pavenet.errors import PavenetError

#: ids are stored in int64 arrays
_ID_RANGE = 2**63


class AnnotationError(PavenetError, ValueError):
    """An annotation file is malformed; the message names the file and the key or frame."""


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def mapping(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise AnnotationError(f"{where} must be a JSON object, got {_shown(value)}")
    return value


def array(value: Any, where: str) -> list:
    if not isinstance(value, list):
        raise AnnotationError(f"{where} must be a list, got {_shown(value)}")
    return value


def number(value: Any, where: str) -> float:
    """A finite number (JSON int or float; not a string, a bool or null)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise AnnotationError(f"{where} must be a number, got {_shown(value)}")
    try:
        out = float(value)
    except OverflowError:
        out = math.inf
    if not math.isfinite(out):
        raise AnnotationError(f"{where} must be a finite number, got {_shown(value)}")
    return out


def numbers(value: Any, where: str, length: Optional[int] = None) -> np.ndarray:
    """A list of finite numbers (of ``length`` numbers when given) as float64."""
    items = array(value, where)
    if length is not None and len(items) != length:
        raise AnnotationError(f"{where} must hold {length} numbers, got {len(items)}")
    return np.array([number(v, f"{where}[{k}]") for k, v in enumerate(items)], dtype=np.float64)


def identifier(value: Any, where: str) -> int:
    """An integer id (an integral float such as 3.0 too) that fits int64."""
    v = number(value, where)
    if v != int(v) or not -_ID_RANGE <= int(v) < _ID_RANGE:
        raise AnnotationError(f"{where} must be an integer id, got {_shown(value)}")
    return int(value) if isinstance(value, int) else int(v)


def text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise AnnotationError(f"{where} must be a string, got {_shown(value)}")
    return value

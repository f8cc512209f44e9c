"""Ignore regions of PoseTrack frames: strict point-in-polygon tests.

The official evaluator tests ``shapely.Polygon(region).contains(Point(x, y))``: a point counts
as ignored only when it lies strictly inside a region; points on an edge or a vertex are kept.
GEOS locates points with a ray-crossing count, i.e. the even-odd rule, which is what
:func:`points_in_polygon` implements (vectorised over points and edges).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def points_in_polygon(x: np.ndarray, y: np.ndarray, poly_x: np.ndarray, poly_y: np.ndarray) -> np.ndarray:
    """Which points ``(x[k], y[k])`` lie strictly inside the polygon (even-odd rule).

    Points on the boundary are outside, as with ``shapely``'s ``contains``. A polygon with fewer
    than three vertices contains nothing.
    """
    x = np.asarray(x, dtype=np.float64)[:, None]
    y = np.asarray(y, dtype=np.float64)[:, None]
    x1 = np.asarray(poly_x, dtype=np.float64)[None, :]
    y1 = np.asarray(poly_y, dtype=np.float64)[None, :]
    if x1.shape[1] < 3:
        return np.zeros(x.shape[0], dtype=bool)
    x2 = np.roll(x1, -1, axis=1)
    y2 = np.roll(y1, -1, axis=1)
    cross = (x2 - x1) * (y - y1) - (y2 - y1) * (x - x1)
    on_edge = (
        (cross == 0)
        & (np.minimum(x1, x2) <= x) & (x <= np.maximum(x1, x2))
        & (np.minimum(y1, y2) <= y) & (y <= np.maximum(y1, y2))
    )
    straddles = (y1 > y) != (y2 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_cross = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
    crossings = np.count_nonzero(straddles & (x < x_cross), axis=1)
    return (crossings % 2 == 1) & ~on_edge.any(axis=1)


def polygons_from_image(image: dict) -> list[tuple[np.ndarray, np.ndarray]]:
    """The ignore polygons of a PoseTrack18 image entry (``ignore_regions_x`` / ``_y``).

    Polygons and their points are paired with ``zip`` semantics, as the official converter does.
    """
    xs = image.get("ignore_regions_x")
    ys = image.get("ignore_regions_y")
    if not xs or not ys:
        return []
    return [
        (np.asarray([p[0] for p in zip(px, py)], dtype=np.float64),
         np.asarray([p[1] for p in zip(px, py)], dtype=np.float64))
        for px, py in zip(xs, ys)
    ]


def inside_any(x: np.ndarray, y: np.ndarray, polygons: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Which points lie strictly inside at least one of ``polygons``."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    out = np.zeros(x.shape[0], dtype=bool)
    for px, py in polygons:
        if x.size:
            out |= points_in_polygon(x, y, px, py)
    return out

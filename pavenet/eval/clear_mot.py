"""A fast CLEAR-MOT accumulator with the exact event semantics of ``motmetrics.MOTAccumulator``.

The official PoseTrack code feeds one ``motmetrics.MOTAccumulator`` per joint and sequence and
reads ``num_misses``, ``num_switches``, ``num_false_positives``, ``num_objects``,
``num_detections`` and ``events['D'].sum()``. Doing that through motmetrics costs seconds per
thousand frames (pandas), so this module replays motmetrics' ``update`` (version 1.4,
``max_switch_time`` = inf, the SciPy solver) with plain Python counters:

1. carry forward: an object whose previous hypothesis is present again, at a finite distance,
   is matched to it;
2. the rest is solved with ``scipy.optimize.linear_sum_assignment`` on motmetrics' cost matrix
   (nan -> a large finite constant, the matched rows and columns set to nan); a pair counts when
   its distance is finite; it is a SWITCH if the object was last paired with another hypothesis;
3. remaining objects are misses, remaining hypotheses false positives.

``events['D'].sum()`` also contains the RAW events (every finite input distance) and the
distances of the ASCEND / TRANSFER / MIGRATE bookkeeping events; :attr:`sum_events` reproduces
that sum, :attr:`sum_matched` holds the distances of matches and switches only.
The tests check every counter against motmetrics itself on random sequences.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.optimize import linear_sum_assignment


def _assignment(rows: list[list[float]], o_done: list[bool], h_done: list[bool]) -> list[tuple[int, int]]:
    """Pairs motmetrics' SciPy path selects among the finite distances of the open rows/columns."""
    cand = [(i, j) for i, row in enumerate(rows) if not o_done[i]
            for j, d in enumerate(row) if not h_done[j] and math.isfinite(d)]
    if not cand:
        return []
    used_i = {i for i, _ in cand}
    used_j = {j for _, j in cand}
    if len(used_i) == len(cand) == len(used_j):
        return cand  # disjoint pairs: the only maximum matching, found by any optimal solver
    dists = np.array(rows, dtype=np.float64)
    dists[np.array(o_done), :] = np.nan
    dists[:, np.array(h_done)] = np.nan
    valid = np.isfinite(dists)
    if valid.all():
        costs = dists
    else:
        c = np.abs(dists[valid]).max() + 1
        costs = np.where(valid, dists, 2 * min(dists.shape) * c + 1)
    r, c = linear_sum_assignment(costs)
    return [(i, j) for i, j in zip(r.tolist(), c.tolist()) if valid[i, j]]


class ClearMotAccumulator:
    """Counts CLEAR-MOT events frame by frame (one object class, one sequence)."""

    def __init__(self) -> None:
        self.matches = 0
        self.switches = 0
        self.misses = 0
        self.false_positives = 0
        self.sum_matched = 0.0
        self.sum_events = 0.0
        self._pair: dict[int, int] = {}  # object -> hypothesis it was last matched to
        self._owner: dict[int, int] = {}  # hypothesis -> object it was last matched to (step 2)
        self._matched_objects: set[int] = set()
        self._seen_hypotheses: set[int] = set()

    @property
    def objects(self) -> int:
        """Object appearances (matches + switches + misses)."""
        return self.matches + self.switches + self.misses

    @property
    def detections(self) -> int:
        """Matched object appearances (matches + switches)."""
        return self.matches + self.switches

    def update(self, oids: list[int], hids: list[int], dists: np.ndarray | list[list[float]]) -> None:
        """Add one frame: object ids, hypothesis ids and their (n_obj, n_hyp) distances (nan = no pair)."""
        rows = dists.tolist() if isinstance(dists, np.ndarray) else dists
        if len(rows) != len(oids) or any(len(r) != len(hids) for r in rows):
            raise ValueError(f"distances must be {len(oids)} x {len(hids)}")
        finite = [d for row in rows for d in row if math.isfinite(d)]
        if not finite:  # nothing can pair: no RAW distance, no state change
            self.misses += len(oids)
            self.false_positives += len(hids)
            return
        self.sum_events += math.fsum(finite)
        o_done = [False] * len(oids)
        h_done = [False] * len(hids)
        self._carry_forward(oids, hids, rows, o_done, h_done)
        for i, j in _assignment(rows, o_done, h_done):
            self._new_pair(oids[i], hids[j], rows[i][j])
            o_done[i] = h_done[j] = True
        self.misses += o_done.count(False)
        self.false_positives += h_done.count(False)

    def _carry_forward(self, oids: list[int], hids: list[int], rows: list[list[float]],
                       o_done: list[bool], h_done: list[bool]) -> None:
        for i, o in enumerate(oids):
            prev = self._pair.get(o)
            if prev is None:
                continue
            j = next((k for k, h in enumerate(hids) if h == prev and not h_done[k]), None)
            if j is None or not math.isfinite(rows[i][j]):
                continue
            o_done[i] = h_done[j] = True
            self._matched_objects.add(o)
            self._seen_hypotheses.add(hids[j])
            self._count(rows[i][j], switch=False)

    def _new_pair(self, o: int, h: int, d: float) -> None:
        switch = o in self._pair and self._pair[o] != h
        if switch and h not in self._seen_hypotheses:
            self.sum_events += d  # ASCEND event
        if h in self._owner and self._owner[h] != o:
            if o not in self._matched_objects:
                self.sum_events += d  # MIGRATE event
            self.sum_events += d  # TRANSFER event
        self._seen_hypotheses.add(h)
        self._matched_objects.add(o)
        self._count(d, switch)
        self._pair[o] = h
        self._owner[h] = o

    def _count(self, d: float, switch: bool) -> None:
        if switch:
            self.switches += 1
        else:
            self.matches += 1
        self.sum_matched += d
        self.sum_events += d

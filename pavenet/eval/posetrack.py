"""PoseTrack evaluation (mAP and MOTA) with the numbers of the official ``poseval`` code.

``evaluate_posetrack(gt_dir, pred_dir)`` returns a JSON-ready dict::

    {"ap":   {"right_ankle": 81.2, ..., "head_top": 77.0, "total": 79.4},
     "mota": {... same keys ...} or None,
     "motp_total": ..., "precision_total": ..., "recall_total": ...}

Values are percentages; ``None`` where a value is undefined; ``mota`` (and the three totals)
is ``None`` when tracking is not evaluated or cannot be (no sequence with two evaluated frames).
See ``docs/evaluation.md`` for every reproduced quirk and what ``strict=True`` changes.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

from pavenet.data.joints import EVAL_GROUPS, MODEL
from pavenet.data.posetrack17 import POSETRACK17
from pavenet.eval.posetrack_ap import Detections, average_precision, match_frame
from pavenet.eval.posetrack_io import Sequence, load_folders
from pavenet.eval.posetrack_mota import MotCounts, mot_metrics, sequence_counts

#: Joint names in the official evaluator's order (the order of its output tables and JSON): the
#: PoseTrack17 joint ids.
POSEVAL_JOINTS: tuple[str, ...] = POSETRACK17.names


def _number(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def by_joint_name(per_joint: np.ndarray, total: float) -> dict[str, float | None]:
    """Per-joint values (model joint order) -> {poseval joint name: value, "total": total}."""
    out = {name: _number(per_joint[MODEL.index(name)]) for name in POSEVAL_JOINTS}
    out["total"] = _number(total)
    return out


def _tracking_block(counts: MotCounts | None) -> dict:
    if counts is None or counts.frames == 0:
        return {"mota": None, "motp_total": None, "precision_total": None, "recall_total": None}
    m = mot_metrics(counts)
    return {
        "mota": by_joint_name(m["mota"], m["mota_total"]),
        "motp_total": _number(m["motp_total"]),
        "precision_total": _number(m["precision_total"]),
        "recall_total": _number(m["recall_total"]),
    }


def _evaluate_sequences(
    sequences: list[Sequence], tracking: bool, strict: bool, per_sequence: bool
) -> dict:
    matches = [[match_frame(f) for f in s.frames] for s in sequences]
    frames = [f for s in sequences for f in s.frames]
    ap, ap_total = average_precision(Detections.collect(frames, [m for ms in matches for m in ms]), strict)
    result = {"ap": by_joint_name(ap, ap_total)}
    seq_counts = [sequence_counts(s.frames, ms, strict) if tracking else None for s, ms in zip(sequences, matches)]
    total = None
    if tracking:
        total = MotCounts()
        for c in seq_counts:
            total.add(c)
        _warn_short_sequences(sequences, strict)
    result.update(_tracking_block(total))
    if per_sequence:
        result["per_sequence"] = {}
        for s, ms, c in zip(sequences, matches, seq_counts):
            seq_ap, seq_total = average_precision(Detections.collect(s.frames, ms), strict)
            result["per_sequence"][s.name] = {"ap": by_joint_name(seq_ap, seq_total), **_tracking_block(c)}
    return result


def _warn_short_sequences(sequences: list[Sequence], strict: bool) -> None:
    if strict:
        return
    short = [s.name for s in sequences if len(s.frames) == 1]
    if short:
        warnings.warn(
            f"{len(short)} sequence(s) with a single labelled frame contribute nothing to tracking "
            f"(the official code leaves out each sequence's last labelled frame, and crashes on them): "
            f"{', '.join(short[:5])}{' ...' if len(short) > 5 else ''}",
            stacklevel=3,
        )


def evaluate_posetrack(
    gt_dir: str | Path,
    pred_dir: str | Path,
    tracking: bool = True,
    strict: bool = False,
    per_sequence: bool = False,
) -> dict:
    """Evaluate the prediction folder against the ground-truth folder (one JSON per sequence,
    PoseTrack18 or PoseTrack17 ``annolist`` layout, any mix).

    ``tracking``: also compute MOTA/MOTP/precision/recall (predictions need track ids).
    ``strict``: the corrected metrics instead of the official numbers (docs/evaluation.md).
    ``per_sequence``: add ``per_sequence`` = {sequence name: the same blocks for that sequence}.
    """
    sequences = load_folders(Path(gt_dir), Path(pred_dir), need_tracks=tracking, sort=strict)
    return _evaluate_sequences(sequences, tracking, strict, per_sequence)


def _cell(value: float | None) -> str:
    return "{:>5}".format("-" if value is None else f"{value:1.1f}")


def _grouped(values: dict[str, float | None]) -> list[float | None]:
    out = []
    for joints in EVAL_GROUPS.values():
        vals = [values[MODEL.names[j]] for j in joints]
        out.append(None if any(v is None for v in vals) else float(np.mean(vals)))
    return out


#: column heads of the AP table: the joint groups (first four letters) and the total
_AP_HEADS = [g[:4] for g in EVAL_GROUPS] + ["Total"]


def _line(prefix: str, cells: list[str]) -> str:
    """One row of the official text table: ``prefix & c1 & c2 ... \\\\``."""
    return prefix + "& " + " & ".join(cells) + " \\\\"


def _head_line(prefix: str, heads: list[str]) -> str:
    return _line(prefix, [f"{h:<5}" for h in heads])


def _ap_line(prefix: str, ap: dict[str, float | None]) -> str:
    """``prefix`` then the grouped AP cells and the total, as in the official table."""
    return _line(prefix, [_cell(v) for v in _grouped(ap) + [ap["total"]]])


def format_ap_rows(rows: dict[str, dict[str, float | None]]) -> str:
    """Several per-joint AP results, one line each (grouped as in the official table), named."""
    width = max(len(name) for name in rows)
    lines = [_head_line(" " * width + " ", _AP_HEADS)]
    lines += [_ap_line(f"{name:<{width}} ", ap) for name, ap in rows.items()]
    return "\n".join(lines)


def format_table(result: dict) -> str:
    """The official-style text tables (AP, and MOT metrics when available)."""
    lines = ["Average Precision (AP) metric:", _head_line("", _AP_HEADS), _ap_line("", result["ap"])]
    if result.get("mota") is not None:
        lines += ["Multiple Object Tracking (MOT) metrics:",
                  _head_line("", ["MOTA"] * 8 + ["MOTP", "Prec", "Rec"]),
                  _head_line("", _AP_HEADS + ["Total"] * 3)]
        cells = _grouped(result["mota"]) + [result["mota"]["total"], result["motp_total"],
                                             result["precision_total"], result["recall_total"]]
        lines.append(_line("", [_cell(v) for v in cells]))
    else:
        lines.append("Tracking (MOTA): not available")
    return "\n".join(lines)

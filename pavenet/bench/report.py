"""The benchmark report: row layout, the two-stage / pavenet ratios, markdown and atomic writes.

A row (one measured case) has the keys of :data:`ROW_KEYS`:

- ``model``: ``pavenet``, ``pavenet_t1`` (the same network with ``model.num_frames=1``) or
  ``two_stage``; ``mode``: ``streaming``, ``recompute`` or ``per_frame`` (two-stage);
- ``people``: people in the frames (rendered for pavenet, forced boxes for the two-stage);
- ``batch``: frames (clips) per call; ``dtype``: ``float32`` / ``bfloat16``; ``compile``: bool;
- ``median_ms`` / ``p90_ms``: per call; ``ms_per_frame`` = median / batch; ``frames_per_s``;
- ``gflops_per_frame`` (FlopCounterMode), ``tflops_per_s`` achieved, ``peak_fraction`` (None
  when the device's peak is unknown); ``post_ms``: pavenet's post-processor alone (per call,
  included in ``median_ms``), None for the two-stage; ``note``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from pavenet.runtime.files import atomic_open

ROW_KEYS = ("model", "mode", "people", "batch", "dtype", "compile", "median_ms", "p90_ms",
            "ms_per_frame", "frames_per_s", "gflops_per_frame", "tflops_per_s", "peak_fraction",
            "post_ms", "note")
REPORT_KEYS = ("device", "device_name", "dtypes", "input_size", "crop_size", "config", "torch",
               "torchvision", "date", "threads", "repeats", "warmup", "notes", "skipped", "failed",
               "rows", "ratios", "spread")
JSON_NAME, MARKDOWN_NAME = "bench.json", "bench.md"
COLUMNS = (("model", "model"), ("mode", "mode"), ("people", "people"), ("batch", "batch"),
           ("dtype", "dtype"), ("compile", "compile"), ("median_ms", "median ms"),
           ("p90_ms", "p90 ms"), ("ms_per_frame", "ms/frame"), ("frames_per_s", "frames/s"),
           ("gflops_per_frame", "GFLOP/frame"), ("tflops_per_s", "TFLOP/s"),
           ("peak_fraction", "% peak"), ("post_ms", "post ms"))


def reference_people(people: list[int], wanted: int = 10) -> int:
    """The people count the ratio is taken at: ``wanted`` when measured, else the closest."""
    return min(people, key=lambda n: (abs(n - wanted), n))


def _find(rows: list[dict], **match: Any) -> Optional[dict]:
    return next((r for r in rows if all(r[k] == v for k, v in match.items())), None)


def ratio_rows(rows: list[dict], people: int) -> list[dict]:
    """Two-stage / pavenet time per frame at ``people`` people, per (dtype, compile, batch)."""
    out = []
    groups = sorted({(r["dtype"], r["compile"], r["batch"]) for r in rows}, key=str)
    for dtype, compiled, batch in groups:
        key = {"dtype": dtype, "compile": compiled, "batch": batch, "people": people}
        two = _find(rows, model="two_stage", **key)
        stream = _find(rows, model="pavenet", mode="streaming", **key)
        recompute = _find(rows, model="pavenet", mode="recompute", **key)
        if two is None or stream is None:
            continue
        out.append({
            **key, "two_stage_ms": two["ms_per_frame"], "pavenet_streaming_ms": stream["ms_per_frame"],
            "pavenet_recompute_ms": recompute["ms_per_frame"] if recompute else None,
            "ratio_streaming": two["ms_per_frame"] / stream["ms_per_frame"],
            "ratio_recompute": two["ms_per_frame"] / recompute["ms_per_frame"] if recompute else None,
        })
    return out


def spread_rows(rows: list[dict]) -> list[dict]:
    """How flat each model/mode is in the number of people: per (model, mode, dtype, compile,
    batch) measured at two or more people counts, the fastest and slowest ms/frame, the change
    from the fewest to the most people and the largest spread (slowest / fastest - 1), in %."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["mode"], r["dtype"], r["compile"], r["batch"]), []).append(r)
    out = []
    for (model, mode, dtype, compiled, batch), group in sorted(groups.items(), key=str):
        if len({r["people"] for r in group}) < 2:
            continue
        group = sorted(group, key=lambda r: r["people"])
        times = [r["ms_per_frame"] for r in group]
        out.append({"model": model, "mode": mode, "dtype": dtype, "compile": compiled, "batch": batch,
                    "people": f"{group[0]['people']}-{group[-1]['people']}",
                    "min_ms": min(times), "max_ms": max(times),
                    "first_to_last_pct": 100.0 * (times[-1] / times[0] - 1.0),
                    "spread_pct": 100.0 * (max(times) / min(times) - 1.0)})
    return out


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key == "peak_fraction":
        return f"{100 * value:.1f}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def _table(rows: list[dict], columns: tuple[tuple[str, str], ...]) -> list[str]:
    lines = ["| " + " | ".join(title for _, title in columns) + " |",
             "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(k, r.get(k)) for k, _ in columns) + " |" for r in rows]
    return lines


def markdown(report: dict) -> str:
    """The report as markdown: settings, the rows, the ratios, notes and skipped cases."""
    h, w = report["input_size"]
    settings = (f"Device: {report['device_name']} ({report['device']}), torch {report['torch']}, "
                f"torchvision {report['torchvision']}, {report['threads']} CPU threads, input {h}x{w} "
                f"(H x W), top-down crops {report['crop_size'][0]}x{report['crop_size'][1]}, config "
                f"`{report['config']}`, {report['warmup']} warm-up + {report['repeats']} timed calls "
                "per row (median, p90).")
    lines = [f"# pavenet vs two-stage speed ({report['date']})", "", settings, ""]
    lines += _table(report["rows"], COLUMNS)
    if report["ratios"]:
        people = report["ratios"][0]["people"]
        lines += ["", f"Two-stage / pavenet time per frame at {people} people (same run):", ""]
        lines += _table(report["ratios"], (
            ("dtype", "dtype"), ("compile", "compile"), ("batch", "batch"),
            ("two_stage_ms", "two-stage ms/frame"), ("pavenet_streaming_ms", "pavenet streaming ms/frame"),
            ("ratio_streaming", "ratio (streaming)"), ("pavenet_recompute_ms", "pavenet recompute ms/frame"),
            ("ratio_recompute", "ratio (recompute)")))
    if report.get("spread"):
        lines += ["", "Flatness in the number of people (ms/frame):", ""]
        lines += _table(report["spread"], (
            ("model", "model"), ("mode", "mode"), ("dtype", "dtype"), ("compile", "compile"),
            ("batch", "batch"), ("people", "people"), ("min_ms", "fastest"), ("max_ms", "slowest"),
            ("first_to_last_pct", "fewest -> most people %"), ("spread_pct", "spread %")))
    lines += ["", "Notes:", ""] + [f"- {n}" for n in report["notes"]]
    if report["skipped"]:
        lines += ["", "Skipped:", ""] + [f"- {s}" for s in report["skipped"]]
    if report.get("failed"):
        lines += ["", "Failed (eager rows that raised):", ""] + [f"- {s}" for s in report["failed"]]
    return "\n".join(lines) + "\n"


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file next to ``path``, then rename it over ``path``."""
    with atomic_open(path) as f:
        f.write(text)


def write_report(report: dict, out: Path) -> tuple[Path, Path]:
    """Write ``bench.json`` and ``bench.md`` into ``out``; returns their paths."""
    json_path, md_path = out / JSON_NAME, out / MARKDOWN_NAME
    write_atomic(json_path, json.dumps(report, indent=2) + "\n")
    write_atomic(md_path, markdown(report))
    return json_path, md_path

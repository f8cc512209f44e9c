"""Figures and the markdown report of a run (``pavenet demo``)."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pavenet.data.joints import EVAL_GROUPS, MODEL  # noqa: E402
from pavenet.runtime.files import atomic_open  # noqa: E402

#: Joint names of the evaluation JSON (``ap`` / ``mota`` blocks) in table-column order.
TABLE_COLUMNS = list(EVAL_GROUPS) + ["Total"]


def read_metrics(path: Path) -> tuple[list[dict], list[dict]]:
    """(train records, val records) of a ``metrics.jsonl`` file."""
    train, val = [], []
    if path.is_file():
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            (train if rec.get("kind") == "train" else val).append(rec)
    return train, val


def smooth(values: list[float], weight: float = 0.9) -> list[float]:
    """Exponential moving average with bias correction (TensorBoard-style smoothing)."""
    out, avg = [], 0.0
    for i, v in enumerate(values, 1):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight ** i))
    return out


#: Loss terms drawn in the training-curve figure when the metrics hold them.
CURVE_LOSSES = {"loss": "total", "loss_kpt": "keypoint", "loss_oks": "OKS", "loss_class": "class"}


def plot_training_curve(metrics_path: Path, out_png: Path) -> Path:
    """Two panels against the step: the training losses (raw faint, smoothed solid, log scale)
    and the validation mAP / MOTA (MOTA can be negative)."""
    train, val = read_metrics(metrics_path)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    for (key, label), color in zip(CURVE_LOSSES.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        recs = [r for r in train if key in r]
        if recs:
            steps, loss = [r["step"] for r in recs], [r[key] for r in recs]
            ax.plot(steps, loss, color=color, alpha=0.25, linewidth=0.7)
            ax.plot(steps, smooth(loss), color=color, label=label)
    ax.set_yscale("log")
    ax.set(xlabel="step", ylabel="loss", title="training losses")
    if train:
        ax.legend(fontsize=8)
    lowest = 0.0
    steps = [r["step"] for r in val]
    for key, style, color, label in [("map", "o-", "tab:red", "mAP"), ("mota", "s--", "tab:green", "MOTA")]:
        values = [r.get(key, np.nan) for r in val]
        if not np.all(np.isnan(values)):
            ax2.plot(steps, values, style, color=color, label=label)
            lowest = min(lowest, float(np.nanmin(values)))
    ax2.axhline(0.0, color="0.6", linewidth=0.6)
    ax2.set(xlabel="step", ylabel="%", title="validation", ylim=(min(0.0, 10.0 * np.floor(lowest / 10.0)), 100))
    if val:
        ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)
    return out_png


def group_values(block: dict) -> list[float]:
    """Per-column values (Head, Shoulder, ..., Total) of an ``ap`` or ``mota`` block."""
    out = []
    for joints in EVAL_GROUPS.values():
        vals = [block.get(MODEL.names[j]) for j in joints]
        vals = [v for v in vals if v is not None]
        out.append(float(np.mean(vals)) if vals else float("nan"))
    total = block.get("total")
    out.append(float("nan") if total is None else float(total))
    return out


def plot_joint_ap(results: dict[str, dict], out_png: Path) -> Path:
    """Grouped bar chart of per-joint AP for each evaluated split."""
    fig, ax = plt.subplots(figsize=(8, 3.8), dpi=110)
    width = 0.8 / max(1, len(results))
    x = np.arange(len(TABLE_COLUMNS))
    for i, (name, res) in enumerate(results.items()):
        ax.bar(x + i * width, group_values(res["ap"]), width, label=name)
    ax.set_xticks(x + width * (len(results) - 1) / 2, TABLE_COLUMNS)
    ax.set_ylabel("AP (%)")
    ax.set_ylim(0, 100)
    ax.legend()
    ax.set_title("PoseTrack AP per joint")
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)
    return out_png


def markdown_table(results: dict[str, dict], key: str) -> str:
    """A markdown table of the ``ap`` or ``mota`` block of each split."""
    head = "| split | " + " | ".join(TABLE_COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(TABLE_COLUMNS) + 1)]
    for name, res in results.items():
        block = res.get(key)
        if block is None:
            lines.append(f"| {name} | " + " | ".join(["n/a"] * len(TABLE_COLUMNS)) + " |")
            continue
        cells = ["-" if np.isnan(v) else f"{v:.1f}" for v in group_values(block)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _summary_lines(results: dict[str, dict]) -> list[str]:
    lines = []
    for name, res in results.items():
        ap = res["ap"]["total"]
        mota = (res.get("mota") or {}).get("total")
        mota_s = "n/a" if mota is None else f"{mota:.1f}"
        lines.append(f"- **{name}**: mAP {ap:.1f}, MOTA {mota_s}")
    return lines


#: training steps per minute of budget below which the demo's model is too undertrained to show
#: much (quiet 2-core CPUs trained 42-123 per minute of budget, measured 2026-12-01 to 12-07)
MIN_STEPS_PER_MINUTE = 30


def undertrained_lines(steps: int, minutes: float) -> list[str]:
    """A warning when the run trained far fewer steps than its ``minutes`` of training allow on a
    quiet machine."""
    if steps >= MIN_STEPS_PER_MINUTE * minutes:
        return []
    return [f"**Warning:** only {steps} training steps in {minutes:.3g} minutes (a quiet 2-core CPU trains "
            "40-125 per minute): the machine was busy or slow, and the model is too undertrained to "
            "judge pavenet by; run the demo again on a quieter machine or with more `--minutes`.", ""]


def _ablation_table(ablation: dict[int, dict[str, dict]]) -> str:
    lines = ["| split | T=1 mAP | T=3 mAP | T=1 MOTA | T=3 MOTA |", "|---|---|---|---|---|"]
    for split in ablation[3]:
        def cell(t: int, key: str) -> str:
            block = ablation[t][split].get(key) or {}
            v = block.get("total")
            return "n/a" if v is None else f"{v:.1f}"
        lines.append(f"| {split} | {cell(1, 'ap')} | {cell(3, 'ap')} | {cell(1, 'mota')} | {cell(3, 'mota')} |")
    return "\n".join(lines)


def rendered_lines(rendered: dict | None) -> list[str]:
    """How to read the overlay, and a warning when it shows nobody (``rendered``: the demo's
    summary of the rendered video: frames, frames_with_people, best_score, threshold)."""
    lines = ["In the overlay the predicted people are coloured skeletons with hollow joint rings and "
             "their track ids; the ground truth is white crosses."]
    warning = nobody_warning(rendered)
    return lines + (["", f"**Warning:** {warning}"] if warning else [])


def nobody_warning(rendered: dict | None) -> str:
    """The warning when the rendered video shows nobody above the threshold ("" otherwise)."""
    if rendered is None or rendered["frames_with_people"]:
        return ""
    return (f"the model predicts no person above the score threshold {rendered['threshold']:g} in any "
            f"of the {rendered['frames']} rendered frames (best person score {rendered['best_score']:.3f}): "
            "it is undertrained; run the demo with more `--minutes`.")


def write_report(plan, results: dict[str, dict], ablation: dict | None, steps: dict[int, int],
                 figures: dict[str, Path], machine: dict, seconds: float,
                 rendered: dict | None = None, train_minutes: float | None = None) -> Path:
    """Write ``report.md`` in the demo folder (figures referenced by relative paths);
    ``train_minutes``: the training time of the T=3 run (default: the demo's whole budget)."""
    out = Path(plan.out)
    rel = {k: Path(v).relative_to(out) for k, v in figures.items()}
    flags = f"--minutes {plan.minutes:g} --out {out}" + (" --ablation" if plan.ablation else "")
    parts = [
        "# pavenet demo report", "",
        f"Trained `pavenet_tiny` (T=3) on synthetic videos for {steps[3]} steps; total run "
        f"{seconds / 60:.1f} min.", "",
        *_summary_lines(results), "", *undertrained_lines(steps[3], train_minutes or plan.minutes),
        "## PoseTrack mAP", "", markdown_table(results, "ap"), "",
        "## PoseTrack MOTA", "", markdown_table(results, "mota"), "",
    ]
    if ablation:
        parts += ["## Temporal context: T=3 vs T=1 (same budget)", "", _ablation_table(ablation), "",
                  f"Training steps: T=3 {steps[3]}, T=1 {steps.get(1, 0)}.", ""]
    parts += [
        "## Figures", "",
        f"![training curve]({rel['curve']})", "", f"![per-joint AP]({rel['joints']})", "",
        f"![rendered frame]({rel['still']})", "", f"Overlay video: [{rel['video']}]({rel['video']})", "",
        *rendered_lines(rendered), "",
        "## Reproduce", "", "```bash", f"pavenet demo {flags}", "```", "",
        "## Machine", "", *[f"- {k}: {v}" for k, v in machine.items()], "",
    ]
    path = out / "report.md"
    with atomic_open(path) as f:
        f.write("\n".join(parts))
    return path

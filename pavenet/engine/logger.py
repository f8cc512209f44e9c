"""Run logging: ``metrics.jsonl``, TensorBoard scalars and a live progress bar (rank 0 only)."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from pavenet.runtime.progress import progress_bar


class RunLogger:
    """Writes scalars to ``RUN/metrics.jsonl`` and ``RUN/tb``; shows progress with ETA."""

    def __init__(self, run_dir: Path, total_steps: Optional[int], start_step: int, enabled: bool):
        self.enabled = enabled
        self.run_dir = run_dir
        self._tb = None
        self._bar = None
        if not enabled:
            return
        self._tb = SummaryWriter(str(run_dir / "tb"))
        self._bar = progress_bar(total=total_steps, initial=start_step, desc="train", dynamic_ncols=True)

    def step(self, step: int, losses: dict[str, float], lr: float) -> None:
        if not self.enabled:
            return
        self._bar.set_postfix(lr=f"{lr:.2e}", **shown_losses(losses), refresh=False)
        self._bar.update(1)

    def set_total(self, total: int) -> None:
        """Re-plan the progress bar's length (time-budgeted runs; shown at the next redraw)."""
        if self.enabled:
            self._bar.total = total

    def log(self, step: int, kind: str, values: dict[str, float]) -> None:
        """Append one record to metrics.jsonl and TensorBoard (``kind``: train / val)."""
        if not self.enabled:
            return
        record = {"kind": kind, "step": step, "time": time.time(), **values}
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        for k, v in values.items():
            if isinstance(v, (int, float)):
                self._tb.add_scalar(f"{kind}/{k}", v, step)

    def write(self, message: str) -> None:
        if self.enabled:
            tqdm.write(message)

    def close(self) -> None:
        if self.enabled:
            self._bar.close()
            self._tb.close()


def shown_losses(losses: dict[str, float]) -> dict[str, str]:
    """The progress bar's terms: the total and the final-layer terms ("loss_kpt"); a term the
    final layer lacks (the class loss of PAVE-Net, counted on the last pose-decoder layer) is
    shown from the last layer that has it ("loss_class_2"); other per-layer terms go to the log."""
    shown = {k: v for k, v in losses.items() if k.count("_") <= 1}
    for key, value in sorted(losses.items(), key=lambda kv: _layer(kv[0])):
        base, _, layer = key.rpartition("_")
        if layer.isdigit() and base.count("_") == 1 and base not in losses:
            shown[base] = value
    return {k: f"{v:.3g}" for k, v in shown.items()}


def _layer(key: str) -> int:
    suffix = key.rpartition("_")[2]
    return int(suffix) if suffix.isdigit() else -1


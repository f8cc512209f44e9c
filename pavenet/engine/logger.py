"""Run logging: ``metrics.jsonl``, TensorBoard scalars and a live progress bar (rank 0 only)."""
from __future__ import annotations

import json
import time
from pathlib import Path

from tqdm import tqdm


class RunLogger:
    """Writes scalars to ``RUN/metrics.jsonl`` and ``RUN/tb``; shows progress with ETA."""

    def __init__(self, run_dir: Path, total_steps: int, start_step: int, enabled: bool):
        self.enabled = enabled
        self.run_dir = run_dir
        self._tb = None
        self._bar = None
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter

        self._tb = SummaryWriter(str(run_dir / "tb"))
        self._bar = tqdm(total=total_steps, initial=start_step, desc="train", dynamic_ncols=True)

    def step(self, step: int, losses: dict[str, float], lr: float) -> None:
        if not self.enabled:
            return
        # the total and the final-layer terms ("loss_kpt"); per-layer terms ("loss_kpt_0") go to the log only
        shown = {k: f"{v:.3g}" for k, v in losses.items() if k.count("_") <= 1}
        self._bar.set_postfix(lr=f"{lr:.2e}", **shown)
        self._bar.update(1)

    def set_total(self, total: int) -> None:
        """Re-plan the progress bar's length (time-budgeted runs)."""
        if self.enabled and self._bar.total != total:
            self._bar.total = total
            self._bar.refresh()

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

"""The training loop behind ``pavenet train`` (one process, or one per GPU under torchrun)."""
from __future__ import annotations

import math
import random
import signal
import time
import uuid
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from pavenet.config import Config, config_to_dict, save_config
from pavenet.engine.ema import ModelEMA
from pavenet.engine.logger import RunLogger
from pavenet.engine.optim import build_optimizer, build_scheduler, freeze_parameters
from pavenet.engine.sampler import ResumableSampler, SeededDataset
from pavenet.engine.step import TrainingDiverged, move_batch, train_step
from pavenet.errors import PavenetError
from pavenet.model import build
from pavenet.runtime.checkpoint import (CheckpointError, holds_run, load_train_state, load_weights,
                                        non_finite, run_dir_of, save_checkpoint)
from pavenet.runtime.distributed import DistInfo, barrier, reduce_mean_dict
from pavenet.runtime.files import remove_stale
from pavenet.runtime.weights import load_model_weights

#: validate(model, step) -> metrics with at least "map" (PoseTrack mAP, percent)
ValidateFn = Callable[[torch.nn.Module, int], dict]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RunExistsError(PavenetError, FileExistsError):
    """A new run would write into a folder that holds another run's checkpoints."""


def check_run_dir(run_dir: Path, resume: Optional[str], exist_ok: bool) -> None:
    """Refuse to start a run in a folder that holds another run, unless ``exist_ok``.

    Resuming continues the run in ``run_dir`` only: resuming another folder's checkpoint into
    a folder that holds a run is refused too.
    """
    if exist_ok or not holds_run(run_dir):
        return
    if resume and run_dir_of(resume).resolve() == run_dir.resolve():
        return
    if resume:
        what = f"resume {run_dir_of(resume)} into a folder of its own"
    else:
        what = f"continue it with --resume {run_dir}"
    raise RunExistsError(f"{run_dir}: holds a run already; {what}, train into another folder with --out, "
                         "or start a new run there with --exist-ok (its checkpoints are kept)")


class Trainer:
    """Owns model, optimiser, data and checkpoints of one run directory."""

    def __init__(
        self,
        cfg: Config,
        run_dir: str | Path,
        dist: DistInfo,
        dataset: torch.utils.data.Dataset,
        collate_fn: Callable,
        resume: Optional[str] = None,
        weights: Optional[str] = None,
        validate: Optional[ValidateFn] = None,
        exist_ok: bool = False,
        allow_pickle: bool = False,
    ):
        """``exist_ok``: start a new run in a folder that holds another (whose checkpoints stay);
        ``allow_pickle``: resume from a pickled training state of an older version."""
        self.cfg, self.dist, self.validate = cfg, dist, validate
        self.run_dir = Path(run_dir)
        check_run_dir(self.run_dir, resume, exist_ok)
        seed_everything(cfg.train.seed)
        model, self.criterion, _ = build(cfg)
        if weights:
            load_model_weights(model, weights, strict=cfg.train.init_strict)
        self.model = model.to(dist.device)
        self.criterion.to(dist.device)
        freeze_parameters(model, cfg.train.freeze)
        self.ddp = DistributedDataParallel(model, find_unused_parameters=True) if dist.distributed else model
        if cfg.train.compile:
            self.ddp = torch.compile(self.ddp)
        self.dataset = SeededDataset(dataset, cfg.train.seed)
        self.collate_fn = collate_fn
        self.sampler = ResumableSampler(len(dataset), True, cfg.train.seed, dist.rank, dist.world_size)
        self.per_step = cfg.data.batch_size * cfg.train.accumulate  # samples per optimizer step and rank
        self.steps_per_epoch = max(1, len(self.sampler) // self.per_step)
        epochs_steps = cfg.train.epochs * self.steps_per_epoch
        self.total_steps = cfg.train.max_steps if cfg.train.max_steps > 0 else epochs_steps
        self.optimizer = build_optimizer(model, cfg.train, extra=self.criterion)
        self.scheduler = build_scheduler(self.optimizer, lambda: self.total_steps, self.steps_per_epoch, cfg.train)
        self.ema = ModelEMA(model, cfg.train.ema) if cfg.train.ema > 0 else None
        self.step, self.best = 0, -math.inf
        self.run_id: Optional[str] = uuid.uuid4().hex[:12]
        #: the name of the signal that stopped the last :meth:`fit` (None: it ran to the end)
        self.stopped_by: Optional[str] = None
        self._signal: Optional[str] = None  #: set by the signal handler, on this rank
        self._stop: Optional[str] = None  #: the signal every rank agreed to stop on
        if resume:
            self._resume(resume, allow_pickle)

    # ------------------------------------------------------------------ state
    def _train_state(self) -> dict:
        return {
            "step": self.step,
            "best": self.best,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": None,
            "ema": self.ema.state_dict() if self.ema else None,
            "model": self.model.state_dict() if self.ema else None,
            "criterion": self.criterion.state_dict(),
            "rng": rng_state(),
            "world_size": self.dist.world_size,
        }

    def _resume(self, path: str, allow_pickle: bool) -> None:
        state_dict, meta = load_weights(path)
        state = load_train_state(path, allow_pickle)
        self.run_id = meta.get("run_id")
        try:
            self._load_state(state_dict, state)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{path}: the checkpoint cannot resume this run "
                                  f"({type(exc).__name__}: {exc})") from exc

    def _load_state(self, state_dict: dict, state: dict) -> None:
        self.model.load_state_dict(state_dict)
        if state.get("model") is not None:  # with EMA the weights file holds the average
            self.model.load_state_dict(state["model"])
        self.criterion.load_state_dict(state["criterion"])
        self.step, self.best = state["step"], state["best"]
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        set_rng_state(state["rng"])

    def _meta(self) -> dict:
        meta = {"config": config_to_dict(self.cfg), "step": self.step, "format": "pavenet-v1"}
        return meta if self.run_id is None else {**meta, "run_id": self.run_id}

    def save(self, tags: tuple[str, ...] = ("last",)) -> None:
        """Checkpoint the current step; weights that are no longer finite stop the run instead
        (:class:`TrainingDiverged`), keeping the last good checkpoint."""
        weights = (self.ema.module if self.ema else self.model).state_dict()
        bad = non_finite(weights)
        if bad:
            raise TrainingDiverged(f"weights became non-finite at step {self.step} ({len(bad)} tensors, e.g. "
                                   f"{bad[0]}); last good checkpoint kept in {self.run_dir}")
        if self.dist.is_main:
            save_checkpoint(self.run_dir, self.step, weights, self._meta(), self._train_state(), tags)
        barrier()

    # ------------------------------------------------------------------ data
    def _batches(self):
        """Yield lists of ``accumulate`` micro-batches, resuming mid-epoch where needed."""
        while True:
            epoch, within = divmod(self.step, self.steps_per_epoch)
            self.sampler.set_epoch(epoch)
            self.dataset.set_epoch(epoch)
            self.sampler.set_start(within * self.per_step)
            loader = DataLoader(
                self.dataset, batch_size=self.cfg.data.batch_size, sampler=self.sampler,
                collate_fn=self.collate_fn, num_workers=self.cfg.data.num_workers, drop_last=True,
                generator=torch.Generator().manual_seed(self.cfg.train.seed + epoch),
                pin_memory=self.dist.device.type == "cuda",
            )
            group: list[dict] = []
            for batch in loader:
                group.append(move_batch(batch, self.dist.device))
                if len(group) == self.cfg.train.accumulate:
                    yield group
                    group = []
                    if self.step % self.steps_per_epoch == 0:
                        break

    # ------------------------------------------------------------------ loop
    def _on_signal(self, signum, _frame) -> None:
        self._signal = signal.Signals(signum).name

    def fit(self, max_seconds: float = 0.0, val_interval: float = 0.0) -> dict:
        """Train until ``total_steps``, a signal, or ``max_seconds``; returns the last metrics.

        With ``max_seconds`` the run re-plans its length from the measured step time so that the
        schedule (e.g. cosine) ends with the budget; with ``val_interval`` (seconds) it validates
        on that clock instead of at epoch ends.
        """
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.stopped_by = None
        if self.dist.is_main:
            remove_stale(self.run_dir)
            try:
                save_config(self.cfg, self.run_dir / "config.yaml")
            except OSError as exc:
                raise CheckpointError(f"{self.run_dir / 'config.yaml'}: could not write the run's config "
                                      f"({exc.strerror or exc})") from exc
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        # a time-budgeted run knows its length only once its step time is measured: no ETA before
        logger = RunLogger(self.run_dir, None if max_seconds > 0 else self.total_steps, self.step,
                           self.dist.is_main)
        try:
            return self._loop(logger, _Clock(max_seconds, val_interval))
        finally:
            logger.close()
            for s, h in old.items():
                signal.signal(s, h)

    def _loop(self, logger: RunLogger, clock: "_Clock") -> dict:
        cfg, bad, metrics, first = self.cfg.train, 0, {}, self.step
        self.model.train()
        batches = self._batches()
        while self.step < self.total_steps and self._stop is None:
            result = train_step(self.ddp, self.criterion, self.optimizer, next(batches),
                                cfg.clip_grad, cfg.amp, self.dist.device,
                                denoise=self.cfg.model.dn_groups > 0)
            bad = bad + 1 if result.skipped else 0
            if bad >= cfg.max_nan_steps:
                raise TrainingDiverged(f"{bad} non-finite steps in a row; last good checkpoint kept in {self.run_dir}")
            if result.skipped:
                self._agree(False)
                continue
            self.step += 1
            self.scheduler.step()
            if self.ema:
                self.ema.update(self.model)
            self._log_step(logger, result)
            if clock.budget > 0:
                self.total_steps = clock.plan(self.step, self.step - first, self.total_steps)
            due = clock.validation_due(self.total_steps - self.step) if clock.interval > 0 else self._epoch_end()
            due = self._agree(due)
            if clock.budget > 0:
                logger.set_total(self.total_steps)
            if due or self.step >= self.total_steps:
                t0 = time.monotonic()
                metrics = self._checkpoint_and_validate(logger)
                clock.validated(time.monotonic() - t0)
        if self._stop is not None:
            logger.write(f"{self._stop} received: saving and stopping at step {self.step}")
            self.save(("last",))
            self.stopped_by, self._stop, self._signal = self._stop, None, None
        return metrics

    def _agree(self, due: bool) -> bool:
        """Make every rank take the same decisions after a step: the main rank's planned length
        (a time budget is measured on each rank's own clock) and validation time, and a stop when
        any rank received a signal. Without this a rank could leave the loop or start a
        validation broadcast while the others wait in the next step's all-reduce."""
        if not self.dist.distributed:
            self._stop = self._signal
            return due
        main = self.dist.is_main
        signum = signal.Signals[self._signal].value if self._signal else 0
        t = torch.tensor([self.total_steps if main else 0, int(due) if main else 0, signum],
                         dtype=torch.int64, device=self.dist.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        self.total_steps, agreed, signum = (int(v) for v in t.tolist())
        self._stop = signal.Signals(signum).name if signum else None
        return bool(agreed)

    def _log_step(self, logger: RunLogger, result) -> None:
        losses = reduce_mean_dict(result.losses, self.dist.device)
        lr = self.optimizer.param_groups[0]["lr"]
        logger.step(self.step, losses, lr)
        if self.step % self.cfg.train.log_every == 0:
            logger.log(self.step, "train", {**losses, "grad_norm": result.grad_norm, "lr": lr})

    def _epoch_end(self) -> bool:
        epochs_per_eval = max(1, self.cfg.train.eval_every)
        return self.step % (self.steps_per_epoch * epochs_per_eval) == 0

    def _checkpoint_and_validate(self, logger: RunLogger) -> dict:
        metrics: dict = {}
        if self.validate is not None and self.dist.is_main:
            model = self.ema.module if self.ema else self.model
            metrics = self.validate(model, self.step)
            model.train()
            logger.log(self.step, "val", metrics)
            logger.write(f"step {self.step}: " + ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()
                                                        if isinstance(v, float)))
        score = torch.tensor([metrics.get("map", -math.inf)], dtype=torch.float64, device=self.dist.device)
        if self.dist.distributed:
            torch.distributed.broadcast(score, src=0)
        tags = ("last", "best") if float(score) > self.best else ("last",)
        self.best = max(self.best, float(score))
        self.save(tags)
        return metrics


class _Clock:
    """Wall-clock budget and validation interval of a time-limited run."""

    def __init__(self, budget: float, interval: float):
        self.budget, self.interval = budget, interval
        self.start = self.last_val = time.monotonic()
        self.val_seconds, self.val_count = 0.0, 0
        self.per_step = 0.0  #: measured seconds per training step (0 until :meth:`plan` knows)

    def plan(self, step: int, steps_done: int, total: int) -> int:
        """Total steps that fit the budget at the measured speed, validations included."""
        elapsed = time.monotonic() - self.start
        if steps_done < 5:
            return total
        self.per_step = per_step = (elapsed - self.val_seconds) / steps_done
        per_val = self.val_seconds / self.val_count if self.val_count else 0.0
        left = self.budget - elapsed
        vals_left = 1 + (left / self.interval if self.interval > 0 else 0)
        train_left = left - vals_left * per_val
        return step + max(1, int(train_left / per_step)) if train_left > 0 else step

    def validation_due(self, steps_left: int) -> bool:
        """An interval has passed since the last validation, and the run's final validation is
        not about to come anyway (it is at least a quarter interval of training away)."""
        if time.monotonic() - self.last_val < self.interval:
            return False
        return self.budget <= 0 or steps_left * self.per_step >= self.interval / 4

    def validated(self, seconds: float) -> None:
        self.val_seconds += seconds
        self.val_count += 1
        self.last_val = time.monotonic()

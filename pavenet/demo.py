"""``pavenet demo``: the whole system on built-in synthetic data, within a time budget.

1. generate synthetic train / val / hard-val videos (PoseTrack18 layout);
2. train the tiny model (validating on a few val videos for the training curve);
3. evaluate on val and hard-val with the PoseTrack evaluator (mAP, MOTA);
4. predict and render an overlay video of one val video;
5. write ``report.md`` with tables, figures and the commands to reproduce.
With ``ablation`` the same network with T=1 is trained on the same budget and compared.
"""
from __future__ import annotations

import dataclasses
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from pavenet.config import Config, ConfigError, load_config
from pavenet.data import build_dataset, collate
from pavenet.data.joints import MODEL, posetrack18_to_model
from pavenet.data.posetrack import load_sequence
from pavenet.data.synthetic import generate_video, video_seed, write_video
from pavenet.engine.evaluate import evaluate_split, make_validator
from pavenet.engine.trainer import RunExistsError, Trainer
from pavenet.eval.posetrack import format_table
from pavenet.infer.estimator import PoseEstimator
from pavenet.infer.results import overlay_joint_threshold
from pavenet.infer.video_io import FrameStream, VideoSource
from pavenet.model import build
from pavenet.runtime.checkpoint import holds_run
from pavenet.runtime.device import pick_device
from pavenet.runtime.distributed import cleanup, init_distributed
from pavenet.runtime.files import atomic_write_json
from pavenet.runtime.launch import run_local, with_threads
from pavenet.runtime.weights import load_model_weights
from pavenet.viz.overlay import render_video, write_overlay_png
from pavenet.viz.report import nobody_warning, plot_joint_ap, plot_training_curve, undertrained_lines, write_report

#: the shipped config the demo trains (``--config`` takes another name or a path)
DEFAULT_CONFIG = "synthetic_tiny"

@dataclass
class DemoPlan:
    out: Path
    minutes: float = 12.0
    device: Optional[str] = None
    ablation: bool = False
    config: Optional[str] = None  #: a shipped config name or a YAML path; None: DEFAULT_CONFIG
    seed: int = 0
    train_videos: int = 48
    val_videos: int = 8
    hard_videos: int = 8
    frames: int = 40
    size: tuple[int, int] = (256, 256)
    max_persons: int = 3
    val_interval: float = 120.0
    overrides: tuple[str, ...] = ()
    train_seconds: Optional[float] = None  #: fixed training time (default: what the budget leaves)
    processes: Optional[int] = None  #: training processes sharing the batch (None: 1, this process)


def generate_data(plan: DemoPlan, log) -> dict[str, Path]:
    """Train (easy and hard videos mixed), val (easy) and hard-val roots."""
    roots = {"val": plan.out / "data", "hard-val": plan.out / "data_hard"}
    jobs = [(roots["val"], "train", "hard" if i % 3 == 2 else "easy", i) for i in range(plan.train_videos)]
    jobs += [(roots["val"], "val", "easy", plan.train_videos + i) for i in range(plan.val_videos)]
    jobs += [(roots["hard-val"], "val", "hard", 10_000 + i) for i in range(plan.hard_videos)]
    t0 = time.time()
    for root, split, difficulty, number in jobs:
        frames, ann = generate_video(video_seed(plan.seed, number), plan.frames, plan.size, plan.max_persons, difficulty,
                                     split=split, number=number)
        write_video(root, frames, ann, split)
    log(f"generated {len(jobs)} videos x {plan.frames} frames in {time.time() - t0:.0f} s")
    return roots


def demo_config(plan: DemoPlan, data_root: Path, num_frames: int) -> Config:
    path = plan.config or DEFAULT_CONFIG
    sets = [f"data.root={data_root}", f"model.num_frames={num_frames}", "train.eval_max_sequences=3",
            *plan.overrides]
    return load_config(path, sets)


def training_processes(plan: DemoPlan, cfg: Config) -> int:
    """Processes that share the training (``plan.processes``, default 1: this process)."""
    processes = plan.processes or 1
    if cfg.data.batch_size % processes:
        raise ConfigError(f"--processes {processes} does not divide the batch of {cfg.data.batch_size} clips "
                          "(data.batch_size)")
    return processes


def training_layout(processes: int) -> str:
    """``2 processes x 1 thread``: how the training shares the intra-op threads of this process."""
    per = max(1, torch.get_num_threads() // processes)
    return f"{processes} process{'es' * (processes > 1)} x {per} thread{'s' * (per > 1)}"


def _train_rank(device: Optional[str], cfg: Config, run_dir: Path, deadline: float, val_interval: float) -> int:
    """One process of the training (in :func:`run_local`); returns the steps trained."""
    dist = init_distributed(device)
    dataset = build_dataset(cfg.data, cfg.data.train_split, cfg.model.num_frames, train=True)
    validate = with_threads(make_validator(cfg, run_dir, dist.device))
    trainer = Trainer(cfg, run_dir, dist, dataset, collate, validate=validate)
    try:
        trainer.fit(max_seconds=max(1.0, deadline - time.time()), val_interval=val_interval)
    finally:
        cleanup()
    return trainer.step


def train_model(plan: DemoPlan, cfg: Config, run_dir: Path, seconds: float, processes: int):
    """Train within ``seconds`` in ``processes`` processes sharing the batch and the intra-op
    threads (one: in this process); returns the trained model (its last checkpoint) and its
    step count."""
    args = (plan.device, cfg, run_dir, time.time() + seconds, plan.val_interval)
    if processes == 1:
        steps = _train_rank(*args)
    else:
        share = dataclasses.replace(cfg.data, batch_size=cfg.data.batch_size // processes)
        args = (plan.device, dataclasses.replace(cfg, data=share), *args[2:])
        steps = run_local(_train_rank, args, processes, max(1, torch.get_num_threads() // processes))[0]
    model = build(cfg)[0]
    load_model_weights(model, str(run_dir))
    return model.eval(), steps


def evaluate_model(model, cfg: Config, roots: dict[str, Path], out: Path, device) -> dict[str, dict]:
    """Full PoseTrack evaluation on val and hard-val."""
    results = {}
    for name, root in roots.items():
        split_cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=str(root)))
        est = PoseEstimator.from_config(model, cfg, device=device)
        results[name] = evaluate_split(est, split_cfg, "val", out / f"predictions_{name}", batch_size=4)
    return results


def ground_truth_joints(annotation: Path) -> list[np.ndarray]:
    """Per frame of one annotated video, its people's model joints (N, J, 3): x, y, annotated."""
    frames = load_sequence(annotation).frames
    return [posetrack18_to_model(np.stack([p.keypoints for p in f.persons])) if f.persons
            else np.zeros((0, len(MODEL), 3)) for f in frames]


def nobody_banners(preds: list, threshold: float) -> list[str]:
    """Per frame, a banner when nobody is above the score threshold (with the best score seen)."""
    return ["" if f.people else f"no person above score {threshold:g} (best {f.best_score:.2f})"
            for f in preds]


def render_example(model, cfg: Config, root: Path, out: Path, device) -> tuple[Path, Path, dict]:
    """Overlay video of the first val video and a still frame (PNG) from its middle: predictions
    as coloured skeletons with ids, the ground truth as white crosses. Returns them and a summary
    (frames with a tracked person, the best person score seen)."""
    folder = sorted((root / "images" / "val").iterdir())[0]
    source = VideoSource(folder, "frames")
    est = PoseEstimator.from_config(model, cfg, device=device)
    with FrameStream(source) as stream:
        preds = list(est.predict_frames(stream, batch_size=4))
    people = [f.arrays() for f in preds]
    truth = ground_truth_joints(root / "annotations" / "val" / f"{folder.name}.json")
    banners = nobody_banners(preds, est.linker_cfg.score_threshold)
    joints = overlay_joint_threshold(cfg.postprocess.mode)
    video = render_video(source, people, out / "demo_overlay.mp4", joints,
                         ground_truth=truth, banners=banners)
    mid = len(preds) // 2
    with FrameStream(source) as stream:
        frame = next(f for i, f in enumerate(stream) if i == mid)
    still = write_overlay_png(frame, *people[mid], out / "demo_frame.png", joints,
                              truth[mid] if mid < len(truth) else None, banners[mid])
    summary = {"frames": len(preds), "frames_with_people": sum(bool(f.people) for f in preds),
               "best_score": max((f.best_score for f in preds), default=0.0),
               "threshold": est.linker_cfg.score_threshold}
    return video, still, summary


def machine_info(device) -> dict:

    info = {"python": platform.python_version(), "torch": torch.__version__, "cpu_cores": os.cpu_count(),
            "processor": platform.processor() or platform.machine(), "device": str(device),
            "date": time.strftime("%Y-%m-%d")}
    if str(device).startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    return info


def training_budget(plan: DemoPlan, elapsed: float, device_type: str) -> float:
    """Seconds of training per model: the budget less what has run and what evaluation,
    rendering and the report take after training (measured: about 90 s on 2 CPU cores and 24 s
    on an H200 for 8 + 8 evaluation videos), at least 30 s."""
    per_8_videos, fixed = (5.0, 20.0) if device_type == "cuda" else (10.0, 75.0)
    reserve = fixed + per_8_videos * (plan.val_videos + plan.hard_videos) / 8
    return max(30.0, plan.minutes * 60 - elapsed - reserve)


def run_demo(plan: DemoPlan, log=print) -> dict:
    """Run every stage; returns {"results", "ablation", "report"}."""
    start = time.time()
    runs = {3: plan.out / "run_t3"}
    if plan.ablation:
        runs[1] = plan.out / "run_t1"
    for run_dir in runs.values():  # before any work: an earlier demo's runs are not replaced
        if holds_run(run_dir):
            raise RunExistsError(f"{run_dir}: holds the run of an earlier demo; give the demo another --out")
    plan.out.mkdir(parents=True, exist_ok=True)
    device = pick_device(plan.device)
    roots = generate_data(plan, log)
    budget = plan.train_seconds or training_budget(plan, time.time() - start, device.type)
    evaluations, steps = {}, {}
    for t, run_dir in runs.items():
        cfg = demo_config(plan, roots["val"], t)
        processes = training_processes(plan, cfg)
        log(f"training T={t} for {budget / 60:.1f} min on {device} in {training_layout(processes)} ({run_dir})")
        model, steps[t] = train_model(plan, cfg, run_dir, budget, processes)
        evaluations[t] = evaluate_model(model, cfg, roots, run_dir, device)
        atomic_write_json(run_dir / "eval.json", evaluations[t])
        if t == 3:
            video, still, rendered = render_example(model, cfg, roots["val"], plan.out, device)
            if nobody_warning(rendered):
                log(f"warning: {nobody_warning(rendered)}")
    results = evaluations[3]
    for line in undertrained_lines(steps[3], budget / 60)[:1]:
        log(line.replace("**", ""))
    for name, res in results.items():
        log(f"\n{name} (T=3):\n{format_table(res)}")
    figures = {"curve": plot_training_curve(runs[3] / "metrics.jsonl", plan.out / "training_curve.png"),
               "joints": plot_joint_ap(results, plan.out / "joint_ap.png"), "still": still, "video": video}
    report = write_report(plan, results, evaluations if plan.ablation else None, steps, figures,
                          {**machine_info(device), "training": training_layout(processes)}, time.time() - start,
                          rendered, budget / 60)
    log(f"\nreport: {report} ({(time.time() - start) / 60:.1f} min in total)")
    return {"results": results, "ablation": evaluations if plan.ablation else None, "report": report}

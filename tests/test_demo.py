"""A seconds-long run of the whole demo pipeline: data, training, evaluation, rendering, report."""
import json
from pathlib import Path

import av
import pytest
import torch

from pavenet.demo import DemoPlan, run_demo, training_budget
from pavenet.engine.trainer import RunExistsError

SMALL = ("model.hidden_dim=32", "model.num_heads=2", "model.enc_layers=1", "model.ffn_dim=64",
         "model.num_queries=8", "model.num_kept=4", "model.pose_dec_layers=1", "model.refine_hidden=[32]",
         "model.embed_dim=16", "model.backbone.name=resnet10t", "data.train_short_side=[64,64]",
         "data.train_max_size=64", "data.test_short_side=64", "data.test_max_size=64", "data.num_workers=0",
         "data.batch_size=1")


def test_demo_pipeline_end_to_end(tmp_path: Path):
    plan = DemoPlan(out=tmp_path / "demo", train_videos=2, val_videos=1, hard_videos=1, frames=6, size=(64, 64),
                    max_persons=2, train_seconds=3.0, val_interval=1e9, overrides=SMALL, ablation=True)
    lines = []
    result = run_demo(plan, log=lines.append)
    out = plan.out
    report = (out / "report.md").read_text()
    for needle in ("## PoseTrack mAP", "## PoseTrack MOTA", "T=3 vs T=1", "training_curve.png", "joint_ap.png",
                   "demo_frame.png", "demo_overlay.mp4", "pavenet demo", "## Machine"):
        assert needle in report, needle
    for name in ("training_curve.png", "joint_ap.png", "demo_frame.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with av.open(str(out / "demo_overlay.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 6
    assert set(result["results"]) == {"val", "hard-val"}
    assert set(result["ablation"]) == {1, 3}
    for t in (1, 3):
        ev = json.loads((out / f"run_t{t}" / "eval.json").read_text())
        assert 0.0 <= ev["val"]["ap"]["total"] <= 100.0
        assert (out / f"run_t{t}" / "last" / "model.safetensors").is_file()
    assert any("report:" in line for line in lines)
    last = (out / "run_t3" / "last").resolve()
    with pytest.raises(RunExistsError, match=r"run_t3: holds the run of an earlier demo; give the demo another --out"):
        run_demo(plan, log=lines.append)
    assert (out / "run_t3" / "last").resolve() == last and last.is_dir()


def test_demo_trains_in_processes_that_share_the_batch(tmp_path: Path):
    from pavenet.config import ConfigError
    from pavenet.runtime.checkpoint import load_train_state, load_weights

    small = (*SMALL[:-1], "data.batch_size=2")
    plan = DemoPlan(out=tmp_path / "demo", train_videos=2, val_videos=1, hard_videos=1, frames=6, size=(64, 64),
                    max_persons=2, train_seconds=3.0, val_interval=1e9, overrides=small, processes=2)
    lines, threads = [], torch.get_num_threads()
    torch.set_num_threads(2)  # shared by the two processes: one thread each
    try:
        run_demo(plan, log=lines.append)
    finally:
        torch.set_num_threads(threads)
    assert any("in 2 processes x 1 thread " in line for line in lines)
    assert "- training: 2 processes x 1 thread\n" in (plan.out / "report.md").read_text()
    _, meta = load_weights(plan.out / "run_t3")
    assert meta["config"]["data"]["batch_size"] == 1  # each of the two trains on one clip of two
    assert load_train_state(plan.out / "run_t3")["world_size"] == 2
    ev = json.loads((plan.out / "run_t3" / "eval.json").read_text())
    assert 0.0 <= ev["val"]["ap"]["total"] <= 100.0
    with pytest.raises(ConfigError, match="--processes 3 does not divide the batch of 2 clips"):
        run_demo(DemoPlan(out=tmp_path / "other", train_videos=2, val_videos=1, hard_videos=1, frames=6,
                          size=(64, 64), overrides=small, processes=3), log=lines.append)


def test_loss_smoothing_is_a_bias_corrected_moving_average():
    from pavenet.viz.report import smooth

    assert smooth([4.0, 4.0, 4.0], 0.9) == pytest.approx([4.0, 4.0, 4.0])
    assert smooth([1.0, 3.0], 0.5) == pytest.approx([1.0, (0.25 + 1.5) / 0.75])


def test_training_budget_leaves_the_evaluation_time_of_the_device():
    plan = DemoPlan(out=Path("unused"), minutes=4.0, val_videos=8, hard_videos=8)
    assert training_budget(plan, 10.0, "cpu") == pytest.approx(240 - 10 - 75 - 20)
    assert training_budget(plan, 10.0, "cuda") == pytest.approx(240 - 10 - 20 - 10)
    assert training_budget(DemoPlan(out=Path("unused"), minutes=1.0), 50.0, "cpu") == 30.0

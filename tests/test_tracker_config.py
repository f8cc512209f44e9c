"""Tracker settings from YAML (``--tracker``), their documented defaults, and the track summary."""
import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pavenet.cli import main
from pavenet.config import ConfigError, config_to_dict, load_config
from pavenet.data.synthetic import generate_video
from pavenet.infer.estimator import PoseEstimator
from pavenet.infer.linker import LinkerConfig
from pavenet.infer.results import FramePrediction, PersonPrediction
from pavenet.infer.smoothing import SmoothingConfig
from pavenet.infer.track_summary import TrackStats, summary_lines, total
from pavenet.infer.tracker_config import TrackerConfig, load_tracker_config, tracker_yaml
from pavenet.infer.video_writer import VideoWriter
from pavenet.model import build
from pavenet.runtime.checkpoint import save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["model.hidden_dim=32", "model.num_heads=2", "model.enc_layers=1", "model.ffn_dim=64",
         "model.num_queries=8", "model.num_kept=4", "model.pose_dec_layers=1", "model.refine_hidden=[32]",
         "model.embed_dim=16", "model.backbone.name=resnet10t", "data.test_short_side=64",
         "data.test_max_size=96", "postprocess.top_k=4", "postprocess.score_threshold=0.0"]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tracker.yaml"
    path.write_text(text)
    return path


def test_a_tracker_file_sets_its_keys_and_keeps_the_defaults_of_the_others(tmp_path):
    cfg = load_tracker_config(_write(tmp_path, "max_missed: 60\nembedding_weight: 1\nsmoothing:\n  beta: 0.2\n"))
    assert cfg.linker == LinkerConfig(max_missed=60, embedding_weight=1.0)
    assert cfg.smoothing == SmoothingConfig(enabled=True, beta=0.2)  # a smoothing: section turns it on
    assert cfg.linker_for({"score_threshold": 0.7}).score_threshold == 0.7  # the checkpoint's: the file sets none
    official = cfg.linker_for({"score_threshold": 0.7, "joint_threshold": 0.0})
    assert official == LinkerConfig(max_missed=60, embedding_weight=1.0, score_threshold=0.7, joint_threshold=0.0)
    cfg = load_tracker_config(_write(tmp_path, "score_threshold: 0.4\nsmoothing:\n  enabled: false\n"))
    assert cfg.linker_for({"score_threshold": 0.7}).score_threshold == 0.4 and not cfg.smoothing.enabled
    assert load_tracker_config(_write(tmp_path, "smoothing:\n")).smoothing == SmoothingConfig(enabled=True)
    assert load_tracker_config(_write(tmp_path, "")) == TrackerConfig()


def test_the_documented_defaults_are_the_defaults():
    text = (ROOT / "docs" / "inference.md").read_text()
    block = re.search(r"The defaults:\n\n```yaml\n(.*?)```", text, re.S).group(1)
    assert yaml.safe_load(block) == yaml.safe_load(tracker_yaml())
    assert yaml.safe_load(tracker_yaml()) == {**dataclasses.asdict(LinkerConfig()),
                                             "smoothing": dataclasses.asdict(SmoothingConfig())}


@pytest.mark.parametrize("text, message", [
    ("max_mised: 3\n", "unknown key 'max_mised'"),
    ("smoothing:\n  bta: 1\n", "unknown key 'smoothing.bta'"),
    ("max_missed: often\n", "'max_missed' must be an int, got 'often'"),
    ("max_missed: 2.5\n", "'max_missed' must be an int, got 2.5"),
    ("pose_weight: yes\n", "'pose_weight' must be a float, got True"),
    ("smoothing: 3\n", "'smoothing' must be a mapping"),
    ("min_similarity: 1.5\n", "'min_similarity' must be in [0, 1], got 1.5"),
    ("max_missed: -1\n", "'max_missed' must be >= 0, got -1"),
    ("sigma_scale: 0\n", "'sigma_scale' must be > 0, got 0.0"),
    ("smoothing:\n  min_cutoff: 0\n", "'smoothing.min_cutoff' must be > 0, got 0.0"),
    ("pose_weight: 0\nembedding_weight: 0\n", "both 0"),
    ("- 1\n- 2\n", "a tracker file is a mapping of settings, got list"),
    ("max_missed: [\n", "malformed YAML"),
])
def test_a_bad_tracker_file_names_the_file_and_the_key(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_tracker_config(path)
    assert str(info.value).startswith(f"{path}: ") and message in str(info.value)


def test_a_missing_tracker_file(tmp_path):
    with pytest.raises(ConfigError, match="tracker file not found"):
        load_tracker_config(tmp_path / "none.yaml")


def _frame(index, ids):
    return FramePrediction(index, [PersonPrediction(i, np.zeros((15, 3), np.float32), 0.9) for i in ids])


def test_track_stats_count_tracks_lengths_and_people_per_frame():
    frames = [_frame(0, [0, 1]), _frame(1, [0, 1, 2]), _frame(2, [0]), _frame(3, [])]
    stats = TrackStats.of("clip", frames, 2.0)
    assert (stats.frames, stats.tracks, stats.people) == (4, 3, 6)
    assert (stats.mean_track_length, stats.people_per_frame, stats.fps) == (2.0, 1.5, 2.0)
    assert stats.line() == "clip: 4 frames, 3 tracks, mean track length 2.0 frames, 1.50 people/frame, 2.0 frames/s"
    other = TrackStats.of("b", [_frame(0, [5])] * 1, 0.5)
    assert total([stats, other], 1.0) == TrackStats("all (2 inputs)", 5, 4, 7, 1.0)
    lines = summary_lines([stats, other], 1.0)
    assert lines[0] == "track summary:" and lines[-1] == ("  all (2 inputs): 5 frames, 4 tracks, mean track length "
                                                          "1.8 frames, 1.40 people/frame, 5.0 frames/s")
    assert summary_lines([], 1.0) == []


@pytest.fixture(scope="module")
def ckpt_and_video(tmp_path_factory):
    torch.manual_seed(0)
    cfg = load_config(ROOT / "configs" / "synthetic_tiny.yaml", SMALL)
    model, _, _ = build(cfg)
    with torch.no_grad():  # break the symmetric initialisation so queries differ
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    folder = tmp_path_factory.mktemp("tracker")
    ckpt = save_checkpoint(folder / "run", 0, model.eval().state_dict(), {"config": config_to_dict(cfg), "step": 0})
    frames, _ = generate_video(11, 10, (96, 64), 3, "easy")
    with VideoWriter(folder / "clip.mp4", 25) as writer:
        for frame in frames:
            writer.write(frame)
    return ckpt, folder / "clip.mp4"


def test_the_estimator_takes_the_tracker_file(ckpt_and_video, tmp_path):
    ckpt, _ = ckpt_and_video
    path = _write(tmp_path, "max_missed: 5\nsmoothing:\n  min_cutoff: 0.5\n")
    est = PoseEstimator.from_checkpoint(ckpt, device="cpu", tracker=path)
    # the checkpoint's threshold, and every joint counting under its official post-processing
    assert est.linker_cfg == LinkerConfig(max_missed=5, score_threshold=0.0, joint_threshold=0.0)
    assert est.smoothing == SmoothingConfig(enabled=True, min_cutoff=0.5)
    with pytest.raises(ValueError, match="not both"):
        PoseEstimator.from_checkpoint(ckpt, device="cpu", tracker=path, linker=LinkerConfig())


def _annotations(path: Path) -> list[dict]:
    return json.loads(path.read_text())["annotations"]


def test_predict_with_a_tracker_file_and_its_track_summary(ckpt_and_video, tmp_path, capsys):
    ckpt, video = ckpt_and_video
    out = tmp_path / "out"
    args = ["predict", str(video), "--weights", str(ckpt), "--device", "cpu"]
    assert main([*args, "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    people = _annotations(out / "clip.json")
    tracks = len({a["track_id"] for a in people})
    assert people and f"  clip: 10 frames, {tracks} tracks, mean track length {len(people) / tracks:.1f} frames, " \
                      f"{len(people) / 10:.2f} people/frame, " in stdout
    assert "  all (1 input): 10 frames" in stdout and stdout.index("track summary:") < stdout.index("  clip: ")
    # the file's score threshold replaces the checkpoint's (0.0): nobody reaches 1.0
    strict = _write(tmp_path, "score_threshold: 1.0\n")
    assert main([*args, "--out", str(tmp_path / "strict"), "--tracker", str(strict)]) == 0
    assert _annotations(tmp_path / "strict" / "clip.json") == []
    assert "clip: 10 frames, 0 tracks, mean track length 0.0 frames, 0.00 people/frame" in capsys.readouterr().out
    # --score-threshold overrides the file
    assert main([*args, "--out", str(tmp_path / "cli"), "--tracker", str(strict), "--score-threshold", "0"]) == 0
    assert _annotations(tmp_path / "cli" / "clip.json") == people


def test_predict_with_a_bad_tracker_file_is_one_line(ckpt_and_video, tmp_path, capsys):
    ckpt, video = ckpt_and_video
    bad = _write(tmp_path, "max_missed: 3\nreid: 0.5\n")
    code = main(["predict", str(video), "--weights", str(ckpt), "--out", str(tmp_path / "o"), "--device", "cpu",
                 "--tracker", str(bad)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"pavenet predict: error: {bad}: unknown key 'reid' (valid: [")

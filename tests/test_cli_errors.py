"""Bad input ends a command with one line naming the file and the problem (exit code 2)."""
from pathlib import Path

import pytest

from pavenet.cli import main
from pavenet.config import ConfigError, load_config
from pavenet.data.clips import DataError
from pavenet.data.posetrack import AnnotationError
from pavenet.data.synthetic import write_dataset
from pavenet.runtime.checkpoint import CheckpointError, save_checkpoint
from pavenet.engine.step import TrainingDiverged
from pavenet.errors import PavenetError, user_message
from pavenet.eval.posetrack_io import PoseTrackFormatError
from pavenet.infer.video_io import VideoInputError
from pavenet.model import build_model

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["model.hidden_dim=32", "model.num_heads=2", "model.enc_layers=1", "model.ffn_dim=64",
         "model.num_queries=8", "model.num_kept=4", "model.pose_dec_layers=1", "model.refine_hidden=[32]",
         "model.embed_dim=16", "model.backbone.name=resnet10t", "data.train_short_side=[64,64]",
         "data.train_max_size=64", "data.test_short_side=64", "data.test_max_size=64"]


@pytest.mark.parametrize("cls, builtin", [
    (ConfigError, ValueError), (DataError, ValueError), (AnnotationError, ValueError),
    (PoseTrackFormatError, ValueError), (VideoInputError, RuntimeError), (CheckpointError, RuntimeError),
    (TrainingDiverged, RuntimeError)])
def test_input_errors_share_the_base_and_keep_their_builtin_type(cls, builtin):
    assert issubclass(cls, PavenetError) and issubclass(cls, builtin)


def test_user_message_keeps_only_the_workers_own_message():
    assert user_message(DataError("a.jpg: unreadable image")) == "a.jpg: unreadable image"
    wrapped = DataError("Caught DataError in DataLoader worker process 0.\n"
                        "Original Traceback (most recent call last):\n"
                        '  File "clips.py", line 9, in load\n    raise DataError(msg)\n'
                        "pavenet.data.clips.DataError: a.jpg: unreadable image (frame 3)\n")
    assert user_message(wrapped) == "a.jpg: unreadable image (frame 3)"


def test_missing_config_is_one_line_without_traceback(tmp_path, capsys):
    code = main(["train", str(tmp_path / "nope.yaml")])
    err = capsys.readouterr().err
    assert code == 2
    assert err == f"pavenet train: error: {tmp_path / 'nope.yaml'}: config file not found\n"


def test_unreadable_image_in_a_loader_worker_names_the_image(tmp_path, capsys):
    write_dataset(tmp_path / "data", videos=1, frames=4, size=(64, 64), max_persons=1, seed=0, val_videos=0)
    for image in (tmp_path / "data" / "images" / "train").rglob("*.jpg"):
        image.write_bytes(b"not a jpeg")
    first = sorted((tmp_path / "data" / "images" / "train").rglob("*.jpg"))
    code = main(["train", str(ROOT / "configs" / "synthetic_tiny.yaml"), "--no-val", "--device", "cpu",
                 "--out", str(tmp_path / "run"), "--set", *SMALL, f"data.root={tmp_path / 'data'}",
                 "data.num_workers=1", "train.max_steps=1"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert lines[-1].startswith("pavenet train: error: ") and "unreadable image" in lines[-1]
    assert any(str(p) in lines[-1] for p in first)
    assert not any("Traceback" in line for line in lines)


def test_missing_ground_truth_folder_is_one_line(tmp_path, capsys):
    config = ROOT / "configs" / "synthetic_tiny.yaml"
    model = build_model(load_config(config, SMALL).model)
    weights = save_checkpoint(tmp_path / "run", 0, model.state_dict(), {})
    code = main(["test", str(config), "--weights", str(weights), "--device", "cpu", "--out", str(tmp_path / "t"),
                 "--set", *SMALL, f"data.root={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2
    assert err == (f"pavenet test: error: {tmp_path / 'annotations' / 'val'}: PoseTrack evaluation needs one "
                   "ground-truth JSON per sequence here\n")

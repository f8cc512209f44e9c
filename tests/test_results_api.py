"""The results API: joint names, boxes, timestamps, plot() (the CLI's overlay, pixel for pixel),
to_dict() / to_json()."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pavenet
from pavenet.cli import main
from pavenet.config import config_to_dict, load_config
from pavenet.data.joints import MODEL
from pavenet.data.synthetic import generate_video
from pavenet.infer import display
from pavenet.infer.estimator import PoseEstimator
from pavenet.infer.results import JOINT_NAMES, FramePrediction, PersonPrediction, joint_box
from pavenet.infer.video_writer import VideoWriter
from pavenet.model import build
from pavenet.runtime.checkpoint import save_checkpoint
from pavenet.viz.overlay import compose

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["model.hidden_dim=32", "model.num_heads=2", "model.enc_layers=1", "model.ffn_dim=64",
         "model.num_queries=8", "model.num_kept=4", "model.pose_dec_layers=1", "model.refine_hidden=[32]",
         "model.embed_dim=16", "model.backbone.name=resnet10t", "data.test_short_side=64",
         "data.test_max_size=96", "postprocess.top_k=4", "postprocess.score_threshold=0.0"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    cfg = load_config(ROOT / "configs" / "synthetic_tiny.yaml", SMALL)
    model, _, _ = build(cfg)
    with torch.no_grad():  # break the symmetric initialisation so queries differ
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return save_checkpoint(tmp_path_factory.mktemp("run"), 0, model.eval().state_dict(),
                           {"config": config_to_dict(cfg), "step": 0})


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> tuple[Path, list[np.ndarray]]:
    frames, _ = generate_video(11, 8, (96, 64), 3, "easy")
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    with VideoWriter(path, 10) as writer:
        for frame in frames:
            writer.write(frame)
    return path, frames


def _person(track_id=3) -> PersonPrediction:
    keypoints = np.zeros((len(MODEL), 3), np.float32)
    keypoints[:, 0], keypoints[:, 1] = np.arange(15) * 2.0, 100.0 - np.arange(15)
    keypoints[:, 2] = 0.5
    keypoints[0] = (-50.0, 500.0, 0.01)  # invisible: outside the box
    return PersonPrediction(track_id, keypoints, 0.75)


def test_the_public_api_exports_the_results_and_the_tracker_loader():
    assert pavenet.FramePrediction is FramePrediction and pavenet.PersonPrediction is PersonPrediction
    assert callable(pavenet.load_tracker_config) and pavenet.PoseEstimator is PoseEstimator
    assert {"FramePrediction", "PersonPrediction", "load_tracker_config", "TrackerConfig"} <= set(dir(pavenet))


def test_a_person_has_joint_names_a_box_of_the_visible_joints_and_plain_data():
    person = _person()
    assert person.joint_names == tuple(MODEL.names) == JOINT_NAMES and person.joint_names[3] == "left_shoulder"
    assert person.box == (2.0, 86.0, 28.0, 99.0)  # joints 1..14; joint 0 scores under 0.05
    assert joint_box(person.keypoints, 0.0) == (-50.0, 86.0, 28.0, 500.0)
    assert joint_box(person.keypoints, 0.9) is None
    data = person.to_dict()
    assert data["track_id"] == 3 and data["score"] == 0.75 and data["box"] == [2.0, 86.0, 28.0, 99.0]
    assert list(data["keypoints"]) == list(MODEL.names) and data["keypoints"]["head_top"] == [4.0, 98.0, 0.5]


def test_a_frame_to_dict_and_to_json_hold_every_value():
    frame = FramePrediction(4, [_person(1), _person(7)], best_score=0.9, timestamp=0.4)
    data = frame.to_dict()
    assert data["index"] == 4 and data["timestamp"] == 0.4 and data["best_score"] == 0.9
    assert data["joint_names"] == list(MODEL.names) and [p["track_id"] for p in data["people"]] == [1, 7]
    assert json.loads(frame.to_json()) == data
    assert json.loads(FramePrediction(0, []).to_json()) == {"index": 0, "timestamp": None, "best_score": 0.0,
                                                            "joint_names": list(MODEL.names), "people": []}
    with pytest.raises(ValueError, match="keep_images=True"):
        frame.plot()
    image = np.zeros((120, 40, 3), np.uint8)
    np.testing.assert_array_equal(frame.plot(image), compose(image, *frame.arrays(), 0.05))


def test_timestamps_from_the_video_and_from_a_frame_rate(ckpt, video):
    path, frames = video
    est = PoseEstimator.from_checkpoint(ckpt, device="cpu")
    assert [f.timestamp for f in est.predict_video(path)] == pytest.approx([k / 10 for k in range(8)], abs=1e-9)
    assert [f.timestamp for f in est.predict_frames(frames[:3])] == [None] * 3
    assert [f.timestamp for f in est.predict_frames(frames[:3], fps=4)] == [0.0, 0.25, 0.5]


def test_plot_is_the_cli_overlay_pixel_for_pixel(ckpt, video, tmp_path, monkeypatch):
    """The frames the CLI hands its H.264 writer (--render), the --show window's frames and
    FramePrediction.plot() are the same images; for an image input, the PNG the CLI writes."""
    path, frames = video
    written, viewer = [], _Viewer()
    original = VideoWriter.write
    monkeypatch.setattr(VideoWriter, "write", lambda self, f: (written.append(f.copy()), original(self, f))[1])
    monkeypatch.setattr(display, "open_viewer", lambda title="": viewer)
    Image.fromarray(frames[0]).save(tmp_path / "photo.png")
    code = main(["predict", str(path), str(tmp_path / "photo.png"), "--weights", str(ckpt), "--out",
                 str(tmp_path / "out"), "--render", "--show", "--score-threshold", "0.0", "--joint-threshold", "0.05",
                 "--device", "cpu", "--batch-size", "2"])
    assert code == 0
    est = PoseEstimator.from_checkpoint(ckpt, device="cpu")
    preds = list(est.predict_video(path, batch_size=2, score_threshold=0.0, keep_images=True))
    assert len(written) == len(preds) == 8 and any(p.people for p in preds)
    for image, shown, pred in zip(written, viewer.images, preds):
        np.testing.assert_array_equal(pred.plot(), image)
        np.testing.assert_array_equal(shown, image)
    (photo,) = est.predict_video(tmp_path / "photo.png", score_threshold=0.0, keep_images=True)
    np.testing.assert_array_equal(photo.plot(), np.asarray(Image.open(tmp_path / "out" / "photo.png").convert("RGB")))
    assert len(viewer.images) == 9 and viewer.closed  # 8 video frames and the image


class _Viewer:
    def __init__(self):
        self.images, self.closed = [], False

    def show(self, image):
        self.images.append(image.copy())
        return True

    def close(self):
        self.closed = True

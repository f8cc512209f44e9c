"""Video inference: cached streaming equals recomputation, and the predict CLI end to end."""
import csv
import os
import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from pavenet.cli import main
from pavenet.config import config_to_dict, load_config
from pavenet.data.joints import MODEL, posetrack18_to_model
from pavenet.data.synthetic import generate_video
from pavenet.runtime.checkpoint import save_checkpoint
from pavenet.eval.posetrack import evaluate_posetrack
from pavenet.infer.estimator import PoseEstimator
from pavenet.infer.video_writer import VideoWriter
from pavenet.model import build

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["model.hidden_dim=32", "model.num_heads=2", "model.enc_layers=1", "model.ffn_dim=64",
         "model.num_queries=8", "model.num_kept=4", "model.pose_dec_layers=1", "model.refine_hidden=[32]",
         "model.embed_dim=16", "model.backbone.name=resnet10t", "data.test_short_side=64",
         "data.test_max_size=96", "postprocess.top_k=4", "postprocess.score_threshold=0.0"]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    cfg = load_config(ROOT / "configs" / "synthetic_tiny.yaml", SMALL)
    model, _, post = build(cfg)
    with torch.no_grad():  # break the symmetric initialisation so queries differ
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return cfg, model.eval(), post


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> tuple[Path, list[np.ndarray]]:
    frames, _ = generate_video(11, 30, (96, 64), 3, "easy")
    path = tmp_path_factory.mktemp("video") / "clip30.mp4"
    with VideoWriter(path, 25) as w:
        for f in frames:
            w.write(f)
    return path, frames


def _keypoints(preds) -> np.ndarray:
    return np.concatenate([np.stack([p.keypoints for p in f.people]) for f in preds if f.people])


@pytest.mark.parametrize("batch_size", [1, 3])
def test_cached_streaming_equals_recomputing_every_window(tiny, video, batch_size):
    cfg, model, post = tiny
    _, frames = video
    frames = frames[:9]
    runs = {}
    for cache in (True, False):
        est = PoseEstimator(model, post, 64, 96, device="cpu", cache=cache)
        runs[cache] = list(est.predict_frames(iter(frames), batch_size=batch_size, score_threshold=0.0))
    assert [f.index for f in runs[True]] == list(range(9))  # every frame, ends included
    assert [[p.track_id for p in f.people] for f in runs[True]] == [[p.track_id for p in f.people] for f in runs[False]]
    # compared in the network's normalised coordinates (pixels / image size): encoding one frame
    # or a whole window per call changes float32 rounding only (~3e-7 relative)
    scale = np.array([96.0, 64.0, 1.0])
    np.testing.assert_allclose(_keypoints(runs[True]) / scale, _keypoints(runs[False]) / scale, atol=1e-5, rtol=0)
    # the window of frame 4 read directly from a clip gives the same key-frame people
    clip = PoseEstimator(model, post, 64, 96, device="cpu").predict_clip(frames[3:6])[1]
    direct = clip["keypoints"].numpy()
    streamed = np.stack([p.keypoints for p in runs[True][4].people])
    assert all((np.abs(direct - k) / scale).max(axis=(1, 2)).min() < 1e-5 for k in streamed)


def test_predict_cli_writes_every_format_and_a_rendered_video(tiny, video, tmp_path):
    cfg, model, _ = tiny
    path, frames = video
    ckpt = save_checkpoint(tmp_path / "run", 0, model.state_dict(), {"config": config_to_dict(cfg), "step": 0})
    out = tmp_path / "out"
    missing = tmp_path / "missing.mp4"
    code = main(["predict", str(path), str(missing), "--weights", str(ckpt), "--out", str(out),
                 "--format", "posetrack", "coco", "csv", "--render", "--score-threshold", "0.0",
                 "--device", "cpu", "--batch-size", "2"])
    assert code == 1  # the missing input is reported, the good one still processed
    pose = json.loads((out / "clip30.json").read_text())
    assert len(pose["images"]) == 30 and pose["categories"][0]["keypoints"][3] == "left_ear"
    ids_per_image = {}
    for ann in pose["annotations"]:
        assert len(ann["keypoints"]) == 51 and ann["keypoints"][3 * 3: 3 * 5] == [0.0] * 6
        ids_per_image.setdefault(ann["image_id"], []).append(ann["track_id"])
    assert len(ids_per_image) == 30 and all(len(set(v)) == len(v) for v in ids_per_image.values())
    coco = json.loads((out / "clip30.coco.json").read_text())
    assert len(coco) == len(pose["annotations"]) and all(len(r["keypoints"]) == 51 for r in coco)
    with open(out / "clip30.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(pose["annotations"]) * len(MODEL)
    assert {r["joint"] for r in rows} == set(MODEL.names)
    with av.open(str(out / "clip30.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 30
    # the PoseTrack file is valid evaluator input: evaluated against itself it is perfect. The head
    # box is 1 px so that PCKh cannot match one predicted person to another nearby one (an untrained
    # network's people overlap, and the official greedy matching leaves such a duplicate unmatched)
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir(), pred_dir.mkdir()
    gt = dict(pose)
    gt["annotations"] = [dict(a, keypoints=[v if (i % 3) != 2 else float(v > 0) for i, v in enumerate(a["keypoints"])],
                              bbox_head=[0, 0, 1, 1]) for a in pose["annotations"]]
    (gt_dir / "clip30.json").write_text(json.dumps(gt))
    (pred_dir / "clip30.json").write_text(json.dumps(pose))
    result = evaluate_posetrack(gt_dir, pred_dir)
    assert result["ap"]["total"] == pytest.approx(100.0)
    assert result["mota"]["total"] == pytest.approx(100.0)


def test_predict_cli_names_a_corrupt_input_once_and_keeps_going(tiny, video, tmp_path, capsys):
    cfg, model, _ = tiny
    path, _ = video
    ckpt = save_checkpoint(tmp_path / "run", 0, model.state_dict(), {"config": config_to_dict(cfg), "step": 0})
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 1000)
    out = tmp_path / "out"
    code = main(["predict", str(broken), str(path), "--weights", str(ckpt), "--out", str(out),
                 "--device", "cpu"])
    assert code == 1
    report = capsys.readouterr().err.split("input(s) failed:")[1].strip().splitlines()
    assert len(report) == 1 and report[0].startswith(f"{broken}: unreadable video")
    assert (out / "clip30.json").is_file() and not (out / "broken.json").exists()


def test_predict_cli_on_images_one_frame_each_with_a_png_overlay(tiny, video, tmp_path):
    from PIL import Image

    from pavenet.viz.overlay import draw_people

    cfg, model, _ = tiny
    _, frames = video
    ckpt = save_checkpoint(tmp_path / "run", 0, model.state_dict(), {"config": config_to_dict(cfg), "step": 0})
    photos = tmp_path / "photos"
    photos.mkdir()
    for k in (3, 17):
        Image.fromarray(frames[k]).save(photos / f"shot{k}.png")
    out = tmp_path / "out"
    code = main(["predict", str(photos / "*.png"), "--weights", str(ckpt), "--out", str(out), "--render",
                 "--score-threshold", "0.0", "--joint-threshold", "0.0", "--device", "cpu"])
    assert code == 0
    est = PoseEstimator.from_checkpoint(ckpt, device="cpu")
    for k in (3, 17):
        truth = list(est.predict_frames([frames[k]], score_threshold=0.0))
        pose = json.loads((out / f"shot{k}.json").read_text())
        assert len(pose["images"]) == 1 and len(pose["annotations"]) == len(truth[0].people) > 0
        got = posetrack18_to_model(np.array([a["keypoints"] for a in pose["annotations"]]).reshape(-1, 17, 3))
        want = np.stack([p.keypoints for p in truth[0].people])
        assert np.allclose(got[..., :2], want[..., :2], atol=0.01)
        overlay = np.asarray(Image.open(out / f"shot{k}.png"))
        assert np.array_equal(overlay, draw_people(frames[k], *truth[0].arrays(), 0.0))
        assert not np.array_equal(overlay, frames[k])


def _frames_per_file(out: Path) -> dict[str, int]:
    return {p.relative_to(out).as_posix(): len(json.loads(p.read_text())["images"])
            for p in sorted(out.rglob("*.json"))}


def test_predict_gives_inputs_of_the_same_name_distinct_outputs(tiny, video, tmp_path):
    from PIL import Image

    cfg, model, _ = tiny
    _, frames = video
    ckpt = save_checkpoint(tmp_path / "run", 0, model.state_dict(), {"config": config_to_dict(cfg), "step": 0})
    inputs = tmp_path / "in"
    for folder, count in (("a/seq", 2), ("b/seq", 3)):
        (inputs / folder).mkdir(parents=True)
        for k in range(count):
            Image.fromarray(frames[k]).save(inputs / folder / f"{k:06d}.jpg")
    with VideoWriter(inputs / "a" / "seq.mp4", 25) as w:  # a video beside the folder of frames a/seq
        for f in frames[:4]:
            w.write(f)
    common = ["--weights", str(ckpt), "--score-threshold", "0.0", "--device", "cpu"]
    out = tmp_path / "out"
    seqs = [str(inputs / "a" / "seq"), str(inputs / "b" / "seq"), str(inputs / "a" / "seq.mp4")]
    assert main(["predict", *seqs, "--out", str(out), *common]) == 0
    assert _frames_per_file(out) == {"a/seq.json": 2, "a/seq.mp4.json": 4, "b/seq.json": 3}
    images = tmp_path / "images"
    assert main(["predict", str(inputs / "*" / "seq" / "000000.jpg"), "--out", str(images), *common]) == 0
    assert _frames_per_file(images) == {"a/seq/000000.json": 1, "b/seq/000000.json": 1}


def test_predict_reports_a_decompression_bomb_and_goes_on(tiny, video, tmp_path, capsys, monkeypatch):
    from PIL import Image

    cfg, model, _ = tiny
    _, frames = video
    ckpt = save_checkpoint(tmp_path / "run", 0, model.state_dict(), {"config": config_to_dict(cfg), "step": 0})
    Image.fromarray(frames[0]).save(tmp_path / "big.png")  # 96 x 64
    Image.fromarray(frames[1][:32, :48]).save(tmp_path / "small.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)  # an error from 4000 pixels on
    out = tmp_path / "out"
    code = main(["predict", str(tmp_path / "big.png"), str(tmp_path / "small.png"), "--weights", str(ckpt),
                 "--out", str(out), "--device", "cpu"])
    assert code == 1
    report = capsys.readouterr().err.split("input(s) failed:")[1].strip().splitlines()
    assert len(report) == 1 and report[0].startswith(f"{tmp_path / 'big.png'}: image too large to decode safely")
    assert _frames_per_file(out) == {"small.json": 1}


def test_predict_into_a_used_folder_says_so_cleans_stale_temporaries_and_spares_inputs(tiny, video, tmp_path, capsys):
    import subprocess
    import sys

    from pavenet.runtime.files import temp_path

    cfg, model, _ = tiny
    path, _ = video
    ckpt = save_checkpoint(tmp_path / "run", 0, model.state_dict(), {"config": config_to_dict(cfg), "step": 0})
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = out / temp_path(out / "clip30.json").name.replace(f"-{os.getpid()}-", f"-{dead.pid}-")
    stale.write_text('{"half": ')
    inside = out / "clip30.mp4"
    inside.write_bytes(path.read_bytes())
    code = main(["predict", str(inside), "--weights", str(ckpt), "--out", str(out), "--render", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1
    assert f"note: {out} is not empty: files of the same name are replaced, other files are kept" in err
    assert f"{inside}: its output {inside} would replace the input {inside}" in err
    assert sorted(p.name for p in out.iterdir()) == ["clip30.mp4", "notes.txt"]
    assert inside.read_bytes() == path.read_bytes()

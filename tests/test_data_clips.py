"""Augmentation keeps joints on their body part; clips, targets, collate, DataLoader."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pavenet.config import DataConfig
from pavenet.data import build_dataset, collate
from pavenet.data.clips import ClipDataset, DataError, build_raw_clip, clip_indices, make_item
from pavenet.data.coco import CocoPseudoVideo
from pavenet.data.joints import MODEL, POSETRACK18_TO_MODEL
from pavenet.data.posetrack import load_sequence
from pavenet.data.synthetic import generate_video, write_dataset
from pavenet.data.transforms import ClipParams, apply_clip, resized_size


def _people(seed: int = 3):
    frames, ann = generate_video(seed, num_frames=1, size=(256, 256), max_persons=3)
    kp = np.array([np.asarray(a["keypoints"], float).reshape(17, 3)[POSETRACK18_TO_MODEL] for a in ann["annotations"]])
    return Image.fromarray(frames[0]), kp[:, None, :, :2], kp[:, None, :, 2] > 0


def _colour_at(img: Image.Image, pts: np.ndarray) -> np.ndarray:
    arr = np.asarray(img, np.float64)
    ix = np.clip(np.floor(pts).astype(int), 0, [arr.shape[1] - 1, arr.shape[0] - 1])
    return arr[ix[..., 1], ix[..., 0]]


def _match_rate(p: ClipParams, swap: bool = True) -> tuple[float, int]:
    img, kp, vis = _people()
    out, kp2, vis2 = apply_clip([img], kp, vis, p)
    perm = np.array(MODEL.flip_permutation) if (p.flip and swap) else np.arange(len(MODEL))
    src = _colour_at(img, kp[:, 0][:, perm])
    dst = _colour_at(out[0], kp2[:, 0])
    ok = vis2[:, 0] & vis[:, 0][:, perm]
    close = np.abs(src - dst).max(-1) <= 40
    return float(close[ok].mean()), int(ok.sum())


@pytest.mark.parametrize("params", [
    ClipParams(flip=True, short_side=384, max_size=2000),
    ClipParams(angle=25.0, short_side=384, max_size=2000),
    ClipParams(crop=(40.0, 30.0, 180.0, 200.0), short_side=384, max_size=2000),
    ClipParams(short_side=512, max_size=2000),
    ClipParams(flip=True, angle=-17.0, crop=(20.0, 10.0, 220.0, 230.0), short_side=400, max_size=2000),
])
def test_every_augmentation_keeps_joints_on_their_body_part(params: ClipParams) -> None:
    rate, count = _match_rate(params)
    assert count >= 20 and rate >= 0.9


def test_flip_without_joint_swap_is_caught() -> None:
    rate, _ = _match_rate(ClipParams(flip=True, short_side=384, max_size=2000), swap=False)
    assert rate < 0.5


def test_flip_twice_is_identity() -> None:
    img, kp, vis = _people()
    p = ClipParams(flip=True, short_side=256, max_size=256)
    once, kp1, vis1 = apply_clip([img], kp, vis, p)
    twice, kp2, vis2 = apply_clip(once, kp1, vis1, p)
    np.testing.assert_array_equal(np.asarray(twice[0]), np.asarray(img))
    np.testing.assert_allclose(kp2[vis2], kp[vis])
    np.testing.assert_array_equal(vis2, vis)
    np.testing.assert_allclose(kp1[..., 0][vis1], 256 - kp[..., MODEL.flip_permutation, 0][vis1])


def test_geometry_against_hand_computed_points() -> None:
    img = Image.new("RGB", (200, 100))
    kp = np.array([[[[100.0, 50.0], [150.0, 50.0], [10.0, 90.0]]]])
    vis = np.ones((1, 1, 3), bool)
    _, out, v = apply_clip([img], kp, vis, ClipParams(angle=90.0, short_side=100, max_size=1000))
    np.testing.assert_allclose(out[0, 0, :2], [[100.0, 50.0], [100.0, 0.0]], atol=1e-9)
    assert v[0, 0].tolist() == [True, True, False]  # (10, 90) rotates to (140, 140): outside
    _, out, v = apply_clip([img], kp, vis, ClipParams(crop=(50.0, 20.0, 100.0, 50.0), short_side=100, max_size=1000))
    np.testing.assert_allclose(out[0, 0], [[100.0, 60.0], [200.0, 60.0], [-80.0, 140.0]])
    assert v[0, 0].tolist() == [True, False, False]
    assert resized_size(1920, 1080, 800, 1333) == (1333, 750)
    assert resized_size(640, 480, 400, 1333) == (533, 400)


def test_targets_crop_drops_people_and_normalises(tmp_path: Path) -> None:
    write_dataset(tmp_path, videos=1, frames=3, size=(128, 96), max_persons=3, seed=7)
    seq = load_sequence(tmp_path / "annotations/train/000000_synth.json")
    raw = build_raw_clip(seq, 4, key=0, num_frames=3, stride=1)
    assert raw.frame_indices.tolist() == [0, 0, 1]
    item = make_item(raw, ClipParams(short_side=96, max_size=1000))
    tgt = item["target"]
    assert item["frames"].shape == (3, 3, 96, 128) and tgt["size"].tolist() == [96, 128]
    torch.testing.assert_close(item["frames"][0], item["frames"][1])
    np.testing.assert_allclose(tgt["keypoints"].numpy()[raw.visible], (raw.keypoints / [128, 96])[raw.visible], rtol=1e-6)
    assert tgt["video_id"] == 4 and tgt["key_frame"] == 1 and tgt["labeled"].all()
    assert tgt["image_ids"].tolist() == [seq.frames[i].image_id for i in (0, 0, 1)]
    first = raw.keypoints[0][raw.visible[0]]
    corner = ClipParams(crop=(float(first[:, 0].max()) + 1, 0.0, 1.0, 1.0), short_side=8, max_size=1000)
    cropped = make_item(raw, corner)["target"]
    assert len(cropped["track_ids"]) < len(tgt["track_ids"]) or not raw.present.any()
    assert cropped["keypoints"].shape[0] == cropped["present"].shape[0] == cropped["areas"].shape[0]


def test_ignore_region_hides_joints_and_drops_people(tmp_path: Path) -> None:
    write_dataset(tmp_path, videos=1, frames=1, size=(128, 96), max_persons=1, seed=3)
    path = tmp_path / "annotations/train/000000_synth.json"
    data = json.loads(path.read_text())
    kp = np.asarray(data["annotations"][0]["keypoints"], float).reshape(17, 3)
    hx, hy = kp[2, :2]  # head_top
    data["images"][0]["ignore_regions_x"] = [[hx - 2, hx + 2, hx + 2, hx - 2]]
    data["images"][0]["ignore_regions_y"] = [[hy - 2, hy - 2, hy + 2, hy + 2]]
    path.write_text(json.dumps(data))
    raw = build_raw_clip(load_sequence(path), 0, 0, 1, 1)
    top = MODEL.index("head_top")
    assert not raw.visible[0, 0, top] and raw.ignored[0, 0, top] and raw.ignored.sum() == 1
    assert raw.visible[0, 0].sum() == int(kp[:, 2].sum()) - 1
    tgt = make_item(raw, ClipParams(short_side=96, max_size=1000))["target"]
    assert tgt["ignored"][0, 0].nonzero().flatten().tolist() == [top]
    data["images"][0]["ignore_regions_x"] = [[-1, 200, 200, -1]]
    data["images"][0]["ignore_regions_y"] = [[-1, -1, 200, 200]]
    path.write_text(json.dumps(data))
    assert build_raw_clip(load_sequence(path), 0, 0, 1, 1).track_ids.size == 0


def test_clip_indices_repeat_key_frame() -> None:
    assert clip_indices(0, 10, 3, 1) == [0, 0, 1]
    assert clip_indices(9, 10, 3, 1) == [8, 9, 9]
    assert clip_indices(1, 10, 5, 2) == [1, 1, 1, 3, 5]


def test_collate_pads_and_masks() -> None:
    items = [{"frames": torch.ones(2, 3, 4, 6), "target": {"i": 0}}, {"frames": torch.full((2, 3, 5, 3), 2.0), "target": {"i": 1}}]
    batch = collate([items[0], [items[1], items[0]]])
    assert batch["frames"].shape == (3, 2, 3, 5, 6) and [t["i"] for t in batch["targets"]] == [0, 1, 0]
    expected = torch.ones(3, 5, 6, dtype=torch.bool)
    expected[0, :4, :6] = expected[2, :4, :6] = False
    expected[1, :5, :3] = False
    assert torch.equal(batch["mask"], expected)
    assert (batch["frames"][1, :, :, :, 3:] == 0).all() and (batch["frames"][1, :, :, :, :3] == 2).all()
    assert (batch["frames"][0, :, :, 4:] == 0).all()


def _cfg(root: Path, **kw) -> DataConfig:
    return DataConfig(root=str(root), train_short_side=[64, 80], train_max_size=100, test_short_side=64,
                      test_max_size=100, rotation=15.0, **kw)


def test_dataloader_two_workers_and_pairs(tmp_path: Path) -> None:
    write_dataset(tmp_path, videos=2, frames=12, size=(80, 64), max_persons=2, seed=0, val_videos=1)
    ds = build_dataset(_cfg(tmp_path, pair_clips=True, pair_gap=4), "train", 3, train=True)
    assert len(ds) == 24
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate)
    batches = [b for _, b in zip(range(3), loader)]
    assert len(batches) == 3
    for b in batches:
        assert b["frames"].shape[:3] == (4, 3, 3) and b["mask"].shape[0] == 4
        t0, t1 = b["targets"][0], b["targets"][1]
        assert t0["video_id"] == t1["video_id"]
        assert abs(int(t0["frame_indices"][1]) - int(t1["frame_indices"][1])) == 4
    val = build_dataset(_cfg(tmp_path), "val", 3, train=False)
    assert val[0]["frames"].shape == (3, 3, 64, 80)


def test_missing_image_is_named_or_skipped(tmp_path: Path) -> None:
    write_dataset(tmp_path, videos=1, frames=3, size=(64, 64), max_persons=1, seed=0)
    bad = tmp_path / "images/train/000000_synth/000002.jpg"
    bad.unlink()
    with pytest.raises(DataError, match="000002.jpg: image not found"):
        build_dataset(_cfg(tmp_path), "train", 3, train=False)
    with pytest.warns(UserWarning, match="000002.jpg"):
        ds = build_dataset(_cfg(tmp_path, skip_bad=True), "train", 3, train=False)
    assert len(ds) == 1
    bad.write_bytes(b"not a jpeg")
    ds = ClipDataset([load_sequence(tmp_path / "annotations/train/000000_synth.json")], 1, lambda r, w, h: ClipParams())
    with pytest.raises(DataError, match="000002.jpg: unreadable image"):
        ds[2]


def test_coco_pseudo_video(tmp_path: Path) -> None:
    img, kp, vis = _people()
    (tmp_path / "imgs").mkdir()
    img.save(tmp_path / "imgs/a.png")
    coco_kp = np.zeros((kp.shape[0], 17, 3))
    coco_kp[:, POSETRACK18_TO_MODEL, :2] = kp[:, 0]
    coco_kp[:, POSETRACK18_TO_MODEL, 2] = vis[:, 0] * 2
    anns = [{"id": 10 + i, "image_id": 1, "keypoints": k.reshape(-1).tolist(), "num_keypoints": int(v.sum()), "iscrowd": 0}
            for i, (k, v) in enumerate(zip(coco_kp, vis[:, 0]))]
    path = tmp_path / "kp.json"
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png"}], "annotations": anns}))
    ds = CocoPseudoVideo(path, tmp_path / "imgs", 3, lambda r, w, h: ClipParams(short_side=256, max_size=256), max_angle=5.0)
    raw = ds.raw_clip(0, np.random.default_rng(0))
    np.testing.assert_allclose(raw.keypoints[:, 1], kp[:, 0])
    centre = np.array([128.0, 128.0])
    for t in (0, 2):
        np.testing.assert_allclose(np.linalg.norm(raw.keypoints[:, t] - centre, axis=-1),
                                   np.linalg.norm(kp[:, 0] - centre, axis=-1))
        src, dst = _colour_at(img, kp[:, 0]), _colour_at(raw.images[t], raw.keypoints[:, t])
        assert (np.abs(src - dst).max(-1) <= 40)[vis[:, 0]].mean() >= 0.9
    assert ds[0]["target"]["track_ids"].tolist() == [10 + i for i in range(len(anns))]


def test_training_images_of_16_bits_are_scaled_and_bombs_are_data_errors(tmp_path, monkeypatch):
    from pavenet.data.clips import load_image
    from pavenet.data.posetrack import Frame

    path = tmp_path / "deep.png"
    Image.fromarray(np.full((8, 6), 32768, dtype=np.uint16)).save(path)
    frame = Frame(image_id=1, index=0, image_path=path, is_labeled=True)
    assert (np.asarray(load_image(frame)) == 128).all()
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)
    with pytest.raises(DataError, match=r"deep\.png: unreadable image \(frame 0\): Image size \(48 pixels\)"):
        load_image(frame)

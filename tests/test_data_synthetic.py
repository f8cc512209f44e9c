"""Synthetic generator: PoseTrack18 layout, determinism, round trip, occlusion."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from pavenet.cli import main as cli_main
from pavenet.data.joints import POSETRACK18_TO_MODEL
from pavenet.data.posetrack import load_sequence
from pavenet.data.synthetic import generate_video, write_dataset
from pavenet.data.synthetic_figures import MARKER_COLOURS

IMAGE_KEYS = {"file_name", "id", "vid_id", "frame_id", "nframes", "is_labeled", "ignore_regions_x", "ignore_regions_y"}
ANN_KEYS = {"keypoints", "track_id", "bbox", "bbox_head", "image_id", "category_id", "id"}


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        write_dataset(tmp_path / name, videos=2, frames=3, size=(96, 80), max_persons=3, seed=seed,
                      difficulty="hard", val_videos=1)
    a, b, c = (_digest(tmp_path / n) for n in "abc")
    assert a == b
    assert len(a) == 3 * 3 + 3 and set(a) == set(c) and a != c
    assert "annotations/val/000002_synth.json" in a and "images/train/000001_synth/000002.jpg" in a


def test_layout_matches_real_files_and_round_trips(tmp_path: Path, shared_dir: Path) -> None:
    real = json.loads((shared_dir / "fixtures/posetrack18/annotations/val/009473_mpii_test.json").read_text())
    assert IMAGE_KEYS <= set(real["images"][0]) and ANN_KEYS <= set(real["annotations"][0])
    write_dataset(tmp_path, videos=1, frames=4, size=(128, 96), max_persons=3, seed=1)
    path = tmp_path / "annotations/train/000000_synth.json"
    ann = json.loads(path.read_text())
    assert set(real["images"][0]) - {"mask_file"} <= set(ann["images"][0])
    assert set(real["annotations"][0]) <= set(ann["annotations"][0])
    assert ann["categories"][0]["keypoints"] == real["categories"][0]["keypoints"]
    seq = load_sequence(path)
    assert [f.index for f in seq.frames] == [0, 1, 2, 3] and seq.labeled_indices == [0, 1, 2, 3]
    assert seq.image_size == (128, 96) and all(f.image_path.is_file() for f in seq.frames)
    persons = [p for f in seq.frames for p in f.persons]
    assert len(persons) == len(ann["annotations"])
    for person, a in zip(persons, ann["annotations"]):
        kp = np.asarray(a["keypoints"], float).reshape(17, 3)
        np.testing.assert_array_equal(person.keypoints, kp)
        assert (kp[[3, 4]] == 0).all() and set(np.unique(kp[:, 2])) <= {0.0, 1.0}
        assert a["num_keypoints"] == int(kp[:, 2].sum()) > 0
        x, y, w, h = a["bbox"]
        pts = kp[kp[:, 2] > 0, :2]
        np.testing.assert_allclose([x + w / 2, y + h / 2], (pts.min(0) + pts.max(0)) / 2, atol=0.02)
        np.testing.assert_allclose([w, h], (pts.max(0) - pts.min(0)) * 1.3, atol=0.02)


def test_annotated_joints_show_their_marker_and_occlusion_hides_joints() -> None:
    hits = total = hidden = 0
    for seed in range(4):
        frames, ann = generate_video(seed, num_frames=6, size=(256, 256), max_persons=4, difficulty="easy")
        by_image = {im["id"]: t for t, im in enumerate(ann["images"])}
        annotated = {}
        for a in ann["annotations"]:
            t = by_image[a["image_id"]]
            kp = np.asarray(a["keypoints"], float).reshape(17, 3)[POSETRACK18_TO_MODEL]
            annotated[(t, a["track_id"])] = kp
            for j in np.flatnonzero(kp[:, 2] > 0):
                total += 1
                x, y = np.floor(kp[j, :2]).astype(int)
                hits += tuple(frames[t][y, x]) == MARKER_COLOURS[j]
        hidden += sum(int((kp[:, 2] == 0).sum()) for kp in annotated.values())
    assert total > 500 and hits / total > 0.9
    assert hidden > 0  # people overlap and some joints leave the frame in these videos


def test_labeled_every_and_bad_arguments() -> None:
    _, ann = generate_video(0, num_frames=5, size=(64, 64), max_persons=1, labeled_every=2)
    assert [im["is_labeled"] for im in ann["images"]] == [True, False, True, False, True]
    unlabeled = {im["id"] for im in ann["images"] if not im["is_labeled"]}
    assert not any(a["image_id"] in unlabeled for a in ann["annotations"])
    with pytest.raises(ValueError, match="difficulty"):
        generate_video(0, 2, difficulty="medium")


def test_cli_synth(tmp_path: Path) -> None:
    rc = cli_main(["synth", str(tmp_path), "--videos", "2", "--val-videos", "1", "--frames", "2",
                   "--size", "64x48", "--max-persons", "2", "--seed", "5"])
    assert rc == 0
    assert sorted(p.name for p in (tmp_path / "annotations/train").iterdir()) == ["000000_synth.json", "000001_synth.json"]
    assert [p.name for p in (tmp_path / "annotations/val").iterdir()] == ["000002_synth.json"]
    seq = load_sequence(tmp_path / "annotations/val/000002_synth.json")
    assert seq.image_size == (64, 48)

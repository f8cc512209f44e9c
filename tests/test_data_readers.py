"""PoseTrack18/21, PoseTrack17 and bad-input handling of the readers."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pavenet.data.joints import POSETRACK18
from pavenet.data.posetrack import AnnotationError, load_directory, load_sequence, load_sequences_from_file
from pavenet.data.posetrack17 import load_posetrack17

FIXTURE_FILES = ["003418_mpii_test.json", "009473_mpii_test.json", "012834_mpii_test.json"]


def _fixture(shared: Path, name: str) -> Path:
    return shared / "fixtures" / "posetrack18" / "annotations" / "val" / name


@pytest.mark.parametrize("name", FIXTURE_FILES)
def test_real_fixture_counts(shared_dir: Path, name: str) -> None:
    path = _fixture(shared_dir, name)
    raw = json.loads(path.read_text())
    labeled = sum(1 for im in raw["images"] if im["is_labeled"])
    seq = load_sequence(path)
    assert seq.name == path.stem
    assert len(seq.labeled_indices) == labeled
    assert sum(len(f.persons) for f in seq.frames) == len(raw["annotations"])
    frame = seq.frames[0]
    assert frame.image_path == shared_dir / "fixtures" / "posetrack18" / raw["images"][0]["file_name"]
    assert frame.image_path.is_file()
    assert (frame.width, frame.height) == (1920, 1080)
    assert len(frame.ignore_regions) == len(raw["images"][0]["ignore_regions_x"])
    for poly, xs, ys in zip(frame.ignore_regions, raw["images"][0]["ignore_regions_x"],
                            raw["images"][0]["ignore_regions_y"]):
        np.testing.assert_array_equal(poly, np.stack([xs, ys], 1))
    for person, ann in zip(frame.persons, raw["annotations"]):
        assert person.track_id == ann["track_id"]
        np.testing.assert_array_equal(person.keypoints, np.asarray(ann["keypoints"], float).reshape(17, 3))
        np.testing.assert_array_equal(person.bbox_head, ann["bbox_head"])
        assert not person.annotated[[3, 4]].any()


def test_merged_file_and_directory(shared_dir: Path, tmp_path: Path) -> None:
    merged = {"images": [], "annotations": [], "categories": []}
    for name in FIXTURE_FILES:
        raw = json.loads(_fixture(shared_dir, name).read_text())
        merged["images"] += raw["images"]
        merged["annotations"] += raw["annotations"]
    path = tmp_path / "annotations" / "val.json"
    path.parent.mkdir()
    path.write_text(json.dumps(merged))
    seqs = load_sequences_from_file(path)
    assert sorted(s.name for s in seqs) == ["003418", "009473", "012834"]
    assert sorted(len(s.frames[0].persons) for s in seqs) == [1, 2, 11]
    folder = load_directory(_fixture(shared_dir, FIXTURE_FILES[0]).parent)
    assert [s.name for s in folder] == [Path(n).stem for n in FIXTURE_FILES]


def _write(tmp_path: Path, data: object, name: str = "seq.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def _minimal(labeled: bool = True, kps: int = 51) -> dict:
    image = {"file_name": "images/val/x/000000.jpg", "id": 5, "frame_id": 5, "vid_id": "x", "is_labeled": labeled,
             "ignore_regions_x": [], "ignore_regions_y": []}
    ann = {"keypoints": [1.0] * kps, "track_id": 0, "image_id": 5, "id": 500}
    return {"images": [image], "annotations": [ann] if labeled else [], "categories": []}


def test_bad_inputs_name_file_and_key(tmp_path: Path) -> None:
    with pytest.raises(AnnotationError, match=r"bad\.json: malformed JSON"):
        load_sequence(_write(tmp_path, "{not json", "bad.json"))
    with pytest.raises(AnnotationError, match=r"short\.json: annotation 0 .*'keypoints' has 50 values"):
        load_sequence(_write(tmp_path, _minimal(kps=50), "short.json"))
    with pytest.raises(AnnotationError, match=r"empty\.json: sequence .* no labelled frame"):
        load_sequence(_write(tmp_path, _minimal(labeled=False), "empty.json"))
    with pytest.raises(AnnotationError, match=r"missing\.json: annotation file not found"):
        load_sequence(tmp_path / "missing.json")
    bad = _minimal()
    bad["annotations"][0]["image_id"] = 99
    with pytest.raises(AnnotationError, match="unknown image_id 99"):
        load_sequence(_write(tmp_path, bad, "orphan.json"))


def test_directory_skip_bad_warns_and_skips(tmp_path: Path) -> None:
    _write(tmp_path, _minimal(), "a_good.json")
    _write(tmp_path, "[1, 2", "b_bad.json")
    with pytest.raises(AnnotationError, match="b_bad.json"):
        load_directory(tmp_path)
    with pytest.warns(UserWarning, match="b_bad.json"):
        seqs = load_directory(tmp_path, skip_bad=True)
    assert [s.name for s in seqs] == ["a_good"]


def test_posetrack17_annolist(tmp_path: Path) -> None:
    points = [{"id": [jid], "x": [10.0 * jid], "y": [100.0 + jid], "is_visible": [1]} for jid in (0, 9, 13, 14)]
    rect = {"x1": [1], "y1": [2], "x2": [11], "y2": [22], "track_id": [3], "annopoints": [{"point": points}]}
    data = {"annolist": [
        {"image": [{"name": "images/bonn/000001/00000001.jpg"}], "annorect": [rect], "is_labeled": [1],
         "ignore_regions": [{"point": [{"x": [0], "y": [0]}, {"x": [5], "y": [0]}, {"x": [5], "y": [5]}]}]},
        {"image": [{"name": "images/bonn/000001/00000002.jpg"}], "annorect": [], "is_labeled": [0]},
    ]}
    seq = load_posetrack17(_write(tmp_path, data), image_root=tmp_path)
    assert seq.labeled_indices == [0]
    person = seq.frames[0].persons[0]
    assert person.track_id == 3
    expected = {"right_ankle": 0, "left_shoulder": 9, "nose": 13, "head_top": 14}
    for name, jid in expected.items():
        np.testing.assert_array_equal(person.keypoints[POSETRACK18.index(name)], [10.0 * jid, 100.0 + jid, 1])
    assert person.annotated.sum() == 4
    np.testing.assert_array_equal(person.bbox_head, [1, 2, 10, 20])
    np.testing.assert_array_equal(seq.frames[0].ignore_regions[0], [[0, 0], [5, 0], [5, 5]])
    assert seq.frames[1].image_path == tmp_path / "images/bonn/000001/00000002.jpg"

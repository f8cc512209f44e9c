"""Predictions for the images of a dataset carry the ground truth's image ids (issue 25, item 7):
``pavenet eval --coco GT.json OUT.coco.json`` then evaluates predict's output as it is."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli_helpers import CONFIG, SMALL
from pavenet.cli import main
from pavenet.data.fields import AnnotationError
from pavenet.data.joints import posetrack18_to_model
from pavenet.data.posetrack import load_sequence
from pavenet.eval.coco import evaluate_coco
from pavenet.infer.estimator import FramePrediction, PersonPrediction
from pavenet.infer.image_ids import ground_truth_entries, posetrack_annotation_file, read_ground_truth_images
from pavenet.infer.outputs import image_id, write_outputs
from pavenet.infer.video_io import VideoSource

SEQ = "000000_synth"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """One val sequence of 4 frames, every 2nd labelled, in the PoseTrack layout (pavenet synth)."""
    root = tmp_path_factory.mktemp("synth")
    assert main(["synth", str(root), "--videos", "0", "--val-videos", "1", "--frames", "4", "--size", "64", "64",
                 "--max-persons", "2", "--labeled-every", "2"]) == 0
    return root


def _gt(root: Path) -> Path:
    return root / "annotations" / "val" / f"{SEQ}.json"


def _predictions(root: Path, noise: float) -> list[FramePrediction]:
    """The ground-truth people of every frame as predictions, with ``noise`` px of jitter."""
    rng = np.random.default_rng(0)
    frames = []
    for frame in load_sequence(_gt(root)).frames:
        people = []
        for person in frame.persons:
            kp = posetrack18_to_model(person.keypoints).astype(np.float64)
            kp[:, :2] += rng.normal(0, noise, kp[:, :2].shape)
            kp[:, 2] = 0.9
            people.append(PersonPrediction(person.track_id, kp.astype(np.float32), 0.8))
        frames.append(FramePrediction(frame.index, people))
    return frames


def test_a_posetrack_sequence_folder_finds_its_ground_truth(dataset):
    folder = VideoSource(dataset / "images" / "val" / SEQ, "frames")
    assert posetrack_annotation_file(folder) == _gt(dataset).resolve()
    gt_images = json.loads(_gt(dataset).read_text())["images"]
    entries, note = ground_truth_entries(folder, 4)
    assert [e["id"] for e in entries] == [im["id"] for im in gt_images]
    assert [e["file_name"] for e in entries] == [im["file_name"] for im in gt_images]
    assert note == f"image ids from {_gt(dataset).resolve()}"
    frame = sorted(folder.path.iterdir())[2]
    one, _ = ground_truth_entries(VideoSource(frame, "image"), 1)
    assert [e["id"] for e in one] == [gt_images[2]["id"]]
    video = VideoSource(dataset / "clip.mp4", "video")
    assert posetrack_annotation_file(video) is None and ground_truth_entries(video, 4) == (None, "")


@pytest.mark.parametrize("noise", [0.0, 2.0])
def test_coco_output_evaluates_against_the_sequence_ground_truth(dataset, tmp_path, noise):
    folder = VideoSource(dataset / "images" / "val" / SEQ, "frames")
    frames = _predictions(dataset, noise)
    entries, _ = ground_truth_entries(folder, len(frames))
    out = tmp_path / "out"
    write_outputs(out, SEQ, 0, frames, ("posetrack", "coco"), entries)
    metrics = tmp_path / "coco.json"
    assert main(["eval", "--coco", str(_gt(dataset)), str(out / f"{SEQ}.coco.json"), "--json", str(metrics)]) == 0
    ap = json.loads(metrics.read_text())["AP"]
    if noise == 0:
        assert ap == pytest.approx(1.0)
    else:
        assert 0.0 < ap < 1.0
    # the PoseTrack output of the same run, scored with the same OKS, gives the same AP
    track = json.loads((out / f"{SEQ}.json").read_text())
    gt_ids = [im["id"] for im in json.loads(_gt(dataset).read_text())["images"]]
    assert [im["id"] for im in track["images"]] == gt_ids
    as_coco = [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": a["score"]}
               for a in track["annotations"]]
    (tmp_path / "from_posetrack.json").write_text(json.dumps(as_coco))
    assert evaluate_coco(_gt(dataset), tmp_path / "from_posetrack.json")["AP"] == pytest.approx(ap)
    # and the PoseTrack output is valid input of the PoseTrack evaluation
    (tmp_path / "pred").mkdir()
    (out / f"{SEQ}.json").rename(tmp_path / "pred" / f"{SEQ}.json")
    assert main(["eval", str(_gt(dataset).parent), str(tmp_path / "pred"), "--json", str(tmp_path / "pt.json")]) == 0
    if noise == 0:
        assert json.loads((tmp_path / "pt.json").read_text())["ap"]["total"] > 50.0


def test_without_ground_truth_the_run_keeps_its_own_ids(dataset, tmp_path):
    frames = _predictions(dataset, 0.0)
    write_outputs(tmp_path, "clip", 2, frames, ("coco",))
    ids = {r["image_id"] for r in json.loads((tmp_path / "clip.coco.json").read_text())}
    assert ids == {image_id(2, f.index) for f in frames if f.people}


def _coco_folder(tmp_path: Path, names: list[str], gt_names: list[str]) -> tuple[Path, Path]:
    folder = tmp_path / "val2017"
    folder.mkdir()
    for name in names:
        Image.new("RGB", (32, 24)).save(folder / name)
    gt = {"images": [{"id": 1000 + 7 * k, "file_name": n, "width": 32, "height": 24} for k, n in enumerate(gt_names)],
          "annotations": [], "categories": [{"id": 1, "name": "person"}]}
    (tmp_path / "person_keypoints_val2017.json").write_text(json.dumps(gt))
    return folder, tmp_path / "person_keypoints_val2017.json"


def test_coco_gt_gives_the_ids_of_matching_file_names(tmp_path):
    folder, gt = _coco_folder(tmp_path, ["b.jpg", "a.jpg"], ["a.jpg", "c.jpg", "b.jpg"])
    entries, note = ground_truth_entries(VideoSource(folder, "frames"), 2, gt)
    assert [(e["id"], e["file_name"], e["width"]) for e in entries] == [(1000, "a.jpg", 32), (1014, "b.jpg", 32)]
    assert note == f"image ids from {gt}"
    single, _ = ground_truth_entries(VideoSource(folder / "b.jpg", "image"), 1, gt)
    assert [e["id"] for e in single] == [1014]
    assert read_ground_truth_images(gt) is read_ground_truth_images(gt)  # read once per file version


def test_frames_missing_from_coco_gt_keep_the_runs_ids_with_a_note(tmp_path):
    folder, gt = _coco_folder(tmp_path, ["a.jpg", "x.jpg"], ["a.jpg"])
    entries, note = ground_truth_entries(VideoSource(folder, "frames"), 2, gt)
    assert entries is None
    assert note == f"1 of 2 frames (x.jpg) are not images of {gt}: image ids are this run's own"
    entries, note = ground_truth_entries(VideoSource(tmp_path / "clip.mp4", "video"), 5, gt)
    assert entries is None and note.startswith("a video file has no frame file names")


def test_a_malformed_coco_gt_names_the_file_and_the_entry(tmp_path):
    folder, gt = _coco_folder(tmp_path, ["a.jpg"], ["a.jpg"])
    gt.write_text(json.dumps({"images": [{"id": "seven", "file_name": "a.jpg"}]}))
    with pytest.raises(AnnotationError, match=r"person_keypoints_val2017.json: images\[0\]: 'id'"):
        ground_truth_entries(VideoSource(folder, "frames"), 1, gt)
    gt.write_text(json.dumps([1, 2]))
    with pytest.raises(AnnotationError, match="expected a COCO-style ground-truth file with 'images'"):
        read_ground_truth_images(gt)
    with pytest.raises(FileNotFoundError):
        read_ground_truth_images(tmp_path / "none.json")


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from pavenet.config import config_to_dict, load_config
    from pavenet.model import build_model
    from pavenet.runtime.checkpoint import save_checkpoint

    cfg = load_config(CONFIG, SMALL)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt"), 0, build_model(cfg.model).state_dict(),
                           {"config": config_to_dict(cfg), "step": 0})


def test_predict_then_eval_coco_on_its_output(dataset, tiny_checkpoint, tmp_path):
    """The command lines end to end: predict a PoseTrack-layout sequence, evaluate its COCO output."""
    out = tmp_path / "pred"
    assert main(["predict", str(dataset / "images" / "val" / SEQ), "--weights", str(tiny_checkpoint),
                 "--out", str(out), "--format", "posetrack", "coco", "--score-threshold", "0",
                 "--device", "cpu", "--threads", "1"]) == 0
    results = json.loads((out / f"{SEQ}.coco.json").read_text())
    gt_ids = {im["id"] for im in json.loads(_gt(dataset).read_text())["images"]}
    assert results and {r["image_id"] for r in results} <= gt_ids
    assert main(["eval", "--coco", str(_gt(dataset)), str(out / f"{SEQ}.coco.json"),
                 "--json", str(tmp_path / "m.json")]) == 0
    assert 0.0 <= (json.loads((tmp_path / "m.json").read_text())["AP"] or 0.0) <= 1.0


def test_predict_with_coco_gt(tmp_path, tiny_checkpoint):
    folder, gt = _coco_folder(tmp_path, ["a.jpg", "b.jpg"], ["b.jpg", "a.jpg"])
    out = tmp_path / "pred"
    assert main(["predict", str(folder / "a.jpg"), str(folder / "b.jpg"), "--weights", str(tiny_checkpoint),
                 "--out", str(out), "--format", "posetrack", "coco", "--score-threshold", "0",
                 "--device", "cpu", "--threads", "1", "--coco-gt", str(gt)]) == 0
    assert [im["id"] for im in json.loads((out / "a.json").read_text())["images"]] == [1007]
    assert {r["image_id"] for r in json.loads((out / "b.coco.json").read_text())} <= {1000}


def test_a_posetrack_file_without_images_only_gives_a_note(tmp_path):
    folder = tmp_path / "images" / "val" / "seq"
    folder.mkdir(parents=True)
    Image.new("RGB", (32, 24)).save(folder / "00001.jpg")
    annolist = tmp_path / "annotations" / "val" / "seq.json"
    annolist.parent.mkdir(parents=True)
    annolist.write_text(json.dumps({"annolist": [{"image": [{"name": "images/val/seq/00001.jpg"}]}]}))
    entries, note = ground_truth_entries(VideoSource(folder, "frames"), 1)
    assert entries is None and "expected a COCO-style ground-truth file with 'images'" in note
    assert note.endswith("image ids are this run's own")


def test_predict_stops_before_any_work_on_a_malformed_coco_gt(tmp_path, tiny_checkpoint, capsys):
    folder, gt = _coco_folder(tmp_path, ["a.jpg"], ["a.jpg"])
    gt.write_text(json.dumps([1, 2]))
    out = tmp_path / "pred"
    code = main(["predict", str(folder / "a.jpg"), "--weights", str(tiny_checkpoint), "--out", str(out),
                 "--device", "cpu", "--threads", "1", "--coco-gt", str(gt)])
    err = capsys.readouterr().err
    assert code == 2 and str(gt) in err and "expected a COCO-style ground-truth file" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()

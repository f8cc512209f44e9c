"""Evaluation on the real PoseTrack18 fixture files, the writers, COCO OKS AP, errors and the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from eval_builders import base_pose, gt_person, image, pred_person, write_sequence
from pavenet.cli import main as cli_main
from pavenet.data.joints import MODEL, posetrack18_to_model
from pavenet.eval.coco import evaluate_coco
from pavenet.eval.posetrack import POSEVAL_JOINTS, evaluate_posetrack
from pavenet.eval.posetrack_io import PoseTrackFormatError
from pavenet.eval.writers import PredictedPerson, write_coco_results, write_posetrack_predictions
from pavenet.runtime.files import atomic_open, atomic_path, public_mode

SEQ = "012834_mpii_test"


@pytest.fixture
def fixture_dir(shared_dir) -> Path:
    return shared_dir / "fixtures/posetrack18/annotations/val"


def _load(path: Path) -> dict:
    with open(path) as f:
        return json.load(f)


def _dump(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f)


def _people_from_gt(data: dict) -> list[PredictedPerson]:
    people = []
    for ann in data["annotations"]:
        kp = posetrack18_to_model(np.asarray(ann["keypoints"], dtype=np.float64).reshape(17, 3))
        kp[:, 2] = (kp[:, 2] > 0) * 0.8  # annotated joints score .8, the rest stays (0, 0, 0)
        people.append(PredictedPerson(ann["image_id"], ann["track_id"], kp, 0.9))
    return people


def _no_regions(data: dict) -> dict:
    for im in data["images"]:
        im.pop("ignore_regions_x", None)
        im.pop("ignore_regions_y", None)
    return data


def _joint_counts(data: dict) -> np.ndarray:
    kp = posetrack18_to_model(np.array([a["keypoints"] for a in data["annotations"]], dtype=np.float64).reshape(-1, 17, 3))
    return (kp != 0).any(axis=2)  # (people, 15) annotated


def test_fixture_against_perturbed_copies(fixture_dir, tmp_path):
    gt = _no_regions(_load(fixture_dir / f"{SEQ}.json"))
    annotated = _joint_counts(gt)
    n_gt = annotated.sum(axis=0)
    _dump(tmp_path / "gt" / f"{SEQ}.json", gt)
    # 1) person 0 not predicted: AP_j = recall_j = (n_j - [person 0 has j]) / n_j (precision stays 1)
    pred = json.loads(json.dumps(gt))
    pred["annotations"] = pred["annotations"][1:]
    _dump(tmp_path / "p1" / f"{SEQ}.json", pred)
    ap = evaluate_posetrack(tmp_path / "gt", tmp_path / "p1", tracking=False)["ap"]
    expected = 100 * (n_gt - annotated[0]) / n_gt
    for j, name in enumerate(MODEL.names):
        assert ap[name] == pytest.approx(expected[j])
    # 2) an extra top-scored false positive (person 0 moved 3000 px): AP_j = 100 n_j / (n_j + 1)
    pred = json.loads(json.dumps(gt))
    fp = json.loads(json.dumps(pred["annotations"][0]))
    kp = np.asarray(fp["keypoints"], dtype=np.float64).reshape(17, 3)
    kp[kp[:, 2] > 0, :2] += 3000
    fp.update(keypoints=kp.ravel().tolist(), track_id=99, scores=(kp[:, 2] * 0.9).tolist())
    for ann in pred["annotations"]:
        ann["scores"] = (np.asarray(ann["keypoints"]).reshape(17, 3)[:, 2] * 0.5).tolist()
    pred["annotations"].append(fp)
    _dump(tmp_path / "p2" / f"{SEQ}.json", pred)
    ap = evaluate_posetrack(tmp_path / "gt", tmp_path / "p2", tracking=False)["ap"]
    for j, name in enumerate(MODEL.names):
        want = 100 * n_gt[j] / (n_gt[j] + 1) if annotated[0, j] else 100.0
        assert ap[name] == pytest.approx(want)


def test_writer_round_trip(fixture_dir, tmp_path):
    for f in sorted(fixture_dir.glob("*.json")):
        gt = _load(f)
        write_posetrack_predictions(tmp_path / "pred" / f.name, gt["images"], _people_from_gt(gt))
    r = evaluate_posetrack(fixture_dir, tmp_path / "pred", strict=True)
    assert all(v == pytest.approx(100.0) for v in r["ap"].values())
    assert all(v == pytest.approx(100.0) for v in r["mota"].values())
    out = _load(tmp_path / "pred" / f"{SEQ}.json")
    assert out["categories"][0]["keypoints"][3:5] == ["left_ear", "right_ear"]
    ann = out["annotations"][0]
    kp = np.asarray(ann["keypoints"]).reshape(17, 3)
    assert kp.shape == (17, 3) and (kp[3:5] == 0).all() and len(ann["scores"]) == 17
    assert {"image_id", "track_id", "category_id", "scores", "keypoints"} <= set(ann)
    assert [p.name for p in (tmp_path / "pred").iterdir()] == [p.name for p in (tmp_path / "pred").glob("*.json")]


def test_writer_rejects_bad_people(tmp_path):
    images = [image(1, 0)]
    iid = images[0]["id"]
    kp = np.zeros((15, 3))
    with pytest.raises(ValueError, match="used twice"):
        write_posetrack_predictions(tmp_path / "a.json", images, [PredictedPerson(iid, 3, kp, 1.0)] * 2)
    with pytest.raises(ValueError, match="unknown image"):
        write_posetrack_predictions(tmp_path / "a.json", images, [PredictedPerson(iid + 1, 3, kp, 1.0)])
    with pytest.raises(ValueError, match="shape"):
        PredictedPerson(iid, 3, np.zeros((17, 3)), 1.0)
    assert not (tmp_path / "a.json").exists()


def test_coco_oks_ap(fixture_dir, tmp_path):
    gt_path = fixture_dir / f"{SEQ}.json"
    people = _people_from_gt(_load(gt_path))
    write_coco_results(tmp_path / "all.json", people)
    stats = evaluate_coco(gt_path, tmp_path / "all.json")
    assert stats["AP"] == pytest.approx(1.0) and stats["AR"] == pytest.approx(1.0)
    # 10 of 11 people found: precision 1 up to recall 10/11 -> 91 of COCO's 101 recall points
    write_coco_results(tmp_path / "ten.json", people[1:])
    stats = evaluate_coco(gt_path, tmp_path / "ten.json")
    assert stats["AP"] == pytest.approx(91 / 101)
    assert stats["AR"] == pytest.approx(10 / 11)


def test_errors_name_the_file(tmp_path):
    imgs = [image(1, 0), image(1, 1)]
    gt = [gt_person(im["id"], 0, base_pose(100, 100)) for im in imgs]
    gt_dir, pred_dir = write_sequence(tmp_path, "000001_mpii_test", imgs, gt, [])
    (gt_dir / "000002_mpii_test.json").write_text((gt_dir / "000001_mpii_test.json").read_text())
    with pytest.raises(FileNotFoundError, match="000002_mpii_test.json"):
        evaluate_posetrack(gt_dir, pred_dir)
    (gt_dir / "000002_mpii_test.json").unlink()
    pred_file = pred_dir / "000001_mpii_test.json"
    data = _load(pred_file)
    _dump(pred_file, {**data, "images": data["images"][:1]})
    with pytest.raises(PoseTrackFormatError, match=r"000001_mpii_test.json: 1 prediction frames but 2"):
        evaluate_posetrack(gt_dir, pred_dir)
    pred_file.write_text("{not json")
    with pytest.raises(PoseTrackFormatError, match="000001_mpii_test.json: not valid JSON"):
        evaluate_posetrack(gt_dir, pred_dir)
    bad = pred_person(imgs[0]["id"], 0, base_pose(1, 1))
    bad["keypoints"] = bad["keypoints"][:-3]
    _dump(pred_file, {**data, "annotations": [bad]})
    with pytest.raises(PoseTrackFormatError, match="keypoints"):
        evaluate_posetrack(gt_dir, pred_dir)
    twice = [pred_person(imgs[0]["id"], 4, base_pose(1, 1)), pred_person(imgs[0]["id"], 4, base_pose(9, 9))]
    _dump(pred_file, {**data, "annotations": twice})
    with pytest.raises(PoseTrackFormatError, match="not unique"):
        evaluate_posetrack(gt_dir, pred_dir)
    evaluate_posetrack(gt_dir, pred_dir, tracking=False)  # duplicates only matter for tracking


def test_cli_json_output(tmp_path, capsys):
    imgs = [image(1, f) for f in range(3)]
    gt = [gt_person(im["id"], 0, base_pose(100, 100)) for im in imgs]
    pr = [pred_person(im["id"], 0, base_pose(100, 100)) for im in imgs]
    gt_dir, pred_dir = write_sequence(tmp_path, "000001_mpii_test", imgs, gt, pr)
    assert cli_main(["eval", str(gt_dir), str(pred_dir), "--json", str(tmp_path / "m.json")]) == 0
    assert "Total" in capsys.readouterr().out
    result = _load(tmp_path / "m.json")
    assert set(result) == {"ap", "mota", "motp_total", "precision_total", "recall_total"}
    assert list(result["ap"]) == [*POSEVAL_JOINTS, "total"] and list(result["mota"]) == [*POSEVAL_JOINTS, "total"]
    assert result["mota"]["total"] == pytest.approx(100.0)
    assert cli_main(["eval", str(gt_dir), str(pred_dir), "--no-tracking", "--json", str(tmp_path / "n.json")]) == 0
    assert _load(tmp_path / "n.json")["mota"] is None
    assert cli_main(["eval", str(gt_dir), str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_atomic_writes_replace_on_success_and_keep_the_old_file_on_failure(tmp_path):
    target = tmp_path / "sub" / "out.json"
    with atomic_open(target) as f:
        f.write("first")
    assert target.read_text() == "first" and (target.stat().st_mode & 0o777) == public_mode()
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_open(target) as f:
            f.write("second, half written")
            raise RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(tmp_path / "sub" / "x.png", ".png") as tmp:
            assert tmp.endswith(".png") and Path(tmp).parent == target.parent
            Path(tmp).write_bytes(b"partial")
            raise RuntimeError("boom")
    assert target.read_text() == "first" and sorted(p.name for p in target.parent.iterdir()) == ["out.json"]

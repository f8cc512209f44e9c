"""Malformed prediction and ground-truth files: an error naming the file and the entry (or a
counted warning where the official tool accepts the file), never a silent drop or another exception.

The property tests mutate valid PoseTrack18, PoseTrack17 and COCO files at random (any value
replaced by any JSON value, NaN, infinities and numbers too large for a float included; keys and
list items removed) and read them with every reader and with ``pavenet eval``.
"""
from __future__ import annotations

import copy
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eval_builders import base_pose, gt_person, image, pred_person, write_sequence
from pavenet.cli import main
from pavenet.data.coco import CocoPseudoVideo
from pavenet.data.posetrack import load_sequences_from_file
from pavenet.data.posetrack17 import POSETRACK17, load_posetrack17
from pavenet.errors import PavenetError
from pavenet.eval.coco import evaluate_coco
from pavenet.eval.posetrack import evaluate_posetrack
from pavenet.eval.posetrack_io import PoseTrackFormatError

SEQ = "000001_mpii_test"
IMAGES = [image(1, f, ignore_regions_x=[[0, 5, 5]], ignore_regions_y=[[0, 0, 5]]) for f in range(2)]
GT = [gt_person(im["id"], t, base_pose(100 + 50 * t, 100)) for im in IMAGES for t in range(2)]
PRED = [pred_person(im["id"], t, base_pose(101 + 50 * t, 100)) for im in IMAGES for t in range(2)]


def _sequence(tmp_path: Path, pred: list[dict]) -> tuple[Path, Path]:
    return write_sequence(tmp_path, SEQ, IMAGES, GT, pred)


def _mutated_pred(change) -> list[dict]:
    pred = copy.deepcopy(PRED)
    change(pred)
    return pred


@pytest.mark.parametrize("change, problem", [
    (lambda p: p[1].pop("image_id"), r"annotations\[1\] \(id None\) has no 'image_id'"),
    (lambda p: p[0]["keypoints"].__setitem__(3, math.nan), r"annotations\[0\] \(id None\): 'keypoints'\[3\] must be "
                                                           r"a finite number, got nan"),
    (lambda p: p[2]["keypoints"].__setitem__(1, -math.inf), r"annotations\[2\] .*'keypoints'\[1\] must be a finite"),
    (lambda p: p[0].update(keypoints=[str(v) for v in p[0]["keypoints"]]), r"annotations\[0\] .*'keypoints'\[0\] must "
                                                                            r"be a number, got '101\.0'"),
    (lambda p: p[3]["scores"].__setitem__(0, math.nan), r"annotations\[3\] .*'scores'\[0\] must be a finite number"),
    (lambda p: p[0].update(image_id=[IMAGES[0]["id"]]), r"annotations\[0\] .*'image_id' must be a number"),
], ids=["no image_id", "nan x", "inf y", "string keypoints", "nan score", "list image_id"])
def test_a_malformed_prediction_names_the_file_and_the_annotation(tmp_path, change, problem):
    gt_dir, pred_dir = _sequence(tmp_path, _mutated_pred(change))
    with pytest.raises(PoseTrackFormatError, match=rf"{pred_dir / SEQ}\.json: {problem}"):
        evaluate_posetrack(gt_dir, pred_dir)


def test_predictions_of_unknown_images_are_counted_in_a_warning(tmp_path, capsys):
    unknown = _mutated_pred(lambda p: [a.update(image_id=a["image_id"] + 7) for a in p[2:]])
    gt_dir, pred_dir = _sequence(tmp_path, unknown)
    assert main(["eval", str(gt_dir), str(pred_dir), "--json", str(tmp_path / "m.json")]) == 0
    err = capsys.readouterr().err
    assert (f"pavenet eval: warning: {pred_dir / SEQ}.json: 2 annotation(s) refer to image ids not in 'images' and "
            f"are not evaluated (first: annotations[2], image_id {IMAGES[1]['id'] + 7})") in err
    # the first frame is still matched, the second has no prediction left
    assert json.loads((tmp_path / "m.json").read_text())["ap"]["total"] == pytest.approx(50.0)


def test_the_cli_names_a_malformed_prediction_in_one_line(tmp_path, capsys):
    gt_dir, pred_dir = _sequence(tmp_path, _mutated_pred(lambda p: p[0].pop("image_id")))
    assert main(["eval", str(gt_dir), str(pred_dir)]) == 2
    assert capsys.readouterr().err == (f"pavenet eval: error: {pred_dir / SEQ}.json: annotations[0] (id None) has "
                                       "no 'image_id'\n")


def _coco_files(tmp_path: Path) -> tuple[Path, list[dict]]:
    gt = json.loads((_sequence(tmp_path, PRED)[0] / f"{SEQ}.json").read_text())
    for k, ann in enumerate(gt["annotations"]):
        ann.update(id=k + 1, bbox=[90.0 + 50 * ann["track_id"], 90.0, 60.0, 80.0])
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    results = [{"image_id": p["image_id"], "category_id": 1, "keypoints": list(p["keypoints"]), "score": 0.9}
               for p in PRED]
    return tmp_path / "gt.json", results


@pytest.mark.parametrize("change, problem", [
    (lambda r: r[0]["keypoints"].__setitem__(0, math.nan), r"result 0: 'keypoints'\[0\] must be a finite number"),
    (lambda r: r[1].update(keypoints=[str(v) for v in r[1]["keypoints"]]), r"result 1: 'keypoints'\[0\] must be a "
                                                                           r"number, got '151\.0'"),
    (lambda r: r[2].update(score=math.nan), r"result 2: 'score' must be a finite number, got nan"),
    (lambda r: r[3].pop("image_id"), r"result 3: 'image_id' must be a number, got None"),
], ids=["nan x", "string keypoints", "nan score", "no image_id"])
def test_a_malformed_coco_result_names_the_file_and_the_result(tmp_path, change, problem):
    gt, results = _coco_files(tmp_path)
    change(results)
    (tmp_path / "res.json").write_text(json.dumps(results))
    with pytest.raises(PavenetError, match=rf"{tmp_path / 'res.json'}: {problem}"):
        evaluate_coco(gt, tmp_path / "res.json")


# --------------------------------------------------------------------------- property tests

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=4) | st.sampled_from([0, 1, -1, 3, 15, 17, 51, 10_000_000_000]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6)


@st.composite
def mutated(draw, value):
    """``value`` with one node (the root, or reached by a random walk) replaced or removed."""
    if not isinstance(value, (dict, list)) or not value or draw(st.integers(0, 3)) == 0:
        return draw(JSON)
    out = copy.copy(value)
    key = draw(st.sampled_from(list(out) if isinstance(out, dict) else range(len(out))))
    if draw(st.integers(0, 4)) == 0:
        del out[key]
    else:
        out[key] = draw(mutated(value[key]))
    return out


@st.composite
def damaged(draw, document):
    for _ in range(draw(st.integers(1, 3))):
        document = draw(mutated(document))
    return document


def _annolist(data: dict, with_scores: bool) -> dict:
    """A PoseTrack18 document in the PoseTrack17 layout (the model's joints, one-element lists)."""
    frames = []
    for im in data["images"]:
        rects = []
        for ann in (a for a in data["annotations"] if a["image_id"] == im["id"]):
            kp = np.asarray(ann["keypoints"]).reshape(17, 3)
            points = [{"id": [jid], "x": [float(kp[jid % 17, 0])], "y": [float(kp[jid % 17, 1])],
                       **({"score": [0.8]} if with_scores else {})} for jid in range(len(POSETRACK17))]
            box = {"x1": [1.0], "y1": [1.0], "x2": [31.0], "y2": [41.0]}
            rects.append({"track_id": [ann["track_id"]], "annopoints": [{"point": points}], **box})
        frames.append({"image": [{"name": im["file_name"]}], "annorect": rects,
                       "ignore_regions": [{"point": [{"x": [0.0], "y": [0.0]}, {"x": [5.0], "y": [0.0]},
                                                     {"x": [5.0], "y": [5.0]}]}]})
    return {"annolist": frames}


def _valid_documents(tmp_path: Path) -> dict[str, dict]:
    gt_dir, pred_dir = _sequence(tmp_path, PRED)
    gt, pred = (json.loads((d / f"{SEQ}.json").read_text()) for d in (gt_dir, pred_dir))
    for k, ann in enumerate(gt["annotations"]):
        ann.update(id=k + 1, bbox=[90.0, 90.0, 60.0, 80.0])
    results = [{"image_id": p["image_id"], "category_id": 1, "keypoints": list(p["keypoints"]), "score": 0.9}
               for p in PRED]
    return {"gt18": gt, "pred18": pred, "gt17": _annolist(gt, False), "pred17": _annolist(pred, True),
            "results": results}


def _expect_named(path: Path, read) -> None:
    """``read()`` returns, or raises a PavenetError whose message names ``path``; nothing else."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            read()
        except PavenetError as exc:
            assert str(path) in str(exc), str(exc)


PROPERTY = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def documents(tmp_path_factory) -> dict[str, dict]:
    return _valid_documents(tmp_path_factory.mktemp("valid"))


def _write(folder: Path, name: str, data: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(json.dumps(data))  # NaN and infinities as Python's json writes them
    return path


@PROPERTY
@given(data=st.data())
def test_posetrack_evaluation_of_damaged_files_fails_only_with_the_file_named(documents, tmp_path_factory, data):
    root = tmp_path_factory.mktemp("case")
    layout, side = data.draw(st.sampled_from(["18", "17"])), data.draw(st.sampled_from(["gt", "pred"]))
    docs = {"gt": documents[f"gt{layout}"], "pred": documents[f"pred{layout}"]}
    docs[side] = data.draw(damaged(docs[side]))
    paths = {name: _write(root / name, f"{SEQ}.json", doc) for name, doc in docs.items()}
    _expect_named(paths[side], lambda: evaluate_posetrack(root / "gt", root / "pred"))
    _expect_named(paths[side], lambda: evaluate_posetrack(root / "gt", root / "pred", tracking=False, strict=True))


@PROPERTY
@given(data=st.data())
def test_coco_evaluation_of_damaged_files_fails_only_with_the_file_named(documents, tmp_path_factory, data):
    root = tmp_path_factory.mktemp("case")
    side = data.draw(st.sampled_from(["gt18", "results"]))
    docs = {"gt18": documents["gt18"], "results": documents["results"]}
    docs[side] = data.draw(damaged(docs[side]))
    paths = {name: _write(root, f"{name}.json", doc) for name, doc in docs.items()}
    _expect_named(paths[side], lambda: evaluate_coco(paths["gt18"], paths["results"]))


@PROPERTY
@given(data=st.data())
def test_training_readers_of_damaged_files_fail_only_with_the_file_named(documents, tmp_path_factory, data):
    root = tmp_path_factory.mktemp("case")
    coco = copy.deepcopy(documents["gt18"])
    coco["categories"][0]["keypoints"] = ["nose"] * 17
    readers = {
        "gt18": lambda p: load_sequences_from_file(p),
        "gt17": lambda p: load_posetrack17(p),
        "coco": lambda p: CocoPseudoVideo(p, root, 3, lambda rng, w, h: None),
    }
    name = data.draw(st.sampled_from(sorted(readers)))
    path = _write(root / "annotations" / "val", f"{name}.json",
                  data.draw(damaged(coco if name == "coco" else documents[name])))
    _expect_named(path, lambda: readers[name](path))


@PROPERTY
@given(data=st.data())
def test_the_eval_command_on_damaged_files_exits_0_or_2_naming_the_file(documents, tmp_path_factory, data):
    root = tmp_path_factory.mktemp("case")
    pred = _write(root / "pred", f"{SEQ}.json", data.draw(damaged(documents["pred18"])))
    _write(root / "gt", f"{SEQ}.json", documents["gt18"])
    with pytest.MonkeyPatch.context() as patch:
        errors: list[str] = []
        patch.setattr("sys.stderr", _Lines(errors))
        patch.setattr("sys.stdout", _Lines([]))
        code = main(["eval", str(root / "gt"), str(root / "pred")])
    failed = [line for line in errors if line.startswith("pavenet eval: error: ")]
    assert code == 0 and not failed or code == 2 and len(failed) == 1 and str(pred) in failed[0], errors


class _Lines:
    """A text stream that keeps what is written, line by line."""

    def __init__(self, lines: list[str]) -> None:
        self.lines, self._part = lines, ""

    def write(self, text: str) -> int:
        parts = (self._part + text).split("\n")
        self.lines.extend(parts[:-1])
        self._part = parts[-1]
        return len(text)

    def flush(self) -> None:
        pass

"""PoseTrack17 ``annolist`` files in the evaluation: reading, writing, and the same numbers as PoseTrack18.

The multi-frame test starts from the real PoseTrack18 samples in ``../shared/fixtures`` (one frame
each), makes six-frame sequences of them (people moving, one unlabelled frame, someone missing
now and then), converts them to the annolist layout the way the official converter does
(``poseval`` ``convert.py``: ``Video/Image/Person.to_old``) and checks that every pairing of the
two layouts gives identical metrics.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from pavenet.cli import main as cli_main
from pavenet.data.joints import MODEL, posetrack18_to_model
from pavenet.data.posetrack17 import POSETRACK17, load_posetrack17
from pavenet.engine.evaluate import predict_split
from pavenet.eval.posetrack import POSEVAL_JOINTS, evaluate_posetrack
from pavenet.eval.posetrack_io import MIN_SCORE, PoseTrackFormatError, load_sequence
from pavenet.eval.writers import PredictedPerson, write_annolist_predictions, write_posetrack_predictions

N_FRAMES = 6
UNLABELLED = 2  # frame index left unlabelled in every made-up sequence


# --------------------------------------------------------------------------- helpers


def _dump(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f)
    return path


def to_annolist(data: dict) -> dict:
    """A PoseTrack18 file's content in the PoseTrack17 layout, as the official converter writes it.

    Frames in file order; a slot that is exactly (0, 0, 0) is left out, ears too; ``score`` from
    the ``scores`` list when it is not empty; head box corners from ``bbox_head``; ignore regions
    paired with ``zip``; ``is_labeled`` = the frame has people.
    """
    names = data["categories"][0]["keypoints"]
    by_image: dict = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    annolist = []
    for k, im in enumerate(data["images"]):
        rects = []
        for ann in by_image.get(im["id"], []):
            kp = np.asarray(ann["keypoints"], dtype=np.float64).reshape(len(names), 3)
            points = []
            for slot, name in enumerate(names):
                x, y, v = (float(t) for t in kp[slot])
                if name not in POSETRACK17.names or (x == 0 and y == 0 and v == 0):
                    continue
                point = {"id": [POSETRACK17.index(name)], "x": [x], "y": [y], "is_visible": [v]}
                if ann.get("scores"):
                    point["score"] = [ann["scores"][slot]]
                points.append(point)
            rect = {"track_id": [ann["track_id"]], "annopoints": [{"point": points}]}
            if ann.get("bbox_head"):
                x, y, w, h = ann["bbox_head"]
                rect.update(x1=[x], y1=[y], x2=[x + w], y2=[y + h])
            if "score" in ann:
                rect["score"] = [ann["score"]]
            rects.append(rect)
        entry = {"image": [{"name": im["file_name"]}], "imgnum": [k + 1], "annorect": rects,
                 "is_labeled": [1 if rects else 0]}
        if im.get("ignore_regions_x") and im.get("ignore_regions_y"):
            entry["ignore_regions"] = [{"point": [{"x": [x], "y": [y]} for x, y in zip(px, py)]}
                                       for px, py in zip(im["ignore_regions_x"], im["ignore_regions_y"])]
        annolist.append(entry)
    return {"annolist": annolist}


def multi_frame(data: dict) -> dict:
    """A real one-frame PoseTrack18 sample made into ``N_FRAMES`` frames: people drift by
    (3, 1.5) px a frame, frame ``UNLABELLED`` has no annotation, a person now and then is absent."""
    im0 = data["images"][0]
    seq_dir = str(Path(im0["file_name"]).parent)
    images, anns = [], []
    for f in range(N_FRAMES):
        iid = im0["id"] + f
        images.append({**im0, "id": iid, "frame_id": iid, "nframes": N_FRAMES, "is_labeled": f != UNLABELLED,
                       "file_name": f"{seq_dir}/{f:06d}.jpg"})
        if f == UNLABELLED:
            continue
        for k, ann in enumerate(data["annotations"]):
            if (k + f) % 7 == 6:
                continue
            kp = np.asarray(ann["keypoints"], dtype=np.float64).reshape(17, 3)
            on = kp[:, 2] > 0
            kp[on, 0] += 3.0 * f
            kp[on, 1] += 1.5 * f
            hx, hy, hw, hh = ann["bbox_head"]
            anns.append({**ann, "id": iid * 100 + k, "image_id": iid, "keypoints": kp.ravel().tolist(),
                         "bbox_head": [hx + 3.0 * f, hy + 1.5 * f, hw, hh]})
    return {"images": images, "annotations": anns, "categories": data["categories"]}


def made_up_predictions(gt: dict, rng: np.random.Generator) -> list[tuple[int, int, np.ndarray, float]]:
    """(frame position, track id, (15, 3) keypoints, person score) built from the ground truth:
    noisy joints (some beyond PCKh 0.5), random scores, guessed unannotated joints, missed people,
    a false-positive person, track ids swapped between the first two people from frame 3 on (or a
    new id for a lone person) and a person in the unlabelled frame."""
    pos = {im["id"]: k for k, im in enumerate(gt["images"])}
    out = []
    for ann in gt["annotations"]:
        f = pos[ann["image_id"]]
        if rng.random() < 0.1:
            continue
        kp = posetrack18_to_model(np.asarray(ann["keypoints"], dtype=np.float64).reshape(17, 3))
        on = kp[:, 2] > 0
        hx, hy, hw, hh = ann["bbox_head"]
        size = 0.6 * math.hypot(hw, hh)
        xy = kp[:, :2] + rng.normal(0.0, 0.3 * size, (len(MODEL), 2))
        centre = kp[on, :2].mean(axis=0)
        guessed = ~on & (rng.random(len(MODEL)) < 0.5)
        xy[guessed] = centre + rng.normal(0.0, 2 * size, (int(guessed.sum()), 2))
        score = rng.uniform(0.05, 1.0, len(MODEL))
        keep = on | guessed
        out_kp = np.zeros((len(MODEL), 3))
        out_kp[keep, :2], out_kp[keep, 2] = xy[keep], score[keep]
        tid = 100 + ann["track_id"]
        n_tracks = len({a["track_id"] for a in gt["annotations"]})
        if f >= 3 and n_tracks >= 2 and ann["track_id"] in (0, 1):
            tid = 100 + (1 - ann["track_id"])
        elif f >= 4 and n_tracks == 1:
            tid = 500
        out.append((f, tid, out_kp, float(score[keep].mean())))
    w = gt["images"][0].get("width", 1920)
    for f in range(N_FRAMES):
        if f % 2 == 0 or f == UNLABELLED:
            fp = np.zeros((len(MODEL), 3))
            fp[:, 0] = rng.uniform(0, w, len(MODEL))
            fp[:, 1] = rng.uniform(0, 1080, len(MODEL))
            fp[:, 2] = rng.uniform(0.05, 0.6, len(MODEL))
            out.append((f, 900, fp, 0.3))
    return out


def _people(preds, image_id) -> list[PredictedPerson]:
    return [PredictedPerson(image_id(f), tid, kp, s) for f, tid, kp, s in preds]


@pytest.fixture
def layouts(shared_dir, tmp_path) -> Path:
    """tmp_path/{gt18, gt17, pred18, pred17, pred17_converted}: the same content in both layouts."""
    rng = np.random.default_rng(17)
    for src in sorted((shared_dir / "fixtures/posetrack18/annotations/val").glob("*.json")):
        gt = multi_frame(json.loads(src.read_text()))
        _dump(tmp_path / "gt18" / src.name, gt)
        _dump(tmp_path / "gt17" / src.name, to_annolist(gt))
        preds = made_up_predictions(gt, rng)
        ids = [im["id"] for im in gt["images"]]
        write_posetrack_predictions(tmp_path / "pred18" / src.name, gt["images"], _people(preds, ids.__getitem__))
        write_annolist_predictions(tmp_path / "pred17" / src.name, to_annolist(gt)["annolist"],
                                   _people(preds, int))
        pred18 = json.loads((tmp_path / "pred18" / src.name).read_text())
        _dump(tmp_path / "pred17_converted" / src.name, to_annolist(pred18))
    return tmp_path


def _frame(image_name: str, rects: list, **extra) -> dict:
    return {"image": [{"name": image_name}], "annorect": rects, **extra}


def _point(jid: int, x: float, y: float, **extra) -> dict:
    return {"id": [jid], "x": [x], "y": [y], **extra}


def _rect(points: list, track: int = 0, head=(0.0, 0.0, 30.0, 40.0), **extra) -> dict:
    rect = {"track_id": [track], "annopoints": [{"point": points}], **extra}
    if head is not None:
        rect.update(x1=[head[0]], y1=[head[1]], x2=[head[2]], y2=[head[3]])
    return rect


# --------------------------------------------------------------------------- the two layouts agree


def test_real_sequences_give_identical_numbers_in_both_layouts(layouts, tmp_path, capsys):
    d = layouts
    r18 = evaluate_posetrack(d / "gt18", d / "pred18", per_sequence=True)
    # the made-up predictions are neither perfect nor useless
    assert 20.0 < r18["ap"]["total"] < 95.0
    assert -50.0 < r18["mota"]["total"] < 90.0
    assert list(r18["ap"]) == [*POSEVAL_JOINTS, "total"]
    assert all(v is not None for v in [*r18["ap"].values(), *r18["mota"].values()])
    assert len(set(r18["ap"].values())) > 5 and len(set(r18["mota"].values())) > 5
    for gt, pred in (("gt17", "pred17"), ("gt17", "pred18"), ("gt18", "pred17"), ("gt17", "pred17_converted")):
        r = evaluate_posetrack(d / gt, d / pred, per_sequence=True)
        assert r == r18, (gt, pred)  # every joint's AP and MOTA, MOTP, precision, recall, per sequence too
    for kwargs in ({"strict": True}, {"tracking": False}):
        r17 = evaluate_posetrack(d / "gt17", d / "pred17", **kwargs)
        assert r17 == evaluate_posetrack(d / "gt18", d / "pred18", **kwargs)
    # the command line on the annolist pair writes the same numbers
    out = tmp_path / "m17.json"
    assert cli_main(["eval", str(d / "gt17"), str(d / "pred17"), "--json", str(out)]) == 0
    assert "Total" in capsys.readouterr().out
    r18_plain = {k: v for k, v in r18.items() if k != "per_sequence"}
    assert json.loads(out.read_text()) == r18_plain


def test_unlabelled_annolist_frames_are_dropped(layouts):
    seq = load_sequence(layouts / "gt17" / "009473_mpii_test.json", layouts / "pred17" / "009473_mpii_test.json")
    assert [f.image_id for f in seq.frames] == [k for k in range(N_FRAMES) if k != UNLABELLED]
    gt = json.loads((layouts / "gt17" / "009473_mpii_test.json").read_text())
    assert gt["annolist"][UNLABELLED]["is_labeled"] == [0] and gt["annolist"][UNLABELLED]["annorect"] == []


# --------------------------------------------------------------------------- hand-made files


def test_joint_ids_head_size_scores_and_unlabelled_frame_by_hand(tmp_path):
    # ground truth: frame 0 one person with 5 joints, frame 1 unlabelled, frame 2 a person without points
    gt_points = [_point(0, 10, 20), _point(9, 30, 40), _point(12, 50, 60), _point(13, 70, 80),
                 _point(14, 90, 100, is_visible=[0])]
    gt = {"annolist": [
        _frame("a/1.jpg", [_rect(gt_points, track=4, head=(5.0, 6.0, 35.0, 46.0))], is_labeled=[1]),
        _frame("a/2.jpg", [], is_labeled=[0]),
        _frame("a/3.jpg", [_rect([], track=4), {"track_id": [5]}], is_labeled=[1]),
    ]}
    pred = {"annolist": [
        _frame("a/1.jpg", [_rect([_point(13, 71, 80, score=[0.5]), _point(0, 11, 20), _point(5, 1, 1, score=[0.2])],
                                 track=7, head=None)]),
        _frame("a/2.jpg", [_rect([_point(3, 1, 1, score=[0.9])], track=8, head=None)]),
        _frame("a/3.jpg", []),
    ]}
    seq = load_sequence(_dump(tmp_path / "gt" / "s.json", gt), _dump(tmp_path / "pred" / "s.json", pred))
    assert [f.image_id for f in seq.frames] == [0, 2]  # the unlabelled frame (empty annorect) is left out
    g, p = seq.frames[0].gt, seq.frames[0].pred
    by_hand = {"right_ankle": (10, 20), "left_shoulder": (30, 40), "head_bottom": (50, 60), "nose": (70, 80),
               "head_top": (90, 100)}
    assert g.has[0].sum() == 5 and len(g) == 1
    for name, xy in by_hand.items():
        assert g.has[0, MODEL.index(name)]
        np.testing.assert_array_equal(g.xy[0, MODEL.index(name)], xy)
    assert g.track.tolist() == [4] and g.head[0] == pytest.approx(0.6 * 50.0)  # 30 x 40 box: diagonal 50
    assert p.track.tolist() == [7] and math.isnan(p.head[0])
    assert np.flatnonzero(p.has[0]).tolist() == sorted(MODEL.index(n) for n in ("nose", "right_ankle", "left_ankle"))
    assert p.score[0, MODEL.index("nose")] == 0.5 and p.score[0, MODEL.index("right_ankle")] == MIN_SCORE
    # frame 2: the person with an empty point list stays (no joint), the one without annopoints goes
    assert len(seq.frames[1].gt) == 1 and not seq.frames[1].gt.has.any()
    # the same by the metric: nose and right_ankle 1 px off (matched); left_shoulder annotated but
    # not predicted (AP 0); left_ankle predicted without ground truth (undefined); left_hip neither
    # (the official AP 0)
    r = evaluate_posetrack(tmp_path / "gt", tmp_path / "pred", tracking=False)["ap"]
    assert r["nose"] == pytest.approx(100.0) and r["right_ankle"] == pytest.approx(100.0)
    assert r["left_shoulder"] == 0.0 and r["left_ankle"] is None and r["left_hip"] == 0.0


def test_only_one_element_lists_are_read_as_the_official_code_does(tmp_path):
    good = {"annolist": [_frame("a/1.jpg", [_rect([_point(0, 10, 20)])])]}
    gt = _dump(tmp_path / "gt" / "s.json", good)
    pred = tmp_path / "pred" / "s.json"
    for field, value, where in (("x", 10, "annolist[0].annorect[0].annopoints[0].point[0]"),
                                ("track_id", 0, "annolist[0].annorect[0]"),
                                ("x1", 0.0, "annolist[0].annorect[0]")):
        bad = json.loads(json.dumps(good))
        rect = bad["annolist"][0]["annorect"][0]
        (rect["annopoints"][0]["point"][0] if field == "x" else rect)[field] = value
        _dump(pred, good)
        _dump(gt, bad)
        message = rf"s\.json: {re.escape(where)}: '{field}' must be a one-element list"
        with pytest.raises(PoseTrackFormatError, match=message):
            evaluate_posetrack(tmp_path / "gt", tmp_path / "pred")
    _dump(gt, good)
    _dump(pred, {"annolist": [_frame("a/1.jpg", [_rect([_point(0, 10, 20, score=0.5)])])]})
    with pytest.raises(PoseTrackFormatError, match="'score' must be a one-element list"):
        evaluate_posetrack(tmp_path / "gt", tmp_path / "pred")
    # the training reader is lenient: bare scalars and lists alike
    rect = {"track_id": 3, "x1": 0, "y1": 0, "x2": 30, "y2": 40,
            "annopoints": [{"point": [{"id": 13, "x": 5, "y": 6}]}]}
    bare = {"annolist": [{"image": {"name": "a/1.jpg"}, "is_labeled": 1, "annorect": [rect]}]}
    person = load_posetrack17(_dump(tmp_path / "train" / "s.json", bare), image_root=tmp_path).frames[0].persons[0]
    assert person.track_id == 3 and person.keypoints[0].tolist() == [5.0, 6.0, 1.0]  # slot 0 = nose


@pytest.mark.parametrize("content, message", [
    ({"annolists": []}, r"no 'annolist' and no 'images' list"),
    ({"annolist": {"a": 1}}, r"'annolist' must be a list"),
    ({"annolist": [{"image": [{"name": "a/1.jpg"}]}]}, r"annolist\[0\]: missing or malformed 'annorect' list"),
    ({"annolist": [_frame("a/1.jpg", [_rect([_point(15, 1, 2)])])]},
     r"annolist\[0\]\.annorect\[0\]\.annopoints\[0\]\.point\[0\]: joint id 15 outside 0\.\.14"),
    ({"annolist": [_frame("a/1.jpg", [_rect([_point(0, float("nan"), 2)])])]},
     r"annolist\[0\]\.annorect\[0\]\.annopoints\[0\]\.point\[0\]: 'x' is not finite"),
    ({"annolist": [_frame("a/1.jpg", [_rect([_point(0, 1, 2), _point(0, 3, 4)])])]},
     r"annolist\[0\]\.annorect\[0\]: joint id 0 appears twice"),
    ({"annolist": [_frame("a/1.jpg", [_rect([_point(0, 1, 2)], head=None)])]},
     r"annolist\[0\]\.annorect\[0\]: a person with points needs the head box"),
    ({"annolist": [_frame("a/1.jpg", [{"track_id": [0], "annopoints": {"point": []}}])]},
     r"annolist\[0\]\.annorect\[0\]: 'annopoints' must be a list"),
])
def test_malformed_ground_truth_names_file_and_entry(tmp_path, content, message):
    good = {"annolist": [_frame("a/1.jpg", [_rect([_point(0, 10, 20)])])]}
    _dump(tmp_path / "gt" / "seq.json", content)
    _dump(tmp_path / "pred" / "seq.json", good)
    with pytest.raises(PoseTrackFormatError, match=r"gt[/\\]seq\.json: " + message):
        evaluate_posetrack(tmp_path / "gt", tmp_path / "pred")


def test_cli_reports_a_malformed_annolist_file(tmp_path, capsys):
    good = {"annolist": [_frame("a/1.jpg", [_rect([_point(0, 10, 20)])])]}
    _dump(tmp_path / "gt" / "seq.json", good)
    _dump(tmp_path / "pred" / "seq.json", {"annolist": [_frame("a/1.jpg", [_rect([_point(15, 1, 2)])])]})
    assert cli_main(["eval", str(tmp_path / "gt"), str(tmp_path / "pred")]) == 2
    err = capsys.readouterr().err
    assert "seq.json: annolist[0].annorect[0].annopoints[0].point[0]: joint id 15 outside 0..14" in err
    assert "Traceback" not in err


def test_mixed_layout_frame_counts_must_agree(tmp_path):
    gt = {"annolist": [_frame("a/1.jpg", [_rect([_point(0, 10, 20)])]), _frame("a/2.jpg", [])]}
    _dump(tmp_path / "gt" / "seq.json", gt)
    _dump(tmp_path / "pred" / "seq.json", {"annolist": [_frame("a/1.jpg", [])]})
    with pytest.raises(PoseTrackFormatError, match="seq.json: 1 prediction frames but 2 ground-truth frames"):
        evaluate_posetrack(tmp_path / "gt", tmp_path / "pred")


# --------------------------------------------------------------------------- writing annolist predictions


def test_annolist_writer_round_trips_to_the_same_people_as_the_posetrack18_writer(tmp_path):
    rng = np.random.default_rng(3)
    gt17 = {"annolist": [_frame(f"images/val/000001_mpii_test/{k:06d}.jpg",
                                [_rect([_point(j, 10.0 * j + k, 5.0 * j) for j in range(15)], track=0)],
                                imgnum=[k + 1], is_labeled=[1]) for k in range(3)]}
    images18 = [{"id": 100 + k, "file_name": f"images/val/000001_mpii_test/{k:06d}.jpg"} for k in range(3)]
    preds = []
    for k in range(3):
        for t in range(2):
            kp = np.concatenate([rng.uniform(0, 200, (15, 2)), rng.uniform(0, 1, (15, 1))], axis=1)
            kp[3] = 0.0  # exactly (0, 0, 0): left out by both writers
            kp[4, 2] = 0.0  # score 0 at a real position: kept by both
            preds.append((k, 7 + t, kp, 0.5 + 0.1 * t))
    write_annolist_predictions(tmp_path / "p17" / "seq.json", gt17["annolist"], _people(preds, int))
    write_posetrack_predictions(tmp_path / "p18" / "seq.json", images18, _people(preds, lambda f: 100 + f))
    gt = _dump(tmp_path / "gt" / "seq.json", gt17)
    a = load_sequence(gt, tmp_path / "p17" / "seq.json")
    b = load_sequence(gt, tmp_path / "p18" / "seq.json")
    assert len(a.frames) == len(b.frames) == 3
    for fa, fb, k in zip(a.frames, b.frames, range(3)):
        pa, pb = fa.pred, fb.pred
        np.testing.assert_array_equal(pa.has, pb.has)
        np.testing.assert_array_equal(pa.xy, pb.xy)
        np.testing.assert_array_equal(pa.score[pa.has], pb.score[pb.has])
        np.testing.assert_array_equal(pa.track, pb.track)
        assert pa.track.tolist() == [7, 8] and pa.has[:, 3].sum() == 0 and pa.has[:, 4].all()
        mine = [p for p in preds if p[0] == k]
        np.testing.assert_array_equal(pa.xy[:, 5:], np.stack([p[2][5:, :2] for p in mine]))
    written = json.loads((tmp_path / "p17" / "seq.json").read_text())
    entry = written["annolist"][1]
    assert entry["image"] == gt17["annolist"][1]["image"] and entry["imgnum"] == [2]
    rect = entry["annorect"][0]
    assert rect["track_id"] == [7] and rect["score"] == [0.5]
    point = rect["annopoints"][0]["point"][0]
    assert set(point) == {"id", "x", "y", "score"} and all(len(v) == 1 for v in point.values())
    assert sorted(p.name for p in (tmp_path / "p17").iterdir()) == ["seq.json"]  # no temporary file left
    # the writer refuses what the evaluator would
    with pytest.raises(ValueError, match="used twice"):
        write_annolist_predictions(tmp_path / "bad.json", gt17["annolist"], _people(preds[:1] * 2, int))
    with pytest.raises(ValueError, match="unknown image id 3"):
        write_annolist_predictions(tmp_path / "bad.json", gt17["annolist"],
                                   [PredictedPerson(3, 0, np.zeros((15, 3)), 1.0)])
    assert not (tmp_path / "bad.json").exists()


def test_predict_split_writes_annolist_predictions_for_annolist_ground_truth(tmp_path):
    """``pavenet test``'s writing step (``predict_split``) on a PoseTrack17 split, with a stand-in
    estimator that returns the ground-truth poses."""
    root = tmp_path / "data"
    for k in range(3):
        (root / "images/val/000001_mpii_test").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 48)).save(root / f"images/val/000001_mpii_test/{k:06d}.jpg")
    annolist = [_frame(f"images/val/000001_mpii_test/{k:06d}.jpg",
                       [_rect([_point(j, 2.0 * j + k + 1, 3.0 * j + 1) for j in range(15)], track=3)] if k != 1 else [],
                       imgnum=[k + 1], is_labeled=[int(k != 1)]) for k in range(3)]
    gt_dir = root / "annotations/val"
    _dump(gt_dir / "000001_mpii_test.json", {"annolist": annolist})
    seq = load_posetrack17(gt_dir / "000001_mpii_test.json", root)

    class Truth:
        def predict_frames(self, frames, batch_size, score_threshold):
            for index, (frame, _) in enumerate(zip(seq.frames, frames)):
                people = []
                for person in frame.persons:
                    kp = posetrack18_to_model(person.keypoints.copy())
                    kp[:, 2] *= 0.9
                    people.append(SimpleNamespace(track_id=person.track_id, keypoints=kp, score=0.9))
                yield SimpleNamespace(index=index, people=people)

    out = predict_split(Truth(), [seq], tmp_path / "pred", progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["000001_mpii_test.json"]
    written = json.loads((out / "000001_mpii_test.json").read_text())
    assert [e["image"] for e in written["annolist"]] == [e["image"] for e in annolist]
    assert [len(e["annorect"]) for e in written["annolist"]] == [1, 0, 1]
    r = evaluate_posetrack(gt_dir, out)
    assert all(v == pytest.approx(100.0) for v in r["ap"].values())
    assert all(v == pytest.approx(100.0) for v in r["mota"].values())

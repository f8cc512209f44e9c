"""PoseTrack mAP: hand-computed cases for the official matching, ranking, VOC AP and quirks."""
from __future__ import annotations

import numpy as np
import pytest

from eval_builders import base_pose, gt_person, image, pred_person, write_sequence
from pavenet.data.joints import MODEL
from pavenet.eval.posetrack import POSEVAL_JOINTS, evaluate_posetrack
from pavenet.eval.posetrack_ap import joint_ap, voc_ap
from pavenet.data.regions import points_in_polygon

NOSE = MODEL.index("nose")


def _ap(tmp_path, images, gt, pred, **kw):
    gt_dir, pred_dir = write_sequence(tmp_path, "000001_mpii_test", images, gt, pred)
    return evaluate_posetrack(gt_dir, pred_dir, tracking=False, **kw)["ap"]


def test_voc_ap_hand_values():
    # precision envelope 1 up to recall .5, then 2/3 up to recall 1
    assert voc_ap(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3])) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert voc_ap(np.array([0.0, 0.5]), np.array([0.0, 0.5])) == pytest.approx(0.25)


def test_perfect_predictions_give_100(tmp_path):
    imgs = [image(1, f) for f in range(3)]
    gt = [gt_person(im["id"], t, base_pose(100 + 200 * t, 100)) for im in imgs for t in range(2)]
    pr = [pred_person(im["id"], t, base_pose(100 + 200 * t, 100)) for im in imgs for t in range(2)]
    ap = _ap(tmp_path, imgs, gt, pr)
    assert set(ap) == set(POSEVAL_JOINTS) | {"total"}
    assert all(v == pytest.approx(100.0) for v in ap.values())


@pytest.mark.parametrize("fp_score, expected", [(0.8, 50.0), (0.95, 25.0)])
def test_miss_and_false_positive(tmp_path, fp_score, expected):
    # two people, one found (score .9), one missed, one false positive far away:
    # ranked TP, FP -> P = [1, .5], R = [.5, .5] -> AP 50; ranked FP, TP -> AP .5 x .5 = 25
    im = image(1, 0)
    gt = [gt_person(im["id"], 0, base_pose(100, 100)), gt_person(im["id"], 1, base_pose(400, 100))]
    pr = [pred_person(im["id"], 0, base_pose(100, 100), 0.9), pred_person(im["id"], 1, base_pose(800, 600), fp_score)]
    ap = _ap(tmp_path, [im], gt, pr)
    assert ap["total"] == pytest.approx(expected)
    assert ap["nose"] == pytest.approx(expected)


def test_pckh_threshold_is_half_the_head_size(tmp_path):
    # head size 30: a joint 14.9 px away matches, one 15.1 px away does not
    im = image(1, 0)
    xy = base_pose(100, 100)
    moved = xy.copy()
    moved[0, 0] += 14.9
    moved[1, 0] += 15.1
    ap = _ap(tmp_path, [im], [gt_person(im["id"], 0, xy)], [pred_person(im["id"], 0, moved)])
    assert ap["nose"] == pytest.approx(100.0)
    assert ap["head_bottom"] == pytest.approx(0.0)


def test_greedy_assignment_keeps_best_prediction_per_person(tmp_path):
    # two predictions on one person: the better one (all 15 joints within PCKh) is the TP, the
    # other (only 10 joints within) is a false positive even for its matching joints
    im = image(1, 0)
    xy = base_pose(100, 100)
    half = xy.copy()
    half[10:] += 100
    pr = [pred_person(im["id"], 0, half, 0.95), pred_person(im["id"], 1, xy, 0.5)]
    ap = _ap(tmp_path, [im], [gt_person(im["id"], 0, xy)], pr)
    # nose: ranked FP (.95) then TP (.5): AP = 1 x .5 = 50; joints 10..14 likewise (the FP is far)
    assert ap["nose"] == pytest.approx(50.0)
    assert ap["right_ankle"] == pytest.approx(50.0)


def test_unannotated_joints(tmp_path):
    # frame 0: nose annotated; frame 1: nose unannotated -> a predicted nose there is a false positive
    imgs = [image(1, 0), image(1, 1)]
    xy = base_pose(100, 100)
    no_nose = xy.copy()
    no_nose[NOSE] = np.nan
    gt = [gt_person(imgs[0]["id"], 0, xy), gt_person(imgs[1]["id"], 0, no_nose)]
    late_fp = [pred_person(imgs[0]["id"], 0, xy, 0.9), pred_person(imgs[1]["id"], 0, xy, 0.5)]
    assert _ap(tmp_path / "a", imgs, gt, late_fp)["nose"] == pytest.approx(100.0)
    early_fp = [pred_person(imgs[0]["id"], 0, xy, 0.5), pred_person(imgs[1]["id"], 0, xy, 0.9)]
    assert _ap(tmp_path / "b", imgs, gt, early_fp)["nose"] == pytest.approx(50.0)


def test_joint_without_ground_truth(tmp_path):
    im = image(1, 0)
    xy = base_pose(100, 100)
    no_nose = xy.copy()
    no_nose[NOSE] = np.nan
    pred_xy = xy.copy()
    pred_xy[NOSE] = 0.0
    score = np.full(15, 0.9)
    score[NOSE] = 0.0  # (0, 0, 0): no predicted nose
    gt, pr = [gt_person(im["id"], 0, no_nose)], [pred_person(im["id"], 0, pred_xy, score)]
    official = _ap(tmp_path / "a", [im], gt, pr)
    assert official["nose"] == 0.0  # official: no GT and no detection -> AP 0, counted in the total
    assert official["total"] == pytest.approx(14 * 100 / 15)
    strict = _ap(tmp_path / "b", [im], gt, pr, strict=True)
    assert strict["nose"] is None and strict["total"] == pytest.approx(100.0)
    # a predicted nose without any GT nose: AP undefined (null) in both modes
    with_nose = _ap(tmp_path / "c", [im], gt, [pred_person(im["id"], 0, xy)])
    assert with_nose["nose"] is None and with_nose["total"] == pytest.approx(100.0)


def test_score_ties():
    # TP .9, then a tie at .5 between a FP and a TP; two GT joints
    scores = np.array([0.9, 0.5, 0.5])
    labels = np.array([True, False, True])
    # strict: the tie is one operating point (P 2/3, R 1) -> .5 x 1 + .5 x 2/3
    assert joint_ap(scores, labels, 2, strict=True) == pytest.approx(100 * (0.5 + 0.5 * 2 / 3))
    # official: ranked with argsort()[::-1]; whichever of the tied detections comes first decides
    order = scores.argsort()[::-1]
    expected = 100.0 if labels[order][1] else 100 * (0.5 + 0.5 * 2 / 3)
    assert joint_ap(scores, labels, 2) == pytest.approx(expected)


def test_ignore_regions_remove_people_and_points(tmp_path):
    # person 1 and a false positive lie inside the ignore square: both are removed entirely
    region = {"ignore_regions_x": [[300, 700, 700, 300]], "ignore_regions_y": [[0, 0, 400, 400]]}
    im = image(1, 0, **region)
    gt = [gt_person(im["id"], 0, base_pose(100, 100)), gt_person(im["id"], 1, base_pose(400, 100))]
    pr = [pred_person(im["id"], 0, base_pose(100, 100), 0.5), pred_person(im["id"], 5, base_pose(500, 200), 0.9)]
    assert _ap(tmp_path / "a", [im], gt, pr)["total"] == pytest.approx(100.0)
    # without the region the same files give a miss and a top-ranked false positive
    plain = image(1, 0)
    assert _ap(tmp_path / "b", [plain], gt, pr)["total"] == pytest.approx(25.0)


def test_point_in_polygon_is_strict_interior_even_odd():
    sq_x, sq_y = np.array([0, 10, 10, 0]), np.array([0, 0, 10, 10])
    px = np.array([5, 10, 0, 5, 11, 10.0000001])
    py = np.array([5, 5, 0, 10, 5, 5])
    assert points_in_polygon(px, py, sq_x, sq_y).tolist() == [True, False, False, False, False, False]
    # bow-tie (self-intersecting): both lobes inside, the crossing point and the gap below it not
    # (values checked against shapely.Polygon.contains)
    bx, by = np.array([0, 10, 10, 0]), np.array([0, 10, 0, 10])
    assert points_in_polygon(np.array([8, 2, 5, 5]), np.array([5, 5, 5, 2]), bx, by).tolist() == [True, True, False, False]
    assert not points_in_polygon(np.array([1.0]), np.array([1.0]), np.array([0, 5]), np.array([0, 5])).any()


def test_frames_without_ground_truth_are_dropped(tmp_path):
    # frame 1 has no GT person: its (false) predictions do not count
    imgs = [image(1, 0), image(1, 1, is_labeled=False)]
    gt = [gt_person(imgs[0]["id"], 0, base_pose(100, 100))]
    pr = [pred_person(imgs[0]["id"], 0, base_pose(100, 100), 0.5), pred_person(imgs[1]["id"], 0, base_pose(300, 300), 0.9)]
    assert _ap(tmp_path, imgs, gt, pr)["total"] == pytest.approx(100.0)

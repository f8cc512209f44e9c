"""PoseTrack MOTA/MOTP: hand-computed tracking cases, the official quirks, and motmetrics parity."""
from __future__ import annotations

import numpy as np
import pytest

from eval_builders import HEAD_SIZE, base_pose, gt_person, image, pred_person, write_sequence
from pavenet.eval.clear_mot import ClearMotAccumulator
from pavenet.eval.posetrack import evaluate_posetrack


def _track(tmp_path, images, gt, pred, name="000001_mpii_test", **kw):
    gt_dir, pred_dir = write_sequence(tmp_path, name, images, gt, pred)
    return evaluate_posetrack(gt_dir, pred_dir, **kw)


def _all(block: dict, value: float) -> bool:
    return all(v == pytest.approx(value) for v in block.values())


def test_perfect_tracking_gives_100(tmp_path):
    imgs = [image(1, f) for f in range(4)]
    gt = [gt_person(im["id"], t, base_pose(100 + 200 * t, 100)) for im in imgs for t in range(3)]
    pr = [pred_person(im["id"], 7 + t, base_pose(100 + 200 * t, 100)) for im in imgs for t in range(3)]
    for strict in (False, True):
        r = _track(tmp_path / str(strict), imgs, gt, pr, strict=strict)
        assert _all(r["mota"], 100.0) and _all(r["ap"], 100.0)
        assert r["motp_total"] == pytest.approx(100.0)
        assert r["precision_total"] == pytest.approx(100.0) and r["recall_total"] == pytest.approx(100.0)


def test_identity_switch_and_motp(tmp_path):
    # one person, predictions 3 px off (0.1 head sizes) with track ids 5, 5, 7, 7
    imgs = [image(1, f) for f in range(4)]
    xy = base_pose(100, 100)
    gt = [gt_person(im["id"], 0, xy) for im in imgs]
    pr = [pred_person(im["id"], tid, xy + [3.0, 0.0]) for im, tid in zip(imgs, [5, 5, 7, 7])]
    d = 3.0 / HEAD_SIZE
    r = _track(tmp_path / "a", imgs, gt, pr)
    # official: frames 0-2 (last left out): 3 objects, 1 switch -> MOTA 1 - 1/3
    assert _all(r["mota"], 100 * (1 - 1 / 3))
    # events['D'].sum(): 3 RAW + 3 matched + 1 ASCEND distance over 3 detections
    assert r["motp_total"] == pytest.approx(100 * (1 - 7 * d / 3))
    s = _track(tmp_path / "b", imgs, gt, pr, strict=True)
    assert _all(s["mota"], 75.0)  # 4 objects, 1 switch
    assert s["motp_total"] == pytest.approx(100 * (1 - d))


def test_empty_prediction_frame(tmp_path):
    # 3 frames, two people; frame 1 has no prediction at all
    imgs = [image(1, f) for f in range(3)]
    gt = [gt_person(im["id"], t, base_pose(100 + 200 * t, 100)) for im in imgs for t in range(2)]
    pr = [pred_person(im["id"], t, base_pose(100 + 200 * t, 100)) for im in (imgs[0], imgs[2]) for t in range(2)]
    r = _track(tmp_path / "a", imgs, gt, pr)
    # official: frames 0, 1; frame 1 counts ONE miss and ONE false positive per joint:
    # objects 2 + 1, misses 1, FP 1 -> MOTA 1 - 2/3; precision 2/3; recall 2/3
    assert _all(r["mota"], 100 / 3)
    assert r["precision_total"] == pytest.approx(200 / 3) and r["recall_total"] == pytest.approx(200 / 3)
    # AP still counts both missed people: 4 TP out of 6 GT joints, precision 1
    assert r["ap"]["total"] == pytest.approx(200 / 3)
    s = _track(tmp_path / "b", imgs, gt, pr, strict=True)
    # strict: 6 objects, 2 misses, no false positive
    assert _all(s["mota"], 100 * (1 - 2 / 6))
    assert s["precision_total"] == pytest.approx(100.0) and s["recall_total"] == pytest.approx(400 / 6)


def test_miss_and_false_positive(tmp_path):
    # 3 frames; person 1 is never predicted; a false positive appears in frames 0 and 1
    imgs = [image(1, f) for f in range(3)]
    gt = [gt_person(im["id"], t, base_pose(100 + 200 * t, 100)) for im in imgs for t in range(2)]
    pr = [pred_person(im["id"], 0, base_pose(100, 100)) for im in imgs]
    pr += [pred_person(im["id"], 9, base_pose(700, 500), 0.1) for im in imgs[:2]]
    r = _track(tmp_path, imgs, gt, pr)
    # official frames 0, 1: objects 4, misses 2, FP 2 -> MOTA 0; precision 50; recall 50
    assert _all(r["mota"], 0.0)
    assert r["precision_total"] == pytest.approx(50.0) and r["recall_total"] == pytest.approx(50.0)
    # MOTP: all distances 0
    assert r["motp_total"] == pytest.approx(100.0)


def test_single_frame_sequences_have_no_tracking(shared_dir, recwarn):
    folder = shared_dir / "fixtures/posetrack18/annotations/val"
    r = evaluate_posetrack(folder, folder)
    assert _all(r["ap"], 100.0)
    assert r["mota"] is None and r["motp_total"] is None
    assert any("single labelled frame" in str(w.message) for w in recwarn)
    s = evaluate_posetrack(folder, folder, strict=True)
    assert _all(s["mota"], 100.0)


def test_per_sequence_blocks(tmp_path):
    imgs = [image(1, f) for f in range(3)]
    gt = [gt_person(im["id"], 0, base_pose(100, 100)) for im in imgs]
    pr = [pred_person(im["id"], tid, base_pose(100, 100)) for im, tid in zip(imgs, [1, 2, 2])]
    write_sequence(tmp_path, "000001_mpii_test", imgs, gt, pr)
    imgs2 = [image(2, f) for f in range(3)]
    gt2 = [gt_person(im["id"], 0, base_pose(100, 100)) for im in imgs2]
    pr2 = [pred_person(im["id"], 0, base_pose(100, 100)) for im in imgs2]
    gt_dir, pred_dir = write_sequence(tmp_path, "000002_mpii_test", imgs2, gt2, pr2)
    r = evaluate_posetrack(gt_dir, pred_dir, per_sequence=True)
    per = r["per_sequence"]
    assert _all(per["000001_mpii_test"]["mota"], 50.0)  # frames 0, 1: one switch in 2 objects
    assert _all(per["000002_mpii_test"]["mota"], 100.0)
    assert _all(r["mota"], 75.0)  # counts are summed over sequences: 1 switch in 4 objects


def _motmetrics_reference(frames):
    mm = pytest.importorskip("motmetrics")
    acc = mm.MOTAccumulator(auto_id=True)
    for oids, hids, dists in frames:
        acc.update(oids, hids, dists)
    ev = acc.events
    mot = acc.mot_events
    return {
        "misses": int((mot.Type == "MISS").sum()), "switches": int((mot.Type == "SWITCH").sum()),
        "fp": int((mot.Type == "FP").sum()), "det": int(mot.Type.isin(["MATCH", "SWITCH"]).sum()),
        "sum_events": float(ev["D"].sum()),
        "sum_matched": float(mot[mot.Type.isin(["MATCH", "SWITCH"])]["D"].sum()),
    }


@pytest.mark.parametrize("seed", range(6))
def test_accumulator_matches_motmetrics(seed):
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(25):
        oids = rng.choice(6, size=rng.integers(0, 6), replace=False).tolist()
        hids = rng.choice(8, size=rng.integers(0, 7), replace=False).tolist()
        dists = rng.random((len(oids), len(hids))) * 0.5
        dists[rng.random(dists.shape) < 0.5] = np.nan
        if seed % 2:
            dists = np.round(dists * 4) / 4  # many equal costs: exercises solver tie-breaking
        frames.append((oids, hids, dists))
    ref = _motmetrics_reference(frames)
    acc = ClearMotAccumulator()
    for oids, hids, dists in frames:
        acc.update(oids, hids, dists)
    assert (acc.misses, acc.switches, acc.false_positives, acc.detections) == (
        ref["misses"], ref["switches"], ref["fp"], ref["det"])
    assert acc.objects == ref["det"] + ref["misses"]
    assert acc.sum_events == pytest.approx(ref["sum_events"], abs=1e-9)
    assert acc.sum_matched == pytest.approx(ref["sum_matched"], abs=1e-9)
